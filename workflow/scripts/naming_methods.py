"""Rule naming_methods: the world-named share of the demo's top concepts per naming method."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.demo.recovery import compare_naming_methods

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
result = compare_naming_methods(
    dict(snakemake.input.items()), settings.naming, settings.hierarchy.threshold
)
for method, share in result.items():
    log.info("%s: %d of %d world-named", method, share["world_named"], share["top_concepts"])
write_json(result, snakemake.output[0])
