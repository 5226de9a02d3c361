import ast
import importlib.util
import re
import shutil
import sys
from pathlib import Path

from workflow_utils import REPO

from insight.core import provenance
from insight.core.settings import MODEL_BUNDLE_KEYS, runtime_keys
from insight.core.variants import DINOISER_TRAINING_KEYS

SCRIPTS = REPO / "workflow/scripts"


def test_closure_follows_imports_transitively():
    closure = provenance.module_closure("insight.features.extract")
    for module in (
        "insight.features.extract",
        "insight.features",  # the parent package runs on import
        "insight.models.dense",
        "insight.models.dinoiser",
        "insight.models.backbone",
        "insight.data.images",
        "insight.core.io",
        "insight.core.runtime",
    ):
        assert module in closure
    assert not any(m.startswith(("insight.demo", "insight.views", "insight.sae")) for m in closure)
    assert provenance.module_closure("insight.core.io") == [
        "insight",
        "insight.core",
        "insight.core.io",
        "insight.core.logs",  # io stamps the job's provenance, set up with the job's log
        "insight.core.provenance",
    ]


def test_script_closures_follow_what_each_script_imports():
    browser = provenance.script_modules(SCRIPTS / "browser.py")
    train_sae = provenance.script_modules(SCRIPTS / "train_sae.py")
    extract = provenance.script_modules(SCRIPTS / "extract_features.py")
    assert "insight.views.browser" in browser
    assert "insight.views.browser" not in train_sae and "insight.demo.world" not in train_sae
    assert "insight.sae.model" in train_sae
    assert "insight.features.extract" in extract
    for script in ("train_dinoiser", "train_clip", "index_images"):
        assert "insight.features.extract" not in provenance.script_modules(SCRIPTS / f"{script}.py")


def test_every_rule_versions_the_script_it_runs():
    """Each rule's ``code`` param hashes its own script's imports: no module list by hand."""
    rules = (REPO / "workflow/rules").glob("*.smk")
    checked = 0
    for path in rules:
        for block in re.split(r"(?m)^\s*(?:rule|checkpoint) ", path.read_text())[1:]:
            script = re.search(r'"\.\./scripts/(\w+)\.py"', block)
            if script is None:
                continue
            assert f'code=script_version("{script.group(1)}")' in block, block.split(":")[0]
            checked += 1
    assert checked == len(list(SCRIPTS.glob("*.py")))


def test_the_package_has_no_import_cycles():
    assert provenance.import_cycles() == []


def _load_copy(root: Path):
    spec = importlib.util.spec_from_file_location(
        "provenance_copy", root / "insight/core/provenance.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["provenance_copy"] = module
    spec.loader.exec_module(module)
    return module


SCRIPTS_CHECKED = ("extract_features", "train_sae", "browser", "demo_images", "index_images")


def _digests_after_edit(tmp_path: Path, module: str, edit) -> tuple[dict, dict]:
    """Each checked script's digest before and after ``edit`` rewrites ``module``'s source."""
    shutil.copytree(
        REPO / "insight", tmp_path / "insight", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    before_module = _load_copy(tmp_path)
    before = {s: before_module.script_digest(tmp_path / f"scripts/{s}.py") for s in SCRIPTS_CHECKED}
    path = tmp_path / module
    path.write_text(edit(path.read_text()))
    after_module = _load_copy(tmp_path)
    after = {s: after_module.script_digest(tmp_path / f"scripts/{s}.py") for s in SCRIPTS_CHECKED}
    return before, after


def test_changing_a_statement_changes_exactly_its_dependants(tmp_path):
    before, after = _digests_after_edit(
        tmp_path, "insight/data/images.py", lambda text: text + "\nEDITED = 1\n"
    )
    changed = {s for s in SCRIPTS_CHECKED if after[s] != before[s]}
    # extraction and the browser decode images; the SAE and the demo's drawing do not
    assert changed == {"extract_features", "index_images", "browser"}


def _comment_docstring_and_format(text: str) -> str:
    """The same code with a new module docstring, a reworded function docstring, a
    comment and different blank lines."""
    first = text.index('"""', 3) + 3  # the end of the module docstring
    text = '"""Rewritten."""' + text[first:]
    function = text.index("\ndef ")
    docstring = text.index('"""', function) + 3
    text = text[:docstring] + "Reworded. " + text[docstring:]
    return text.replace("\ndef ", "\n\n\n# a comment\ndef ", 1) + "\n# edited\n"


def test_comments_docstrings_and_formatting_change_no_digest(tmp_path):
    before, after = _digests_after_edit(
        tmp_path, "insight/sae/model.py", _comment_docstring_and_format
    )
    assert after == before


def test_code_fingerprint_ignores_docstrings_not_strings():
    plain = "def f(x):\n    return x + 1\n"
    documented = 'def f(x):\n    """Add one."""\n    # one more\n    return (x\n        + 1)\n'
    assert provenance.code_fingerprint(plain) == provenance.code_fingerprint(documented)
    only_docstring = 'def f():\n    """Nothing."""\n'
    assert provenance.code_fingerprint(only_docstring) == provenance.code_fingerprint(
        "def f():\n    pass\n"
    )
    # a string that is an expression's value, not a docstring, is code
    assert provenance.code_fingerprint('x = "a"\n') != provenance.code_fingerprint('x = "b"\n')
    assert provenance.code_fingerprint(plain) != provenance.code_fingerprint(
        plain.replace("+ 1", "+ 2")
    )


def test_parquet_outputs_carry_the_jobs_provenance(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from insight import __version__
    from insight.core import provenance
    from insight.core.io import write_parquet

    class Job:  # the parts of the ``snakemake`` object a rule script is given
        params = {"code": "abc123", "gamma": 0.2, "sae": {"k": 12}}
        log = [str(tmp_path / "job.log")]

    try:
        provenance.start_job(Job)
        write_parquet(pa.table({"x": [1]}), tmp_path / "out.parquet")
    finally:
        provenance._JOB_PROVENANCE.clear()
    metadata = pq.read_schema(tmp_path / "out.parquet").metadata
    assert metadata[b"insight.version"] == __version__.encode()
    assert metadata[b"insight.code_version"] == b"abc123"
    expected = provenance.settings_hash({"gamma": 0.2, "sae": {"k": 12}})
    assert metadata[b"insight.settings_hash"] == expected.encode()
    assert expected != provenance.settings_hash({"gamma": 0.3, "sae": {"k": 12}})
    write_parquet(pa.table({"x": [1]}), tmp_path / "plain.parquet")  # outside a job: nothing
    assert b"insight.version" not in (pq.read_schema(tmp_path / "plain.parquet").metadata or {})


def _settings_read(script: Path) -> set[str]:
    """The dotted settings a rule script reads: ``settings.a.b`` chains, and the model
    bundle's keys where it calls ``model_bundle``."""
    read: set[str] = set()
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "model_bundle":
            read.update(MODEL_BUNDLE_KEYS)
        if not isinstance(node, ast.Attribute):
            continue
        chain, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            chain.insert(0, inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id == "settings":
            read.add(".".join(chain))
    # keep the longest chains only (settings.sae.k also walks settings.sae)
    return {key for key in read if not any(o.startswith(f"{key}.") for o in read)}


def _declared(block: str) -> tuple[set[str], set[str]]:
    """The settings a rule block takes as its ``settings`` param, and those it leaves out."""
    match = re.search(r"\n\s+settings=(.*?)\n\s+code=", block, re.S)
    if match is None:
        return set(), set()
    text = match.group(1)
    declared = set(re.findall(r'"([a-z_.]+)"', text))
    if "DINOISER_TRAINING_KEYS" in text:
        declared.update(DINOISER_TRAINING_KEYS)
    if "model_settings(" in text or "MODEL_BUNDLE_KEYS" in text:
        declared.update(MODEL_BUNDLE_KEYS)
    left_out = set()
    if "captioner_settings(" in text:
        declared.add("captioning")
        left_out.add("captioning.steering")
    return declared, left_out


def test_every_setting_a_script_reads_is_a_param_of_its_rule():
    """A rule reruns when its params change, so a script may read only the settings its
    rule takes as params, or ones the schema marks as changing no output."""
    runtime = runtime_keys()
    checked = 0
    for path in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^\s*(?:rule|checkpoint) ", path.read_text())[1:]:
            script = re.search(r'"\.\./scripts/(\w+)\.py"', block)
            if script is None:
                continue
            declared, left_out = _declared(block)
            for key in _settings_read(SCRIPTS / f"{script.group(1)}.py"):
                if any(key == r or key.startswith(f"{r}.") for r in runtime):
                    continue
                assert not any(key.startswith(x) for x in left_out), (block.split(":")[0], key)
                covered = any(
                    key == d or key.startswith(f"{d}.") or d.startswith(f"{key}.") for d in declared
                )
                assert covered, f"rule {block.split(':')[0]} reads {key} but does not take it"
                checked += 1
    assert checked >= 30
