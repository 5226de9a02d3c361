"""Rule classification_table: gather the datasets' rows."""

import csv

from insight.core.io import atomic_path, read_json
from insight.core.provenance import start_job

log = start_job(snakemake)
columns = ["method", "dataset", "top1", "top5", "nonzero_per_class", "status"]
with atomic_path(snakemake.output[0]) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    for path in snakemake.input:
        result = read_json(path)
        if result.get("status") == "not run":
            writer.writerow({"method": "all", "dataset": result["dataset"], "status": "not run"})
            continue
        for row in result["rows"]:
            writer.writerow({key: row.get(key) for key in columns if key != "status"})
            log.info("%s", row)
