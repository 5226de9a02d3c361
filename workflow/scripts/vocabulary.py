"""Rule vocabulary: collect, normalise and deduplicate the term sources."""

from insight.core.io import write_parquet
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.naming.vocabulary import build_vocabulary, collect_sources

log = start_job(snakemake)
settings = job_settings(snakemake)
sources = collect_sources(settings.vocabulary)
table, dropped = build_vocabulary(sources)
write_parquet(table, snakemake.output[0])
log.info("%d terms from %s", table.num_rows, {name: len(terms) for name, terms in sources.items()})
for reason, entry in dropped.items():
    log.warning("left out %d terms (%s), e.g. %s", entry["count"], reason, entry["examples"])
