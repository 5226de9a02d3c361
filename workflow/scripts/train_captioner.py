"""Rule train_captioner: train, choose on val, score on test (one kind of tokens)."""

import torch

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.tasks.captioning import train_captioning_method

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
result = train_captioning_method(
    snakemake.input.tokens,
    snakemake.input.captions,
    snakemake.wildcards.method,
    settings.captioning,
    resolve_device(settings.device),
    snakemake.output.model,
)
write_json(result, snakemake.output.result)
log.info(
    "%s: BLEU-4 %.4f CIDEr %.4f METEOR %.4f",
    result["method"],
    result["bleu4"],
    result["cider"],
    result["meteor"],
)
