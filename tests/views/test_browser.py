import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import TINY
from PIL import Image

from insight.core.io import write_parquet
from insight.core.settings import section_settings
from insight.hierarchy.families import family_graph
from insight.views.browser import examples
from insight.views.browser.build import build_browser
from insight.views.browser.examples import top_activations
from insight.views.browser.pages import family_svg
from insight.views.browser.queries import ConceptInfo, activation_histograms, concept_infos

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


def build(run, **settings):
    return build_browser(
        run / "names.parquet",
        run / "families.parquet",
        [run / "shard-00000.parquet"],
        run / "index.parquet",
        TINY,
        section_settings(
            "browser",
            {"images_per_concept": 8, "thumbnail_size": 64, "image_pages": 10, **settings},
        ),
        run / "cache",
        run / "browser",
    )


def test_top_activations_rank_images_by_peak_and_keep_their_patches(run):
    top = top_activations([run / "shard-00000.parquet"], per_concept=1).to_pylist()
    assert [(r["concept"], r["image_id"], r["band"], r["peak"]) for r in top] == [
        (0, "plain.png", "top", 3.0),
        (1, EVIL_IMAGE, "top", 4.0),
    ]
    assert top[0]["patches"] == [0, 5] and top[0]["activations"] == [1.0, 3.0]


def test_quantile_bands_take_images_from_lower_ranks(tmp_path):
    """40 images of one concept, peaks 40..1: top 2, then 1 image past the 25%, 50%, 75% ranks."""
    rows = {
        "image_id": [f"img{i:02d}" for i in range(40)],
        "patch": pa.array([0] * 40, pa.int32()),
        "concept": pa.array([0] * 40, pa.int32()),
        "activation": pa.array([40.0 - i for i in range(40)], pa.float32()),
    }
    write_parquet(pa.table(rows), tmp_path / "shard.parquet")
    examples = top_activations([tmp_path / "shard.parquet"], per_concept=2, per_band=1)
    chosen = [(r["band"], r["peak"]) for r in examples.to_pylist()]
    assert chosen == [("top", 40.0), ("top", 39.0), ("q25", 30.0), ("q50", 20.0), ("q75", 10.0)]


def test_histograms_count_activations_in_equal_bins(run):
    histograms = activation_histograms([run / "shard-00000.parquet"], bins=4)
    # concept 0: activations 1, 3, 2, peak 3, bins of width 0.75: 1 -> bin 1, 2 -> 2, 3 -> 3
    assert histograms[0] == (3.0, [0, 1, 1, 1])
    # concept 1: activations 4 and 1, peak 4, bins of width 1: 1 -> bin 1, 4 -> bin 3
    assert histograms[1] == (4.0, [0, 1, 0, 1])
    assert 2 not in histograms


def test_shared_names_are_told_apart_and_dead_concepts_marked(run):
    names = pa.table(
        {
            "concept": pa.array([0, 1, 2], pa.int32()),
            "name": ["sand", "sand", "sky"],
            "group": pa.array([0, 0, 0], pa.int32()),
            "frequency": pa.array([3, 0, 1], pa.int64()),
        }
    )
    infos = concept_infos(names, None)
    assert [i.display for i in infos] == ["sand #0", "sand #1", "sky"]
    assert [i.dead for i in infos] == [False, True, False]


def test_family_drawing_says_how_many_children_it_leaves_out():
    graph = family_graph(
        pa.table(
            {
                "parent": pa.array([0] * 12, pa.int32()),
                "child": pa.array(range(1, 13), pa.int32()),
                "confidence": pa.array([0.8] * 12, pa.float32()),
            }
        )
    )
    infos = {
        c: ConceptInfo(c, f"c{c}", 0, 100 - c, None, [], [], [], display=f"c{c}") for c in range(13)
    }
    svg = family_svg(0, graph, infos, limit=8)
    assert "+4 more" in svg and svg.count('marker-end="url(#arrow)"') == 8
    assert svg.count(">0.80</text>") == 8  # each arrow labelled with its confidence


def test_names_and_paths_are_escaped(run):
    build(run)
    index = (run / "browser/index.html").read_text()
    page = (run / "browser/concepts/1.html").read_text()
    parent = (run / "browser/concepts/0.html").read_text()
    image_pages = [p.read_text() for p in (run / "browser/images").glob("*.html")]
    for html_text in (index, page, parent, *image_pages):
        assert "<script>alert" not in html_text and "onerror=alert(1)>" not in html_text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "a&#39;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_thumbnails_are_cached_not_redrawn(run, monkeypatch):
    counts = build(run)
    assert counts == {"concepts": 3, "images": 3, "thumbnails": 3, "image_pages": 2}
    cached = sorted((run / "cache").glob("*.jpg"))
    assert len(cached) == 3 and len(list((run / "browser/assets/thumbs").glob("*.jpg"))) == 3

    def no_drawing(*args, **kwargs):
        raise AssertionError("a cached thumbnail was drawn again")

    monkeypatch.setattr("insight.views.browser.thumbnails.overlay", no_drawing)
    assert build(run) == counts
    assert sorted((run / "cache").glob("*.jpg")) == cached


@pytest.mark.browser
def test_browser_search_toggle_and_image_page_in_chromium(run, chromium, tmp_path):
    build(run)
    page, errors = chromium
    page.goto((run / "browser/index.html").as_uri())
    rows = page.locator("#concepts tbody tr:visible")
    assert rows.count() == 2 and page.inner_text("#count") == "2 of 3 concepts"  # 2 never fires
    page.check("#show-dead")
    assert rows.count() == 3
    assert EVIL in page.locator("#concepts").inner_text()  # shown as text, not run
    page.fill("#search", "anim")
    assert rows.count() == 1 and page.inner_text("#count") == "1 of 3 concepts"
    page.fill("#search", "2")  # by id
    assert rows.count() == 1 and "concept 2" in rows.first.inner_text()
    page.fill("#search", "")
    page.click("th:has-text('frequency')")
    page.click("th:has-text('frequency')")  # descending
    assert page.locator("#concepts tbody tr td:nth-child(3)").first.inner_text() == "animal"
    page.goto((run / "browser/concepts/1.html").as_uri())
    assert page.locator("h1").inner_text() == EVIL
    assert page.locator("#histogram rect").count() > 0
    widths = page.eval_on_selector_all(".images img", "images => images.map(i => i.naturalWidth)")
    assert widths == [64]
    page.locator(".images a").first.click()
    page.wait_for_load_state("load")
    # patch 1 of the evil image (row 0, column 1 of its 14 x 14 grid): concept 1 at 4.0
    box = page.locator("#grid").bounding_box()
    cell = box["width"] / 14
    page.mouse.click(box["x"] + 1.5 * cell, box["y"] + 0.5 * cell)
    listed = page.eval_on_selector_all(
        "#patch-concepts tbody tr",
        "rows => rows.map(r => [Number(r.dataset.concept), Number(r.dataset.activation)])",
    )
    assert listed == [[1, 4.0]]
    page.screenshot(path=str(tmp_path / "image.png"))
    assert errors == []


def test_direct_edges_by_default_implied_ones_toggled_evidence_on_hover_dense_badged(tmp_path):
    """0 -> 1 -> 2 with the implied 0 -> 2: concept 0's page lists 1 as its child and 2
    under the implied edges, concept 2's family figure draws 0 -> 2 dashed in the group
    the toggle shows,
    every arrow carries its evidence as an SVG title; concept 0 (coverage 0.8) is badged
    dense in the index and on its page, concept 1 (0.1) is not."""
    from insight.views.browser.pages import write_browser

    families = pa.table(
        {
            "parent": pa.array([0, 0, 1], pa.int32()),
            "child": pa.array([1, 2, 2], pa.int32()),
            "confidence": pa.array([0.9, 0.8, 0.95], pa.float32()),
            "baseline": pa.array([0.1, 0.2, 0.3], pa.float32()),
            "lower_bound": pa.array([0.85, 0.7, 0.9], pa.float32()),
            "lift": pa.array([0.83, 0.62, 0.86], pa.float32()),
            "images": pa.array([40, 30, 35], pa.int32()),
            "direct": [True, False, True],
            "replicates": [True, False, True],
        }
    )
    names = pa.table(
        {
            "concept": pa.array([0, 1, 2], pa.int32()),
            "name": ["thing", "car", "wheel"],
            "group": pa.array([0, 0, 1], pa.int32()),
            "frequency": pa.array([90, 40, 20], pa.int64()),
        }
    )
    totals = pa.table({"concept": pa.array([0, 1, 2], pa.int32()), "coverage": [0.8, 0.1, 0.05]})
    infos = concept_infos(names, families, totals, dense_coverage=0.5)
    assert (infos[0].children, infos[0].implied_children) == ([1], [2])
    assert (infos[2].parents, infos[2].implied_parents) == ([1], [0])
    assert [i.dense for i in infos] == [True, False, False]
    empty = pa.table(
        {
            "concept": pa.array([], pa.int32()),
            "image_id": pa.array([], pa.string()),
            "band": pa.array([], pa.string()),
            "peak": pa.array([], pa.float32()),
        }
    )
    write_browser(infos, empty, {}, families, tmp_path / "browser")
    page = (tmp_path / "browser/concepts/0.html").read_text()
    assert 'class="badge"' in page and "implied children: <a" in page
    assert (
        "<title>D 0.90 · D0 0.10 · H 0.83 · bound 0.85 · 40 images · replicates on both halves</title>"
        in page
    )
    grandchild = (tmp_path / "browser/concepts/2.html").read_text()  # 0 above 1 above 2
    assert grandchild.count('<g class="edge">') == 2
    assert grandchild.count('<g class="edge implied">') == 1
    assert 'stroke-dasharray="4 3"' in grandchild and 'id="show-implied"' in grandchild
    index = (tmp_path / "browser/index.html").read_text()
    assert index.count('<span class="badge">dense</span>') == 1
    assert 'data-search="0 thing dense"' in index  # "dense" finds the dense concepts


def _random_shards(folder, shards, images_per_shard, m, seed=0, levels=None):
    """Concept shards of whole images: each patch fires a few random concepts; with
    ``levels`` the activations take that many values, so peaks tie."""
    rng = np.random.default_rng(seed)
    paths = []
    for shard in range(shards):
        image = np.repeat(np.arange(images_per_shard), 20)
        patch = np.tile(np.arange(20), images_per_shard)
        rows = np.repeat(np.arange(len(image)), 3)
        concept = rng.integers(0, m, len(rows))
        activation = rng.random(len(rows), dtype=np.float32) + 0.01
        if levels:
            activation = np.ceil(activation * levels).astype(np.float32)
        table = (
            pa.table(
                {
                    "image_id": [f"s{shard}-i{i:04d}" for i in image[rows]],
                    "patch": pa.array(patch[rows], pa.int32()),
                    "concept": pa.array(concept, pa.int32()),
                    "activation": pa.array(activation, pa.float32()),
                }
            )
            .group_by(["image_id", "patch", "concept"])
            .aggregate([("activation", "max")])
            .rename_columns(["image_id", "patch", "concept", "activation"])
        )
        paths.append(folder / f"shard-{shard:05d}.parquet")
        write_parquet(table, paths[-1])
    return paths


def _priority(concept: int, image_id: str) -> int:
    """The documented tie-break of equal peaks, in Python integers: splitmix64's finaliser
    of blake2b-8(image) xor concept * 0x9E3779B97F4A7C15."""
    mask = (1 << 64) - 1
    x = int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little")
    x ^= (concept * 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


def _examples_in_memory(files, per_concept, per_band):
    """The examples as one DuckDB query over every row at once (ranks by peak, then the
    tie-break hash)."""
    import duckdb

    connection = duckdb.connect()
    connection.execute(
        f"create table rows as select * from read_parquet({[str(f) for f in files]})"
    )
    per_image = connection.sql(
        "select concept, image_id, max(activation) as peak from rows group by all"
    ).to_arrow_table()
    priorities = [
        _priority(c, i)
        for c, i in zip(
            per_image["concept"].to_pylist(), per_image["image_id"].to_pylist(), strict=True
        )
    ]
    per_image = per_image.append_column("priority", pa.array(priorities, pa.uint64()))
    connection.register("per_image", per_image)
    bands = " ".join(
        f"when rank > {per_concept} and rank > floor(n * {q}) and rank <= floor(n * {q}) + {per_band} then '{band}'"
        for band, _, q in (("q25", "", 0.25), ("q50", "", 0.5), ("q75", "", 0.75))
    )
    return connection.sql(
        f"""
        with ranked as (
            select *, row_number() over (partition by concept order by peak desc, priority) as rank,
                   count(*) over (partition by concept) as n from per_image
        ),
        chosen as (
            select *, case when rank <= {per_concept} then 'top' {bands} end as band from ranked
        )
        select c.concept, c.image_id, any_value(c.band) as band, any_value(c.peak) as peak,
               list(r.patch order by r.patch) as patches,
               list(r.activation order by r.patch) as activations
        from chosen c join rows r using (concept, image_id) where c.band is not null
        group by c.concept, c.image_id order by c.concept, any_value(c.rank)
        """
    ).fetchall()


def test_streamed_examples_equal_the_in_memory_query_with_ties(tmp_path):
    """Shard by shard, with tied peaks: the same images, bands, order and patch lists as
    ranking every row at once, while every concept has fewer images than the sample."""
    files = _random_shards(tmp_path, shards=4, images_per_shard=30, m=12, levels=5)
    streamed = top_activations(files, per_concept=3, per_band=2)
    rows = [tuple(r.values()) for r in streamed.to_pylist()]
    assert rows == [tuple(r) for r in _examples_in_memory(files, 3, 2)]
    assert {r[2] for r in rows} == {"top", "q25", "q50", "q75"}


def test_band_sample_is_the_same_for_any_sharding_and_near_the_true_ranks(tmp_path, monkeypatch):
    """Concepts on more images than the sample: the bands come from a sample drawn by
    hash, so one shard or several give the same examples, each within a few percent of
    its band's rank among all the concept's images."""
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir(), many.mkdir()
    files = _random_shards(many, shards=6, images_per_shard=200, m=4)
    merged = pa.concat_tables(pq.read_table(f) for f in files)
    write_parquet(merged, one / "shard-00000.parquet")
    kwargs = {"per_concept": 2, "per_band": 1, "sample": 150}
    streamed = top_activations(files, **kwargs)
    assert streamed.equals(top_activations([one / "shard-00000.parquet"], **kwargs))
    monkeypatch.setattr(examples, "COMPACT_ROWS", 100)  # cut back after every shard
    assert streamed.equals(top_activations(files, **kwargs))
    exact = {(r[0], r[1]): r[2] for r in _examples_in_memory(files, per_concept=2, per_band=10_000)}
    peaks = merged.group_by(["concept", "image_id"]).aggregate([("activation", "max")])
    for row in streamed.to_pylist():
        concept = peaks.filter(pc.equal(peaks["concept"], row["concept"]))
        higher = pc.sum(pc.greater(concept["activation_max"], row["peak"])).as_py()
        share = (higher + 1) / concept.num_rows
        if row["band"] == "top":
            assert exact[(row["concept"], row["image_id"])] == "top"
        else:
            assert abs(share - {"q25": 0.25, "q50": 0.5, "q75": 0.75}[row["band"]]) < 0.1


def test_streamed_histograms_equal_a_numpy_count(tmp_path):
    files = _random_shards(tmp_path, shards=3, images_per_shard=20, m=6)
    rows = pa.concat_tables(pq.read_table(f) for f in files)
    concept, activation = rows["concept"].to_numpy(), rows["activation"].to_numpy()
    histograms = activation_histograms(files, bins=5)
    assert sorted(histograms) == sorted(set(concept.tolist()))
    for c, (peak, counts) in histograms.items():
        mine = activation[concept == c]
        assert peak == mine.max()
        expected = np.minimum((mine / mine.max() * np.float32(5)).astype(int), 4)
        assert counts == np.bincount(expected, minlength=5).tolist()
