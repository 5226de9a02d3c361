"""The `ablations` target on the finished demo: what it plans, the rows it writes."""

import copy
import csv
import json
import time

import pytest
import yaml
from snakemake.utils import update_config
from workflow_utils import REPO, planned_jobs, planned_outputs, snakemake

from insight.core.settings import validate_config
from insight.core.variants import stage_layout, wildcard_of

DEMO = ("--cores", "2", "--configfile", "config/demo.yaml")
VARIANTS = ("no_dinoiser", "no_matryoshka")
ABLATION_OUTPUTS = ("results/ablations", "results/ablation_table.md")


def demo_config() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/demo.yaml").read_text()))
    return validate_config(config)


@pytest.mark.slow
def test_ablations_plan_each_variant_from_the_stage_it_changes(demo_run):
    result = snakemake(demo_run, "ablations", "-n", *DEMO)
    jobs = planned_outputs(result.stdout)
    counts = planned_jobs(result.stdout)
    # the CLIP, the DINOiser, the image index and the vocabulary are the default run's
    for rule in ("train_clip", "train_dinoiser", "index_images", "vocabulary", "embed_vocabulary"):
        assert rule not in counts, rule
    outputs = [(rule, path) for rule, paths in jobs for path in paths]
    assert all(
        path.startswith("results/variants/") or path in ABLATION_OUTPUTS for _, path in outputs
    ), [o for o in outputs if not o[1].startswith("results/variants/")]
    extracted = [path for rule, path in outputs if rule == "extract_features"]
    assert extracted and all(
        p.startswith("results/variants/no_dinoiser/features/") for p in extracted
    )
    assert not any("/no_matryoshka/features/" in path for _, path in outputs)
    trained = sorted(path for rule, path in outputs if rule == "train_sae")
    assert trained == [
        f"results/variants/{name}/models/{file}"
        for name in VARIANTS
        for file in ("sae.json", "sae.safetensors")
    ]
    assert counts["train_sae"] == 2 and counts["encode_concepts"] == 2 * counts["extract_features"]


@pytest.fixture(scope="module")
def ablation_run(demo_run):
    start = time.monotonic()
    snakemake(demo_run, "ablations", *DEMO)
    print(f"ablations on the finished demo: {time.monotonic() - start:.0f} s")
    return demo_run


@pytest.mark.slow
def test_every_ablation_table_has_a_row_per_variant_and_the_default(ablation_run):
    folder = ablation_run / "results/ablations"
    expected = {"default", *VARIANTS}
    for name in ("sae", "families", "naming", "headline"):
        with open(folder / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["variant"] for r in rows] == ["default", *VARIANTS], name
    for name in ("interpretability", "ovs", "classification"):
        with open(folder / f"{name}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        keys = {
            variant: [(r["method"], r.get("dataset")) for r in rows if r["variant"] == variant]
            for variant in expected
        }
        assert keys["default"] and all(keys[v] == keys["default"] for v in VARIANTS), name
    headline = (ablation_run / "results/ablation_table.md").read_text().splitlines()
    assert headline[0] == "| figure | default | no_dinoiser | no_matryoshka |"
    assert any(line.startswith("| planted / shuffled |") for line in headline)
    assert (folder / "ablations.png").stat().st_size > 10_000


@pytest.mark.slow
def test_each_variants_sae_is_the_default_one_plus_its_overrides(ablation_run):
    config = demo_config()
    default = json.loads((ablation_run / "results/models/sae.json").read_text())
    for name in VARIANTS:
        layout = stage_layout(config, wildcard_of(name), "sae")
        assert layout.root == f"results/variants/{name}"
        report = json.loads((ablation_run / layout.sae_report).read_text())
        expected = copy.deepcopy(default["settings"])
        expected.update(config["variants"][name].get("sae", {}))
        assert report["settings"] == expected, name
    matryoshka = json.loads(
        (ablation_run / "results/variants/no_matryoshka/models/sae.json").read_text()
    )
    assert matryoshka["config"]["group_sizes"] == [config["sae"]["d_sae"]]
    assert default["config"]["group_sizes"] == config["sae"]["groups"]
