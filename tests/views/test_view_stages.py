"""Loading a finished run for the ``insight`` commands, and the views built on it."""

import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from insight.core.io import RunNotFoundError
from insight.views.browser.build import build_browser
from insight.views.explain import explain_image_file
from insight.views.run import load_trained_run


def test_load_trained_run_names_the_missing_file_and_the_command(tiny_run, tmp_path):
    with pytest.raises(
        RunNotFoundError, match=r"models/sae.safetensors \(sae\) is missing.*snakemake"
    ):
        load_trained_run(tiny_run.cfg, tmp_path, "explain")
    run = load_trained_run(tiny_run.cfg, tiny_run.results, "explain")
    assert run.sae.config.d_sae == 32 and run.names.num_rows == 32
    assert run.families is not None and run.models.encoder.dinoiser is not None


def test_explain_image_file_with_and_without_a_label(tiny_run, tmp_path):
    image = tiny_run.refs[0].path
    explanation, png, json_path = explain_image_file(
        image, tiny_run.cfg, tiny_run.results, tmp_path, label="house", top=3
    )
    assert explanation["label"] == "house" and png.exists()
    assert json.loads(json_path.read_text())["label"] == "house"
    assert len(explanation["concepts"]) <= 3
    best, _, _ = explain_image_file(image, tiny_run.cfg, tiny_run.results, tmp_path / "best")
    terms = pq.read_table(tiny_run.results / "vocabulary/terms.parquet").to_pylist()
    concrete = {t["term"] for t in terms if t["sources"] != ["wordfreq"]}
    assert best["label"] in concrete  # never a word-frequency-only term
    assert best["waterfall"][-1]["end"] == pytest.approx(best["score"], abs=1e-4)


def test_a_file_that_is_not_an_image_is_one_clear_error(tiny_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes.txt: not an image"):
        explain_image_file(notes, tiny_run.cfg, tiny_run.results, tmp_path, label="house")


def test_build_browser_pages_and_thumbnails(tiny_run, tmp_path):
    counts = build_browser(
        tiny_run.results / "naming/names.parquet",
        tiny_run.results / "hierarchy/families.parquet",
        [tiny_run.results / "concepts/demo/shard-00000.parquet"],
        tiny_run.results / "images/demo/index.parquet",
        tiny_run.frozen.backbone,
        dataclasses.replace(tiny_run.cfg.browser, images_per_concept=2),
        tmp_path / "cache",
        tmp_path / "browser",
    )
    assert counts["concepts"] == 32 and counts["thumbnails"] > 0
    assert (tmp_path / "browser/index.html").exists()
