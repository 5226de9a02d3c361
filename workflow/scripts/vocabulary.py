"""Rule vocabulary: collect, normalise and deduplicate the term sources."""

from insight.io import write_parquet
from insight.logs import setup_logging
from insight.vocabulary import build_vocabulary, collect_sources

log = setup_logging(snakemake.log[0])
sources = collect_sources(snakemake.params.sources)
table = build_vocabulary(sources)
write_parquet(table, snakemake.output[0])
log.info("%d terms from %s", table.num_rows, {name: len(terms) for name, terms in sources.items()})
