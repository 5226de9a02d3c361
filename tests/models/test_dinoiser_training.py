"""The DINOiser stage: its config adapters and training from images (App. B.1)."""

import torch

from insight.core.settings import section_settings
from insight.models.dinoiser import DINOiser, load_dinoiser
from insight.models.dinoiser_training import (
    CLIP_TEACHER,
    DinoiserTrainConfig,
    TeacherSpec,
    dinoiser_train_config,
    teacher_spec,
    train_dinoiser,
)


def test_teacher_spec_and_train_config_read_their_sections():
    section = section_settings("dinoiser", {"epochs": 3, "lr": 0.5, "head": "paper"})
    teacher = teacher_spec(section.teacher)
    assert teacher == TeacherSpec("vit_base_patch16_224.dino", True, None, "key", {})
    config = dinoiser_train_config(section)
    assert (config.epochs, config.lr, config.head) == (3, 0.5, "paper")
    assert config.batch_size == DinoiserTrainConfig().batch_size


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
