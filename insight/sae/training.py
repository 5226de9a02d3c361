"""Training the SAE on feature shards (App. B.2): the data (:mod:`insight.sae.data`), the
trainer (:mod:`insight.sae.trainer`) and the evaluation (:mod:`insight.sae.evaluation`)
wired into one call, and a released SAE imported in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import torch

from insight.core.logs import progress
from insight.core.provenance import settings_hash
from insight.core.sections import SAESettings
from insight.core.settings import results_only
from insight.sae.data import FeatureBatches
from insight.sae.evaluation import evaluate_heldout, set_inference_threshold, threshold_l0
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig, matryoshka_group_sizes
from insight.sae.trainer import SAETrainer, train_config

log = logging.getLogger(__name__)


def sae_config(settings: SAESettings, d_in: int) -> SAEConfig:
    """The SAE architecture from the ``sae`` config section (groups from ratios unless given)."""
    groups = (
        tuple(settings.groups)
        if settings.groups
        else matryoshka_group_sizes(settings.d_sae, tuple(settings.group_ratios))
    )
    return SAEConfig(
        d_in=d_in,
        d_sae=settings.d_sae,
        k=settings.k,
        group_sizes=groups,
        k_aux=settings.k_aux,
        aux_coefficient=settings.aux_coefficient,
        dead_after=settings.dead_after,
        threshold_momentum=settings.threshold_momentum,
        threshold_start_step=settings.threshold_start_step,
        aux_activation=settings.aux_activation,
    )


def train_sae_from_shards(
    feature_paths: Sequence[str | Path],
    settings: SAESettings,
    device: torch.device,
    checkpoint_dir: str | Path,
) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """App. B.2: train on the training split of the shards, evaluate on the held-out images;
    the report records the ``sae`` settings that change results.

    The checkpoint file name is a hash of the config and the inputs, so a changed
    setting never resumes from a stale run; it is removed once training has finished.
    """
    paths = [str(p) for p in feature_paths]
    d_in = pq.read_schema(paths[0]).field("embedding").type.list_size
    config = sae_config(settings, d_in)
    train = train_config(settings)
    data = FeatureBatches(
        paths,
        train.batch_size,
        "train",
        settings.holdout_fraction,
        settings.shuffle_buffer,
        train.seed,
        settings.calibration_fraction,
        settings.batch_images,
    )
    recorded = results_only("sae", settings)
    key = settings_hash([recorded, paths])
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
            settings.holdout_fraction,
            seed=train.seed,
            calibration_fraction=settings.calibration_fraction,
        )
        if settings.calibration_fraction > 0
        else data
    )
    thresholds, calibration_l0 = set_inference_threshold(trainer.sae, calibration, settings, device)
    metrics = {
        "train_last_step": last,
        "steps": trainer.global_step,
        "train_rows_per_epoch": data.count_rows(),
        "heldout": evaluate_heldout(trainer.sae, paths, settings, device, thresholds),
        "threshold_calibrated_on": calibration.split,
        "train_l0_by_threshold": (
            calibration_l0
            if calibration is data
            else threshold_l0(trainer.sae, data, settings, device, thresholds)
        ),
    }
    if calibration is not data:
        metrics["calibration_l0_by_threshold"] = calibration_l0
    metrics["heldout_l0_by_threshold"] = metrics["heldout"].pop("l0_by_threshold")
    trainer.sae.cpu()
    checkpoint.unlink(missing_ok=True)
    return trainer.sae, {
        "settings": recorded,
        "config": config.to_dict(),
        "training": {**train.__dict__},
        "metrics": metrics,
        "history": history,
    }


def import_sae(
    folder: str | Path,
    feature_paths: Sequence[str | Path],
    settings: SAESettings,
    device: torch.device,
) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """A released dictionary_learning SAE in place of training, evaluated like a trained one
    on the held-out images; the report records where it came from and the settings it was
    evaluated with."""
    from insight.sae.interop import read_dictionary_learning

    sae, released_settings = read_dictionary_learning(folder)
    d_in = pq.read_schema(str(feature_paths[0])).field("embedding").type.list_size
    if d_in != sae.config.d_in:
        raise ValueError(
            f"sae.checkpoint {folder} reads {sae.config.d_in}-d features, the shards hold {d_in}-d"
        )
    heldout = evaluate_heldout(sae, feature_paths, settings, device)
    sae.cpu()
    report = {
        "settings": results_only("sae", settings),
        "config": sae.config.to_dict(),
        "source": {"format": "dictionary_learning", "path": str(folder), **released_settings},
        "metrics": {"heldout": heldout},
    }
    return sae, report
