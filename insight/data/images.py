"""Image sources (folder, list file, webdataset tar shards), sharding and safe decoding.

An image is addressed by an :class:`ImageRef`: a stable ``image_id`` plus where its bytes
live (a file, or a member of a tar shard). :func:`list_images` enumerates a source in a
deterministic order; :func:`assign_shards` cuts that list into fixed-size shards, one
Snakemake job each. :func:`decode_image` turns bytes into an RGB ``PIL.Image`` or a
recorded reason for skipping it, never a silently wrong picture.
"""

from __future__ import annotations

import csv
import io
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageFile

from insight.core.sections import ImagesSettings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


SOURCE_KINDS = ("folder", "list", "tar")


INDEX_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("member", pa.string()),
        ("shard", pa.int32()),
    ]
)


REJECTED_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("path", pa.string()), ("reason", pa.string())]
)


# Pillow must not guess the rest of a truncated file: a truncated image is an error.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# The size limit is DecodePolicy.max_pixels, checked from the header before decoding.
Image.MAX_IMAGE_PIXELS = None


class DatasetLayoutError(FileNotFoundError):
    """A configured image source is missing or does not have the expected layout."""


@dataclass(frozen=True)
class ImageRef:
    image_id: str
    path: str
    member: str | None = None  # tar member name, when the bytes live inside a tar shard


def list_images(source: str | Path, kind: str) -> list[ImageRef]:
    """Enumerate the images of a source, sorted by ``image_id``.

    - ``folder``: every file with an image suffix below ``source`` (recursive); the id is
      the path relative to ``source``.
    - ``list``: a text file with one path per line, or a CSV with a ``path`` column
      (relative paths are relative to the list file); the id is the path as written.
    - ``tar``: ``source`` is a folder of ``*.tar`` shards or one tar file, in the layout
      img2dataset/webdataset write (``key.jpg`` beside ``key.txt``/``key.json``); the id
      is ``<shard stem>/<member>``.
    """
    source = Path(source)
    if kind not in SOURCE_KINDS:
        raise ValueError(f"image source kind must be one of {SOURCE_KINDS}, got {kind!r}")
    if not source.exists():
        raise DatasetLayoutError(f"image source {source} does not exist; expected {_LAYOUTS[kind]}")
    refs = {"folder": _list_folder, "list": _list_file, "tar": _list_tars}[kind](source)
    if not refs:
        raise DatasetLayoutError(f"no images found in {source}; expected {_LAYOUTS[kind]}")
    refs.sort(key=lambda r: r.image_id)
    duplicates = [
        a.image_id for a, b in zip(refs, refs[1:], strict=False) if a.image_id == b.image_id
    ]
    if duplicates:
        raise ValueError(f"duplicate image ids in {source}: {duplicates[:5]}")
    return refs


_LAYOUTS = {
    "folder": "a folder with image files (searched recursively, suffixes "
    + " ".join(IMAGE_SUFFIXES)
    + ")",
    "list": "a .txt file with one image path per line, or a .csv file with a 'path' column",
    "tar": "a folder of webdataset .tar shards (as img2dataset writes them) or one .tar file",
}


def _list_folder(root: Path) -> list[ImageRef]:
    return [
        ImageRef(p.relative_to(root).as_posix(), str(p))
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _list_file(list_file: Path) -> list[ImageRef]:
    base = list_file.parent
    if list_file.suffix.lower() == ".csv":
        with list_file.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise DatasetLayoutError(f"{list_file}: a CSV image list needs a 'path' column")
            paths = [row["path"].strip() for row in reader]
    else:
        paths = [line.strip() for line in list_file.read_text().splitlines()]
    paths = [p for p in paths if p and not p.startswith("#")]
    return [ImageRef(p, str(Path(p) if Path(p).is_absolute() else base / p)) for p in paths]


def _list_tars(source: Path) -> list[ImageRef]:
    tars = [source] if source.is_file() else sorted(source.glob("*.tar"))
    refs = []
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    refs.append(
                        ImageRef(f"{tar_path.stem}/{member.name}", str(tar_path), member.name)
                    )
    return refs


def assign_shards(refs: list[ImageRef], images_per_shard: int) -> pa.Table:
    """The image index: one row per image with its shard number (``shard = i // size``)."""
    if images_per_shard < 1:
        raise ValueError("images_per_shard must be >= 1")
    return pa.table(
        {
            "image_id": [r.image_id for r in refs],
            "path": [r.path for r in refs],
            "member": [r.member for r in refs],
            "shard": np.arange(len(refs), dtype=np.int32) // images_per_shard,
        },
        schema=INDEX_SCHEMA,
    )


def refs_of_shard(index: pa.Table, shard: int) -> list[ImageRef]:
    rows = index.filter(pc.equal(index["shard"], shard)).to_pylist()
    return [ImageRef(r["image_id"], r["path"], r["member"]) for r in rows]


def iter_bytes(refs: Iterable[ImageRef]) -> Iterator[tuple[ImageRef, bytes | None, str | None]]:
    """Yield ``(ref, data, error)``; tar shards are opened once and read sequentially."""
    open_tars: dict[str, tarfile.TarFile] = {}
    try:
        for ref in refs:
            try:
                if ref.member is None:
                    data = Path(ref.path).read_bytes()
                else:
                    tar = open_tars.get(ref.path)
                    if tar is None:
                        tar = open_tars[ref.path] = tarfile.open(ref.path)
                    handle = tar.extractfile(ref.member)
                    if handle is None:
                        raise OSError(f"{ref.member} is not a regular file")
                    data = handle.read()
            except (OSError, KeyError) as err:
                yield ref, None, f"unreadable file: {err}"
                continue
            yield ref, data, None
    finally:
        for tar in open_tars.values():
            tar.close()


@dataclass(frozen=True)
class DecodePolicy:
    """What :func:`decode_image` accepts.

    ``max_pixels`` bounds width*height (checked from the header, before decoding).
    ``convert_modes``: when True (the default, as torchvision and open_clip pipelines do)
    CMYK, palette, RGBA/LA, 16-bit and animated images are converted to RGB exactly (CMYK
    via Pillow's ICC-free transform, alpha composited on white, 16-bit scaled by 1/257,
    the first frame of an animation) and kept; when False they are rejected with their
    mode as the reason. Undecodable, oversized and tiny images are always rejected.
    """

    max_pixels: int = 89_478_485
    min_side: int = 8
    convert_modes: bool = True


DEFAULT_POLICY = DecodePolicy()


_ACCEPTED_MODES = {"RGB", "L"}


def decode_image(
    data: bytes, policy: DecodePolicy = DEFAULT_POLICY
) -> tuple[Image.Image | None, str | None]:
    """Decode bytes to an RGB image, or return ``(None, reason)``."""
    if not data:
        return None, "empty file (0 bytes)"
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > policy.max_pixels:
            return None, f"oversized: {width}x{height} exceeds {policy.max_pixels} pixels"
        if min(width, height) < policy.min_side:
            return None, f"too small: {width}x{height}"
        image.load()
    except Image.UnidentifiedImageError:
        return None, "not an image"
    except (OSError, SyntaxError, ValueError) as err:
        return None, f"corrupt or truncated: {err}"
    mode = image.mode
    if mode in _ACCEPTED_MODES:
        return image.convert("RGB"), None
    if not policy.convert_modes:
        return None, f"unsupported mode {mode} (images.convert_modes is false)"
    return _convert(image), None


def _convert(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        array = np.asarray(image, dtype=np.float64)
        scale = 257.0 if array.max() <= 65535 else array.max() / 255.0
        return Image.fromarray(np.clip(array / scale + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_policy(settings: ImagesSettings) -> DecodePolicy:
    """The decode policy of the ``images`` config section."""
    return DecodePolicy(max_pixels=settings.max_pixels, convert_modes=settings.convert_modes)


def read_rgb_image(path: str | Path, policy: DecodePolicy = DEFAULT_POLICY) -> Image.Image:
    """One image file as RGB under ``policy``; a file it rejects raises a one-line
    ``ValueError`` naming the file and the reason (``not an image``, ``too small``, ...)."""
    image, reason = decode_image(Path(path).read_bytes(), policy)
    if image is None:
        raise ValueError(f"{path}: {reason}")
    return image
