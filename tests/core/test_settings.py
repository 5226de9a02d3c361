"""The workflow config: one-line errors naming the key, and the schema's defaults."""

import copy

import pytest
import yaml
from snakemake.utils import validate
from workflow_utils import REPO

from insight.core.settings import ConfigError, from_config, validate_config

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


def test_from_config_takes_the_fields_it_knows():
    import dataclasses

    @dataclasses.dataclass
    class Settings:
        lr: float = 0.1
        epochs: int = 1

    assert from_config(Settings, {"lr": 0.5, "other": 3}) == Settings(lr=0.5, epochs=1)
