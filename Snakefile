"""INSIGHT: interpretable, spatially grounded, hierarchical concepts in a CLIP vision encoder.

snakemake --cores all                       # the paper's setup (config.yaml)
snakemake --cores 2 --configfile config/demo.yaml   # the offline demo
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/hierarchy.smk"
include: "workflow/rules/naming.smk"
include: "workflow/rules/ovs.smk"
include: "workflow/rules/interpretability.smk"
include: "workflow/rules/classification.smk"
include: "workflow/rules/captioning.smk"
include: "workflow/rules/views.smk"
include: "workflow/rules/ablations.smk"


rule all:
    default_target: True
    input:
        all_targets(),
