import importlib.util
import shutil
import sys

from insight import provenance


def test_closure_follows_imports_transitively():
    closure = provenance.module_closure("insight.features")
    for module in (
        "insight.features",
        "insight.backbone",
        "insight.dinoiser",
        "insight.images",
        "insight.io",
        "insight.runtime",
    ):
        assert module in closure
    assert "insight.demo" not in closure
    assert provenance.module_closure("insight.io") == ["insight.io"]


def _load_copy(root):
    spec = importlib.util.spec_from_file_location("provenance_copy", root / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["provenance_copy"] = module
    spec.loader.exec_module(module)
    return module


def test_editing_a_module_changes_exactly_its_dependants(tmp_path):
    root = tmp_path / "insight"
    shutil.copytree(provenance.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = _load_copy(root)
    digests = {
        m: before.source_digest(m)
        for m in ("insight.features", "insight.images", "insight.demo", "insight.io")
    }
    with (root / "images.py").open("a") as handle:
        handle.write("\n# an edit\n")
    after = _load_copy(root)
    assert after.source_digest("insight.images") != digests["insight.images"]
    assert after.source_digest("insight.features") != digests["insight.features"]  # imports images
    assert after.source_digest("insight.demo") == digests["insight.demo"]
    assert after.source_digest("insight.io") == digests["insight.io"]
