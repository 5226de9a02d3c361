"""Rule embed_vocabulary: term embeddings (cached per prompt) and the FAISS index."""

import numpy as np
import pyarrow.parquet as pq
import torch

from insight.core.io import write_parquet
from insight.core.layout import RUN
from insight.core.provenance import start_job
from insight.core.runtime import resolve_device
from insight.core.settings import job_settings
from insight.models.backbone import backbone_spec
from insight.naming.embed import embed_vocabulary
from insight.naming.vocabulary import build_index, save_index, user_embedding_table

log = start_job(snakemake)
settings = job_settings(snakemake)
torch.set_num_threads(snakemake.threads)
vocabulary = settings.vocabulary
if snakemake.input.given:
    table = user_embedding_table(snakemake.input.given[0])
    log.info("using the given embeddings %s (%d terms)", snakemake.input.given[0], table.num_rows)
else:
    terms = pq.read_table(snakemake.input.terms, columns=["term"])["term"].to_pylist()
    table, stats = embed_vocabulary(
        terms,
        backbone_spec(settings.backbone),
        vocabulary,
        RUN.text_cache,
        resolve_device(settings.device),
    )
    log.info("cache counters: %s", stats)
write_parquet(table, snakemake.output.embeddings)
vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
save_index(build_index(vectors, vocabulary.index), snakemake.output.index)
