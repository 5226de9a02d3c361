"""Rule world_recovery: names and families of the demo's concepts against the world's truth."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.demo.recovery import world_recovery
from insight.models.frozen import model_bundle

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
result = world_recovery(
    snakemake.input.parts,
    model_bundle(settings, snakemake.input.dinoiser),
    snakemake.input.sae,
    snakemake.input.families,
    snakemake.input.names,
    resolve_device(settings.device),
    criteria=(snakemake.input.cooccurrence, snakemake.input.totals, settings.hierarchy),
)
families = result["families"]
for name, row in result["families_by_criterion"].items():
    log.info("criterion %s: %s", name, row)
log.info(
    "%d of the %d most frequent concepts named with world words; %d of %d family edges "
    "mirror a part-of relation (%.1f with shuffled parents, p = %.3f), covering %s",
    result["naming"]["world_named"],
    result["naming"]["top_concepts"],
    families["planted_edges"],
    families["edges"],
    families["planted_edges_shuffled_parents"],
    families["p_value"],
    families["planted_pairs"],
)
own_word = result["naming"]["part_concepts_own_word"]
log.info(
    "%d of %d part concepts named with their own part's or object's word "
    "(%.1f with shuffled names, p = %.3f)",
    own_word["named"],
    own_word["concepts"],
    own_word["shuffled_names"],
    own_word["p_value"],
)
write_json(result, snakemake.output[0])
