"""Generated data for the offline demo and the tests: real image files in real layouts.

:func:`make_scene_images` draws simple scenes (coloured shapes on textured
backgrounds) as JPEG and PNG files in a folder; :func:`write_bad_images` adds one file
of each kind the extraction stage must reject.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
}
BACKGROUNDS = {
    "sand": (214, 196, 150),
    "grass": (90, 140, 70),
    "sky": (150, 190, 235),
    "stone": (128, 128, 128),
}


def draw_scene(
    rng: np.random.Generator, size: tuple[int, int] = (320, 240)
) -> tuple[Image.Image, list[dict], str]:
    """One scene: a noisy background and 1-3 shapes; returns the image, its objects and
    the background's name."""
    width, height = size
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    base = np.array(BACKGROUNDS[background], dtype=np.float32)
    noise = rng.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        radius = int(rng.integers(min(size) // 8, min(size) // 4))
        cx, cy = (
            int(rng.integers(radius, width - radius)),
            int(rng.integers(radius, height - radius)),
        )
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon(
                [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)],
                fill=fill,
            )
        objects.append({"shape": shape, "colour": colour, "box": box})
    return image, objects, background


def make_scene_images(
    out_dir: str | Path, count: int, seed: int = 0, size: tuple[int, int] = (320, 240)
) -> list[Path]:
    """Write ``count`` scenes to ``out_dir`` (two sub-folders, JPEG and PNG) and return their paths."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image, _, _ = draw_scene(rng, size)
        folder = out / ("jpeg" if i % 4 else "png")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"scene_{i:05d}.{'jpg' if i % 4 else 'png'}"
        image.save(path, quality=90) if i % 4 else image.save(path)
        paths.append(path)
    return paths


def bad_image_bytes() -> dict[str, bytes]:
    """One file per rejected kind: ``{file name: bytes}``."""
    rgb = Image.new("RGB", (64, 48), (10, 120, 200))

    def encode(image: Image.Image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    jpeg = encode(rgb, "JPEG")
    sixteen = Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16))
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "empty.jpg": b"",
        "not_an_image.png": b"this is a text file, not a PNG\n" * 4,
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "sixteen_bit.png": encode(sixteen, "PNG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "oversized.png": encode(Image.new("L", (12000, 8000)), "PNG"),
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


VOC_SHAPE_CLASS = {
    "circle": 1,
    "square": 2,
    "triangle": 3,
}  # aeroplane, bicycle, bird in VOC's list


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved), 256 RGB entries."""
    palette = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


def make_voc_dataset(
    root: str | Path, count: int, seed: int = 1, size: tuple[int, int] = (320, 240)
) -> None:
    """Scenes in the VOC2012 layout: JPEGs, palette PNG labels (shapes on background 0,
    a 255 border around each shape, as VOC draws object outlines) and the val split."""
    from PIL import ImageFilter

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        image, objects, _ = draw_scene(rng, size)
        label = Image.new("L", size, 0)
        draw = ImageDraw.Draw(label)
        for obj in objects:
            value = VOC_SHAPE_CLASS[obj["shape"]]
            x0, y0, x1, y1 = obj["box"]
            cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 2
            if obj["shape"] == "circle":
                draw.ellipse(obj["box"], fill=value)
            elif obj["shape"] == "square":
                draw.rectangle(obj["box"], fill=value)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=value)
        array = np.array(label)
        edges = np.array(label.filter(ImageFilter.FIND_EDGES)) > 0
        array[edges] = 255
        name = f"demo_{i:05d}"
        image.save(root / "JPEGImages" / f"{name}.jpg", quality=90)
        png = Image.frombytes("P", size, np.ascontiguousarray(array).tobytes())
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")


def make_part_dataset(
    root: str | Path, count: int, seed: int = 2, size: tuple[int, int] = (224, 224)
) -> None:
    """Scenes in the PartImageNet layout: each shape has two parts (its upper and lower
    half, parts 2s and 2s+1 for shape s), background 40; split ``test``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images" / "test").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "test").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, objects, _ = draw_scene(rng, size)
        labels = np.full((size[1], size[0]), 40, dtype=np.uint8)
        for obj in objects:
            mask = Image.new("L", size, 0)
            draw = ImageDraw.Draw(mask)
            x0, y0, x1, y1 = obj["box"]
            cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 2
            if obj["shape"] == "circle":
                draw.ellipse(obj["box"], fill=1)
            elif obj["shape"] == "square":
                draw.rectangle(obj["box"], fill=1)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=1)
            inside = np.array(mask) > 0
            part = 2 * SHAPES.index(obj["shape"])
            rows = np.arange(size[1])[:, None]
            labels[inside & (rows < cy)] = part
            labels[inside & (rows >= cy)] = part + 1
        image.save(root / "images" / "test" / f"part_{i:05d}.JPEG", format="JPEG", quality=90)
        Image.fromarray(labels).save(root / "annotations" / "test" / f"part_{i:05d}.png")


def make_imagefolder(
    root: str | Path, per_class: dict[str, int], seed: int = 3, size: tuple[int, int] = (224, 224)
) -> None:
    """An ImageFolder (``root/{split}/{shape}/*.jpg``) whose class is the shape drawn."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for shape in SHAPES:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
                noise = rng.normal(0, 12, size=(size[1], size[0], 3))
                image = Image.fromarray(
                    np.clip(np.array(BACKGROUNDS[background]) + noise, 0, 255).astype(np.uint8)
                )
                draw = ImageDraw.Draw(image)
                r = int(rng.integers(size[0] // 6, size[0] // 3))
                cx, cy = int(rng.integers(r, size[0] - r)), int(rng.integers(r, size[1] - r))
                fill = list(COLOURS.values())[rng.integers(len(COLOURS))]
                box = (cx - r, cy - r, cx + r, cy + r)
                if shape == "circle":
                    draw.ellipse(box, fill=fill)
                elif shape == "square":
                    draw.rectangle(box, fill=fill)
                else:
                    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
                image.save(folder / f"{shape}_{i:04d}.jpg", quality=90)


def scene_caption(objects: list[dict], background: str) -> str:
    """``a red circle and a blue square on grass``."""
    things = [f"a {o['colour']} {o['shape']}" for o in objects]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    return f"{listed} on {background}"


def make_caption_dataset(
    root: str | Path,
    counts: dict[str, int],
    seed: int = 5,
    size: tuple[int, int] = (256, 224),
    language_model: dict | None = None,
) -> Path:
    """COCO captions in the Karpathy layout: ``root/{train,val}2014/*.jpg`` and
    ``root/dataset_coco.json`` (``images``: ``filepath``, ``filename``, ``split``,
    ``cocoid``, ``sentences`` with ``raw``), two captions per image (the second with the
    objects listed in reverse). With ``language_model`` (GPT-2 config keys), also a tiny
    randomly initialised GPT-2 and a word-level tokenizer trained on the captions, saved
    with ``save_pretrained`` in ``root/gpt2`` so it loads like any local model."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for split, count in counts.items():
        folder = "train2014" if split == "train" else "val2014"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            cocoid = len(images)
            image, objects, background = draw_scene(rng, size)
            filename = f"COCO_{folder}_{cocoid:012d}.jpg"
            image.save(root / folder / filename, quality=90)
            sentences = [
                scene_caption(objects, background),
                scene_caption(objects[::-1], background),
            ]
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
