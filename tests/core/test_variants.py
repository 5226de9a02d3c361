"""Ablation variants: merged configs, the stages each one reruns, and its errors."""

import copy
from types import SimpleNamespace

import pytest
import yaml
from snakemake.utils import update_config
from workflow_utils import REPO

from insight.core.layout import RunLayout
from insight.core.settings import ConfigError, job_settings, validate_config
from insight.core.variants import (
    changed_stages,
    check_variants,
    job_layout,
    name_of,
    stage_layout,
    variant_config,
    wildcard_of,
)


def demo_config() -> dict:
    """config.yaml extended by config/demo.yaml, as ``--configfile`` merges them."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/demo.yaml").read_text()))
    return validate_config(config)


@pytest.fixture
def config():
    """The paper's config with the variants config.yaml gives as examples."""
    paper = yaml.safe_load((REPO / "config.yaml").read_text())
    paper["variants"] = {
        "no_dinoiser": {"dinoiser": {"enabled": False}},
        "no_matryoshka": {"sae": {"group_ratios": [1.0]}},
        "k_32": {"sae": {"k": 32}},
    }
    return validate_config(paper)


def test_a_variant_is_the_config_plus_its_overrides_and_nothing_else(config):
    before = copy.deepcopy(config)
    merged = variant_config(config, "k_32")
    assert config == before  # the run's config is not touched
    expected = copy.deepcopy(config)
    expected["sae"]["k"] = 32
    expected["variants"] = {}
    assert merged == expected
    assert variant_config(config, None) is config


def test_nested_overrides_keep_their_siblings(config):
    config["variants"]["teacher"] = {"dinoiser": {"teacher": {"features": "key"}}}
    merged = variant_config(config, "teacher")
    assert merged["dinoiser"]["teacher"] == {**config["dinoiser"]["teacher"], "features": "key"}


@pytest.mark.parametrize(
    "overrides, stages",
    [
        ({"sae": {"k": 32}}, ["sae", "concepts", "hierarchy", "naming"]),
        ({"dinoiser": {"enabled": False}}, ["features", "sae", "concepts", "hierarchy", "naming"]),
        ({"dinoiser": {"gamma": 0.5}}, ["features", "sae", "concepts", "hierarchy", "naming"]),
        (
            {"dinoiser": {"lr": 1e-3}},
            ["dinoiser", "features", "sae", "concepts", "hierarchy", "naming"],
        ),
        (
            {"dinoiser": {"teacher": {"features": "key"}}},
            ["dinoiser", "features", "sae", "concepts", "hierarchy", "naming"],
        ),
        ({"hierarchy": {"criterion": "baseline"}}, ["hierarchy", "naming"]),
        ({"naming": {"parents": "all"}}, ["naming"]),
    ],
)
def test_a_variant_reruns_the_stage_it_changes_and_everything_after(overrides, stages):
    assert changed_stages(overrides) == stages


def test_unchanged_stages_are_read_from_the_default_run(config):
    wildcard = wildcard_of("no_matryoshka")
    assert wildcard == "/variants/no_matryoshka" and name_of(wildcard) == "no_matryoshka"
    assert stage_layout(config, wildcard, "features") == RunLayout("results")
    assert stage_layout(config, wildcard, "sae").sae_weights == (
        "results/variants/no_matryoshka/models/sae.safetensors"
    )
    assert stage_layout(config, "", "sae") == RunLayout("results")
    assert stage_layout(config, wildcard_of("no_dinoiser"), "features").root == (
        "results/variants/no_dinoiser"
    )


def test_a_job_reads_its_variants_settings(config):
    job = SimpleNamespace(config=config, wildcards=SimpleNamespace(variant="/variants/k_32"))
    assert job_settings(job).sae.k == 32
    assert job_layout(job).sae_checkpoints == "results/variants/k_32/models/checkpoints"
    default = SimpleNamespace(config=config, wildcards=SimpleNamespace())
    assert job_settings(default).sae.k == config["sae"]["k"]
    assert job_layout(default) == RunLayout("results")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ovs": {"stride": 3}}, "variants.bad.ovs.stride: a variant may change only dinoiser,"),
        ({"sae": {"checkpoint": "x"}}, "variants.bad.sae.checkpoint: chooses data or a released"),
        ({"hierarchy": {"dataset": "x"}}, "variants.bad.hierarchy.dataset: chooses data"),
        ({"sae": {"kk": 3}}, "variants.bad: config: unknown key sae.kk"),
        ({"sae": {"k": "many"}}, "variants.bad: config key sae.k = 'many': must be of type"),
        ({"sae": {"groups": [3]}}, "variants.bad: sae.groups [3] sum to 3, not sae.d_sae = 8192"),
        ({}, "variants.bad: changes nothing"),
    ],
)
def test_a_bad_variant_fails_naming_it_and_its_key(config, overrides, message):
    config["variants"]["bad"] = overrides
    with pytest.raises(ConfigError) as caught:
        check_variants(config)
    assert str(caught.value).startswith(message), caught.value
    assert "\n" not in str(caught.value)


def test_default_is_the_default_runs_name(config):
    config["variants"]["default"] = {"sae": {"k": 4}}
    with pytest.raises(ConfigError, match="variants.default: .* not 'default'"):
        check_variants(config)


def test_the_demos_variants_are_valid(config):
    demo = demo_config()
    assert set(demo["variants"]) == {"no_dinoiser", "no_matryoshka"}
    check_variants(demo)
    assert variant_config(demo, "no_matryoshka")["sae"]["groups"] == [demo["sae"]["d_sae"]]
    assert variant_config(demo, "no_dinoiser")["dinoiser"]["enabled"] is False
    with pytest.raises(ConfigError, match="variants.nope: no such variant"):
        variant_config(config, "nope")
