"""The frozen models a job loads once, and the spec that names them."""

import torch
from PIL import Image

from insight.core.settings import MODEL_BUNDLE_KEYS, section_settings, settings_from_config
from insight.models.backbone import BackboneSpec, backbone_spec
from insight.models.dense import DenseEncoder
from insight.models.frozen import FrozenSpec, load_frozen, model_bundle, squashed_input


def test_backbone_spec_reads_the_backbone_section():
    spec = backbone_spec(section_settings("backbone", {"model": "ViT-B-16"}))
    assert spec == BackboneSpec("ViT-B-16", "laion2b_s34b_b88k", None, None)
    local = backbone_spec(
        section_settings(
            "backbone",
            {"model": "m", "pretrained": None, "checkpoint": "w.safetensors", "cache_dir": "c"},
        )
    )
    assert (local.pretrained, local.checkpoint, local.cache_dir) == (None, "w.safetensors", "c")


def test_model_bundle_reads_backbone_gamma_and_precision_and_the_dinoiser_input():
    config = {
        "backbone": {"model": "insight-tiny-ViT-B-16", "pretrained": None},
        "dinoiser": {"gamma": 0.3},
        "features": {"precision": "bf16"},
    }
    settings = settings_from_config(config)
    assert model_bundle(settings, []).dinoiser_path is None
    spec = model_bundle(settings, ["g.safetensors"])
    assert spec == FrozenSpec(backbone_spec(settings.backbone), "g.safetensors", 0.3, "bf16")
    # what it reads is what every model rule takes as params, and nothing else
    assert MODEL_BUNDLE_KEYS == ("backbone", "dinoiser.gamma", "features.precision")
    other = settings_from_config(
        {**config, "dinoiser": {"gamma": 0.3, "epochs": 1}, "sae": {"k": 3}, "device": "cpu"}
    )
    assert model_bundle(other, ["g.safetensors"]) == spec


def test_load_frozen_builds_the_dinoised_encoder(tiny_run):
    models = load_frozen(tiny_run.frozen, torch.device("cpu"))
    assert isinstance(models.encoder, DenseEncoder) and models.encoder.dinoiser is not None
    assert not models.encoder.training
    plain = load_frozen(FrozenSpec(tiny_run.frozen.backbone, None, 0.2), torch.device("cpu"))
    assert plain.encoder.dinoiser is None
    image = Image.open(tiny_run.refs[0].path).convert("RGB")
    x = models.transform.batch(torch.from_numpy(models.transform.pil(image))[None], "cpu")
    grid = models.model.visual.grid_size
    assert models.encoder(x).shape == (1, grid[0] * grid[1], models.model.visual.output_dim)


def test_squashed_input_maps_the_grid_onto_the_whole_image(tiny_run, tmp_path):
    models = load_frozen(tiny_run.frozen, torch.device("cpu"))
    Image.new("RGB", (300, 100), (255, 0, 0)).save(tmp_path / "wide.png")
    x = squashed_input(tmp_path / "wide.png", models, torch.device("cpu"))
    assert x.shape == (1, 3, *models.model.visual.image_size)
    mean = torch.tensor(models.model.visual.preprocess_cfg["mean"])
    std = torch.tensor(models.model.visual.preprocess_cfg["std"])
    red = (torch.tensor([1.0, 0.0, 0.0]) - mean) / std
    # squashed, not cropped: every pixel is still the red of the original
    assert torch.allclose(x[0, :, 0, 0], red, atol=1e-2)
    assert torch.allclose(x[0, :, -1, -1], red, atol=1e-2)
