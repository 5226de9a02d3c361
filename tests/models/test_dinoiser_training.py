"""The DINOiser stage: its config adapters and training from images (App. B.1)."""

import pytest
import torch

from insight.core.settings import section_settings
from insight.models.dinoiser import DINOiser, load_dinoiser
from insight.models.dinoiser_training import (
    DinoiserTrainConfig,
    dinoiser_train_config,
    train_dinoiser,
)
from insight.models.teachers import CLIP_TEACHER, TeacherSpec, teacher_spec


def test_teacher_spec_and_train_config_read_their_sections():
    section = section_settings("dinoiser", {"epochs": 3, "lr": 0.5, "head": "paper"})
    teacher = teacher_spec(section.teacher)
    assert teacher == TeacherSpec("vit_base_patch16_224.dino", True, None, "value", {})
    config = dinoiser_train_config(section)
    assert (config.epochs, config.lr, config.head) == (3, 0.5, "paper")
    assert config.batch_size == DinoiserTrainConfig().batch_size
    # CLIP-DINOiser's configs/clip_dinoiser.yaml: enc_type_feats "v", im_size 448,
    # milestones [5000], step_lr_gamma 0.1, train.py's AdamW and clamped cosines
    assert (config.recipe, config.crop_size, config.lr_step_at, config.lr_step_factor) == (
        "release",
        448,
        5000,
        0.1,
    )


def test_train_dinoiser_from_images_fits_a_head_and_reports(tiny_run):
    metrics = tiny_run.reports["dinoiser"]
    assert tiny_run.cfg.dinoiser.teacher.model == CLIP_TEACHER
    assert metrics["rejected_images"] == 0 and metrics["images"] == 4
    assert torch.isfinite(torch.tensor(metrics["final_loss"]))
    g = load_dinoiser(tiny_run.results / "models/dinoiser.safetensors")
    assert isinstance(g, DINOiser)


def test_training_images_are_sampled_across_a_folder_sorted_by_class(tmp_path):
    """App. B.1 samples the DINOiser's images at random: a 2-class folder (sorted by path,
    as ImageNet's class folders are) gives images of both classes, the same for a seed."""
    from PIL import Image

    from insight.data.images import assign_shards, list_images
    from insight.models.dinoiser_training import sample_training_images

    for label in ("n01440764", "n01443537"):
        (tmp_path / label).mkdir()
        for i in range(20):
            Image.new("RGB", (8, 8)).save(tmp_path / label / f"{i:03d}.png")
    index = assign_shards(list_images(tmp_path, "folder"), 100)
    chosen = sample_training_images(index, 10, seed=0)
    assert len(chosen) == 10 == len({ref.image_id for ref in chosen})
    assert {ref.image_id.split("/")[0] for ref in chosen} == {"n01440764", "n01443537"}
    assert chosen == sample_training_images(index, 10, seed=0)
    assert chosen != sample_training_images(index, 10, seed=1)
    assert [ref.image_id for ref in chosen] == sorted(ref.image_id for ref in chosen)
    assert len(sample_training_images(index, 1000, seed=0)) == 40


def test_the_published_head_trains_on_block_tokens_with_the_release_layout():
    from insight.models.dinoiser import ClipDINOiserHead

    tokens = torch.randn(4, 24, 3, 3)
    targets = torch.eye(9, dtype=torch.bool).expand(4, 9, 9)
    config = DinoiserTrainConfig(epochs=2, lr=1e-3, batch_size=2, head="published")
    head, metrics = train_dinoiser(tokens, targets, config)
    assert isinstance(head, ClipDINOiserHead) and not head.has_foreground
    assert tuple(head.obj_proj.weight.shape) == (256, 24, 3, 3)
    assert head.obj_proj.padding_mode == "replicate" and metrics["images"] == 4


def _release_fit_by_hand(tokens, targets, lr, batch, epochs, step_at, seed):
    """CLIP-DINOiser's train.py loop written out: negative predicted cosines set to 0 in
    place, BCE with logits against the targets, AdamW (weight decay 0.01), the rate times
    0.1 from step ``step_at`` on; the same draw order as the project's loop."""
    from insight.models.dinoiser import ClipDINOiserHead

    torch.manual_seed(seed)
    head = ClipDINOiserHead(tokens.shape[1], has_foreground=False)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(tokens), generator=generator)
        for start in range(0, len(tokens), batch):
            idx = order[start : start + batch]
            projected = torch.nn.functional.normalize(head.obj_proj(tokens[idx]).flatten(2), dim=1)
            corrs = projected.transpose(1, 2) @ projected
            corrs[corrs < 0] = 0.0
            loss = torch.nn.BCEWithLogitsLoss()(corrs, targets[idx].float())
            for group in optimizer.param_groups:
                group["lr"] = lr * (0.1 if step >= step_at else 1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    return head


def test_the_release_recipe_matches_clip_dinoisers_training_loop():
    torch.manual_seed(1)
    tokens = torch.randn(6, 8, 3, 3)
    targets = torch.randn(6, 9, 9) > 0.3
    config = DinoiserTrainConfig(epochs=3, lr=1e-2, batch_size=4, lr_step_at=4, seed=3)
    head, metrics = train_dinoiser(tokens, targets, config)
    expected = _release_fit_by_hand(tokens, targets, 1e-2, 4, 3, 4, seed=3)
    assert metrics["steps"] == 6 and metrics["recipe"] == "release"
    assert abs(metrics["final_lr"] - 1e-3) < 1e-12
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(head.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    cached, _ = train_dinoiser(
        tokens, targets, DinoiserTrainConfig(**{**config.__dict__, "recipe": "cached"})
    )
    assert not torch.allclose(cached.obj_proj.weight, head.obj_proj.weight)


def test_release_logits_are_cosines_clamped_at_zero():
    from insight.models.dinoiser_training import affinity_logits, affinity_loss, new_head

    head = new_head(DinoiserTrainConfig(head="paper", d_out=2), 2)
    with torch.no_grad():
        head.g.weight.zero_()
        head.g.bias.copy_(torch.tensor([0.0, 0.0]))
        head.g.weight[:, :, 1, 1] = torch.eye(2)
    inputs = torch.tensor([[1.0, -1.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # patches (1, 0), (-1, 0)
    raw = affinity_logits(head, inputs, "cached")
    clamped = affinity_logits(head, inputs, "release")
    torch.testing.assert_close(raw, torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]]))
    torch.testing.assert_close(clamped, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    # a negative pair whose target is 0 costs log 2 under the release: sigmoid(0) = 1/2
    target = torch.tensor([[[True, False], [False, True]]])
    by_hand = (
        2 * torch.log1p(torch.exp(torch.tensor(-1.0))) + 2 * torch.log(torch.tensor(2.0))
    ) / 4
    torch.testing.assert_close(affinity_loss(clamped, target), by_hand)


def test_release_crops_are_windows_flipped_and_brightened():
    """Each crop is a size x size window of the image, flipped or not, times one factor in
    [0.5, 1.5] (ColorJitter(0.5)); over many draws both flips and several windows occur."""
    from insight.models.dinoiser_training import release_crops

    image = torch.randint(1, 100, (6, 15, 3), dtype=torch.uint8)
    unit = image.permute(2, 0, 1).float() / 255.0
    generator = torch.Generator().manual_seed(0)
    crops = release_crops([image] * 40, 6, generator)
    assert crops.shape == (40, 3, 6, 6)
    seen = set()
    for crop in crops:
        found = []
        for left in range(15 - 6 + 1):
            for flipped in (False, True):
                window = unit[:, :, left : left + 6]
                window = window.flip(-1) if flipped else window
                factor = (crop / window).mean()
                if torch.allclose(crop, window * factor, atol=1e-5):
                    found.append((left, flipped, float(factor)))
        assert found, "a crop is not a brightened window of the image"
        left, flipped, factor = found[0]
        assert 0.5 <= factor <= 1.5
        seen.add((left, flipped))
    assert {f for _, f in seen} == {False, True} and len({left for left, _ in seen}) > 3
    with pytest.raises(ValueError, match="smaller than 8"):
        release_crops([image], 8, generator)


def test_the_release_recipe_trains_on_fresh_crops_of_a_tiny_clip(tiny_run):
    """The whole release path on the tiny open_clip ViT: images kept at their short side,
    crops of 32 px (a 2 x 2 grid of its 16-px patches), the backbone's own keys as teacher."""
    from dataclasses import replace

    from insight.data.images import DEFAULT_POLICY
    from insight.models.backbone import backbone_spec
    from insight.models.dinoiser_training import train_dinoiser_from_images

    config = replace(
        dinoiser_train_config(tiny_run.cfg.dinoiser), recipe="release", crop_size=32, epochs=2
    )
    config = replace(config, batch_size=3, lr_step_at=2)
    head, metrics = train_dinoiser_from_images(
        tiny_run.refs[:4],
        backbone_spec(tiny_run.cfg.backbone),
        teacher_spec(tiny_run.cfg.dinoiser.teacher),
        config,
        DEFAULT_POLICY,
        torch.device("cpu"),
    )
    assert isinstance(head, DINOiser)
    assert metrics["steps"] == 4 and metrics["images"] == 4 and metrics["rejected_images"] == 0
    assert abs(metrics["final_lr"] - config.lr * 0.1) < 1e-12
    assert 0.0 <= metrics["pair_accuracy"] <= 1.0
