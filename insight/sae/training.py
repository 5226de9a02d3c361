"""Training the SAE on feature shards: the data provider, the trainer, held-out metrics.

As in SAELens the trainer knows nothing of the data's origin: :class:`FeatureBatches`
is a plain, seeded, resumable iterator of float32 tensors; :class:`SAETrainer` runs
``step()``/``fit()`` with Adam and checkpoints its whole state (model, optimiser,
position in the data), so a killed run resumes to the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from insight.core.io import atomic_path
from insight.core.logs import progress
from insight.core.settings import from_config
from insight.features.shards import embeddings_of
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, fires, matryoshka_group_sizes


def sae_config(cfg: dict, d_in: int) -> SAEConfig:
    """The SAE architecture from the ``sae`` config section (groups from ratios unless given)."""
    groups = (
        tuple(cfg["groups"])
        if cfg.get("groups")
        else matryoshka_group_sizes(cfg["d_sae"], tuple(cfg["group_ratios"]))
    )
    return SAEConfig(
        d_in=d_in,
        d_sae=cfg["d_sae"],
        k=cfg["k"],
        group_sizes=groups,
        k_aux=cfg["k_aux"],
        aux_coefficient=cfg["aux_coefficient"],
        dead_after=cfg["dead_after"],
        threshold_momentum=cfg["threshold_momentum"],
        aux_activation=cfg["aux_activation"],
    )


def train_sae_from_shards(
    feature_paths: Sequence[str | Path],
    cfg: dict,
    device: torch.device,
    checkpoint_dir: str | Path,
) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """App. B.2: train on the training split of the shards, evaluate on the held-out images.

    The checkpoint file name is a hash of the config and the inputs, so a changed
    setting never resumes from a stale run; it is removed once training has finished.
    """
    paths = [str(p) for p in feature_paths]
    d_in = pq.read_schema(paths[0]).field("embedding").type.list_size
    config = sae_config(cfg, d_in)
    train = from_config(TrainConfig, cfg)
    data = FeatureBatches(
        paths,
        train.batch_size,
        "train",
        cfg["holdout_fraction"],
        cfg["shuffle_buffer"],
        train.seed,
        cfg["calibration_fraction"],
    )
    key = hashlib.sha256(json.dumps([cfg, paths], sort_keys=True).encode()).hexdigest()[:16]
    checkpoint = Path(checkpoint_dir) / f"sae-{key}.pt"
    trainer = SAETrainer(
        MatryoshkaBatchTopKSAE(config, seed=train.seed), train, data, checkpoint, device
    )
    trainer.load_checkpoint()
    bar = progress(trainer.total_steps(), "train SAE", "step")
    bar.update(trainer.global_step)

    history: list[dict] = []

    def on_step(_trainer: SAETrainer, step_metrics: dict) -> None:
        bar.update(1)
        if _trainer.global_step % train.log_every == 0 or _trainer.global_step == 1:
            metrics = _trainer.last_metrics
            history.append({"step": _trainer.global_step, **metrics})
            bar.set_postfix(
                loss=f"{metrics['loss']:.4g}",
                fve=f"{metrics['fve']:.3f}",
                l0=f"{metrics['l0']:.1f}",
                dead=metrics["dead"],
                refresh=False,
            )
            log.info("step %d: %s", _trainer.global_step, metrics)

    last = trainer.fit(on_step)
    bar.close()
    if not history or history[-1]["step"] != trainer.global_step:
        history.append({"step": trainer.global_step, **last})
    calibration = (
        FeatureBatches(
            paths,
            train.batch_size,
            "calibration",
            cfg["holdout_fraction"],
            seed=train.seed,
            calibration_fraction=cfg["calibration_fraction"],
        )
        if cfg["calibration_fraction"] > 0
        else data
    )
    thresholds, calibration_l0 = set_inference_threshold(trainer.sae, calibration, cfg, device)
    metrics = {
        "train_last_step": last,
        "steps": trainer.global_step,
        "train_rows_per_epoch": data.count_rows(),
        "heldout": evaluate_heldout(trainer.sae, paths, cfg, device, thresholds),
        "threshold_calibrated_on": calibration.split,
        "train_l0_by_threshold": (
            calibration_l0
            if calibration is data
            else threshold_l0(trainer.sae, data, cfg, device, thresholds)
        ),
    }
    if calibration is not data:
        metrics["calibration_l0_by_threshold"] = calibration_l0
    metrics["heldout_l0_by_threshold"] = metrics["heldout"].pop("l0_by_threshold")
    trainer.sae.cpu()
    checkpoint.unlink(missing_ok=True)
    return trainer.sae, {
        "config": config.to_dict(),
        "training": {**train.__dict__},
        "metrics": metrics,
        "history": history,
    }


log = logging.getLogger(__name__)


def image_buckets(image_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each row's bucket: a stable hash of its ``image_id`` (crc32 mod 10,000), so all patches
    of an image fall in the same split."""
    if isinstance(image_ids, pa.ChunkedArray):
        image_ids = image_ids.combine_chunks()
    encoded = pc.dictionary_encode(image_ids)
    buckets = np.array(
        [zlib.crc32(s.encode()) % 10_000 for s in encoded.dictionary.to_pylist()], dtype=np.int64
    )
    return buckets[encoded.indices.to_numpy(zero_copy_only=False)]


SPLITS = ("train", "heldout", "calibration")


def split_mask(
    image_ids: pa.Array | pa.ChunkedArray,
    split: str,
    holdout_fraction: float,
    calibration_fraction: float = 0.0,
) -> np.ndarray:
    """Rows of ``split`` by image: ``heldout`` below ``holdout_fraction`` of the buckets,
    ``calibration`` the next ``calibration_fraction``, ``train`` the rest."""
    buckets = image_buckets(image_ids)
    held = round(holdout_fraction * 10_000)
    calibration = held + round(calibration_fraction * 10_000)
    if split == "heldout":
        return buckets < held
    if split == "calibration":
        return (buckets >= held) & (buckets < calibration)
    return buckets >= calibration


class FeatureBatches:
    """Seeded batches of patch embeddings from feature shards, for one split.

    Each epoch visits the row groups of all shards in a seeded random order, keeps the
    rows of the split (``train``, ``heldout`` or ``calibration``, by image:
    :func:`split_mask`), and shuffles them through a
    buffer of ``shuffle_buffer`` rows; the last incomplete batch is dropped in training.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        split: str = "train",
        holdout_fraction: float = 0.1,
        shuffle_buffer: int = 262_144,
        seed: int = 0,
        calibration_fraction: float = 0.0,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.paths = [str(p) for p in paths]
        self.batch_size = batch_size
        self.split = split
        self.holdout_fraction = holdout_fraction
        self.calibration_fraction = calibration_fraction
        self.shuffle_buffer = max(shuffle_buffer, batch_size)
        self.seed = seed
        self.row_groups = [
            (p, g) for p in self.paths for g in range(pq.ParquetFile(p).num_row_groups)
        ]
        if not self.row_groups:
            raise ValueError("no feature shards to train on")
        self.d_in = pq.read_schema(self.paths[0]).field("embedding").type.list_size

    def _rows(self, path: str, group: int) -> np.ndarray:
        table = pq.ParquetFile(path).read_row_group(group, columns=["image_id", "embedding"])
        rows = embeddings_of(table)
        if not np.isfinite(rows).all():
            raise FloatingPointError(f"non-finite feature values in {path}, row group {group}")
        return rows[
            split_mask(
                table["image_id"], self.split, self.holdout_fraction, self.calibration_fraction
            )
        ]

    def count_rows(self) -> int:
        return sum(len(self._rows(p, g)) for p, g in self.row_groups)

    def epoch(
        self, epoch: int, shuffle: bool = True, drop_last: bool = True
    ) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch])
        order = (
            rng.permutation(len(self.row_groups)) if shuffle else np.arange(len(self.row_groups))
        )
        buffer = np.empty((0, self.d_in), dtype=np.float32)
        for position in order:
            buffer = np.concatenate([buffer, self._rows(*self.row_groups[position])])
            if len(buffer) >= self.shuffle_buffer:
                if shuffle:
                    buffer = buffer[rng.permutation(len(buffer))]
                usable = len(buffer) - len(buffer) % self.batch_size
                for start in range(0, usable, self.batch_size):
                    yield torch.from_numpy(buffer[start : start + self.batch_size])
                buffer = buffer[usable:]
        if shuffle:
            buffer = buffer[rng.permutation(len(buffer))]
        for start in range(0, len(buffer), self.batch_size):
            chunk = buffer[start : start + self.batch_size]
            if len(chunk) == self.batch_size or not drop_last:
                yield torch.from_numpy(chunk)


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
        self.sae.update_statistics(out["cols"], out["acts"], batch.shape[0])
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
            self._steps_per_epoch = self.data.count_rows() // self.config.batch_size
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


def first_rows(data: FeatureBatches, rows: int, device: torch.device) -> list[torch.Tensor]:
    """The batches of ``data`` (unshuffled) up to ``rows`` rows, on ``device``."""
    batches, seen = [], 0
    for x in data.epoch(0, shuffle=False, drop_last=False):
        batches.append(x.to(device))
        seen += x.shape[0]
        if seen >= rows:
            break
    return batches


def set_inference_threshold(
    sae: MatryoshkaBatchTopKSAE, data: FeatureBatches, cfg: dict, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every reading of the inference threshold for the trained ``sae``, calibrated on up to
    ``threshold_calibration_rows`` rows of ``data`` (the training split, or the calibration
    split when ``sae.calibration_fraction`` > 0), and the L0 of each on those rows; the
    configured one is set on ``sae``."""
    from insight.sae.thresholds import THRESHOLD_MODES, calibrated_threshold, mean_l0

    batches = first_rows(data, cfg["threshold_calibration_rows"], device)
    if not batches:
        raise ValueError(f"no rows in the {data.split} split to calibrate the threshold on")
    sae.eval()
    thresholds = {mode: calibrated_threshold(sae, batches, mode) for mode in THRESHOLD_MODES}
    l0 = {mode: mean_l0(sae, batches, value) for mode, value in thresholds.items()}
    sae.set_threshold(thresholds[cfg["inference_threshold"]])
    return thresholds, l0


def threshold_l0(
    sae: MatryoshkaBatchTopKSAE,
    data: FeatureBatches,
    cfg: dict,
    device: torch.device,
    thresholds: dict[str, torch.Tensor],
) -> dict[str, float]:
    """The L0 of each threshold on up to ``threshold_calibration_rows`` rows of ``data``."""
    from insight.sae.thresholds import mean_l0

    batches = first_rows(data, cfg["threshold_calibration_rows"], device)
    return {mode: mean_l0(sae, batches, value) for mode, value in thresholds.items()}


def heldout_batches(feature_paths: Sequence[str | Path], cfg: dict) -> Iterator[torch.Tensor]:
    """One pass over the held-out images of the shards (``sae.holdout_fraction``)."""
    heldout = FeatureBatches(
        [str(p) for p in feature_paths],
        cfg["batch_size"],
        "heldout",
        cfg["holdout_fraction"],
        seed=cfg["seed"],
    )
    return heldout.epoch(0, shuffle=False, drop_last=False)


def evaluate_heldout(
    sae: MatryoshkaBatchTopKSAE,
    feature_paths: Sequence[str | Path],
    cfg: dict,
    device: torch.device,
    thresholds: dict[str, torch.Tensor] | None = None,
) -> dict:
    """:func:`evaluate` on the held-out images of the shards (``sae.holdout_fraction``)."""
    return evaluate(sae.to(device), heldout_batches(feature_paths, cfg), device, thresholds)


def import_sae(
    folder: str | Path, feature_paths: Sequence[str | Path], cfg: dict, device: torch.device
) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """A released dictionary_learning SAE in place of training, evaluated like a trained one
    on the held-out images; the report records where it came from."""
    from insight.sae.interop import read_dictionary_learning

    sae, settings = read_dictionary_learning(folder)
    d_in = pq.read_schema(str(feature_paths[0])).field("embedding").type.list_size
    if d_in != sae.config.d_in:
        raise ValueError(
            f"sae.checkpoint {folder} reads {sae.config.d_in}-d features, the shards hold {d_in}-d"
        )
    heldout = evaluate_heldout(sae, feature_paths, cfg, device)
    sae.cpu()
    report = {
        "config": sae.config.to_dict(),
        "source": {"format": "dictionary_learning", "path": str(folder), **settings},
        "metrics": {"heldout": heldout},
    }
    return sae, report


@torch.no_grad()
def evaluate(
    sae: MatryoshkaBatchTopKSAE,
    batches: Iterator[torch.Tensor],
    device: torch.device | str = "cpu",
    thresholds: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Held-out metrics: FVE overall and per Matryoshka prefix (thresholded codes), mean L0
    of the thresholded and of the BatchTopK codes, dead latents, and SAEBench's core
    metrics under their names (``saebench``: explained_variance, mse (per patch, summed
    over dimensions), cossim and l2_ratio (shrinkage, ||x_hat|| / ||x||) averaged over
    patches, l0, frac_alive). With ``thresholds`` (name -> threshold), the L0 under each one
    too (``l0_by_threshold``), in the same pass over the batches."""
    cfg = sae.config
    active_by_threshold = dict.fromkeys(thresholds or {}, 0)
    n = 0
    total = torch.zeros(cfg.d_in, dtype=torch.float64)
    total_sq = torch.zeros((), dtype=torch.float64)
    prefix_sse = torch.zeros(len(cfg.group_ends), dtype=torch.float64)
    l0_threshold = l0_topk = 0.0
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
    cossim = l2_ratio = 0.0
    for batch in batches:
        x = batch.to(device)
        codes = sae.encode(x)
        topk_codes = sae.encode_batch_topk(x)
        if thresholds:
            pre = sae.pre_activations(x)
            for name, threshold in thresholds.items():
                active_by_threshold[name] += int(fires(pre, threshold).sum())
        x_hat = sae.decode(codes)
        cossim += torch.nn.functional.cosine_similarity(x_hat, x, dim=-1).double().sum().item()
        l2_ratio += (x_hat.norm(dim=-1) / x.norm(dim=-1).clamp(min=1e-12)).double().sum().item()
        for j, end in enumerate(cfg.group_ends):
            prefix_sse[j] += (sae.decode(codes, end) - x).double().pow(2).sum().cpu()
        l0_threshold += (codes > 0).sum().item()
        l0_topk += (topk_codes > 0).sum().item()
        fired |= (codes > 0).any(0).cpu()
        total += x.double().sum(0).cpu()
        total_sq += x.double().pow(2).sum().cpu()
        n += x.shape[0]
    if n == 0:
        raise ValueError(
            "no held-out rows to evaluate on (too few images for the held-out fraction?)"
        )
    sst = total_sq - total.pow(2).sum() / n
    fve = (1 - prefix_sse / sst).tolist()
    saebench = {
        "explained_variance": fve[-1],
        "mse": float(prefix_sse[-1]) / n,
        "cossim": cossim / n,
        "l2_ratio": l2_ratio / n,
        "l0": l0_threshold / n,
        "frac_alive": float(fired.float().mean()),
    }
    by_threshold = {"l0_by_threshold": {k: v / n for k, v in active_by_threshold.items()}}
    return {
        **(by_threshold if thresholds else {}),
        "saebench": saebench,
        "heldout_rows": n,
        "fve": fve[-1],
        "fve_per_prefix": fve,
        "l0_threshold": l0_threshold / n,
        "l0_batch_topk": l0_topk / n,
        "dead_latents": sae.dead_latents(),
        "never_fired_heldout": int((~fired).sum()),
        "threshold": float(sae.threshold) if sae.threshold.numel() == 1 else "per_concept",
    }
