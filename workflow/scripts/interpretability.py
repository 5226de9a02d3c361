"""Rule interpretability: the Locality / Consistency / Impurity table."""

import csv

import torch

from insight.core.io import atomic_path
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.models.frozen import model_bundle
from insight.tasks.interpretability import interpretability_rows

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
rows = interpretability_rows(
    settings.interpretability.datasets,
    model_bundle(settings, snakemake.input.dinoiser),
    snakemake.input.sae,
    settings.interpretability,
    resolve_device(settings.device),
)
columns = [
    "method",
    "dataset",
    "locality",
    "consistency",
    "impurity",
    "images",
    "active_concepts",
    "status",
]
with atomic_path(snakemake.output[0]) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in columns})
        log.info("%s", row)
