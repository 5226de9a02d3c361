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
    """Threshold D, invert the edges, resolve cycles: the family DAG (Sec. 3.3)."""
    input:
        cooccurrence=RUN.cooccurrence,
        totals=RUN.totals,
    output:
        families=RUN.families,
        graphml="results/hierarchy/families.graphml",
        summary="results/hierarchy/families.json",
    log:
        "logs/family_dag.log",
    conda:
        ENV
    params:
        threshold=config["hierarchy"]["threshold"],
        code=script_version("family_dag"),
    script:
        "../scripts/family_dag.py"
