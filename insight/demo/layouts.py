"""Generated data for the offline demo and the tests: real image files in real layouts.

Every set is drawn from the procedural world of :mod:`insight.demo.world`:
:func:`make_scene_images` (a folder of JPEG and PNG scenes), :func:`make_voc_dataset`
(class maps, VOC2012 layout), :func:`make_part_dataset` (part maps, PartImageNet
layout), :func:`make_imagefolder` (one object per image), :func:`make_caption_dataset`
(Karpathy layout) and :func:`make_clip_pairs` (image/caption pairs to train the demo's
CLIP). :func:`write_bad_images` adds one file of each kind the extraction stage must
reject.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from insight.data.palette import voc_palette
from insight.demo.world import (
    OBJECTS,
    PART_BACKGROUND,
    close_up,
    draw_scene,
    region_map,
    scene_caption,
)


def make_scene_images(
    out_dir: str | Path, count: int, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> list[Path]:
    """Write ``count`` scenes to ``out_dir`` (two sub-folders, JPEG and PNG) and return their paths."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = draw_scene(rng, size).image
        folder = out / ("jpeg" if i % 4 else "png")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"scene_{i:05d}.{'jpg' if i % 4 else 'png'}"
        image.save(path, quality=90) if i % 4 else image.save(path)
        paths.append(path)
    return paths


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bad_image_bytes() -> dict[str, bytes]:
    """One file per rejected kind (undecodable, oversized, tiny): ``{file name: bytes}``."""
    jpeg = _encode(Image.new("RGB", (64, 48), (10, 120, 200)), "JPEG")
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
        "not_an_image.png": b"this is a text file, not a PNG\n" * 4,
        "oversized.png": _encode(Image.new("L", (12000, 8000)), "PNG"),
        "tiny.png": _encode(Image.new("RGB", (4, 4)), "PNG"),
    }


def other_mode_image_bytes() -> dict[str, bytes]:
    """Images that PIL decodes in a mode other than RGB (each converted to RGB, not
    rejected): CMYK, 16-bit grey, palette, RGBA, grey with alpha, an animated GIF."""
    rgb = Image.new("RGB", (64, 48), (10, 120, 200))
    sixteen = Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16))
    frames = [rgb.convert("P"), Image.new("RGB", (64, 48), (200, 10, 10)).convert("P")]
    return {
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "sixteen_bit.png": _encode(sixteen, "PNG"),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "grey_alpha.png": _encode(rgb.convert("LA"), "PNG"),
        "animated.gif": _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
    }


def write_bad_images(out_dir: str | Path, kinds: list[str] | None = None) -> list[Path]:
    """Write the bad files (all kinds, or ``kinds``) into ``out_dir/bad``."""
    folder = Path(out_dir) / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in bad_image_bytes().items():
        if kinds is None or name.split(".")[0] in kinds:
            (folder / name).write_bytes(data)
            paths.append(folder / name)
    return paths


def make_voc_dataset(
    root: str | Path, count: int, seed: int = 1, size: tuple[int, int] = (320, 240)
) -> None:
    """World scenes in the VOC2012 layout: JPEGs, palette PNG class maps (ids into
    :data:`insight.demo.world.CLASSES`, a 255 outline around every object as VOC draws
    them) and the ``val`` split."""
    from PIL import ImageFilter

    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        scene = draw_scene(rng, size)
        objects = Image.fromarray(np.where(scene.parts != PART_BACKGROUND, 255, 0).astype(np.uint8))
        outline = np.array(objects.filter(ImageFilter.FIND_EDGES)) > 0
        array = np.where(outline, 255, scene.classes).astype(np.uint8)
        name = f"world_{i:05d}"
        scene.image.save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        png = Image.frombytes("P", size, np.ascontiguousarray(array).tobytes())
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")


def make_part_dataset(
    root: str | Path, count: int, seed: int = 2, size: tuple[int, int] = (224, 224)
) -> None:
    """World scenes in the PartImageNet layout: part maps with ids into
    :data:`insight.demo.world.PARTS` (roof, wall, leaves, ...), background 40; split ``test``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images" / "test").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "test").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scene = draw_scene(rng, size)
        scene.image.save(root / "images" / "test" / f"part_{i:05d}.JPEG", format="JPEG", quality=90)
        Image.fromarray(scene.parts).save(root / "annotations" / "test" / f"part_{i:05d}.png")


def make_imagefolder(
    root: str | Path, per_class: dict[str, int], seed: int = 3, size: tuple[int, int] = (224, 224)
) -> None:
    """An ImageFolder (``root/{split}/{object}/*.jpg``): one world object per image, the
    class is the object drawn (house, tree, car, mushroom)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name in OBJECTS:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                scene = draw_scene(rng, size, objects=[name])
                scene.image.save(folder / f"{name}_{i:04d}.jpg", quality=90)


def make_caption_dataset(
    root: str | Path,
    counts: dict[str, int],
    seed: int = 5,
    size: tuple[int, int] = (256, 224),
    language_model: dict | None = None,
) -> Path:
    """COCO captions in the Karpathy layout: ``root/{train,val}2014/*.jpg`` and
    ``root/dataset_coco.json`` (``images``: ``filepath``, ``filename``, ``split``,
    ``cocoid``, ``sentences`` with ``raw``), two captions per world scene (the second
    lists the objects right to left). With ``language_model`` (GPT-2 config keys), also a
    tiny randomly initialised GPT-2 and a word-level tokenizer trained on the captions,
    saved with ``save_pretrained`` in ``root/gpt2`` so it loads like any local model."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for split, count in counts.items():
        folder = "train2014" if split == "train" else "val2014"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            cocoid = len(images)
            scene = draw_scene(rng, size)
            filename = f"COCO_{folder}_{cocoid:012d}.jpg"
            scene.image.save(root / folder / filename, quality=90)
            sentences = [scene.caption, scene_caption(scene.objects, scene.ground, reverse=True)]
            captions += sentences
            images.append(
                {
                    "filepath": folder,
                    "filename": filename,
                    "split": split,
                    "cocoid": cocoid,
                    "sentences": [{"raw": s, "tokens": s.split()} for s in sentences],
                }
            )
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    if language_model is not None:
        save_tiny_gpt2(root / "gpt2", captions, language_model)
    return root / "dataset_coco.json"


def make_clip_pairs(
    root: str | Path,
    scenes: int,
    seed: int = 6,
    size: tuple[int, int] = (224, 224),
    colour_share: float = 0.5,
) -> Path:
    """Image/caption pairs to train the demo's CLIP on: every world scene with its
    caption, plus one close-up of it (an object, a part or a ground, captioned with one
    of the 80 ImageNet prompt templates). Writes ``root/images/*.jpg``, their region
    maps ``root/regions/*.png`` (:func:`insight.demo.world.region_map`) and
    ``root/pairs.csv`` (``path`` and ``regions``, relative to ``root``, and ``caption``).

    A scene caption names its objects' colours with probability ``colour_share``, as
    web captions mention colour only some of the time. Captions that always do let the
    CLIP tell scenes apart by colour alone, and its patch features then carry the object
    too weakly for the families to show its parts (docs/demo_world.md)."""
    import csv

    from insight.models.prompts import imagenet_templates

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "regions").mkdir(exist_ok=True)
    templates = imagenet_templates()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(scenes):
        scene = draw_scene(rng, size)
        crop = None
        while crop is None:
            crop = close_up(scene, rng, templates, size[0])
        said = scene_caption(scene.objects, scene.ground, colours=rng.random() < colour_share)
        close_image, close_caption, box = crop
        for kind, image, caption, regions in (
            ("scene", scene.image, said, region_map(scene)),
            ("close", close_image, close_caption, region_map(scene, box, size[0])),
        ):
            path, regions_path = f"images/{kind}_{i:05d}.jpg", f"regions/{kind}_{i:05d}.png"
            image.save(root / path, quality=92)
            Image.fromarray(regions).save(root / regions_path)
            rows.append((path, caption, regions_path))
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption", "regions"])
        writer.writerows(rows)
    return root / "pairs.csv"


def save_tiny_gpt2(folder: str | Path, texts: list[str], config: dict, seed: int = 0) -> None:
    """A randomly initialised GPT-2 of the given config and a word-level tokenizer trained on
    ``texts`` (with ``<|endoftext|>`` as BOS/EOS/PAD), both via ``save_pretrained``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    end = "<|endoftext|>"
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[end, "<unk>"]))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=end, eos_token=end, pad_token=end, unk_token="<unk>"
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(wrapped), bos_token_id=0, eos_token_id=0, **config)
    )
    model.save_pretrained(folder)
    wrapped.save_pretrained(folder)
