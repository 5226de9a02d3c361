"""Rule ovs_table: gather the benchmarks' mIoU into CSV and markdown."""

import csv

from insight.core.io import atomic_path, read_json
from insight.core.provenance import start_job
from insight.tasks.ovs import markdown_table, ovs_table

log = start_job(snakemake)
results = {read_json(path)["dataset"]: read_json(path) for path in snakemake.input}
header, rows = ovs_table(results)
with atomic_path(snakemake.output.csv) as tmp, open(tmp, "w", newline="") as handle:
    csv.writer(handle).writerows([header, *rows])
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(markdown_table(header, rows))
log.info("\n%s", markdown_table(header, rows))
