"""The demo's own stages: training the tiny CLIP on pairs, and scoring world recovery."""

import torch

from insight.core.settings import section_settings
from insight.demo.clip_training import train_clip_from_pairs
from insight.demo.layouts import make_clip_pairs
from insight.demo.recovery import world_recovery
from insight.models.backbone import BackboneSpec, load_clip


def test_train_clip_from_pairs_saves_weights_that_load(tmp_path):
    pairs = make_clip_pairs(tmp_path / "pairs", 4, size=(96, 96))
    spec = BackboneSpec("insight-tiny-ViT-B-16", None)
    metrics = train_clip_from_pairs(
        pairs,
        spec,
        section_settings("clip_training", {"epochs": 1, "batch_size": 4, "lr": 1e-3}),
        tmp_path / "clip.safetensors",
        torch.device("cpu"),
    )
    assert metrics["model"] == spec.model and metrics["config"]["epochs"] == 1
    loaded, _, _ = load_clip(BackboneSpec(spec.model, None, str(tmp_path / "clip.safetensors")))
    assert loaded is not None


def test_world_recovery_reports_names_and_families(tiny_run):
    result = world_recovery(
        tiny_run.root / "parts",
        tiny_run.frozen,
        tiny_run.results / "models/sae.safetensors",
        tiny_run.results / "hierarchy/families.parquet",
        tiny_run.results / "naming/names.parquet",
        torch.device("cpu"),
    )
    assert result["images"] == 2
    naming = result["naming"]
    assert naming["top_concepts"] == len(naming["concepts"]) <= 20
    assert 0 <= naming["world_named_fraction"] <= 1
    for kind in ("part", "object"):
        own_word = naming[f"{kind}_concepts_own_word"]
        assert own_word["concepts"] == naming[f"{kind}_concepts"]
        assert own_word["named"] <= naming[f"{kind}_concepts_world_named"]
    assert {"edges", "planted_edges", "p_value"} <= set(result["families"])
