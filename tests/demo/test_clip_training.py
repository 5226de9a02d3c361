"""Contrastive training of the demo CLIP (insight.clip_training)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from insight.demo.clip_training import (
    NO_REGION,
    REGION_TEMPLATE,
    ClipTrainConfig,
    cosine_schedule,
    elsewhere_pairs,
    noise_tails,
    region_loss,
    region_targets,
    save_clip,
    train_clip,
    unused_words,
    with_noise_words,
)
from insight.demo.world import REGION_WORDS, REGIONS, elsewhere_pattern
from insight.models.backbone import BackboneSpec, load_clip, maskclip_features

TINY = BackboneSpec(model="insight-tiny-ViT-B-16", pretrained=None)


def test_cosine_schedule_by_hand():
    assert cosine_schedule(0, 100, 10) == pytest.approx(0.1)
    assert cosine_schedule(9, 100, 10) == pytest.approx(1.0)
    assert cosine_schedule(10, 100, 10) == pytest.approx(1.0)
    assert cosine_schedule(55, 100, 10) == pytest.approx(0.5)
    assert cosine_schedule(100, 100, 10) == pytest.approx(0.0)


def colour_pairs(n: int) -> tuple[torch.Tensor, list[str]]:
    images = torch.zeros(n, 224, 224, 3, dtype=torch.uint8)
    images[: n // 2, ..., 0] = 220  # red
    images[n // 2 :, ..., 2] = 220  # blue
    images += torch.randint(0, 30, images.shape, generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )
    return images, ["a red picture"] * (n // 2) + ["a blue picture"] * (n // 2)


def test_training_aligns_images_with_their_captions_and_reloads_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    images, captions = colour_pairs(32)
    config = ClipTrainConfig(epochs=6, batch_size=16, lr=2e-3, warmup_steps=2)
    model, metrics = train_clip(TINY, images, captions, config)
    assert len(metrics["loss_per_epoch"]) == 6
    assert metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]
    assert not any(p.requires_grad for p in model.parameters()) and not model.training

    _, preprocess, tokenizer = load_clip(TINY)
    normalize = preprocess.transforms[-1]
    probe = normalize(images[[0, -1]].permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad():
        image_embedding = F.normalize(model.encode_image(probe), dim=-1)
        text_embedding = F.normalize(
            model.encode_text(tokenizer(["a red picture", "a blue picture"])), dim=-1
        )
    assert ((image_embedding @ text_embedding.T).argmax(1) == torch.tensor([0, 1])).all()

    path = tmp_path / "clip.safetensors"
    save_clip(model, path)
    reloaded, _, _ = load_clip(
        BackboneSpec(model=TINY.model, pretrained=None, checkpoint=str(path))
    )
    with torch.no_grad():
        assert torch.allclose(
            F.normalize(reloaded.encode_image(probe), dim=-1), image_embedding, atol=1e-5
        )


def test_noise_words_are_spread_evenly_and_only_words_no_caption_uses():
    words = [f"w{i}" for i in range(7)]
    tails = noise_tails(words, captions=10, per_caption=2, rng=np.random.default_rng(0))
    assert [len(t) for t in tails] == [2] * 10
    uses = [sum(t.count(w) for t in tails) for w in words]
    assert sum(uses) == 20 and max(uses) - min(uses) <= 1
    again = noise_tails(words, 10, 2, np.random.default_rng(1))
    assert again != tails  # drawn afresh with another draw (every epoch)
    assert noise_tails([], 3, 2, np.random.default_rng(0)) == [[], [], []]
    assert with_noise_words(["a red car.", "sky"], [["time", "people"], []]) == [
        "a red car time people",
        "sky",
    ]
    assert unused_words(["car", "time", "Red"], ["a red car.", "the car"]) == ["time"]


def test_noise_words_leave_training_working_and_are_counted():
    torch.manual_seed(0)
    images, captions = colour_pairs(32)
    config = ClipTrainConfig(epochs=6, batch_size=16, lr=2e-3, warmup_steps=2)
    model, metrics = train_clip(TINY, images, captions, config, noise_words=["time", "people"])
    assert metrics["noise_words"] == 2
    assert metrics["loss_per_epoch"][-1] < metrics["loss_per_epoch"][0]


def test_elsewhere_pictures_pair_each_word_with_its_own_pattern():
    words = ["time", "people", "world"]
    images, captions = elsewhere_pairs(words, 6, np.random.default_rng(0), 32, ["a {} here."])
    assert images.shape == (6, 32, 32, 3) and images.dtype == torch.uint8
    assert sorted(captions) == sorted([f"a {w} here." for w in words] * 2)  # each word twice
    for word in words:  # every pixel is one of its word's two colours, up to the noise
        pictures = images[[c == f"a {word} here." for c in captions]].float()
        colours = torch.from_numpy(elsewhere_pattern(words.index(word))["colours"])
        distance = (pictures[..., None, :] - colours).abs().amax(-1).amin(-1)
        assert distance.max() < 40
        other = torch.from_numpy(elsewhere_pattern(words.index(word) + 1)["colours"])
        assert (pictures[..., None, :] - other).abs().amax(-1).amin(-1).mean() > 40
    none, no_captions = elsewhere_pairs([], 4, np.random.default_rng(0), 32)
    assert none.shape == (0, 32, 32, 3) and no_captions == []


def test_elsewhere_pictures_join_every_epoch_and_are_counted():
    torch.manual_seed(0)
    images, captions = colour_pairs(32)
    config = ClipTrainConfig(epochs=2, batch_size=16, lr=2e-3, warmup_steps=2, elsewhere_images=16)
    _, metrics = train_clip(TINY, images, captions, config, noise_words=["time", "people"])
    assert metrics["elsewhere_images_per_epoch"] == 16
    _, without = train_clip(TINY, images, captions, config)  # no noise words: no pictures
    assert without["elsewhere_images_per_epoch"] == 0


def test_training_refuses_mismatched_or_too_few_pairs():
    images, captions = colour_pairs(8)
    with pytest.raises(ValueError, match="8 images but 7 captions"):
        train_clip(TINY, images, captions[:7], ClipTrainConfig(batch_size=4))
    with pytest.raises(ValueError, match="at least batch_size=16"):
        train_clip(TINY, images, captions, ClipTrainConfig(batch_size=16))


def test_region_targets_by_hand():
    """2x2 patches of 2x2 pixels: all sky; half sky, half wheel; unknown; half unknown,
    half roof. A part's share goes half to its word and half to its object's."""
    sky, wheel, roof = REGIONS.index("sky"), REGIONS.index("wheel"), REGIONS.index("roof")
    regions = torch.tensor(
        [
            [sky, sky, sky, wheel],
            [sky, sky, sky, wheel],
            [NO_REGION, NO_REGION, NO_REGION, roof],
            [NO_REGION, NO_REGION, NO_REGION, roof],
        ],
        dtype=torch.uint8,
    )[None]
    targets = region_targets(regions, (2, 2))
    assert targets.shape == (1, 4, len(REGION_WORDS))

    def expected(**shares):
        row = torch.zeros(len(REGION_WORDS))
        for word, share in shares.items():
            row[REGION_WORDS.index(word)] = share
        return row

    torch.testing.assert_close(targets[0, 0], expected(sky=1.0))
    torch.testing.assert_close(targets[0, 1], expected(sky=0.5, wheel=0.25, car=0.25))
    torch.testing.assert_close(targets[0, 2], torch.zeros(len(REGION_WORDS)))
    torch.testing.assert_close(targets[0, 3], expected(roof=0.5, house=0.5))


def test_region_targets_match_a_pixel_by_pixel_count():
    """Random maps, unknown pixels included, on a grid of unequal rows and columns: each
    pixel adds 1 to its sky or ground word, or 1/2 to its part and 1/2 to its object."""
    from insight.demo.world import PART_OF

    rng = np.random.default_rng(0)
    regions = rng.integers(0, len(REGIONS) + 2, size=(2, 6, 8)).astype(np.uint8)
    regions[regions >= len(REGIONS)] = NO_REGION
    expected = np.zeros((2, 2 * 4, len(REGION_WORDS)))
    for b, y, x in np.ndindex(regions.shape):
        region, patch = regions[b, y, x], (y // 3) * 4 + x // 2
        if region == NO_REGION:
            continue
        name = REGIONS[region]
        if name in PART_OF:
            expected[b, patch, REGION_WORDS.index(name)] += 0.5
            expected[b, patch, REGION_WORDS.index(PART_OF[name])] += 0.5
        else:
            expected[b, patch, REGION_WORDS.index(name)] += 1.0
    totals = expected.sum(-1, keepdims=True)
    expected = np.divide(expected, totals, out=np.zeros_like(expected), where=totals > 0)
    targets = region_targets(torch.from_numpy(regions), (2, 4))
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="do not divide into a 4x4 grid"):
        region_targets(torch.from_numpy(regions), (4, 4))


def test_region_loss_against_a_hand_computation():
    dense = torch.tensor([[3.0, 0.0], [0.0, 4.0]]).T.reshape(1, 2, 1, 2)  # patches (3,0), (0,4)
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    scale = torch.tensor(2.0)
    # cosines: patch 1 (1, 0), patch 2 (0, 1); log-softmax of (2, 0) and (0, 2)
    low, high = -np.log1p(np.exp(2.0)), 2.0 - np.log1p(np.exp(2.0))
    hand = (-high + -(0.5 * low + 0.5 * high)) / 2
    assert region_loss(dense, targets, words, scale).item() == pytest.approx(hand, rel=1e-6)
    unknown = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # the second patch has no target
    assert region_loss(dense, unknown, words, scale).item() == pytest.approx(-high, rel=1e-6)
    assert region_loss(dense, torch.zeros(1, 2, 2), words, scale).item() == 0.0


def test_region_training_teaches_each_patch_its_region_word():
    """Left half grass, right half sky in every picture: after training with region maps,
    the MaskCLIP feature of a left patch scores "grass" above "sky" and a right patch the
    reverse; the region loss falls. Without maps the metrics show no region loss."""
    torch.manual_seed(0)
    images, captions = colour_pairs(32)
    images[:, :, :112] = torch.tensor([95, 170, 70], dtype=torch.uint8)
    images[:, :, 112:] = torch.tensor([110, 160, 230], dtype=torch.uint8)
    regions = torch.full((32, 224, 224), REGIONS.index("grass"), dtype=torch.uint8)
    regions[:, :, 112:] = REGIONS.index("sky")
    config = ClipTrainConfig(epochs=6, batch_size=16, lr=2e-3, warmup_steps=2, region_weight=1.0)
    model, metrics = train_clip(TINY, images, captions, config, regions=regions)
    losses = metrics["region_loss_per_epoch"]
    assert metrics["region_weight"] == 1.0 and len(losses) == 6 and losses[-1] < losses[0] / 2

    _, preprocess, tokenizer = load_clip(TINY)
    probe = preprocess.transforms[-1](images[:1].permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad():
        dense = F.normalize(maskclip_features(model.visual, probe).flatten(2), dim=1)[0]
        prompts = tokenizer([REGION_TEMPLATE.format(w) for w in ("grass", "sky")])
        words = F.normalize(model.encode_text(prompts), dim=-1)
    scores = words @ dense  # (2 words, 196 patches)
    columns = torch.arange(196) % 14
    assert (scores[0, columns < 6] > scores[1, columns < 6]).all()
    assert (scores[1, columns > 7] > scores[0, columns > 7]).all()

    _, plain = train_clip(TINY, images, captions, ClipTrainConfig(epochs=1, batch_size=16))
    assert plain["region_weight"] == 0.0 and plain["region_loss_per_epoch"] == []
    with pytest.raises(ValueError, match="region maps"):
        train_clip(TINY, images, captions, config, regions=regions[:, :100])
