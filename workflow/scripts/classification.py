"""Rule classification: image-level vectors, the probes, zero-shot, explanations."""

from pathlib import Path

import pyarrow as pa
import torch

from insight.core.io import write_json, write_parquet
from insight.core.layout import RUN
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.data.benchmarks import imagefolder
from insight.data.images import DatasetLayoutError
from insight.models.frozen import load_frozen, model_bundle
from insight.sae.model import load_sae
from insight.tasks.classification import (
    classification_heatmaps,
    classification_results,
    classification_vectors,
)

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
name, probes = snakemake.wildcards.cdataset, settings.classification
root = probes.datasets[name]
frozen = model_bundle(settings, snakemake.input.dinoiser)
device = resolve_device(settings.device)
try:
    train_pairs, classes = imagefolder(
        root, probes.train_split, probes.images_per_class, probes.class_names
    )
    test_pairs, test_classes = imagefolder(
        root, probes.test_split, probes.images_per_class, probes.class_names
    )
    if test_classes != classes:
        raise DatasetLayoutError(
            f"{name}: the {probes.test_split} split's class folders differ from {probes.train_split}'s"
        )
except (DatasetLayoutError, FileNotFoundError) as err:
    log.warning("%s not run: %s", name, err)
    for path in (snakemake.output.train, snakemake.output.test):
        write_parquet(pa.table({"image_id": pa.array([], pa.string())}), path)
    Path(snakemake.output.figures).mkdir(parents=True, exist_ok=True)
    write_json({"dataset": name, "status": "not run", "reason": str(err)}, snakemake.output.result)
else:
    models = load_frozen(frozen, device)  # once for both splits
    sae = load_sae(snakemake.input.sae).to(device)
    tables = {}
    for split, pairs in (("train", train_pairs), ("test", test_pairs)):
        tables[split] = classification_vectors(pairs, models, sae, device)
        write_parquet(tables[split], snakemake.output[split])
    rows, explanations = classification_results(
        name,
        tables["train"],
        tables["test"],
        classes,
        models,
        frozen.backbone,
        probes,
        RUN.text_cache,
        device,
        snakemake.input.names,
    )
    classification_heatmaps(explanations, models, sae, device, snakemake.output.figures)
    write_json(
        {"dataset": name, "classes": classes, "rows": rows, "explanations": explanations},
        snakemake.output.result,
    )
