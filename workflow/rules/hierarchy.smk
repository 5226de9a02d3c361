rule cooccurrence_partial:
    """Partial sums of Eq. 5 over one group of concept shards (one job per group)."""
    input:
        concepts=lambda wc: partial_groups(wc)[int(wc.part)],
        sae=lambda wc: upstream("sae", wc).sae_report,
    output:
        OUT.path("hierarchy/partials/part-{part}.block-{block}.safetensors"),
    log:
        "logs{variant}/cooccurrence_partial/part-{part}.block-{block}.log",
    wildcard_constraints:
        part=r"\d{5}",
        block=r"\d{3}",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb_cooccurrence"],
        runtime=60,
    params:
        min_activation=lambda wc: config_of(wc)["hierarchy"]["min_activation"],
        settings=settings_of("hierarchy.concept_blocks"),
        code=script_version("cooccurrence_partial"),
    script:
        "../scripts/cooccurrence_partial.py"


rule cooccurrence:
    """Reduce the partials to D (cooccurrence.parquet) and per-concept totals."""
    input:
        partials=lambda wc: expand(
            "results{variant}/hierarchy/partials/part-{part:05d}.block-{block:03d}.safetensors",
            variant=wc.variant,
            part=range(len(partial_groups(wc))),
            block=range(config_of(wc)["hierarchy"]["concept_blocks"]),
        ),
        sae=lambda wc: upstream("sae", wc).sae_report,
    output:
        cooccurrence=OUT.cooccurrence,
        totals=OUT.totals,
    log:
        "logs{variant}/cooccurrence.log",
    conda:
        ENV
    resources:
        mem_mb=config["resources"]["mem_mb_cooccurrence"],
    params:
        floor=lambda wc: config_of(wc)["hierarchy"]["floor"],
        code=script_version("cooccurrence"),
    script:
        "../scripts/cooccurrence.py"


rule family_dag:
    """Test D's entries against the criterion, invert the edges, list equivalent pairs,
    break cycles, mark direct edges: the family DAG (Sec. 3.3) and its quality report.
    """
    input:
        cooccurrence=OUT.cooccurrence,
        totals=OUT.totals,
    output:
        families=OUT.families,
        graphml=OUT.path("hierarchy/families.graphml"),
        summary=OUT.path("hierarchy/families.json"),
        equivalents=OUT.path("hierarchy/equivalents.parquet"),
        quality=OUT.family_quality,
    log:
        "logs{variant}/family_dag.log",
    conda:
        ENV
    params:
        settings=settings_of(
            "hierarchy.criterion",
            "hierarchy.threshold",
            "hierarchy.lift",
            "hierarchy.z",
            "hierarchy.dense_coverage",
        ),
        code=script_version("family_dag"),
    script:
        "../scripts/family_dag.py"
