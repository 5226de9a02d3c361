"""Prompt templates and template-averaged text embeddings (Eq. B.11): the release's naming
templates (three sets of ten), this project's earlier ones, a user's file, and the 80 CLIP
ImageNet templates for class names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def class_text_embeddings(
    classes: Sequence[str], encode: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Unit class embeddings: each of the 80 templates normalised, averaged, renormalised."""
    templates = {"ovs": imagenet_templates()}
    return template_embeddings(list(classes), encode, templates)["ovs"].astype(np.float32)


def imagenet_prompts() -> list[Callable[[str], str]]:
    """The 80 CLIP ImageNet templates (each normalised, averaged, renormalised by the caller)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES)


def imagenet_templates() -> tuple[str, ...]:
    """The 80 CLIP ImageNet templates as format strings (``"a photo of a {}."``)."""
    return tuple(template("{}") for template in imagenet_prompts())


RELEASE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "noun": (
        "{}", "a {}", "the {}", "one {}", "a photo of a {}", "a picture of a {}",
        "a close view of a {}", "an example of a {}", "something called {}", "a type of {}",
    ),
    "adjective": (
        "{}", "something that is {}", "object that is {}", "appearance that is {}",
        "person that is {}", "something that looks {}", "someone that looks {}", "a {} object",
        "a {} thing", "a {} person",
    ),
    "verb": (
        "{}", "to {}", "someone who is {}", "something that is {}", "a person {}", "a thing {}",
        "a photo of someone {}", "a photo of something {}", "a picture of someone {}",
        "a picture of something {}",
    ),
}  # fmt: skip
"""The naming templates of the authors' release (``cfm/method_utils.py``): three sets of
ten, no full stop; the paper's three examples ("a photo of a {}", "something that is {}",
"a photo of someone {}") are among them."""

PROJECT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "noun": (
        "a photo of a {}.", "a picture of a {}.", "an image containing a {}.",
        "a close-up photo of a {}.", "a photo of the {}.", "a cropped photo of a {}.",
        "there is a {} in this picture.", "a photo showing a {}.", "a blurry photo of a {}.",
        "a photo of a small {}.",
    ),
    "verb": (
        "a photo of someone {}.", "a photo of something {}.", "a picture of someone {}.",
        "an image of people {}.", "a photo of an animal {}.", "a photo of a person {}.",
        "a scene of someone {}.", "a close-up photo of someone {}.",
        "a blurry photo of someone {}.", "a photo of things {}.",
    ),
    "adjective": (
        "something that is {}.", "a photo of something that is {}.", "a {} object.",
        "a photo of a {} thing.", "an image of something {}.", "a close-up of something {}.",
        "a {} surface.", "a picture of something that looks {}.", "a photo of a {} scene.",
        "it looks {}.",
    ),
}  # fmt: skip
"""This project's earlier templates (sentences ending in a full stop), kept selectable."""

TEMPLATE_SETS = {"release": RELEASE_TEMPLATES, "project": PROJECT_TEMPLATES}


def naming_templates(setting: str) -> dict[str, tuple[str, ...]]:
    """The template sets of ``vocabulary.templates``: ``release``, ``project`` or a YAML
    file mapping each part of speech to its templates, each with exactly one ``{}``."""
    if setting in TEMPLATE_SETS:
        return TEMPLATE_SETS[setting]
    import yaml

    path = Path(setting)
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary.templates: {setting!r} is neither release, project nor a file"
        )
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path}: expected a mapping part of speech -> list of templates")
    templates = {}
    for pos, values in loaded.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: {pos!r} needs a non-empty list of templates")
        bad = [v for v in values if not isinstance(v, str) or v.count("{}") != 1]
        if bad:
            raise ValueError(f"{path}: template {bad[0]!r} of {pos!r} needs exactly one {{}}")
        templates[str(pos)] = tuple(values)
    return templates


def template_embeddings(
    terms: list[str],
    encode: Callable[[list[str]], np.ndarray],
    templates: dict[str, tuple[str, ...]],
    chunk: int = 4096,
) -> dict[str, np.ndarray]:
    """Eq. B.11: for each part of speech p, ``E_p(v)`` = normalise(mean_k normalise(T(tau_k^p(v)))).
    Terms go ``chunk`` at a time, so memory holds one chunk's prompt embeddings and the
    output, not every prompt's."""
    out = {}
    for pos, pos_templates in templates.items():
        means = []
        for begin in range(0, len(terms), chunk):
            some = terms[begin : begin + chunk]
            prompts = [template.format(term) for term in some for template in pos_templates]
            vectors = encode(prompts).reshape(len(some), len(pos_templates), -1)
            vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
            mean = vectors.mean(axis=1)
            means.append(mean / np.linalg.norm(mean, axis=-1, keepdims=True))
        out[pos] = np.concatenate(means) if means else np.zeros((0, 0), np.float32)
    return out
