"""Rule caption_tokens: pooled backbone and INSIGHT tokens of every Karpathy split."""

import torch

from insight.core.io import save_safetensors, write_json
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.models.frozen import load_frozen, model_bundle
from insight.sae.model import load_sae
from insight.tasks.captioning import caption_tokens

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
captioning = settings.captioning
frozen = model_bundle(settings, snakemake.input.dinoiser)
device = resolve_device(settings.device)
models = load_frozen(frozen, device)
sae = load_sae(snakemake.input.sae).to(device)
tensors, captions = caption_tokens(
    captioning.split_file, captioning.images_root, captioning, models, sae, device
)
save_safetensors(tensors, snakemake.output.tokens)
write_json(captions, snakemake.output.captions)
log.info("tokens: %s", {k: tuple(v.shape) for k, v in tensors.items()})
