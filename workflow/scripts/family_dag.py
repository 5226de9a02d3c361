"""Rule family_dag: the family DAG as Parquet and GraphML, its equivalent pairs, a JSON
summary and the family quality report."""

import pyarrow.parquet as pq

from insight.core.io import write_json, write_parquet
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.hierarchy.families import (
    dag_summary,
    family_criterion,
    family_dag,
    family_quality,
    write_families,
)

log = start_job(snakemake)
settings = job_settings(snakemake)
criterion = family_criterion(settings.hierarchy)
totals = pq.read_table(snakemake.input.totals)
graph, report = family_dag(pq.read_table(snakemake.input.cooccurrence), totals, criterion)
write_families(graph, snakemake.output.families, snakemake.output.graphml)
write_parquet(report["equivalents"], snakemake.output.equivalents)
summary = dag_summary(graph, report["dropped_edges"])
write_json({"config": snakemake.params.settings, **summary}, snakemake.output.summary)
quality = family_quality(graph, report["equivalents"], totals, settings.hierarchy.dense_coverage)
write_json({"config": snakemake.params.settings, **quality}, snakemake.output.quality)
log.info("family DAG (%s): %s", criterion.name, quality)
