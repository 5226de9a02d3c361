"""The DINOiser stage: its config adapters and training from images (App. B.1)."""

import torch

from insight.models.dinoiser import DINOiser, load_dinoiser
from insight.models.dinoiser_training import (
    CLIP_TEACHER,
    DinoiserTrainConfig,
    TeacherSpec,
    dinoiser_train_config,
    teacher_spec,
)


def test_teacher_spec_and_train_config_read_their_sections():
    teacher = teacher_spec(
        {"model": "vit_base_patch16_224.dino", "pretrained": True, "features": "key"}
    )
    assert teacher == TeacherSpec("vit_base_patch16_224.dino", True, None, "key", {})
    config = dinoiser_train_config({"epochs": 3, "lr": 0.5, "unrelated": 1})
    assert (config.epochs, config.lr) == (3, 0.5)
    assert config.batch_size == DinoiserTrainConfig().batch_size


def test_train_dinoiser_from_images_fits_a_head_and_reports(tiny_run):
    metrics = tiny_run.reports["dinoiser"]
    assert tiny_run.cfg["dinoiser"]["teacher"]["model"] == CLIP_TEACHER
    assert metrics["rejected_images"] == 0 and metrics["images"] == 4
    assert torch.isfinite(torch.tensor(metrics["final_loss"]))
    g = load_dinoiser(tiny_run.results / "models/dinoiser.safetensors")
    assert isinstance(g, DINOiser)
