"""Ablation variants: a name mapped to a few overrides of how concepts are made.

A variant's config is the run's config with its overrides merged in. Each stage writes
under ``results/variants/NAME/`` only when the variant changes a setting that stage or one
upstream of it reads; otherwise the variant reads the default run's output, so a variant
that changes only the SAE extracts no features and trains no DINOiser.
"""

from __future__ import annotations

import re

from insight.core.layout import RunLayout
from insight.core.settings import (
    ConfigError,
    name_of,
    settings_from_config,
    variant_config,
)

VARIANT_SECTIONS = ("dinoiser", "features", "sae", "hierarchy", "naming")
"""What a variant may override: how features, concepts, families and names are made.
The benchmarks, datasets, backbone and vocabulary stay the run's, so rows compare."""

FIXED_KEYS = ("dinoiser.dataset", "dinoiser.checkpoint", "sae.checkpoint", "hierarchy.dataset")
"""Keys that choose data or rules rather than a setting: the same for every variant."""

NAME_PATTERN = r"[A-Za-z0-9_]+"
DEFAULT_NAME = "default"
"""The default run's row in the ablation tables."""
WILDCARD_PATTERN = rf"(/variants/{NAME_PATTERN})?"
"""The ``{variant}`` wildcard: empty for the default run, ``/variants/NAME`` otherwise,
so ``results{variant}/models/sae.safetensors`` names both."""

DINOISER_TRAINING_KEYS = tuple(
    f"dinoiser.{key}"
    for key in (
        "head",
        "images",
        "epochs",
        "lr",
        "batch_size",
        "d_out",
        "teacher_threshold",
        "seed",
        "recipe",
        "crop_size",
        "lr_step_at",
        "lr_step_factor",
        "teacher",
    )
)
"""What training the DINOiser's head reads of its section (besides backbone and images)."""

STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "dinoiser": ("backbone", "images", *DINOISER_TRAINING_KEYS),
    "features": ("features", "dinoiser"),
    "sae": ("sae", "train_dataset"),
    "concepts": (),
    "hierarchy": ("hierarchy",),
    "naming": ("naming", "vocabulary"),
}
"""The settings each stage reads besides its upstream stages' (coarse on purpose: a
section any of a stage's jobs reads counts whole, so reuse is never wrong)."""

STAGE_ORDER = tuple(STAGE_KEYS)
"""Each stage reads every stage before it (features read the DINOiser, the SAE reads
features, ...): a stage is changed when it or any earlier stage is."""


def wildcard_of(name: str | None) -> str:
    """The ``{variant}`` wildcard value of a variant name (``None``: the default run)."""
    return f"/variants/{name}" if name else ""


def stage_layout(config: dict, wildcard: str, stage: str) -> RunLayout:
    """Where ``stage``'s outputs for the variant in ``wildcard`` are: the variant's own
    folder when it changes the stage (or one upstream), else the default run's."""
    name = name_of(wildcard)
    if name and stage in changed_stages(config["variants"][name]):
        return RunLayout(f"results{wildcard}")
    return RunLayout()


def job_layout(job) -> RunLayout:
    """Where a rule's job writes: the folder of the variant in its ``{variant}`` wildcard."""
    return RunLayout(f"results{getattr(job.wildcards, 'variant', '')}")


def _flat(overrides: dict, prefix: str = "") -> list[str]:
    """The dotted keys an override mapping sets (a nested mapping counts by its leaves)."""
    keys = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        keys += _flat(value, f"{dotted}.") if isinstance(value, dict) and value else [dotted]
    return keys


def _touches(override: str, key: str) -> bool:
    """Whether setting ``override`` can change what ``key`` reads (one is within the other)."""
    a, b = override.split("."), key.split(".")
    return a[: len(b)] == b or b[: len(a)] == a


def changed_stages(overrides: dict) -> list[str]:
    """The stages whose outputs a variant with ``overrides`` must make itself, in order."""
    keys = _flat(overrides)
    changed: list[str] = []
    for stage in STAGE_ORDER:
        own = any(_touches(o, k) for o in keys for k in STAGE_KEYS[stage])
        if own or changed:
            changed.append(stage)
    return changed


def check_variants(config: dict) -> None:
    """Every variant overrides only what variants may change, and its config is valid
    (:class:`ConfigError` naming the variant and key otherwise)."""
    for name, overrides in (config.get("variants") or {}).items():
        if not re.fullmatch(NAME_PATTERN, name) or name == DEFAULT_NAME:
            raise ConfigError(
                f"variants.{name}: a name is letters, digits and '_', and not {DEFAULT_NAME!r}"
            )
        for key in _flat(overrides):
            section = key.split(".")[0]
            if section not in VARIANT_SECTIONS:
                raise ConfigError(
                    f"variants.{name}.{key}: a variant may change only "
                    f"{', '.join(VARIANT_SECTIONS)} (the benchmarks and data stay the run's)"
                )
            if any(_touches(key, fixed) for fixed in FIXED_KEYS):
                raise ConfigError(
                    f"variants.{name}.{key}: chooses data or a released file, the same for "
                    "every variant"
                )
        if not changed_stages(overrides):
            raise ConfigError(f"variants.{name}: changes nothing")
        try:
            settings_from_config(variant_config(config, name))
        except ConfigError as err:
            message = str(err)
            raise ConfigError(
                message if message.startswith("variants.") else f"variants.{name}: {message}"
            ) from None
