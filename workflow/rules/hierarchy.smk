rule cooccurrence_partial:
    """Partial sums of Eq. 5 over one group of concept shards (one job per group)."""
    input:
        concepts=lambda wc: partial_groups()[int(wc.part)],
        sae=RUN.sae_report,
    output:
        "results/hierarchy/partials/part-{part}.safetensors",
    log:
        "logs/cooccurrence_partial/part-{part}.log",
    wildcard_constraints:
        part=r"\d{5}",
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=config["resources"]["mem_mb_cooccurrence"],
        runtime=60,
    params:
        min_activation=config["hierarchy"]["min_activation"],
        code=script_version("cooccurrence_partial"),
    script:
        "../scripts/cooccurrence_partial.py"


rule cooccurrence:
    """Reduce the partials to D (cooccurrence.parquet) and per-concept totals."""
    input:
        partials=lambda wc: expand(
            "results/hierarchy/partials/part-{part:05d}.safetensors",
            part=range(len(partial_groups())),
        ),
        sae=RUN.sae_report,
    output:
        cooccurrence=RUN.cooccurrence,
        totals=RUN.totals,
    log:
        "logs/cooccurrence.log",
    conda:
        ENV
    resources:
        mem_mb=config["resources"]["mem_mb_cooccurrence"],
    params:
        floor=config["hierarchy"]["floor"],
        code=script_version("cooccurrence"),
    script:
        "../scripts/cooccurrence.py"


rule family_dag:
    """Test D's entries against the criterion, invert the edges, list equivalent pairs,
    break cycles, mark direct edges: the family DAG (Sec. 3.3) and its quality report.
    """
    input:
        cooccurrence=RUN.cooccurrence,
        totals=RUN.totals,
    output:
        families=RUN.families,
        graphml="results/hierarchy/families.graphml",
        summary="results/hierarchy/families.json",
        equivalents="results/hierarchy/equivalents.parquet",
        quality="results/hierarchy/family_quality.json",
    log:
        "logs/family_dag.log",
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
