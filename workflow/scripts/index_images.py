"""Rule index_images: list a dataset's images and assign shards."""

from insight.core.io import write_json, write_parquet
from insight.core.provenance import start_job
from insight.data.images import assign_shards, list_images

log = start_job(snakemake)
refs = list_images(snakemake.input[0], snakemake.params.kind)
index = assign_shards(refs, snakemake.params.per_shard)
shards = int(index["shard"].to_numpy().max()) + 1
write_parquet(index, snakemake.output.index)
write_json(
    {"images": len(refs), "shards": shards, "per_shard": snakemake.params.per_shard},
    snakemake.output.summary,
)
log.info("%s: %d images in %d shards", snakemake.wildcards.dataset, len(refs), shards)
