"""The browser's pictures: heatmap thumbnails (one per concept and image) and the crops an
image page shows, drawn once into a cache folder keyed by what they show, so a rebuild only
draws what changed, then linked (or copied) into the browser."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from insight.core.logs import progress
from insight.data.images import ImageRef, decode_image, iter_bytes
from insight.views.heatmaps import activation_grid, overlay

THUMBNAIL_VERSION = "1"  # bump when the drawing changes, so cached thumbnails are redrawn
IMAGE_PAGE_SIZE = 336


def thumbnail_key(image_id: str, concept: int, activations: np.ndarray, size: int) -> str:
    digest = hashlib.sha1(f"{THUMBNAIL_VERSION}|{size}|{image_id}|{concept}|".encode())
    digest.update(np.ascontiguousarray(activations, dtype=np.float32).tobytes())
    return digest.hexdigest()[:20]


def render_thumbnails(
    top: pa.Table,
    refs: Mapping[str, ImageRef],
    crop_of,
    grid: tuple[int, int],
    cache: str | Path,
    size: int = 170,
) -> dict[tuple[int, str], str]:
    """Draw (or reuse from ``cache``) one heatmap thumbnail per row of ``top``; returns
    ``(concept, image_id) -> cached file``. ``crop_of`` turns a decoded PIL image into the
    crop the encoder saw. Images that cannot be read are left out."""

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = top.to_pylist()
    wanted: dict[str, list[tuple[dict, Path]]] = {}
    done: dict[tuple[int, str], str] = {}
    for row in rows:
        activations = np.asarray(row["activations"], dtype=np.float32)
        key = thumbnail_key(row["image_id"], row["concept"], activations, size)
        path = cache / f"{key}.jpg"
        if path.exists():
            done[(row["concept"], row["image_id"])] = str(path)
        elif row["image_id"] in refs:
            wanted.setdefault(row["image_id"], []).append((row, path))
    bar = progress(len(wanted), "browser thumbnails", "img")
    for ref, data, error in iter_bytes(refs[i] for i in wanted):
        image, error = decode_image(data) if data is not None else (None, error)
        if image is not None:
            crop = crop_of(image)
            for row, path in wanted[ref.image_id]:
                heat = activation_grid(row["patches"], np.asarray(row["activations"]), grid)
                picture = overlay(crop, heat).resize((size, size), Image.Resampling.BICUBIC)
                tmp = path.with_suffix(".tmp.jpg")
                picture.save(tmp, format="JPEG", quality=85)
                os.replace(tmp, path)
                done[(row["concept"], row["image_id"])] = str(path)
        bar.update(1)
    bar.close()
    return done


def render_pictures(
    image_ids: Iterable[str],
    refs: Mapping[str, ImageRef],
    crop_of,
    cache: str | Path,
    size: int = IMAGE_PAGE_SIZE,
) -> dict[str, str]:
    """The crop the encoder saw of each image, as a ``size`` JPEG in ``cache`` (reused when
    present); ``image_id -> cached file``. Images that cannot be read are left out."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    done, wanted = {}, []
    for image_id in image_ids:
        path = cache / picture_name(image_id, size)
        if path.exists():
            done[image_id] = str(path)
        elif image_id in refs:
            wanted.append(image_id)
    for ref, data, error in iter_bytes(refs[i] for i in wanted):
        image, error = decode_image(data) if data is not None else (None, error)
        if image is not None:
            path = cache / picture_name(ref.image_id, size)
            picture = Image.fromarray(crop_of(image)).resize((size, size), Image.Resampling.BICUBIC)
            tmp = path.with_suffix(".tmp.jpg")
            picture.save(tmp, format="JPEG", quality=88)
            os.replace(tmp, path)
            done[ref.image_id] = str(path)
    return done


def link_or_copy(source: str | Path, target: Path) -> None:
    """A hard link to a cached file where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _key(image_id: str) -> str:
    return hashlib.sha1(image_id.encode()).hexdigest()[:16]


def picture_name(image_id: str, size: int = IMAGE_PAGE_SIZE) -> str:
    return f"{_key(image_id)}-{size}.jpg"


def image_page_name(image_id: str) -> str:
    """The file name of an image's page (a hash: image ids may hold any character)."""
    return f"{_key(image_id)}.html"
