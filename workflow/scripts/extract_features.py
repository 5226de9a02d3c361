"""Rule extract_features: one shard of images -> DINOised patch features."""

import pyarrow.parquet as pq
import torch

from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.features.extract import extract_config, extract_shard_from_index
from insight.models.frozen import model_bundle

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
stats = extract_shard_from_index(
    index=pq.read_table(snakemake.input.index),
    shard=int(snakemake.wildcards.shard),
    frozen=model_bundle(settings, snakemake.input.dinoiser),
    config=extract_config(settings.features, settings.images),
    device=resolve_device(settings.device),
    out_path=snakemake.output.features,
    rejected_path=snakemake.output.rejected,
)
log.info("shard %s: %s", snakemake.wildcards.shard, stats)
