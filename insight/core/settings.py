"""The workflow config: validated against its schema (one-line errors), defaults filled in,
and its sections turned into the library's typed settings."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path


def from_config(cls: type, cfg: dict):
    """A config dataclass from the keys of a config section that name its fields."""
    return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


class ConfigError(ValueError):
    """A config value the schema does not allow; the message is one line naming the key."""


def _with_defaults(validator_class):
    """A validator class that also fills in each property's ``default`` (as Snakemake's
    ``validate`` does), before validating it, so nested sections get their defaults too."""
    from jsonschema import validators

    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def config_error_message(error) -> str:
    """One line for a schema violation: the dotted key, what is wrong, what is allowed."""
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        key = ", ".join(f"{where}.{u}" if where else u for u in unknown)
        return f"config: unknown key {key} (allowed here: {', '.join(allowed)})"
    shown = "" if isinstance(error.instance, dict | list) else f" = {error.instance!r}"
    if error.validator == "type":
        problem = f"must be of type {error.validator_value}"
    elif error.validator == "enum":
        problem = f"must be one of {', '.join(map(repr, error.validator_value))}"
    else:
        problem = error.message.removeprefix(repr(error.instance)).strip()
    return f"config key {where or '(top level)'}{shown}: {problem}"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate ``config`` against the workflow schema in place, filling in defaults;
    the first violation raises :class:`ConfigError` with a one-line message."""
    import yaml
    from jsonschema import exceptions, validators

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _with_defaults(validators.validator_for(schema))(schema)
    error = exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(config_error_message(error))
    return config


CLIP_DINOISER_URL = "https://github.com/wysoczanska/clip_dinoiser"


def published_head_missing(path: str | Path) -> str:
    """The one-line message for a configured published DINOiser head not on disk."""
    return (
        f"dinoiser.checkpoint {path} does not exist: download CLIP-DINOiser's "
        f"checkpoints/last.pt ({CLIP_DINOISER_URL}) to that path, or set "
        "dinoiser.checkpoint: null to train the head here"
    )


def check_cross_keys(config: dict) -> None:
    """Settings that are valid alone but not together, as a one-line :class:`ConfigError`."""
    dinoiser = config["dinoiser"]
    if dinoiser.get("checkpoint") and dinoiser.get("head") != "published":
        raise ConfigError(
            f"dinoiser.checkpoint {dinoiser['checkpoint']} is CLIP-DINOiser's published head: "
            "set dinoiser.head: published, or dinoiser.checkpoint: null to train the paper's head"
        )
    if config["naming"].get("method") == "imported" and not config["sae"].get("checkpoint"):
        raise ConfigError(
            "naming.method: imported reads the names shipped with sae.checkpoint, which is not set"
        )
