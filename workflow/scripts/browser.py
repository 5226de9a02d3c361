"""Rule browser: the static concept browser (results/browser/index.html)."""

from insight.core.layout import RUN
from insight.core.provenance import start_job
from insight.core.settings import job_settings
from insight.models.backbone import backbone_spec
from insight.views.browser.build import build_browser

log = start_job(snakemake)
settings = job_settings(snakemake)
counts = build_browser(
    snakemake.input.names,
    snakemake.input.families,
    list(snakemake.input.concepts),
    snakemake.input.index[0] if snakemake.input.index else None,
    backbone_spec(settings.backbone),
    settings.browser,
    RUN.thumbnail_cache,
    snakemake.output[0],
    snakemake.input.totals,
    settings.hierarchy.dense_coverage,
)
log.info("browser: %s", counts)
