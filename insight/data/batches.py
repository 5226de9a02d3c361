"""Decoding images in batches: open_clip's preprocessing split into a per-image PIL part (decode threads) and a per-batch tensor part (the model's device)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from insight.data.images import (
    DEFAULT_POLICY,
    DecodePolicy,
    ImageRef,
    decode_image,
    iter_bytes,
)


class BatchTransform:
    """open_clip's image preprocessing, split in two: the PIL part (resize, crop, mode)
    runs per image in decode threads and yields uint8 arrays; ``ToTensor`` + ``Normalize``
    run once per batch, on the model's device. The result equals the composed transform
    (up to float rounding) while no torch work, and no oversubscribed torch thread pool,
    runs inside the decode threads, and 4x fewer bytes cross to the GPU.
    """

    def __init__(self, preprocess: Callable):
        steps = list(getattr(preprocess, "transforms", [preprocess]))
        names = [type(step).__name__ for step in steps]
        if not any("ToTensor" in n for n in names):
            raise TypeError(f"unsupported image transform {preprocess!r}: no ToTensor step")
        cut = next(i for i, n in enumerate(names) if "ToTensor" in n)
        tail = steps[cut + 1 :]
        if len(tail) > 1 or (tail and type(tail[0]).__name__ != "Normalize"):
            raise TypeError(
                f"unsupported image transform {preprocess!r}: only Normalize may follow ToTensor"
            )
        self.pil_steps = steps[:cut]
        mean = tail[0].mean if tail else (0.0, 0.0, 0.0)
        std = tail[0].std if tail else (1.0, 1.0, 1.0)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def pil(self, image) -> np.ndarray:
        """Resize/crop/convert one PIL image; returns a writable (H, W, 3) uint8 array."""
        for step in self.pil_steps:
            image = step(image)
        return np.array(image.convert("RGB"), dtype=np.uint8)  # a copy: PIL's view is read-only

    def batch(self, pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 -> normalised ``(B, 3, H, W)`` float32 on ``device``."""
        x = pixels.to(device, non_blocking=True).to(torch.float32, copy=True).div_(255.0)
        x.sub_(self.mean.to(x.device).view(1, 1, 1, 3)).div_(self.std.to(x.device).view(1, 1, 1, 3))
        return x.permute(0, 3, 1, 2)  # the same values and channels-last strides, 2x faster


def _decode_batch(
    items: list[tuple[ImageRef, bytes | None, str | None]],
    transform: BatchTransform,
    pool: ThreadPoolExecutor,
    policy: DecodePolicy,
) -> tuple[list[ImageRef], torch.Tensor | None, list[dict]]:
    """Decode and resize a batch in ``pool``; returns good refs, their uint8 pixels
    ``(B, H, W, 3)`` and the rejected rows."""

    def one(
        item: tuple[ImageRef, bytes | None, str | None],
    ) -> tuple[ImageRef, np.ndarray | None, str | None]:
        ref, data, error = item
        if error is not None:
            return ref, None, error
        image, reason = decode_image(data, policy)
        if image is None:
            return ref, None, reason
        return ref, transform.pil(image), None

    results = list(pool.map(one, items))
    rejected = [
        {
            "image_id": ref.image_id,
            "path": ref.path if ref.member is None else f"{ref.path}:{ref.member}",
            "reason": reason,
        }
        for ref, pixels, reason in results
        if pixels is None
    ]
    good = [(ref, pixels) for ref, pixels, _ in results if pixels is not None]
    if not good:
        return [], None, rejected
    refs, pixels = zip(*good, strict=True)
    return list(refs), torch.from_numpy(np.stack(pixels)), rejected


def _batched(iterable: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prefetched(items: Iterator, work: Callable) -> Iterator:
    """Yield ``work(item)`` for each item, computing the next one in a background thread."""
    with ThreadPoolExecutor(1) as ahead:
        future = None
        for item in items:
            following = ahead.submit(work, item)
            if future is not None:
                yield future.result()
            future = following
        if future is not None:
            yield future.result()


def decoded_batches(
    refs: Sequence[ImageRef],
    transform: BatchTransform,
    batch_size: int,
    policy: DecodePolicy = DEFAULT_POLICY,
    threads: int = 2,
) -> Iterator[tuple[list[ImageRef], torch.Tensor | None, list[dict]]]:
    """Yield ``(good refs, uint8 pixels or None, rejected rows)`` per batch of ``refs``
    (``transform.batch`` turns the pixels into model input).

    Batch i+1 is decoded in background threads while the caller works on batch i.
    """
    with ThreadPoolExecutor(threads) as pool:
        batches = _batched(iter_bytes(refs), batch_size)
        yield from _prefetched(batches, lambda batch: _decode_batch(batch, transform, pool, policy))
