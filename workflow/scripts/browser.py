"""Rule browser: the static concept browser (results/browser/index.html)."""

from insight.core.provenance import start_job
from insight.models.backbone import backbone_spec
from insight.views.browser import build_browser

log = start_job(snakemake)
counts = build_browser(
    snakemake.input.names,
    snakemake.input.families,
    list(snakemake.input.concepts),
    snakemake.input.index[0] if snakemake.input.index else None,
    backbone_spec(snakemake.params.backbone),
    snakemake.params.cfg,
    snakemake.params.cache,
    snakemake.output[0],
)
log.info("browser: %s", counts)
