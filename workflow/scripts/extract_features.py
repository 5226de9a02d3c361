"""Rule extract_features: one shard of images -> DINOised patch features."""

import pyarrow.parquet as pq
import torch

from insight.logs import setup_logging
from insight.pipeline import backbone_spec, extract_config, extract_shard_from_index
from insight.runtime import resolve_device

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
stats = extract_shard_from_index(
    index=pq.read_table(snakemake.input.index),
    shard=int(snakemake.wildcards.shard),
    spec=backbone_spec(snakemake.params.backbone),
    dinoiser_path=snakemake.input.dinoiser[0] if snakemake.input.dinoiser else None,
    gamma=snakemake.params.gamma,
    precision=snakemake.params.features["precision"],
    config=extract_config(snakemake.params.features, snakemake.params.images),
    device=resolve_device(snakemake.params.device),
    out_path=snakemake.output.features,
    rejected_path=snakemake.output.rejected,
)
log.info("shard %s: %s", snakemake.wildcards.shard, stats)
