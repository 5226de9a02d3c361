"""The task stages' entry points on the toy run: OVS, interpretability, classification,
captioning (each table's contract; the metrics themselves are tested beside each task)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from insight.core.io import load_safetensors
from insight.data.benchmarks import imagefolder
from insight.models.frozen import load_frozen
from insight.sae.model import load_sae
from insight.tasks.captioning import (
    build_captioner,
    caption_tokens,
    train_captioning_method,
)
from insight.tasks.classification import (
    classification_heatmaps,
    classification_results,
    classification_vectors,
)
from insight.tasks.interpretability import interpretability_rows
from insight.tasks.ovs import METHODS, evaluate_ovs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tiny_run):
    models = load_frozen(tiny_run.frozen, CPU)
    return models, load_sae(tiny_run.results / "models/sae.safetensors")


def test_evaluate_ovs_scores_the_three_methods_and_explains(tiny_run, tmp_path):
    result = evaluate_ovs(
        "world",
        tiny_run.root / "voc",
        tiny_run.frozen,
        tiny_run.results / "models/sae.safetensors",
        dataclasses.replace(tiny_run.cfg.ovs, save_predictions=True),
        tiny_run.results / "vocabulary/cache",
        CPU,
        out_dir=tmp_path,
        names_path=tiny_run.results / "naming/names.parquet",
    )
    assert set(result["methods"]) == set(METHODS)
    for values in result["methods"].values():
        assert 0 <= values["miou"] <= 1
    assert len(list((tmp_path / "pred/insight").glob("*.png"))) == 2
    explained = json.loads((tmp_path / "explain/explanations.json").read_text())
    assert len(explained) == 1 and (tmp_path / "explain" / f"{next(iter(explained))}.png").exists()


def test_interpretability_rows_per_method_and_a_missing_dataset(tiny_run):
    rows = interpretability_rows(
        {"partimagenet": str(tiny_run.root / "parts"), "coco_stuff": "/no/such/root"},
        tiny_run.frozen,
        tiny_run.results / "models/sae.safetensors",
        dataclasses.replace(
            tiny_run.cfg.interpretability, min_images={"partimagenet": 1, "coco_stuff": 1}
        ),
        CPU,
    )
    by = {(r["method"], r["dataset"]): r for r in rows}
    assert by[("insight", "partimagenet")]["images"] == 2
    assert "locality" in by[("global_broadcast", "partimagenet")]
    assert by[("insight", "coco_stuff")]["status"] == "not run"


def test_classification_vectors_results_and_heatmaps(tiny_run, loaded, tmp_path):
    models, sae = loaded
    root = tiny_run.root / "imagefolder"
    train_pairs, classes = imagefolder(root, "train")
    test_pairs, _ = imagefolder(root, "val")
    train = classification_vectors(train_pairs, models, sae, CPU)
    test = classification_vectors(test_pairs, models, sae, CPU)
    assert train.num_rows == 12 and test.num_rows == 8
    first = np.array(train["insight"][0].as_py())
    assert first.shape == (2 * 32,)  # [max ; mean] of the BatchTopK codes
    assert np.all(first[:32] >= first[32:] - 1e-6)  # max >= mean per concept
    # the release's dense features: ReLU pre-activations, at least the thresholded codes
    dense = np.array(train["insight_dense"][0].as_py())
    sparse = np.array(train["insight_thresholded"][0].as_py())
    assert np.all(dense[:32] >= sparse[:32] - 1e-6)
    assert (dense[:32] > 0).sum() > (sparse[:32] > 0).sum()
    rows, explanations = classification_results(
        "objects",
        train,
        test,
        classes,
        models,
        tiny_run.frozen.backbone,
        tiny_run.cfg.classification,
        tiny_run.results / "vocabulary/cache",
        CPU,
        tiny_run.results / "naming/names.parquet",
    )
    methods = [r["method"] for r in rows]
    assert methods == [
        "insight",
        "insight_thresholded",
        "insight_dense",
        "linear_probe_clip",
        "zero_shot_clip",
    ]
    assert all(0 <= r["top1"] <= r["top5"] <= 1 for r in rows)
    assert len(explanations) == 2
    classification_heatmaps(explanations, models, sae, CPU, tmp_path)
    for result in explanations.values():
        assert (tmp_path / result["figure"]).exists()


def test_captioning_tokens_training_and_scores(tiny_run, loaded, tmp_path):
    models, sae = loaded
    cfg = tiny_run.cfg.captioning
    tensors, captions = caption_tokens(cfg.split_file, cfg.images_root, cfg, models, sae, CPU)
    assert tensors["train/clip"].shape[:2] == (6, 64) and tensors["test/insight"].shape[0] == 2
    assert len(captions["val"]["image_ids"]) == len(captions["val"]["captions"]) == 2
    from insight.core.io import save_safetensors, write_json

    save_safetensors(tensors, tmp_path / "tokens.safetensors")
    write_json(captions, tmp_path / "captions.json")
    result = train_captioning_method(
        tmp_path / "tokens.safetensors",
        tmp_path / "captions.json",
        "insight",
        cfg,
        CPU,
        tmp_path / "model",
    )
    assert result["method"] == "insight" and len(result["examples"]) == 2
    assert {"bleu4", "cider", "meteor"} <= set(result)
    adapter, _ = load_safetensors(tmp_path / "model/adapter.safetensors")
    captioner, _ = build_captioner(
        str(tmp_path / "model/language_model"), tensors["train/insight"].shape[-1], cfg
    )
    captioner.adapter.load_state_dict(adapter)  # the saved adapter fits a fresh build
