"""Atomic file output and small Parquet/JSON helpers shared by every stage.

Every output is written under a temporary name in the destination folder and renamed
when complete (``os.replace`` is atomic on POSIX), so a killed job never leaves a file
that looks finished. The finished file or folder gets the permissions the process's
umask gives a new one (0644 / 0755 under umask 022), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _publish(tmp: Path, mode: int) -> None:
    """Give a finished temporary file (0666) or folder (0777) the umask's permissions;
    a folder's contents too, since some writers (safetensors) make their files 0600."""
    mask = current_umask()
    if tmp.is_dir():
        for folder, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666 & ~mask)
    os.chmod(tmp, mode & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            _publish(tmp, 0o666)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def with_provenance(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the current job's provenance added to its metadata (package
    version, the rule's code version, a hash of its settings; nothing outside a job)."""
    from insight.core.provenance import job_provenance

    provenance = job_provenance()
    if not provenance:
        return schema
    return schema.with_metadata(
        {**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in provenance.items()}}
    )


def write_parquet(table: pa.Table, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``table`` to ``path`` atomically (zstd-compressed unless told otherwise), with
    the job's provenance in its schema metadata."""
    kwargs.setdefault("compression", "zstd")
    table = table.replace_schema_metadata(with_provenance(table.schema).metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_safetensors(
    tensors: dict, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Save a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata=metadata,
        )


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a safetensors file, read from its header alone."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def load_safetensors(path: str | os.PathLike[str]) -> tuple[dict, dict[str, str]]:
    """Load ``(tensors, metadata)`` from a safetensors file (no pickle involved)."""
    from safetensors.torch import load_file

    return load_file(str(path)), safetensors_metadata(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it onto ``path`` on success."""
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _publish(tmp, 0o777)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


class RunNotFoundError(FileNotFoundError):
    """A trained run's file is missing: the workflow has not been run far enough."""


def require_run_files(needed: Mapping[str, Path], command: str) -> None:
    """Raise :class:`RunNotFoundError` naming the first missing file of a finished run, what
    it is and how to make it (the ``insight`` commands read runs)."""
    for what, path in needed.items():
        if not Path(path).exists():
            raise RunNotFoundError(
                f"{path} ({what}) is missing: run the workflow first, e.g. "
                f"`snakemake --cores all {path}` with the same config (needed by insight {command})"
            )


def require_new_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder to create: an existing non-empty one is an error, never overwritten."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty: give a new folder")
    return path


def read_label_map(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """A label map (class or part ids, palette or grey PNG) as an integer array, resized
    with nearest neighbour to ``size`` = (height, width) when given; the file is closed."""
    from PIL import Image

    with Image.open(path) as image:
        if size is not None:
            image = image.resize(size[::-1], Image.NEAREST)
        return np.array(image)
