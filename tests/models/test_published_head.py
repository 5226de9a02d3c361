"""CLIP-DINOiser's released head (``checkpoints/last.pt``) loads and gives the release's features."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
import yaml
from workflow_utils import copy_checkout, planned_jobs, snakemake

from insight.models.backbone import BackboneSpec
from insight.models.dinoiser import (
    PUBLISHED_KEYS,
    ClipDINOiserHead,
    load_dinoiser,
    save_dinoiser,
    save_published_head,
)
from insight.models.frozen import FrozenSpec, load_frozen

# open_clip's VisionTransformer with ViT-B-16's module structure, only smaller (4 blocks, so
# block -3 is an inner block as in the 12-block original)
TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 48, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "insight-test-tiny4-ViT-B-16.json"
    path.write_text(json.dumps(TINY_VIT))
    open_clip.add_model_config(path)
    return BackboneSpec(model="insight-test-tiny4-ViT-B-16", pretrained=None)


def released_checkpoint(path, width=48, seed=0):
    torch.manual_seed(seed)
    head = ClipDINOiserHead(width)
    with torch.no_grad():
        head.bkg_decoder.bias.fill_(0.3)
    save_published_head(head, path, epoch=99)
    return head


def test_the_checkpoint_has_the_released_layout(tmp_path):
    released_checkpoint(tmp_path / "last.pt", width=768)
    checkpoint = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert sorted(checkpoint) == ["epoch", "model_state_dict"] and checkpoint["epoch"] == 99
    shapes = {key: tuple(value.shape) for key, value in checkpoint["model_state_dict"].items()}
    assert shapes == {
        "obj_proj.weight": (256, 768, 3, 3),
        "obj_proj.bias": (256,),
        "bkg_decoder.weight": (1, 768, 1, 1),
        "bkg_decoder.bias": (1,),
    }
    assert tuple(shapes) == PUBLISHED_KEYS


def independent_features(visual, images, head, gamma=0.2):
    """The release's computation, written out: open_clip's own forward with a hook on block
    -3's ln_2 and on the last block's input; MaskCLIP's value path; replicate-padded conv;
    cosines zeroed below gamma; pooling divided by the row sum + 1e-6."""
    captured = {}
    blocks = visual.transformer.resblocks
    hooks = [
        blocks[-3].ln_2.register_forward_hook(lambda m, i, o: captured.setdefault("ln_2", o)),
        blocks[-1].register_forward_pre_hook(lambda m, i: captured.setdefault("last_in", i[0])),
    ]
    with torch.no_grad():
        visual(images)
    for hook in hooks:
        hook.remove()
    tokens, last_in = captured["ln_2"], captured["last_in"]
    if not visual.transformer.batch_first:
        tokens, last_in = tokens.transpose(0, 1), last_in.transpose(0, 1)
    side = images.shape[-1] // 16
    grid = tokens[:, 1:].transpose(1, 2).reshape(len(images), -1, side, side)
    # MaskCLIP: the last block's attention replaced by its value path, then ln_post and proj
    last, width = blocks[-1], last_in.shape[-1]
    x = last_in[:, 1:]
    w_v, b_v = last.attn.in_proj_weight[2 * width :], last.attn.in_proj_bias[2 * width :]
    x = x + last.attn.out_proj(F.linear(last.ln_1(x), w_v, b_v))
    x = x + last.mlp(last.ln_2(x))
    final = visual.ln_post(x) @ visual.proj  # (B, N, d)
    state = head.state_dict()
    padded = F.pad(grid, (1, 1, 1, 1), mode="replicate")
    projected = F.normalize(
        F.conv2d(padded, state["obj_proj.weight"], state["obj_proj.bias"]), dim=1
    )
    flat = projected.flatten(2)
    cos = flat.transpose(1, 2) @ flat
    weights = torch.where(cos < gamma, torch.zeros_like(cos), cos)
    pooled = (weights @ final) / (weights.sum(-1, keepdim=True) + 1e-6)
    unit = F.normalize(grid, dim=1)
    logit = F.conv2d(unit, state["bkg_decoder.weight"], state["bkg_decoder.bias"])
    return pooled, torch.sigmoid(logit)[:, 0]


def test_released_head_gives_the_releases_pooled_features(tiny_vit, tmp_path):
    head = released_checkpoint(tmp_path / "last.pt")
    models = load_frozen(FrozenSpec(tiny_vit, tmp_path / "last.pt", 0.2), torch.device("cpu"))
    assert isinstance(models.encoder.dinoiser, ClipDINOiserHead) and models.encoder.has_foreground
    images = torch.randn(2, 3, 64, 64)
    features, foreground = models.encoder.features_and_foreground(images, foreground=True)
    expected, expected_foreground = independent_features(models.model.visual, images, head)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(foreground, expected_foreground, atol=1e-6, rtol=0)
    torch.testing.assert_close(models.encoder(images), features)


def test_a_head_for_another_backbone_and_a_wrong_file_are_one_line_errors(tiny_vit, tmp_path):
    released_checkpoint(tmp_path / "wide.pt", width=768)
    with pytest.raises(ValueError, match="reads 768-d tokens but the backbone's blocks are 48-d"):
        load_frozen(FrozenSpec(tiny_vit, tmp_path / "wide.pt", 0.2), torch.device("cpu"))
    torch.save({"epoch": 1, "model_state_dict": {"g.weight": torch.zeros(1)}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a CLIP-DINOiser checkpoint"):
        load_dinoiser(tmp_path / "x.pt")


def test_a_trained_published_head_round_trips_without_a_background_decoder(tmp_path):
    head = ClipDINOiserHead(48, has_foreground=False)
    save_dinoiser(head, tmp_path / "head.safetensors")
    loaded = load_dinoiser(tmp_path / "head.safetensors")
    assert isinstance(loaded, ClipDINOiserHead) and not loaded.has_foreground
    for key, value in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(ValueError, match="no fitted background decoder"):
        loaded.foreground(torch.randn(1, 48, 2, 2))


def test_with_the_released_checkpoint_the_workflow_does_not_train_a_dinoiser(tmp_path):
    (tmp_path / "work").mkdir()
    work = copy_checkout(tmp_path / "work")
    released_checkpoint(work / "last.pt")
    demo_clip = "insight-tiny-ViT-B-16/insight-tiny-ViT-B-16.safetensors"
    settings = {
        "dinoiser": {"head": "published", "checkpoint": "last.pt", "checkpoint_backbone": demo_clip}
    }
    (work / "published.yaml").write_text(yaml.safe_dump(settings))
    demo = ["--configfile", "config/demo.yaml"]
    with_head = snakemake(work, "-n", *demo, "published.yaml")
    jobs = planned_jobs(with_head.stdout)
    assert "train_dinoiser" not in jobs and "index_images" in jobs
    assert "train_dinoiser" in planned_jobs(snakemake(work, "-n", *demo).stdout)
    (work / "last.pt").unlink()
    missing = snakemake(work, "-n", *demo, "published.yaml", check=False)
    assert missing.returncode != 0
    assert "dinoiser.checkpoint last.pt does not exist: download CLIP-DINOiser's" in (
        missing.stdout + missing.stderr
    )
    settings["dinoiser"]["head"] = "paper"
    (work / "published.yaml").write_text(yaml.safe_dump(settings))
    wrong = snakemake(work, "-n", *demo, "published.yaml", check=False)
    assert "is CLIP-DINOiser's published head: set dinoiser.head: published" in wrong.stdout
    # the default record (the LAION head) against the demo's CLIP: one line naming both
    released_checkpoint(work / "last.pt")
    settings["dinoiser"] = {"head": "published", "checkpoint": "last.pt"}
    (work / "published.yaml").write_text(yaml.safe_dump(settings))
    mismatch = snakemake(work, "-n", *demo, "published.yaml", check=False)
    assert mismatch.returncode != 0
    assert (
        "the DINOiser head last.pt was trained on ViT-B-16/laion2b_s34b_b88k but the backbone "
        f"is {demo_clip}"
    ) in mismatch.stdout + mismatch.stderr


def test_a_head_is_refused_for_a_clip_it_was_not_trained_on(tmp_path):
    """The release ships one head per CLIP: ``pretrained: openai`` with the LAION head (the
    default record of a released ``last.pt``) fails at settings time; a head trained here
    records its CLIP and fails at load time under another."""
    from insight.core.settings import ConfigError, settings_from_config, validate_config
    from insight.models.backbone import BackboneSpec
    from insight.models.frozen import check_head_backbone

    config = validate_config(
        {"backbone": {"pretrained": "openai"}, "dinoiser": {"checkpoint": "last.pt"}}
    )
    with pytest.raises(
        ConfigError,
        match="trained on ViT-B-16/laion2b_s34b_b88k but the backbone is ViT-B-16/openai",
    ):
        settings_from_config(config)
    config["dinoiser"]["checkpoint_backbone"] = "ViT-B-16/openai"  # checkpoints_openai/last.pt
    assert settings_from_config(config).dinoiser.checkpoint_backbone == "ViT-B-16/openai"

    head = ClipDINOiserHead(48, 16)
    save_dinoiser(head, tmp_path / "head.safetensors", backbone="ViT-B-16/laion2b_s34b_b88k")
    check_head_backbone(tmp_path / "head.safetensors", BackboneSpec("ViT-B-16"))
    with pytest.raises(ValueError, match="but the backbone is ViT-B-16/openai"):
        check_head_backbone(tmp_path / "head.safetensors", BackboneSpec("ViT-B-16", "openai"))
