import pytest
import torch
import torch.nn.functional as F

from insight.models.backbone import (
    QKV,
    BackboneSpec,
    MissingWeightsError,
    last_block_projection,
    load_clip,
    maskclip_features,
)


def independent_maskclip(visual, images):
    """MaskCLIP from open_clip's own modules: the last block run unchanged except that
    each token may attend only to itself, which turns attention into its value path."""
    x = visual._embeds(images)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    tokens = x.shape[1]
    only_self = torch.full((tokens, tokens), float("-inf"))
    only_self.fill_diagonal_(0.0)
    x = blocks[-1](x, attn_mask=only_self)
    pooled, patch_tokens = visual._pool(x)
    return patch_tokens @ visual.proj


def test_maskclip_matches_open_clip_modules(tiny_clip):
    visual = tiny_clip[0].visual
    images = torch.randn(3, 3, 224, 224)
    dense = maskclip_features(visual, images)
    assert dense.shape == (3, visual.output_dim, 14, 14)
    expected = independent_maskclip(visual, images)  # (B, N, d)
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=1e-5)


def test_maskclip_differs_from_normal_attention(tiny_clip):
    visual = tiny_clip[0].visual
    images = torch.randn(1, 3, 224, 224)
    normal = visual._pool(visual.transformer(visual._embeds(images)))[1] @ visual.proj
    dense = maskclip_features(visual, images).flatten(2).transpose(1, 2)
    assert not torch.allclose(dense, normal, atol=1e-3)


@pytest.mark.parametrize("which", QKV)
def test_last_block_projection_is_what_open_clip_feeds_its_last_attention(tiny_clip, which):
    visual = tiny_clip[0].visual
    images = torch.randn(2, 3, 224, 224)
    attn = visual.transformer.resblocks[-1].attn
    captured = []
    hook = attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        visual(images)
    finally:
        hook.remove()
    tokens = captured[0] if attn.batch_first else captured[0].transpose(0, 1)
    packed = F.linear(tokens, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    expected = packed[QKV.index(which)][:, 1:]  # (B, N, width), class token dropped
    projection = last_block_projection(visual, images, which)
    assert projection.shape == (2, expected.shape[-1], 14, 14)
    torch.testing.assert_close(projection.flatten(2).transpose(1, 2), expected)


def test_other_input_size_interpolates_positions(tiny_clip):
    visual = tiny_clip[0].visual
    dense = maskclip_features(visual, torch.randn(1, 3, 448, 320))
    assert dense.shape[-2:] == (28, 20)


def test_missing_checkpoint_says_what_to_download(tmp_path):
    spec = BackboneSpec(model="ViT-B-16", pretrained=None, checkpoint=str(tmp_path / "clip.bin"))
    with pytest.raises(MissingWeightsError, match="backbone.checkpoint"):
        load_clip(spec)


def test_offline_pretrained_tag_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = BackboneSpec(model="ViT-B-16", pretrained="laion2b_s34b_b88k", cache_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="backbone.checkpoint"):
        load_clip(spec)


def test_unknown_model_names_the_key():
    with pytest.raises(ValueError, match="backbone.model"):
        load_clip(BackboneSpec(model="ViT-Nope", pretrained=None))


def test_random_initialisation_is_the_same_in_every_job():
    spec = BackboneSpec(model="insight-tiny-ViT-B-16", pretrained=None)
    first, second = load_clip(spec)[0], load_clip(spec)[0]
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
