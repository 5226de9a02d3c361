import importlib.util
import re
import shutil
import sys
from pathlib import Path

from workflow_utils import REPO

from insight.core import provenance

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


def test_editing_a_module_changes_exactly_its_dependants(tmp_path):
    shutil.copytree(
        REPO / "insight", tmp_path / "insight", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    scripts = ("extract_features", "train_sae", "browser", "demo_images", "index_images")
    before = {s: _load_copy(tmp_path).script_digest(tmp_path / f"scripts/{s}.py") for s in scripts}
    with (tmp_path / "insight/data/images.py").open("a") as handle:
        handle.write("\n# an edit\n")
    after_module = _load_copy(tmp_path)
    after = {s: after_module.script_digest(tmp_path / f"scripts/{s}.py") for s in scripts}
    changed = {s for s in scripts if after[s] != before[s]}
    # extraction and the browser decode images; the SAE and the demo's drawing do not
    assert changed == {"extract_features", "index_images", "browser"}


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
