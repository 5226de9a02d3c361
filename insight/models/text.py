"""CLIP text encoding that never repeats work (App. B.4).

- The context is cut to the longest prompt in the batch. open_clip's text tower is
  causal and pools at the end-of-text token, so the padding after it cannot change
  the result: the embeddings equal ``encode_text`` on full 77-token contexts (to float
  rounding), at a fraction of the cost for short prompts.
- Prompts are encoded in batches sorted by length, so a batch wastes little padding.
- A content-addressed cache (:class:`EmbeddingCache`) keyed by model and prompt (the
  prompt is the template filled with the term) means a term is only ever encoded once
  per model: adding 100 words encodes 100 words' prompts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from insight.core.io import write_parquet
from insight.core.runtime import DTYPES
from insight.models.backbone import (
    RANDOM_INIT_SEED,
    BackboneSpec,
)


def model_key(spec: BackboneSpec) -> str:
    """What identifies a text tower for the embedding cache (a local checkpoint by content)."""
    if spec.checkpoint:
        digest = hashlib.sha256()
        with open(spec.checkpoint, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        return f"{spec.model}/sha256:{digest.hexdigest()}"
    return f"{spec.model}/{spec.pretrained or f'random-init-{RANDOM_INIT_SEED}'}"


def cached_text_encoder(
    model,
    tokenizer,
    spec: BackboneSpec,
    cache_dir: str | Path,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 256,
) -> TextEncoder:
    """A text encoder over the shared prompt cache of this model (one folder per model key)."""
    key = model_key(spec)
    cache = EmbeddingCache(Path(cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:16], key)
    return TextEncoder(model, tokenizer, key, device, precision, batch_size, cache)


log = logging.getLogger(__name__)


def can_cut_context(model: nn.Module) -> bool:
    """True for open_clip CLIP text towers with a causal mask and token pooling."""
    return (
        hasattr(model, "token_embedding")
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") in ("argmax", "eos", "first")
    )


def encode_text_cut(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` with the context cut after the last non-padding token
    of the batch (padding id 0). Falls back to the full context when the tower is not
    causal or pools at the last position."""
    if not can_cut_context(model):
        return model.encode_text(tokens)
    length = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    from open_clip.transformer import text_global_pool

    x = text_global_pool(
        x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
    )
    if model.text_projection is not None:
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, nn.Linear)
            else x @ model.text_projection
        )
    return x


class EmbeddingCache:
    """Prompt embeddings of one model on disk: Parquet parts of (key, embedding), where the
    key is sha1(model key + prompt). New entries go to a new part; nothing is rewritten.

    Only the keys live in memory, as a sorted array of their 20-byte digests beside each
    one's part and row (28 bytes a prompt: 84 MB for the paper's vocabulary of about 3M
    prompts, whose embeddings take 6 GB); :meth:`get` reads just the row groups that hold
    the requested rows, so encoding a few prompts against a large cache costs megabytes.
    """

    ROW_GROUP = 512

    def __init__(self, folder: str | Path, model_key: str):
        self.folder = Path(folder)
        self.model_key = model_key
        self.parts: list[Path] = []
        self.digests = np.zeros(0, DIGEST)  # sorted
        self.places = np.zeros((0, 2), np.int32)  # (part, row) of each digest
        for part in sorted(self.folder.glob("part-*.parquet")):
            self._index(pq.read_table(part, columns=["key"])["key"].to_pylist())
            self.parts.append(part)
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.digests)

    def key(self, prompt: str) -> str:
        return hashlib.sha1(f"{self.model_key}\x00{prompt}".encode()).hexdigest()

    def _index(self, keys: Sequence[str]) -> None:
        """Merge the keys of the part about to be ``self.parts[len(self.parts)]``."""
        digests = _digests(keys)
        order = np.argsort(digests, kind="stable")
        places = np.stack(
            [np.full(len(keys), len(self.parts), np.int32), np.arange(len(keys), dtype=np.int32)],
            axis=1,
        )
        at = np.searchsorted(self.digests, digests[order])
        self.digests = np.insert(self.digests, at, digests[order])
        self.places = np.insert(self.places, at, places[order], axis=0)

    def locate(self, keys: Sequence[str]) -> np.ndarray:
        """(part, row) of each key, (-1, -1) where it is not cached."""
        digests = _digests(keys)
        at = np.minimum(np.searchsorted(self.digests, digests), max(len(self.digests) - 1, 0))
        found = self.digests[at] == digests if len(self.digests) else np.zeros(len(keys), bool)
        places = np.full((len(keys), 2), -1, np.int32)
        places[found] = self.places[at[found]]
        return places

    def __contains__(self, key: str) -> bool:
        return bool(self.locate([key])[0, 0] >= 0)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """The cached embeddings (n, d) of ``keys``, in order (all must be cached)."""
        places = self.locate(keys)
        if len(keys) and places[:, 0].min() < 0:
            raise KeyError(f"not in the prompt cache: {keys[int(np.argmin(places[:, 0]))]}")
        out: np.ndarray | None = None
        for number in np.unique(places[:, 0]):
            positions = np.flatnonzero(places[:, 0] == number)
            rows = places[positions, 1]
            handle = pq.ParquetFile(self.parts[number])
            sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.num_row_groups)]
            starts = np.cumsum([0, *sizes])
            group = np.searchsorted(starts, rows, side="right") - 1
            groups = np.unique(group)
            column = handle.read_row_groups(groups.tolist(), columns=["embedding"])["embedding"]
            vectors = np.stack(column.to_numpy(zero_copy_only=False))
            first = np.cumsum([0, *(sizes[g] for g in groups)])[np.searchsorted(groups, group)]
            if out is None:
                out = np.empty((len(keys), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors[first + rows - starts[group]]
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def add(self, prompts: Sequence[str], vectors: np.ndarray) -> None:
        if not len(prompts):
            return
        keys = [self.key(p) for p in prompts]
        path = self.folder / f"part-{len(self.parts):05d}.parquet"
        d = vectors.shape[1]
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.astype(np.float32).reshape(-1)), d
                ),
            }
        )
        write_parquet(table, path, row_group_size=self.ROW_GROUP)
        self._index(keys)
        self.parts.append(path)


DIGEST = np.dtype("V20")  # a sha1 digest; compared bytewise, no trailing bytes dropped
NIBBLE = np.zeros(256, np.uint8)
NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def _digests(keys: Sequence[str]) -> np.ndarray:
    """The 20-byte digests of 40-character hexadecimal sha1 keys, without a Python object
    per key."""
    text = np.frombuffer("".join(keys).encode("ascii"), np.uint8).reshape(len(keys), 40)
    nibbles = NIBBLE[text]
    return np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(DIGEST).ravel()


class TextEncoder:
    """Encode prompts with an open_clip model: sorted batches, cut context, cache."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable,
        model_key: str,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        batch_size: int = 256,
        cache: EmbeddingCache | None = None,
    ):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.model_key = model_key
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        if precision != "fp32":
            self.model = self.model.to(self.dtype)
        self.batch_size = batch_size
        self.cache = cache
        self.encoded = 0

    @torch.no_grad()
    def _encode_uncached(
        self, prompts: Sequence[str], progress: Callable[[int], None] | None
    ) -> np.ndarray:
        tokens = self.tokenizer(list(prompts))
        lengths = (tokens != 0).sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        out: np.ndarray | None = None
        for start in range(0, len(prompts), self.batch_size):
            idx = order[start : start + self.batch_size].numpy()
            features = (
                encode_text_cut(self.model, tokens[idx].to(self.device)).float().cpu().numpy()
            )
            if out is None:
                out = np.empty((len(prompts), features.shape[1]), dtype=np.float32)
            out[idx] = features
            if progress is not None:
                progress(len(idx))
        self.encoded += len(prompts)
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def encode(
        self, prompts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embeddings (n, d) of ``prompts`` (not normalised); cached ones are not re-encoded."""
        if self.cache is None:
            return self._encode_uncached(prompts, progress)
        keys = [self.cache.key(p) for p in prompts]
        hit = self.cache.locate(keys)[:, 0] >= 0
        missing = sorted({p for p, known in zip(prompts, hit, strict=True) if not known})
        self.cache.hits += len(prompts) - len(missing)
        self.cache.misses += len(missing)
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = self._encode_uncached(missing, progress)
            self.cache.add(missing, vectors)
            fresh = dict(zip((self.cache.key(p) for p in missing), vectors, strict=True))
        cached = [k for k in dict.fromkeys(keys) if k not in fresh]
        found = dict(zip(cached, self.cache.get(cached), strict=True)) if cached else {}
        found.update(fresh)
        return np.stack([found[k] for k in keys]).astype(np.float32)
