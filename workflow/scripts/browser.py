"""Rule browser: the static concept browser (results/browser/index.html)."""

from insight.core.logs import setup_logging
from insight.models.backbone import backbone_spec
from insight.views.browser import build_browser

log = setup_logging(snakemake.log[0])
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
