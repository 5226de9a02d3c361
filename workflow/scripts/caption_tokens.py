"""Rule caption_tokens: pooled backbone and INSIGHT tokens of every Karpathy split."""

import torch

from insight.core.io import save_safetensors, write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.models.frozen import frozen_spec, load_frozen
from insight.sae.model import load_sae
from insight.tasks.captioning import caption_tokens

log = start_job(snakemake)
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.cfg
frozen = frozen_spec(snakemake.params.backbone, snakemake.input.dinoiser, snakemake.params.gamma)
device = resolve_device(snakemake.params.device)
models = load_frozen(frozen, device)
sae = load_sae(snakemake.input.sae).to(device)
tensors, captions = caption_tokens(cfg["split_file"], cfg["images_root"], cfg, models, sae, device)
save_safetensors(tensors, snakemake.output.tokens)
write_json(captions, snakemake.output.captions)
log.info("tokens: %s", {k: tuple(v.shape) for k, v in tensors.items()})
