import numpy as np
import pyarrow as pa
import pytest
from conftest import TINY
from PIL import Image

from insight.core.io import write_parquet
from insight.views.browser import build_browser, top_activations

EVIL = "<script>alert('name')</script>"
EVIL_IMAGE = "a'><img src=x onerror=alert(1)>.png"


@pytest.fixture
def run(tmp_path):
    """Three concepts (one named with a script tag), a family, concept shards, images."""
    images = tmp_path / "images"
    images.mkdir()
    ids = ["plain.png", EVIL_IMAGE]
    rng = np.random.default_rng(0)
    for image_id in ids:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(images / image_id)
    index = pa.table(
        {
            "image_id": ids,
            "path": [str(images / i) for i in ids],
            "member": pa.array([None, None], pa.string()),
            "shard": pa.array([0, 0], pa.int32()),
        }
    )
    write_parquet(index, tmp_path / "index.parquet")
    names = pa.table(
        {
            "concept": pa.array([0, 1, 2], pa.int32()),
            "name": ["animal", EVIL, None],
            "score": pa.array([0.3, 0.2, None], pa.float32()),
            "runner_up": [["beast"], ["<b>bold</b>"], []],
            "group": pa.array([0, 1, 1], pa.int32()),
            "frequency": pa.array([30, 5, 0], pa.int64()),
        }
    )
    write_parquet(names, tmp_path / "names.parquet")
    families = pa.table(
        {
            "parent": pa.array([0], pa.int32()),
            "child": pa.array([1], pa.int32()),
            "confidence": pa.array([0.9], pa.float32()),
        }
    )
    write_parquet(families, tmp_path / "families.parquet")
    concepts = pa.table(
        {
            "image_id": ["plain.png", "plain.png", EVIL_IMAGE, EVIL_IMAGE, EVIL_IMAGE],
            "patch": pa.array([0, 5, 0, 1, 195], pa.int32()),
            "concept": pa.array([0, 0, 0, 1, 1], pa.int32()),
            "activation": pa.array([1.0, 3.0, 2.0, 4.0, 1.0], pa.float32()),
        }
    ).replace_schema_metadata({"insight.grid": "14,14", "insight.d_sae": "3"})
    write_parquet(concepts, tmp_path / "shard-00000.parquet")
    return tmp_path


def build(run):
    return build_browser(
        run / "names.parquet",
        run / "families.parquet",
        [run / "shard-00000.parquet"],
        run / "index.parquet",
        TINY,
        {"images_per_concept": 8, "thumbnail_size": 64},
        run / "cache",
        run / "browser",
    )


def test_top_activations_rank_images_by_peak_and_keep_their_patches(run):
    top = top_activations([run / "shard-00000.parquet"], per_concept=1).to_pylist()
    assert [(r["concept"], r["image_id"], r["peak"]) for r in top] == [
        (0, "plain.png", 3.0),
        (1, EVIL_IMAGE, 4.0),
    ]
    assert top[0]["patches"] == [0, 5] and top[0]["activations"] == [1.0, 3.0]


def test_names_and_paths_are_escaped(run):
    build(run)
    index = (run / "browser/index.html").read_text()
    page = (run / "browser/concepts/1.html").read_text()
    parent = (run / "browser/concepts/0.html").read_text()
    for html_text in (index, page, parent):
        assert "<script>alert" not in html_text and "onerror=alert(1)>" not in html_text
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "a&#x27;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_thumbnails_are_cached_not_redrawn(run, monkeypatch):
    counts = build(run)
    assert counts == {"concepts": 3, "images": 3, "thumbnails": 3}
    cached = sorted((run / "cache").glob("*.jpg"))
    assert len(cached) == 3 and len(list((run / "browser/assets/thumbs").glob("*.jpg"))) == 3

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached thumbnail was drawn again")

    monkeypatch.setattr("insight.views.browser.overlay", no_drawing)
    assert build(run) == counts
    assert sorted((run / "cache").glob("*.jpg")) == cached


@pytest.mark.browser
def test_browser_search_and_script_name_in_chromium(run, chromium, tmp_path):
    build(run)
    page, errors = chromium
    page.goto((run / "browser/index.html").as_uri())
    rows = page.locator("#concepts tbody tr:visible")
    assert rows.count() == 3
    assert EVIL in page.locator("#concepts").inner_text()  # shown as text, not run
    page.fill("#search", "anim")
    assert rows.count() == 1 and page.inner_text("#count") == "1 of 3 concepts"
    page.fill("#search", "")
    page.click("th:has-text('frequency')")
    page.click("th:has-text('frequency')")  # descending
    assert page.locator("#concepts tbody tr td:nth-child(2)").first.inner_text() == "animal"
    page.goto((run / "browser/concepts/1.html").as_uri())
    assert page.locator("h1").inner_text() == EVIL
    widths = page.eval_on_selector_all(".images img", "images => images.map(i => i.naturalWidth)")
    assert widths == [64]
    page.screenshot(path=str(tmp_path / "concept.png"))
    assert errors == []
