"""Code versions of the library stages, so Snakemake reruns a stage when its code changes.

Snakemake sees a rule's own script but not the ``insight`` modules that script imports.
Each rule therefore gets a ``code`` param from :func:`source_digest`: a hash of the
source of the named modules *and every insight module they import, transitively*.
Editing ``insight/sae.py`` changes the digest of the SAE stages and of nothing that
does not import it; Snakemake's ``params`` rerun trigger does the rest.

This module must stay cheap to import (no torch): the Snakefile imports it.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE = PACKAGE_ROOT.name


def module_path(module: str) -> Path:
    """File of an ``insight`` module given as ``insight.x`` or ``x``."""
    parts = module.split(".")
    if parts[0] == PACKAGE:
        parts = parts[1:]
    base = PACKAGE_ROOT.joinpath(*parts)
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    raise ModuleNotFoundError(f"no module {module!r} in {PACKAGE_ROOT}")


@cache
def _local_imports(module: str) -> tuple[str, ...]:
    """Names of insight modules imported by ``module`` (absolute and relative imports)."""
    path = module_path(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                base = node.module or ""
                name = f"{PACKAGE}.{base}" if base else PACKAGE
            elif node.module and node.module.split(".")[0] == PACKAGE:
                name = node.module
            else:
                continue
            found.add(name)
            for alias in node.names:  # "from insight import sae" imports a module
                candidate = f"{name}.{alias.name}"
                try:
                    module_path(candidate)
                except ModuleNotFoundError:
                    continue
                found.add(candidate)
    return tuple(sorted(found - {module}))


def module_closure(*modules: str) -> list[str]:
    """The modules and all insight modules they import, transitively, sorted."""
    seen: set[str] = set()
    stack = [m if m.startswith(PACKAGE) else f"{PACKAGE}.{m}" for m in modules]
    while stack:
        mod = stack.pop()
        if mod in seen:
            continue
        seen.add(mod)
        stack.extend(_local_imports(mod))
    return sorted(seen)


def source_digest(*modules: str) -> str:
    """A short hash of the source of ``modules`` and their insight imports."""
    digest = hashlib.sha256()
    for mod in module_closure(*modules):
        digest.update(mod.encode())
        digest.update(module_path(mod).read_bytes())
    return digest.hexdigest()[:16]
