"""Rule captioning_table: one row per method (BLEU-4, CIDEr, METEOR)."""

import csv

from insight.core.io import atomic_path, read_json
from insight.core.provenance import start_job

log = start_job(snakemake)
columns = ["method", "bleu4", "cider", "meteor", "distinct_fraction", "collapsed"]
with atomic_path(snakemake.output[0]) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    for path in snakemake.input:
        row = {key: read_json(path)[key] for key in columns}
        writer.writerow(row)
        log.info("%s", row)
        if row["collapsed"]:
            log.warning(
                "%s captioner collapsed: one caption for most test images (%.0f%% distinct)",
                row["method"],
                100 * row["distinct_fraction"],
            )
