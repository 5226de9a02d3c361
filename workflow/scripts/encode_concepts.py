"""Rule encode_concepts: one feature shard -> its sparse concept activations."""

import torch

from insight.logs import setup_logging
from insight.pipeline import encode_concept_shard
from insight.runtime import resolve_device

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
stats = encode_concept_shard(
    snakemake.input.sae,
    snakemake.input.features,
    snakemake.output[0],
    snakemake.params.chunk,
    resolve_device(snakemake.params.device),
)
log.info("%s: %s", snakemake.output[0], stats)
