rule ablation_tables:
    """Every task's table with a row per variant, the headline table and its plot."""
    input:
        lambda wc: [path for run in ablation_runs().values() for path in run.values()],
    output:
        tables=directory("results/ablations"),
        headline=report(
            "results/ablation_table.md",
            category="Benchmarks",
            labels={"table": "ablation variants"},
        ),
    log:
        "logs/ablation_tables.log",
    conda:
        ENV
    params:
        runs=lambda wc: ablation_runs(),
        code=script_version("ablation_tables"),
    script:
        "../scripts/ablation_tables.py"


rule ablations:
    """The configured variants, run and compared (not part of `all`)."""
    input:
        rules.ablation_tables.output,
