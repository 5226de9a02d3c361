"""Steering by named concepts: scale or zero concepts in patch codes (Sec. 4.3, Fig. 6).

The reconstruction is linear in the codes (``x_hat = z W_dec + b_dec``, Eq. B.4), so
scaling concept c by ``s`` moves every patch by ``(s - 1) z_c(p) W_dec[c]`` and nothing
else; zeroing it removes exactly its contribution.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import networkx as nx
import pyarrow as pa
import torch

from insight.core.sections import CaptioningSettings, Settings
from insight.data.images import read_rgb_image
from insight.hierarchy.families import family_graph
from insight.models.frozen import FrozenModels
from insight.naming.names import concept_names
from insight.sae.model import MatryoshkaBatchTopKSAE
from insight.tasks.captioning import build_captioner
from insight.views.run import load_trained_run


def caption_image_file(
    image_path: str | Path,
    settings: Settings,
    results: str | Path = "results",
    requests: Sequence[tuple[str, float]] = (),
    with_family: bool = False,
) -> dict:
    """``insight caption``: the INSIGHT captioner's caption of one image, and with
    ``requests`` ((name, factor) pairs) the caption after scaling those concepts."""
    from insight.views.heatmaps import image_codes

    run = load_trained_run(settings, results, "caption", ("captioner",))
    models, sae, device = run.models, run.sae, run.device
    scales = scales_by_name(run.names, requests, run.families, with_family)
    captioner, tokenizer, captioning = load_captioner(run.layout.captioner, device)
    image = read_rgb_image(image_path)
    _, _, codes, grid = image_codes(image, models.encoder, models.transform, sae, device)

    def caption(concept_codes: torch.Tensor) -> str:
        return caption_codes(captioner, tokenizer, captioning, sae, [concept_codes], grid)[0]

    steered = scale_concepts(codes, scales)
    return {
        "image": str(image_path),
        "caption": caption(codes),
        "steered_caption": caption(steered) if scales else None,
        "scaled_concepts": {str(c): f for c, f in sorted(scales.items())},
        "scaled_activation": float(codes[:, list(scales)].sum()) if scales else 0.0,
    }


def load_captioner(folder: str | Path, device: torch.device | str = "cpu"):
    """A trained captioner folder (``train_captioner``'s output): the captioner in eval
    mode, its tokenizer and its settings (``adapter.json``)."""
    from insight.core.io import load_safetensors, read_json
    from insight.core.settings import section_settings

    folder = Path(folder)
    saved = read_json(folder / "adapter.json")
    settings = section_settings("captioning", {k: v for k, v in saved.items() if k != "d_in"})
    captioner, tokenizer = build_captioner(str(folder / "language_model"), saved["d_in"], settings)
    captioner.adapter.load_state_dict(load_safetensors(folder / "adapter.safetensors")[0])
    return captioner.to(device).eval(), tokenizer, settings


def caption_codes(
    captioner,
    tokenizer,
    settings: CaptioningSettings,
    sae: MatryoshkaBatchTopKSAE,
    codes: Sequence[torch.Tensor],
    grid: tuple[int, int],
) -> list[str]:
    """The captioner's caption of each image's concept codes (N, m): the SAE reconstruction
    (Eq. B.4), pooled to the captioner's token grid, in batches of ``settings.batch_size``."""
    from insight.tasks.captioner import pool_tokens

    out = []
    for start in range(0, len(codes), settings.batch_size):
        chunk = torch.stack(list(codes[start : start + settings.batch_size]))
        tokens = pool_tokens(sae.decode(chunk), grid)
        out += captioner.generate(tokens, tokenizer, settings.max_new_tokens)
    return out


def steering_on_test_split(
    captioner_dir: str | Path,
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    names: pa.Table,
    families: pa.Table | None,
    captioning: CaptioningSettings,
    device: torch.device,
) -> dict:
    """:func:`steering_study` on the Karpathy test split with the trained INSIGHT
    captioner, the targets and factor of ``captioning.steering``."""
    from insight.data.batches import decoded_batches
    from insight.data.benchmarks import karpathy_split
    from insight.data.images import ImageRef
    from insight.models.backbone import patch_grid

    captioner, tokenizer, settings = load_captioner(captioner_dir, device)
    rows = karpathy_split(
        captioning.split_file, captioning.images_root, "test", captioning.images["test"]
    )
    refs = [ImageRef(image_id, path) for image_id, path, _ in rows]
    references = {image_id: sentences for image_id, _, sentences in rows}
    codes, ids, grid = [], [], None
    with torch.no_grad():
        for good, pixels, _ in decoded_batches(refs, models.transform, settings.batch_size):
            if pixels is None:
                continue
            x = models.transform.batch(pixels, device)
            grid = patch_grid(models.encoder.visual, *x.shape[-2:])
            codes += list(sae.encode(models.encoder(x)))
            ids += [ref.image_id for ref in good]

    def caption(batch: Sequence[torch.Tensor]) -> list[str]:
        return caption_codes(captioner, tokenizer, settings, sae, batch, grid)

    steer = captioning.steering
    result = steering_study(
        codes,
        [references[i] for i in ids],
        caption,
        steer.targets,
        names,
        families,
        steer.with_family,
        steer.factor,
        control_draws=steer.control_draws,
    )
    for entry in result["targets"].values():
        for example in entry.get("examples", []):
            example["image"] = ids[example["image"]]
    return result


class UnknownConceptError(KeyError):
    """A concept name that is not in the names table."""


def concepts_named(
    names: pa.Table,
    name: str,
    families: pa.Table | None = None,
    with_family: bool = False,
) -> list[int]:
    """The concepts called ``name`` (a name may be shared), and with ``with_family`` their
    descendants in the family DAG too. An unknown name raises with the closest names."""
    table = concept_names(names)
    found = sorted(c for c, n in table.items() if n == name)
    if not found:
        close = difflib.get_close_matches(name, sorted({n for n in table.values() if n}), n=5)
        raise UnknownConceptError(f"no concept is named {name!r}; closest names: {close}")
    if with_family:
        if families is None:
            raise ValueError("with_family needs the families table")
        graph = family_graph(families)
        for concept in list(found):
            if concept in graph:
                found += nx.descendants(graph, concept)
    return sorted(set(found))


def scale_concepts(codes: torch.Tensor, scales: Mapping[int, float]) -> torch.Tensor:
    """A copy of ``codes`` (..., m) with each concept's activations multiplied by its scale."""
    steered = codes.clone()
    for concept, factor in scales.items():
        steered[..., concept] *= factor
    return steered


def steered_reconstruction(
    sae: MatryoshkaBatchTopKSAE, codes: torch.Tensor, scales: Mapping[int, float]
) -> torch.Tensor:
    """The SAE reconstruction (Eq. B.4) of the steered codes."""
    return sae.decode(scale_concepts(codes, scales))


def scales_by_name(
    names: pa.Table,
    requests: Iterable[tuple[str, float]],
    families: pa.Table | None = None,
    with_family: bool = False,
) -> dict[int, float]:
    """``[(name, factor), ...]`` -> ``{concept: factor}`` (later requests win)."""
    scales: dict[int, float] = {}
    for name, factor in requests:
        for concept in concepts_named(names, name, families, with_family):
            scales[concept] = factor
    return scales


def mentions(text: str, word: str) -> bool:
    """``word`` (one or more words) occurs in ``text`` as whole words, case-insensitively."""
    tokens = re.findall(r"[\w']+", text.lower())
    wanted = word.lower().split()
    return any(tokens[i : i + len(wanted)] == wanted for i in range(len(tokens)))


def concepts_with_words(
    names: pa.Table,
    words: Iterable[str],
    families: pa.Table | None = None,
    with_family: bool = False,
) -> list[int]:
    """The concepts whose name contains any of ``words`` as a whole word (``car`` matches
    ``red car`` and ``car wheel``, not ``carpet``), with their family descendants when
    ``with_family``."""
    words = list(words)
    found = {
        c
        for c, name in concept_names(names).items()
        if name and any(mentions(name, w) for w in words)
    }
    if with_family and found:
        graph = family_graph(families)
        found |= {d for c in found if c in graph for d in nx.descendants(graph, c)}
    return sorted(found)


def _steered_shares(
    codes: Sequence[torch.Tensor],
    images: Sequence[int],
    before: Sequence[str],
    word: str,
    caption: Callable[[Sequence[torch.Tensor]], list[str]],
    concepts: Sequence[int],
    factor: float,
) -> dict:
    """The share of ``images`` whose caption changes, and the share that no longer mention
    ``word``, when ``concepts`` are scaled by ``factor``; with the (before, after) pairs."""
    scales = dict.fromkeys(concepts, factor)
    after = caption([scale_concepts(codes[i], scales) for i in images])
    pairs = list(zip(images, after, strict=True))
    return {
        "changed_fraction": sum(a != before[i] for i, a in pairs) / len(images),
        "removed_fraction": sum(
            mentions(before[i], word) and not mentions(a, word) for i, a in pairs
        )
        / len(images),
        "pairs": [{"image": i, "caption": before[i], "steered_caption": a} for i, a in pairs],
    }


def steering_study(
    codes: Sequence[torch.Tensor],
    references: Sequence[Sequence[str]],
    caption: Callable[[Sequence[torch.Tensor]], list[str]],
    targets: Mapping[str, Sequence[str]],
    names: pa.Table,
    families: pa.Table | None = None,
    with_family: bool = False,
    factor: float = 0.0,
    seed: int = 0,
    control_draws: int = 50,
) -> dict:
    """Steer captions by named concepts (Sec. 4.3, Fig. 6) over a set of test images.

    ``codes`` holds each image's thresholded codes (N, m); ``caption`` maps a list of codes to
    captions. For every target word (``{"car": ["car", "wheel", "body"]}``: the word and the
    concept names that stand for it), the concepts named with those words (and their family
    descendants) are scaled by ``factor`` on the images whose reference captions mention the
    word. Reported per word: how many of those captions changed and how many no longer
    mention the word; and, as a control, the same shares when as many *other* concepts as
    the named ones active on those images (the lookup is over the activated concepts, App.
    C.5), drawn at random among those active there, are scaled instead: the mean over
    ``control_draws`` draws, with the range of the changed share."""
    generator = torch.Generator().manual_seed(seed)
    before = caption(codes)
    report = {}
    for word, concept_words in targets.items():
        chosen = concepts_with_words(names, concept_words, families, with_family)
        images = [i for i, refs in enumerate(references) if any(mentions(r, word) for r in refs)]
        entry = {
            "concept_words": list(concept_words),
            "concepts": len(chosen),
            "images": len(images),
        }
        if not chosen or not images:
            report[word] = {
                **entry,
                "active_concepts": 0,
                "changed_fraction": None,
                "removed_fraction": None,
            }
            continue
        active = torch.zeros(codes[0].shape[-1], dtype=torch.bool)
        for i in images:
            active |= (codes[i] > 0).any(0)
        entry["active_concepts"] = int(active[chosen].sum())
        active[chosen] = False
        others = torch.nonzero(active).flatten()
        draws = [
            others[torch.randperm(len(others), generator=generator)[: entry["active_concepts"]]]
            for _ in range(control_draws)
        ]
        results = _steered_shares(codes, images, before, word, caption, chosen, factor)
        results["examples"] = results.pop("pairs")[:5]
        control = [
            _steered_shares(codes, images, before, word, caption, d.tolist(), factor) for d in draws
        ]
        changed = [c["changed_fraction"] for c in control]
        results["control_draws"] = control_draws
        results["control_changed_fraction"] = sum(changed) / control_draws
        results["control_changed_range"] = [min(changed), max(changed)]
        results["control_removed_fraction"] = (
            sum(c["removed_fraction"] for c in control) / control_draws
        )
        report[word] = {**entry, **results}
    return {"factor": factor, "with_family": with_family, "images": len(codes), "targets": report}
