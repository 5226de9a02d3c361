"""The SAE trainer: Adam on the Matryoshka BatchTopK objective (Sec. 3.2, App. B.2).

:class:`SAETrainer` runs ``step()``/``fit()`` and checkpoints its whole state (model,
optimiser, position in the data), so a killed run resumes to the same weights, as
dictionary_learning's and SAELens's trainers do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from insight.core.io import atomic_path
from insight.core.sections import SAESettings
from insight.core.settings import from_settings
from insight.sae.data import FeatureBatches
from insight.sae.model import MatryoshkaBatchTopKSAE

log = logging.getLogger(__name__)


@torch.no_grad()
def geometric_median(points: torch.Tensor, max_iter: int = 100, tol: float = 1e-5) -> torch.Tensor:
    """The point with the least summed Euclidean distance to the rows of ``points`` (n, d),
    by Weiszfeld's iteration from their mean (stops when a step moves less than ``tol``)."""
    guess = points.mean(0)
    for _ in range(max_iter):
        weights = 1.0 / (points - guess).norm(dim=1).clamp(min=1e-12)
        step = (weights[:, None] * points).sum(0) / weights.sum()
        moved = float((step - guess).norm())
        guess = step
        if moved < tol:
            break
    return guess


B_DEC_STARTS = ("geometric_median", "zeros")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 16384
    epochs: int = 3
    max_steps: int | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    b_dec_init: str = "geometric_median"
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.b_dec_init not in B_DEC_STARTS:
            raise ValueError(
                f"sae.b_dec_init must be one of {B_DEC_STARTS}, not {self.b_dec_init!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"sae.grad_clip must be positive or null, not {self.grad_clip}")


class SAETrainer:
    """Adam on the Matryoshka BatchTopK objective, with full-state checkpoints. With
    ``b_dec_init: geometric_median`` the first step starts ``b_dec`` at its batch's
    geometric median, as the release's dictionary_learning trainer does; ``grad_clip``
    caps the gradient's total norm after the decoder's parallel component is removed."""

    def __init__(
        self,
        sae: MatryoshkaBatchTopKSAE,
        config: TrainConfig,
        data: FeatureBatches | None,
        checkpoint_path: str | Path | None = None,
        device: torch.device | str = "cpu",
    ):
        self.sae = sae.to(device)
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=config.lr)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0

    def step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch; returns its metrics as 0-d tensors (reading
        them with ``float()`` waits for the device, so the loop only does it when logging)."""
        batch = batch.to(self.device, non_blocking=True)
        if self.global_step == 0 and self.config.b_dec_init == "geometric_median":
            self.sae.b_dec.data.copy_(geometric_median(batch))  # as dictionary_learning's trainers
        out = self.sae.training_losses(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"SAE loss is {loss.item()} at step {self.global_step} (epoch {self.epoch}, batch {self.step_in_epoch})"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sae.remove_parallel_decoder_grad()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.sae.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.sae.normalise_decoder()
        self.sae.update_statistics(out["cols"], out["acts"], batch.shape[0], self.global_step)
        with torch.no_grad():
            variance = (batch - batch.mean(0)).pow(2).sum()
            residual = (batch - out["x_hat"]).pow(2).sum()
        self.global_step += 1
        self.step_in_epoch += 1
        self._metrics = {
            "loss": loss.detach(),
            "fve": 1.0 - residual / variance.clamp(min=1e-12),
            "l0": out["l0"],
            "dead": self.sae.dead_count(),
            "aux": out["aux"].detach(),
        }
        return self._metrics

    @property
    def last_metrics(self) -> dict[str, float]:
        """The last step's metrics as Python numbers."""
        return {name: float(value) for name, value in getattr(self, "_metrics", {}).items()}

    def total_steps(self) -> int:
        if not hasattr(self, "_steps_per_epoch"):
            self._steps_per_epoch = self.data.steps_per_epoch()
        total = self._steps_per_epoch * self.config.epochs
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def fit(self, on_step: Callable[[SAETrainer, dict], None] | None = None) -> dict[str, float]:
        """Train until ``epochs`` (or ``max_steps``) are done, resuming from the trainer state."""
        total = self.total_steps()
        if total == 0:
            raise ValueError(f"not enough training rows for one batch of {self.config.batch_size}")
        while self.epoch < self.config.epochs and self.global_step < total:
            batches = self.data.epoch(self.epoch)
            for _ in range(self.step_in_epoch):  # resume: skip what this epoch already trained on
                next(batches)
            for batch in batches:
                metrics = self.step(batch)
                if on_step is not None:
                    on_step(self, metrics)
                if self.checkpoint_path and self.global_step % self.config.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.global_step >= total:
                    break
            else:
                self.epoch += 1
                self.step_in_epoch = 0
                continue
            break
        return self.last_metrics

    def save_checkpoint(self) -> None:
        state = {
            "model": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "config": asdict(self.config),
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> bool:
        """Resume from the checkpoint if one exists (loaded with ``weights_only=True``)."""
        if not self.checkpoint_path or not self.checkpoint_path.exists():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.sae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step_in_epoch, self.global_step = (
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
        )
        log.info("resumed from %s at step %d", self.checkpoint_path, self.global_step)
        return True


def train_config(settings: SAESettings) -> TrainConfig:
    """The trainer's settings from the ``sae`` section."""
    return from_settings(TrainConfig, settings)
