"""The eight open-vocabulary segmentation benchmarks in their standard layouts.

Each :class:`OVSDataset` says where its images and labels live below a root folder,
its class names (the mmseg / CLIP-DINOiser tuples the published numbers were made with;
readable forms on request), whether class 0
is a background that prompts handle (``background``), and mmseg's ``reduce_zero_label``.
A missing root, split file or label raises :class:`DatasetLayoutError` naming the layout.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from insight.data.images import DatasetLayoutError


def karpathy_split(split_file: str | Path, images_root: str | Path, split: str, limit=None):
    """``[(image_id, path, [captions])]`` of one Karpathy split (``train`` includes
    ``restval``, as is customary), at most ``limit`` images."""
    wanted = {"train", "restval"} if split == "train" else {split}
    data = json.loads(Path(split_file).read_text())
    rows = [
        (
            str(image.get("cocoid", image["filename"])),
            str(Path(images_root) / image.get("filepath", "") / image["filename"]),
            [s["raw"].strip() for s in image["sentences"]],
        )
        for image in data["images"]
        if image["split"] in wanted
    ]
    return rows[:limit]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
WORDNET_ID = re.compile(r"^n\d{8}$")
SCENE_QUALIFIERS = {
    "indoor",
    "outdoor",
    "interior",
    "exterior",
    "inside",
    "outside",
    "public",
    "home",
}


def imagenet_class_names(wordnet_ids: Sequence[str]) -> list[str]:
    """The CLIP class names (open_clip's ``IMAGENET_CLASSNAMES``, the ones the zero-shot
    numbers of CLIP were made with) of ImageNet-1k WordNet ids, through timm's synset
    order (index i of one is index i of the other)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    index = {info.index_to_label_name(i): i for i in range(info.num_classes())}
    unknown = [w for w in wordnet_ids if w not in index]
    if unknown:
        raise ValueError(
            f"{len(unknown)} WordNet ids are not ImageNet-1k classes, e.g. {unknown[0]}; "
            "set classification.class_names: folder to keep the folder names"
        )
    return [IMAGENET_CLASSNAMES[index[w]] for w in wordnet_ids]


def readable_folder_name(folder: str) -> str:
    """A class folder as words: ``golden_retriever`` -> ``golden retriever``; Places365's
    ``church-outdoor`` or ``church/outdoor`` -> ``outdoor church``."""
    parts = [p.replace("_", " ").strip() for p in re.split(r"[-/]", folder) if p.strip()]
    if len(parts) > 1 and parts[-1] in SCENE_QUALIFIERS:
        parts = [parts[-1], *parts[:-1]]
    return " ".join(parts)


def class_names(folders: Sequence[str], setting: str = "clip") -> list[str]:
    """Label names of class folders: with ``clip``, WordNet ids become CLIP's ImageNet
    names and other folders :func:`readable_folder_name`; with ``folder``, the names as
    they are."""
    if setting == "folder":
        return list(folders)
    if setting != "clip":
        raise ValueError(f"classification.class_names must be clip or folder, not {setting!r}")
    if folders and all(WORDNET_ID.match(f) for f in folders):
        return imagenet_class_names(folders)
    return [readable_folder_name(f) for f in folders]


def imagefolder(
    root, split: str, images_per_class: int | None = None, names: str = "clip"
) -> tuple[list[tuple[str, int]], list[str]]:
    """``ROOT/{split}/{class}/*`` (ImageNet, Places365 standard): ``(path, class index)``
    pairs, at most ``images_per_class`` per class, and the class names of the sorted
    folders (:func:`class_names`)."""
    folder = Path(root) / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DatasetLayoutError(
            f"no class folders in {folder}; expected ImageFolder layout ROOT/{split}/<class>/<image>"
        )
    pairs = []
    for index, name in enumerate(classes):
        images = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs += [(str(p), index) for p in images[:images_per_class]]
    return pairs, class_names(classes, names)


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light",
    "motorbike", "mountain", "mouse", "person", "plate", "platform", "potted plant", "road", "rock", "sheep",
    "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip


COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# COCO-Object spells the fifth class "aeroplane" (CLIP-DINOiser's list and CFM's cls_coco_object.txt)
COCO_OBJECT_CLASSES = ("background", *("aeroplane" if c == "airplane" else c for c in COCO_THINGS))


COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
)  # fmt: skip


CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip


ADE_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed ", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip


@dataclass(frozen=True)
class OVSDataset:
    """A benchmark: where its files are below ``root``, its classes and label conventions."""

    name: str
    layout: str  # voc | context | coco | cityscapes | ade
    classes: tuple[str, ...]
    background: bool = False  # class 0 is "background" (handled by the background rule)
    reduce_zero_label: bool = False
    label_suffix: str = ""  # coco: "_instanceTrainIds.png" or "_labelTrainIds.png"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: dict[str, OVSDataset] = {
    "voc": OVSDataset("voc", "voc", VOC_CLASSES, background=True),
    "voc20": OVSDataset("voc20", "voc", VOC_CLASSES[1:], reduce_zero_label=True),
    "context": OVSDataset("context", "context", CONTEXT_CLASSES, background=True),
    "context59": OVSDataset("context59", "context", CONTEXT_CLASSES[1:], reduce_zero_label=True),
    "coco_object": OVSDataset(
        "coco_object",
        "coco",
        COCO_OBJECT_CLASSES,
        background=True,
        label_suffix="_instanceTrainIds.png",
    ),
    "coco_stuff": OVSDataset(
        "coco_stuff", "coco", COCO_THINGS + COCO_STUFF, label_suffix="_labelTrainIds.png"
    ),
    "cityscapes": OVSDataset("cityscapes", "cityscapes", CITYSCAPES_CLASSES),
    "ade20k": OVSDataset("ade20k", "ade", ADE_CLASSES, reduce_zero_label=True),
}


CLASS_NAME_SETTINGS = ("release", "readable")
READABLE_RENAMES = {
    "voc": {"dining table": "table"},
    "voc20": {"dining table": "table"},
    "coco_object": {"aeroplane": "airplane"},
}
SWAPPED_STUFF = ("floor", "wall")  # "floor-marble" reads "marble floor"


def readable_class_name(name: str, benchmark_name: str = "") -> str:
    """The readable form of a released class name: ``tvmonitor`` -> ``tv monitor``,
    COCO-Stuff's ``building-other`` -> ``building``, ``floor-marble`` -> ``marble floor``,
    ``ceiling-tile`` -> ``ceiling tile``, ADE20K's ``"bed "`` -> ``bed``."""
    name = READABLE_RENAMES.get(benchmark_name, {}).get(name, name).strip()
    if name == "tvmonitor":
        return "tv monitor"
    base, dash, kind = name.partition("-")
    if not dash:
        return name
    if kind in ("other", "stuff"):
        return base
    return f"{kind} {base}" if base in SWAPPED_STUFF else f"{base} {kind}"


def benchmark(name: str, custom: dict | None = None, class_names: str = "release") -> OVSDataset:
    """The benchmark ``name``: one of :data:`DATASETS`, or one defined in ``custom``
    (config ``ovs.custom``: ``{name: {layout, classes, background, reduce_zero_label}}``),
    a dataset in a standard layout with its own class list, such as the demo's world.
    ``class_names``: the built-in lists as the published numbers were made with them
    (``release``: CLIP-DINOiser's and mmseg's tuples, "tvmonitor", "floor-marble") or
    their :func:`readable_class_name` forms (``readable``); custom lists are used as given."""
    if class_names not in CLASS_NAME_SETTINGS:
        raise ValueError(
            f"ovs.class_names must be one of {CLASS_NAME_SETTINGS}, not {class_names!r}"
        )
    custom = custom or {}
    if name in custom:
        spec = custom[name]
        if spec.get("layout", "voc") not in LAYOUTS:
            raise ValueError(f"ovs.custom.{name}.layout must be one of {sorted(LAYOUTS)}")
        classes = tuple(spec["classes"])
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"ovs.custom.{name}.classes must be distinct class names")
        return OVSDataset(
            name,
            spec.get("layout", "voc"),
            classes,
            background=bool(spec.get("background", False)),
            reduce_zero_label=bool(spec.get("reduce_zero_label", False)),
            label_suffix=spec.get("label_suffix", ""),
        )
    if name not in DATASETS:
        raise KeyError(
            f"unknown OVS benchmark {name!r}: built-in ones are {sorted(DATASETS)}; "
            "define others under ovs.custom"
        )
    dataset = DATASETS[name]
    if class_names == "readable":
        readable = tuple(readable_class_name(c, name) for c in dataset.classes)
        return dataclasses.replace(dataset, classes=readable)
    return dataset


LAYOUTS = {
    "voc": "ROOT/JPEGImages/{id}.jpg, ROOT/SegmentationClass/{id}.png, ROOT/ImageSets/Segmentation/val.txt (ROOT = VOCdevkit/VOC2012)",
    "context": "ROOT/JPEGImages/{id}.jpg, ROOT/SegmentationClassContext/{id}.png, ROOT/ImageSets/SegmentationContext/val.txt (ROOT = VOCdevkit/VOC2010)",
    "coco": "ROOT/images/val2017/{id}.jpg, ROOT/annotations/val2017/{id}_labelTrainIds.png or _instanceTrainIds.png (ROOT = coco_stuff164k)",
    "cityscapes": "ROOT/leftImg8bit/val/{city}/{id}_leftImg8bit.png, ROOT/gtFine/val/{city}/{id}_gtFine_labelTrainIds.png",
    "ade": "ROOT/images/validation/{id}.jpg, ROOT/annotations/validation/{id}.png (ROOT = ADEChallengeData2016)",
}


def list_pairs(dataset: OVSDataset, root: str | Path) -> list[tuple[str, Path, Path]]:
    """``(image id, image path, label path)`` of the validation split, sorted by id."""
    root = Path(root)
    expected = f"expected layout for {dataset.name}: {LAYOUTS[dataset.layout]}"
    if not root.is_dir():
        raise DatasetLayoutError(f"{dataset.name}: root {root} does not exist; {expected}")
    if dataset.layout in ("voc", "context"):
        split_dir, label_dir = (
            ("Segmentation", "SegmentationClass")
            if dataset.layout == "voc"
            else ("SegmentationContext", "SegmentationClassContext")
        )
        split = root / "ImageSets" / split_dir / "val.txt"
        if not split.is_file():
            raise DatasetLayoutError(f"{dataset.name}: no split file {split}; {expected}")
        ids = [line.strip() for line in split.read_text().splitlines() if line.strip()]
        pairs = [(i, root / "JPEGImages" / f"{i}.jpg", root / label_dir / f"{i}.png") for i in ids]
    elif dataset.layout == "coco":
        images = sorted((root / "images" / "val2017").glob("*.jpg"))
        pairs = [
            (p.stem, p, root / "annotations" / "val2017" / f"{p.stem}{dataset.label_suffix}")
            for p in images
        ]
    elif dataset.layout == "cityscapes":
        images = sorted((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
        pairs = []
        for p in images:
            stem = p.name[: -len("_leftImg8bit.png")]
            pairs.append(
                (
                    stem,
                    p,
                    root / "gtFine" / "val" / p.parent.name / f"{stem}_gtFine_labelTrainIds.png",
                )
            )
    else:
        images = sorted((root / "images" / "validation").glob("*.jpg"))
        pairs = [(p.stem, p, root / "annotations" / "validation" / f"{p.stem}.png") for p in images]
    if not pairs:
        raise DatasetLayoutError(f"{dataset.name}: no images below {root}; {expected}")
    missing = [
        str(path) for _, image, label in pairs for path in (image, label) if not path.is_file()
    ]
    if missing:
        raise DatasetLayoutError(
            f"{dataset.name}: {len(missing)} files missing, e.g. {missing[0]}; {expected}"
        )
    return sorted(pairs)
