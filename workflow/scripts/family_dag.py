"""Rule family_dag: the family DAG as Parquet, GraphML and a JSON summary."""

import pyarrow.parquet as pq

from insight.core.io import write_json
from insight.core.provenance import start_job
from insight.hierarchy.families import dag_summary, family_dag, write_families

log = start_job(snakemake)
graph, dropped = family_dag(
    pq.read_table(snakemake.input.cooccurrence),
    pq.read_table(snakemake.input.totals),
    snakemake.params.threshold,
)
write_families(graph, snakemake.output.families, snakemake.output.graphml)
summary = dag_summary(graph, dropped)
write_json({"threshold": snakemake.params.threshold, **summary}, snakemake.output.summary)
log.info("family DAG: %s", summary)
