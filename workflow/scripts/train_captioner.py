"""Rule train_captioner: train, choose on val, score on test (one kind of tokens)."""

import torch

from insight.io import write_json
from insight.logs import setup_logging
from insight.pipeline import train_captioning_method
from insight.runtime import resolve_device

log = setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
result = train_captioning_method(
    snakemake.input.tokens,
    snakemake.input.captions,
    snakemake.wildcards.method,
    snakemake.params.cfg,
    resolve_device(snakemake.params.device),
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
