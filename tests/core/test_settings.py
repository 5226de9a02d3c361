"""The workflow config: one-line errors naming the key, and the schema's defaults."""

import copy
import dataclasses
import typing

import pytest
import yaml
from snakemake.utils import validate
from workflow_utils import REPO

from insight.core import sections
from insight.core.sections import Settings
from insight.core.settings import (
    MODEL_BUNDLE_KEYS,
    ConfigError,
    _node,
    load_schema,
    result_settings,
    result_view,
    results_only,
    runtime_keys,
    section_settings,
    settings_from_config,
    settings_reference,
    validate_config,
)
from insight.demo.clip_training import ClipTrainConfig
from insight.models.backbone import BackboneSpec
from insight.models.dinoiser_training import DinoiserTrainConfig
from insight.models.teachers import TeacherSpec
from insight.sae.model import SAEConfig
from insight.sae.trainer import TrainConfig
from insight.tasks.ovs import OVSConfig

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_defaults_are_the_ones_snakemake_fills_in(config):
    ours, snakemakes = copy.deepcopy(config), copy.deepcopy(config)
    validate_config(ours, SCHEMA)
    validate(snakemakes, str(SCHEMA))
    assert ours == snakemakes and ours["sae"]["encode_chunk"] > 0


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c.update(featurs=1),
            "config: unknown key featurs (allowed here: backbone, browser,",
        ),
        (
            lambda c: c["images"].update(per_shar=3),
            "config: unknown key images.per_shar (allowed here: convert_modes, max_pixels, per_shard)",
        ),
        (
            lambda c: c["images"].update(per_shard="many"),
            "config key images.per_shard = 'many': must be of type integer",
        ),
        (lambda c: c["sae"].update(k=0), "config key sae.k = 0: is less than the minimum of 1"),
        (
            lambda c: c["naming"].update(method="x"),
            "config key naming.method = 'x': must be one of 'hierarchy', 'decoder'",
        ),
    ],
)
def test_a_wrong_key_or_type_is_one_line_naming_it(config, change, message):
    change(config)
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text


def _section_nodes(schema: dict, prefix: str = ""):
    """(dotted key, schema node) of every typed section: an object with fixed keys."""
    for key, node in schema["properties"].items():
        fixed = node.get("type") == "object" and node.get("additionalProperties") is False
        if fixed and "properties" in node:
            yield f"{prefix}{key}", node
            yield from _section_nodes(node, f"{prefix}{key}.")


def _section_class(dotted: str):
    cls = Settings
    for part in dotted.split("."):
        cls = typing.get_type_hints(cls, vars(sections))[part]
    return cls


def test_one_dataclass_per_section_with_the_schemas_keys_and_no_defaults():
    schema = load_schema()
    checked = 0
    assert [f.name for f in dataclasses.fields(Settings)] == list(schema["properties"])
    for dotted, node in _section_nodes(schema):
        cls = _section_class(dotted)
        assert dataclasses.is_dataclass(cls), dotted
        assert [f.name for f in dataclasses.fields(cls)] == list(node["properties"]), dotted
        for field in dataclasses.fields(cls):  # the schema holds the only defaults
            assert field.default is dataclasses.MISSING, f"{dotted}.{field.name}"
            assert field.default_factory is dataclasses.MISSING, f"{dotted}.{field.name}"
        checked += 1
    assert checked == 19


def test_typed_settings_carry_the_schemas_defaults_and_the_files_values(config):
    settings = settings_from_config(config)
    schema = load_schema()
    assert settings.sae.k == config["sae"]["k"] == 12
    # a key config.yaml leaves out comes from the schema
    assert (
        settings.sae.encode_chunk
        == schema["properties"]["sae"]["properties"]["encode_chunk"]["default"]
    )
    assert settings.sae.group_ratios == tuple(config["sae"]["group_ratios"])
    assert settings.dinoiser.teacher.features == "value"  # the release's DINO values
    assert settings.ovs.datasets["voc"] == config["ovs"]["datasets"]["voc"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sae.k = 3  # type: ignore[misc]
    assert config["sae"].get("encode_chunk") is None  # the caller's dict is left as it was


def test_cross_key_rules_are_checked_on_the_typed_settings(config):
    config["dinoiser"].update(head="paper")
    with pytest.raises(ConfigError, match="dinoiser.checkpoint .* set dinoiser.head: published"):
        settings_from_config(config)


# the library's own configs keep defaults so they can be used without the workflow; where
# a field is a setting, its default must be the schema's
LIBRARY_CONFIGS = {
    "backbone": [BackboneSpec],
    "dinoiser": [DinoiserTrainConfig],
    "dinoiser.teacher": [TeacherSpec],
    "sae": [SAEConfig, TrainConfig],
    "ovs": [OVSConfig],
    "clip_training": [ClipTrainConfig],
}


@pytest.mark.parametrize("section", sorted(LIBRARY_CONFIGS))
def test_library_config_defaults_are_the_schemas(section):
    properties = _node(load_schema(), section)["properties"]
    compared = 0
    for cls in LIBRARY_CONFIGS[section]:
        for field in dataclasses.fields(cls):
            if field.name not in properties or field.default is dataclasses.MISSING:
                continue
            expected = properties[field.name]["default"]
            assert field.default == expected, f"{cls.__name__}.{field.name}"
            compared += 1
    assert compared >= 3


RUNTIME_KEYS = [
    "device",
    "backbone.cache_dir",
    "features.batch_size",
    "features.row_group_images",
    "features.decode_threads",
    "features.threads",
    "sae.checkpoint_every",
    "sae.encode_chunk",
    "vocabulary.batch_size",
    "captioning.threads",
    "resources",
]


def test_the_schema_marks_placement_and_speed_as_not_changing_results():
    assert runtime_keys() == RUNTIME_KEYS


def test_result_view_drops_exactly_the_runtime_keys(config):
    validate_config(config)
    view = result_view(config, "features")
    assert view == {"precision": config["features"]["precision"], "storage": "float32"}
    assert "encode_chunk" not in result_view(config, "sae") and "k" in result_view(config, "sae")
    assert result_view(config, "dinoiser.gamma") == 0.2
    settings = result_settings(config, *MODEL_BUNDLE_KEYS)
    assert set(settings) == {"backbone", "dinoiser.gamma", "features.precision"}
    assert "cache_dir" not in settings["backbone"] and "model" in settings["backbone"]
    assert results_only("sae", settings_from_config(config).sae) == result_view(config, "sae")


def test_params_do_not_depend_on_the_order_settings_were_written_in(config):
    """An override file that restates ``sae.seed`` moves the key to the end of the merged
    section; the rule's params (compared as text by Snakemake) must not change."""
    validate_config(config)
    reordered = {**config, "sae": {k: v for k, v in config["sae"].items() if k != "seed"}}
    reordered["sae"]["seed"] = config["sae"]["seed"]
    assert list(reordered["sae"]) != list(config["sae"])
    assert repr(result_settings(reordered, "sae")) == repr(result_settings(config, "sae"))
    assert list(result_view(config, "sae")) == sorted(result_view(config, "sae"))


def test_section_settings_fills_the_schemas_defaults():
    sae = section_settings("sae", {"k": 4})
    assert (sae.k, sae.d_sae) == (4, 8192)
    with pytest.raises(ConfigError, match="sae.k"):
        section_settings("sae", {"k": 0})


def test_the_settings_reference_is_the_schema_written_out():
    """docs/settings-reference.md is what ``insight settings`` writes from the schema today,
    with one row per leaf setting: its type, default and whether it changes results."""
    reference = settings_reference()
    assert (REPO / "docs/settings-reference.md").read_text() == reference, (
        "docs/settings-reference.md is stale: run `insight settings > docs/settings-reference.md`"
    )
    rows = {}
    for line in reference.splitlines():
        if line.startswith("| `"):
            key, *cells = line.strip("| ").split(" | ")
            rows[key.strip("`")] = cells
    assert rows["sae.k"][:3] == ["integer", "`12`", "yes"]
    assert rows["ovs.background"][0] == "`auto` / `prompt` / `threshold` / `found`"
    marked_no = {key for key, cells in rows.items() if cells[2] == "no"}
    covered = {key for key in marked_no for runtime in runtime_keys() if key.startswith(runtime)}
    assert covered == marked_no and "resources.gpus" in marked_no
