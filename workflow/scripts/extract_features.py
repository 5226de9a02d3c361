"""Rule extract_features: one shard of images -> DINOised patch features."""

import pyarrow.parquet as pq
import torch

from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.features.extract import extract_config, extract_shard_from_index
from insight.models.frozen import frozen_spec

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
stats = extract_shard_from_index(
    index=pq.read_table(snakemake.input.index),
    shard=int(snakemake.wildcards.shard),
    frozen=frozen_spec(
        snakemake.params.backbone,
        snakemake.input.dinoiser,
        snakemake.params.gamma,
        snakemake.params.features["precision"],
    ),
    config=extract_config(snakemake.params.features, snakemake.params.images),
    device=resolve_device(snakemake.params.device),
    out_path=snakemake.output.features,
    rejected_path=snakemake.output.rejected,
)
log.info("shard %s: %s", snakemake.wildcards.shard, stats)
