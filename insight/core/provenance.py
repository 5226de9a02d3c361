"""Code versions of the workflow's rules, so Snakemake reruns exactly the stale stages.

Snakemake sees a rule's own script but not the ``insight`` modules that script imports.
Each rule therefore gets a ``code`` param, :func:`script_digest` of its script: a hash of
the script's ``insight`` imports *and every insight module they import, transitively*
(parent packages' ``__init__`` included, since Python runs them). What is hashed is each
module's syntax tree without its docstrings (:func:`code_fingerprint`), not its bytes: a
comment, a docstring or a reformatting changes no digest, while any changed statement
changes the digest of every rule whose script reaches it and of nothing else; Snakemake's
``params`` rerun trigger does the rest.

This module must stay cheap to import (no torch): the Snakefile imports it.
"""

from __future__ import annotations

import ast
import hashlib
import logging
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = PACKAGE_ROOT.name


def module_path(module: str) -> Path:
    """File of an ``insight`` module given as ``insight.a.b`` or ``a.b``."""
    parts = module.split(".")
    if parts[0] == PACKAGE:
        parts = parts[1:]
    base = PACKAGE_ROOT.joinpath(*parts)
    if parts and base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    raise ModuleNotFoundError(f"no module {module!r} in {PACKAGE_ROOT}")


def _is_module(name: str) -> bool:
    try:
        module_path(name)
    except ModuleNotFoundError:
        return False
    return True


def _with_parents(name: str) -> set[str]:
    """``insight.a.b`` -> {insight, insight.a, insight.a.b}: Python runs each on import."""
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def imports_of_source(source: str, filename: str, package: str | None = None) -> set[str]:
    """Names of the insight modules a piece of source imports (absolute imports, and
    relative ones resolved against ``package``), anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            if package is None:
                continue
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            name = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.split(".")[0] == PACKAGE:
            name = node.module
        else:
            continue
        found.add(name)
        for alias in node.names:  # "from insight.sae import model" imports a module
            if _is_module(f"{name}.{alias.name}"):
                found.add(f"{name}.{alias.name}")
    modules: set[str] = set()
    for name in found:
        modules |= {m for m in _with_parents(name) if _is_module(m)}
    return modules


@cache
def _local_imports(module: str) -> tuple[str, ...]:
    """Names of the insight modules ``module`` imports."""
    path = module_path(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = imports_of_source(path.read_text(), str(path), package)
    return tuple(sorted(found - {module}))


def module_closure(*modules: str) -> list[str]:
    """The modules and all insight modules they import, transitively, sorted."""
    seen: set[str] = set()
    named = [m if m.split(".")[0] == PACKAGE else f"{PACKAGE}.{m}" for m in modules]
    stack = [p for m in named for p in _with_parents(m) if _is_module(p)]
    while stack:
        mod = stack.pop()
        if mod in seen:
            continue
        seen.add(mod)
        stack.extend(_local_imports(mod))
    return sorted(seen)


def script_modules(script: str | Path) -> list[str]:
    """The insight modules a workflow script runs: its imports, transitively."""
    path = Path(script)
    return module_closure(*imports_of_source(path.read_text(), str(path)))


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def code_fingerprint(source: str, filename: str = "<source>") -> str:
    """The statements of ``source`` as text: its syntax tree without docstrings, line
    numbers, comments or formatting (two sources that run alike give the same text)."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        if not isinstance(node, _DOCUMENTED) or not node.body:
            continue
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@cache
def _module_fingerprint(module: str) -> str:
    path = module_path(module)
    return code_fingerprint(path.read_text(), str(path))


def source_digest(*modules: str) -> str:
    """A short hash of the code of ``modules`` and their insight imports
    (:func:`code_fingerprint` of each, so comments and docstrings do not count)."""
    digest = hashlib.sha256()
    for mod in module_closure(*modules):
        digest.update(mod.encode())
        digest.update(_module_fingerprint(mod).encode())
    return digest.hexdigest()[:16]


def script_digest(script: str | Path) -> str:
    """A short hash of the insight code a workflow script runs (not the script itself,
    which Snakemake's ``code`` trigger already follows)."""
    return source_digest(*imports_of_source(Path(script).read_text(), str(script)))


def import_cycles() -> list[list[str]]:
    """Cycles in the module import graph of the package (empty when there are none)."""
    modules = [
        ".".join((PACKAGE, *p.relative_to(PACKAGE_ROOT).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in sorted(PACKAGE_ROOT.rglob("*.py"))
    ]
    graph = {m: _local_imports(m) for m in modules}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in modules:
        if module not in state:
            visit(module, [module])
    return cycles


# ----- the provenance a job stamps on its Parquet outputs --------------------------------

_JOB_PROVENANCE: dict[str, str] = {}


def settings_hash(settings: object) -> str:
    """A short, stable hash of a job's settings (its params, as JSON with sorted keys)."""
    import json

    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def set_job_provenance(code_version: str | None, settings: object) -> None:
    """Record what every Parquet file this job writes carries in its schema metadata:
    the package version, the rule's code version and a hash of its settings."""
    from insight import __version__

    _JOB_PROVENANCE.clear()
    _JOB_PROVENANCE.update(
        {
            "insight.version": __version__,
            "insight.code_version": code_version or "",
            "insight.settings_hash": settings_hash(settings),
        }
    )


def job_provenance() -> dict[str, str]:
    """The current job's provenance keys (empty outside a workflow job)."""
    return dict(_JOB_PROVENANCE)


def start_job(job) -> logging.Logger:
    """Set up a rule script: its log file (:func:`insight.core.logs.setup_logging`) and the
    provenance of its outputs, from the ``snakemake`` object the script is given."""
    from insight.core.logs import setup_logging

    params = dict(job.params.items())
    set_job_provenance(params.pop("code", None), params)
    return setup_logging(job.log[0] if job.log else None)
