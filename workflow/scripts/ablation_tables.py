"""Rule ablation_tables: a row per variant in every task's table, and the headline."""

from insight.ablations.tables import (
    ablation_tables,
    headline,
    headline_markdown,
    plot_headline,
    write_rows,
)
from insight.core.io import atomic_dir, atomic_path
from insight.core.provenance import start_job

log = start_job(snakemake)
tables = ablation_tables(snakemake.params.runs)
rows = headline(tables)
with atomic_dir(snakemake.output.tables) as folder:
    for name, table in tables.items():
        write_rows(table, folder / f"{name}.csv")
    write_rows(rows, folder / "headline.csv")
    plot_headline(rows, folder / "ablations.png")
with atomic_path(snakemake.output.headline) as tmp:
    tmp.write_text(headline_markdown(rows))
log.info("\n%s", headline_markdown(rows))
