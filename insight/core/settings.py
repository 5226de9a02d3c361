"""The workflow config: validated against its schema (one-line errors), defaults filled in,
and turned once into the library's typed settings (:mod:`insight.core.sections`).

The schema marks each setting that changes no output (threads, inference batch and chunk
sizes, checkpoint cadence, caches, device, resources) with ``affects_results: false``;
:func:`result_view` drops those, and rules take only what it keeps as their params, so a
change of placement or speed never reruns a job.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from functools import cache
from pathlib import Path

from insight.core import sections
from insight.core.sections import Settings

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"


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


@cache
def _parsed_schema(path: Path) -> dict:
    """The schema parsed once per process (read-only: the workflow asks for it per job)."""
    import yaml

    return yaml.safe_load(path.read_text())


def load_schema(schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The workflow's config schema (a fresh copy)."""
    return copy.deepcopy(_parsed_schema(Path(schema_path)))


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` against the workflow schema in place, filling in defaults;
    the first violation raises :class:`ConfigError` with a one-line message."""
    from jsonschema import exceptions, validators

    schema = load_schema(schema_path)
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


def clip_identity(model: str, pretrained: str | None, checkpoint: str | None) -> str:
    """``MODEL/PRETRAINED`` (``ViT-B-16/laion2b_s34b_b88k``), or ``MODEL/FILE`` for local
    weights without a tag: what a DINOiser head records as the CLIP it was trained on."""
    source = pretrained or (Path(checkpoint).name if checkpoint else "random")
    return f"{model}/{source}"


def head_backbone_mismatch(head: str | Path, trained_on: str, backbone: str) -> str:
    """The one-line message for a DINOiser head used with another CLIP than its own."""
    return (
        f"the DINOiser head {head} was trained on {trained_on} but the backbone is {backbone}: "
        "use the head trained for this CLIP (the release ships checkpoints_openai/last.pt for "
        "ViT-B-16/openai) and say so with dinoiser.checkpoint_backbone, or train one here "
        "(dinoiser.checkpoint: null)"
    )


def check_cross_keys(settings: Settings) -> None:
    """Settings that are valid alone but not together, as a one-line :class:`ConfigError`."""
    dinoiser = settings.dinoiser
    if dinoiser.checkpoint and dinoiser.head != "published":
        raise ConfigError(
            f"dinoiser.checkpoint {dinoiser.checkpoint} is CLIP-DINOiser's published head: "
            "set dinoiser.head: published, or dinoiser.checkpoint: null to train the paper's head"
        )
    if dinoiser.checkpoint and dinoiser.enabled:
        clip = settings.backbone
        backbone = clip_identity(clip.model, clip.pretrained, clip.checkpoint)
        if dinoiser.checkpoint_backbone != backbone:
            raise ConfigError(
                head_backbone_mismatch(dinoiser.checkpoint, dinoiser.checkpoint_backbone, backbone)
            )
    sae = settings.sae
    if sae.groups and sum(sae.groups) != sae.d_sae:
        raise ConfigError(
            f"sae.groups {list(sae.groups)} sum to {sum(sae.groups)}, not sae.d_sae = {sae.d_sae}"
        )
    if settings.naming.method == "imported" and not settings.sae.checkpoint:
        raise ConfigError(
            "naming.method: imported reads the names shipped with sae.checkpoint, which is not set"
        )


# ----- typed settings ---------------------------------------------------------------------


def _typed(kind, value):
    """``value`` as the annotated ``kind``: a section dataclass built field by field, a
    list as a tuple; anything else as it is."""
    if dataclasses.is_dataclass(kind):
        return build_section(kind, value)
    if isinstance(value, list) and _is_tuple(kind):
        return tuple(value)
    return value


def _is_tuple(kind) -> bool:
    if typing.get_origin(kind) is tuple:
        return True
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_is_tuple(arg) for arg in typing.get_args(kind))
    return False


def build_section(cls: type, data: dict):
    """A section dataclass from its (validated, defaults filled) config mapping."""
    hints = typing.get_type_hints(cls, vars(sections))
    return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls)})


def settings_from_config(config: dict) -> Settings:
    """The typed settings of a config: a copy validated against the schema, defaults from
    the schema only, cross-key rules checked (:class:`ConfigError` on any violation)."""
    settings = build_section(Settings, validate_config(copy.deepcopy(config)))
    check_cross_keys(settings)
    return settings


def section_settings(name: str, overrides: dict | None = None):
    """One section's typed settings: the schema's defaults with ``overrides`` (tests, and
    library users who do not run the workflow)."""
    checked = validate_config({name: copy.deepcopy(overrides or {})})
    hints = typing.get_type_hints(Settings, vars(sections))
    return _typed(hints[name], checked[name])


# ----- what changes results ---------------------------------------------------------------


def _node(schema: dict, dotted: str) -> dict:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def _results_only(value, node: dict):
    """``value`` without the keys its schema ``node`` marks ``affects_results: false``, its
    keys sorted: the same settings give the same params whatever order a config file or
    an override wrote them in."""
    if not isinstance(value, dict):
        return value
    props = node.get("properties", {})
    return {
        key: _results_only(item, props.get(key, {}))
        for key, item in sorted(value.items())
        if props.get(key, {}).get("affects_results", True)
    }


def result_view(config: dict, dotted: str):
    """The setting at ``dotted`` (``sae``, ``dinoiser.gamma``) less everything the schema
    marks as changing no output: what a rule takes as params."""
    value = config
    for part in dotted.split("."):
        value = value[part]
    return _results_only(value, _node(_parsed_schema(SCHEMA_PATH), dotted))


def runtime_keys(schema: dict | None = None, prefix: str = "") -> list[str]:
    """The dotted keys the schema marks ``affects_results: false`` (whole sections count
    once)."""
    schema = _parsed_schema(SCHEMA_PATH) if schema is None else schema
    keys = []
    for key, node in schema.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if node.get("affects_results", True) is False:
            keys.append(dotted)
        elif node.get("type") == "object":
            keys += runtime_keys(node, f"{dotted}.")
    return keys


def _reference_rows(node: dict, prefix: str, affects: bool) -> list[str]:
    rows = []
    for key, child in node.get("properties", {}).items():
        dotted, marked = f"{prefix}{key}", affects and child.get("affects_results", True)
        if child.get("properties"):
            rows += _reference_rows(child, f"{dotted}.", marked)
            continue
        kind = child.get("type", "any")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        if "enum" in child:
            kind = " / ".join(f"`{v}`" for v in child["enum"])
        default = json.dumps(child["default"]) if "default" in child else "(required)"
        description = " ".join(str(child.get("description", "")).split()).replace("|", "\\|")
        rows.append(
            f"| `{dotted}` | {kind} | `{default}` | {'yes' if marked else 'no'} | {description} |"
        )
    return rows


def settings_reference(schema: dict | None = None) -> str:
    """Every setting of the schema as a Markdown table: key, type, default, whether it
    changes results (a rule's params, hence reruns), description (``docs/settings-reference.md``
    is this, written by ``insight settings``)."""
    schema = _parsed_schema(SCHEMA_PATH) if schema is None else schema
    header = [
        "# Settings reference",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `insight settings`; do not",
        "edit by hand. *Results*: whether the setting changes any output. Settings that do not",
        "(threads, inference batch sizes, chunking, checkpoint cadence, cache folders, device,",
        "resources) are read when a job runs and never make Snakemake rerun a job.",
        "",
        "| setting | type | default | results | description |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + _reference_rows(schema, "", True)) + "\n"


def result_settings(config: dict, *keys: str) -> dict:
    """``{key: result_view(config, key)}`` for each dotted key: a rule's ``settings`` param."""
    return {key: result_view(config, key) for key in keys}


MODEL_BUNDLE_KEYS = ("backbone", "dinoiser.gamma", "features.precision")
"""What :func:`insight.models.frozen.model_bundle` reads besides the DINOiser's weights
file (an input): every model job takes ``result_settings(config, *MODEL_BUNDLE_KEYS)``."""


# ----- ablation variants (insight.core.variants: which stages each one reruns) ----------


def name_of(wildcard: str) -> str | None:
    """The variant name in a ``{variant}`` wildcard value (``None`` for the default run)."""
    return wildcard.rsplit("/", 1)[-1] if wildcard else None


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def variant_config(config: dict, name: str | None) -> dict:
    """The run's ``config`` with variant ``name``'s overrides merged in and validated
    (defaults filled), less the ``variants`` section; ``None`` gives ``config`` itself."""
    if not name:
        return config
    variants = config.get("variants") or {}
    if name not in variants:
        raise ConfigError(f"variants.{name}: no such variant (defined: {', '.join(variants)})")
    run = {key: value for key, value in config.items() if key != "variants"}
    merged = _merge(copy.deepcopy(run), variants[name])
    try:
        return validate_config(merged)
    except ConfigError as err:
        raise ConfigError(f"variants.{name}: {err}") from None


def job_settings(job) -> Settings:
    """The typed settings of a rule's job, from the ``snakemake`` object its script gets:
    the run's config, with the overrides of the variant in its ``{variant}`` wildcard."""
    variant = name_of(getattr(job.wildcards, "variant", ""))
    return settings_from_config(variant_config(job.config, variant))


def from_settings(cls: type, section):
    """A library dataclass (a trainer's config, a model spec) from the same-named fields of
    a typed section; fields the section lacks keep the dataclass's own defaults."""
    names = [f.name for f in dataclasses.fields(cls) if hasattr(section, f.name)]
    return cls(**{name: getattr(section, name) for name in names})


def results_only(section: str, settings) -> dict:
    """A typed section as the config's dict (lists, not tuples) less what the schema marks
    as changing no output (what keys a resumable checkpoint, for example)."""
    as_config = json.loads(json.dumps(dataclasses.asdict(settings)))
    return _results_only(as_config, _node(_parsed_schema(SCHEMA_PATH), section))
