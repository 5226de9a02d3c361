"""Rule caption_steering: captions of the test split before and after zeroing named concepts."""

import pyarrow.parquet as pq
import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.models.frozen import frozen_spec, load_frozen
from insight.sae.model import load_sae
from insight.views.steering import steering_on_test_split

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
frozen = frozen_spec(snakemake.params.backbone, snakemake.input.dinoiser, snakemake.params.gamma)
device = resolve_device(snakemake.params.device)
result = steering_on_test_split(
    snakemake.input.captioner,
    load_frozen(frozen, device),
    load_sae(snakemake.input.sae).to(device),
    pq.read_table(snakemake.input.names, columns=["concept", "name"]),
    pq.read_table(snakemake.input.families),
    snakemake.params.cfg,
    device,
)
write_json(result, snakemake.output[0])
for word, entry in result["targets"].items():
    log.info(
        "%s: %d concepts, %d images, captions changed %s (control %s)",
        word,
        entry["concepts"],
        entry["images"],
        entry["changed_fraction"],
        entry.get("control_changed_fraction"),
    )
