"""Rule caption_steering: captions of the test split before and after zeroing named concepts."""

import pyarrow.parquet as pq
import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.models.frozen import load_frozen, model_bundle
from insight.sae.model import load_sae
from insight.views.steering import steering_on_test_split

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
frozen = model_bundle(settings, snakemake.input.dinoiser)
device = resolve_device(settings.device)
result = steering_on_test_split(
    snakemake.input.captioner,
    load_frozen(frozen, device),
    load_sae(snakemake.input.sae).to(device),
    pq.read_table(snakemake.input.names, columns=["concept", "name"]),
    pq.read_table(snakemake.input.families),
    settings.captioning,
    device,
)
write_json(result, snakemake.output[0])
for word, entry in result["targets"].items():
    if entry["changed_fraction"] is None:
        log.info("%s: no concept named or no test image; skipped", word)
        continue
    log.info(
        "%s: %d concepts named, %d fire on its %d images; captions changed %.0f%% "
        "(control %.0f%%, %d draws from %.0f%% to %.0f%%)",
        word,
        entry["concepts"],
        entry["active_concepts"],
        entry["images"],
        100 * entry["changed_fraction"],
        100 * entry["control_changed_fraction"],
        entry["control_draws"],
        *(100 * x for x in entry["control_changed_range"]),
    )
