"""Explain one image by its concepts (paper Fig. 4): what makes the model see a label.

The explained score of a label t is the mean over the image's patches of the SAE
reconstruction against the label's text embedding, ``s = mean_p <x_hat_p, t/|t|>``.
The reconstruction is linear in the codes (Eq. B.4), so the score splits exactly:

    s = sum_c mean_p z_c(p) * <W_dec[c], t/|t|>  +  <b_dec, t/|t|>

The JSON lists the top concepts by contribution, the rest of the concepts as one
``other_concepts`` item and the decoder bias as ``bias``; their contributions sum to
the score and their shares (contribution / score) sum to one. The reconstruction is
not normalised here (normalising would make the split inexact); it ranks labels the
same way up to each patch's norm. The figure beside the heatmaps is a waterfall of those
items: each bar starts where the previous one ended, and the last ends at the score.

Without a label, the explained label is the image's best term among the vocabulary's
concrete terms: terms from a source other than the plain word-frequency list (the
concreteness norms, LAION lists, the user's word lists), so function words such as
"except" are never explained.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from insight.core.io import write_json
from insight.core.sections import Settings
from insight.data.images import read_rgb_image
from insight.models.prompts import class_text_embeddings
from insight.models.text import cached_text_encoder
from insight.naming.names import concept_names
from insight.sae.model import MatryoshkaBatchTopKSAE
from insight.views.heatmaps import concept_label, heatmap_figure
from insight.views.run import load_trained_run


@torch.no_grad()
def label_contributions(
    codes: torch.Tensor, sae: MatryoshkaBatchTopKSAE, label_text: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    """Per-concept contributions (m,), the bias term and the score of the module docstring."""
    text = F.normalize(label_text.float(), dim=-1)
    contributions = codes.mean(0) * (sae.W_dec @ text)
    bias = float(sae.b_dec @ text)
    score = float((sae.decode(codes) @ text).mean())
    return contributions, bias, score


@torch.no_grad()
def best_row(codes: torch.Tensor, sae: MatryoshkaBatchTopKSAE, embeddings: np.ndarray) -> int:
    """The row of a text-embedding table (R, d) whose normalised embedding best matches the
    mean reconstruction, i.e. the label with the highest explained score."""
    mean = sae.decode(codes).mean(0).detach().cpu().numpy()
    norms = np.linalg.norm(embeddings, axis=1).clip(min=1e-12)
    return int(np.argmax(embeddings @ mean / norms))


def explain_label(
    codes: torch.Tensor,
    sae: MatryoshkaBatchTopKSAE,
    label: str,
    label_text: torch.Tensor,
    names: Mapping[int, str],
    graph: nx.DiGraph,
    top: int = 5,
) -> dict:
    """The explanation of one label on one image's codes (N, m): the score, its top
    concepts with shares, parents and children, and the remainder and bias items."""
    contributions, bias, score = label_contributions(codes, sae, label_text)
    order = torch.argsort(contributions, descending=True)[:top].tolist()
    active = codes.mean(0)

    def relatives(nodes) -> list[dict]:
        return [{"concept": int(c), "name": names.get(int(c))} for c in sorted(nodes)]

    concepts = []
    for concept in order:
        contribution = float(contributions[concept])
        concepts.append(
            {
                "concept": concept,
                "name": names.get(concept),
                "mean_activation": float(active[concept]),
                "contribution": contribution,
                "share": contribution / score if score else 0.0,
                "parents": relatives(graph.predecessors(concept)) if concept in graph else [],
                "children": relatives(graph.successors(concept)) if concept in graph else [],
            }
        )
    other = float(contributions.sum()) - sum(c["contribution"] for c in concepts)
    return {
        "label": label,
        "score": score,
        "concepts": concepts,
        "other_concepts": {"contribution": other, "share": other / score if score else 0.0},
        "bias": {"contribution": bias, "share": bias / score if score else 0.0},
    }


def waterfall_steps(explanation: dict) -> list[dict]:
    """The waterfall of an explanation: the top concepts, the remaining concepts and the
    bias, each ``{"label", "start", "end"}``; the last ``end`` is the score."""
    items = [
        (concept_label(c["concept"], c["name"]), c["contribution"]) for c in explanation["concepts"]
    ]
    items += [
        ("other concepts", explanation["other_concepts"]["contribution"]),
        ("bias", explanation["bias"]["contribution"]),
    ]
    steps, total = [], 0.0
    for label, contribution in items:
        steps.append({"label": label, "start": total, "end": total + contribution})
        total += contribution
    return steps


def waterfall_png(explanation: dict, path: str | Path) -> None:
    """The waterfall of :func:`waterfall_steps` as a horizontal bar chart, the score marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from insight.core.io import atomic_path

    steps = waterfall_steps(explanation)
    figure, axes = plt.subplots(figsize=(6, 0.45 * len(steps) + 1.2))
    for row, step in enumerate(steps):
        width = step["end"] - step["start"]
        colour = "#2a9d8f" if width >= 0 else "#e76f51"
        axes.barh(row, width, left=step["start"], color=colour)
        axes.text(max(step["start"], step["end"]), row, f" {width:+.3f}", va="center", fontsize=8)
    axes.axvline(explanation["score"], color="black", linewidth=1)
    axes.set_yticks(range(len(steps)), [s["label"] for s in steps])
    axes.invert_yaxis()
    axes.set_xlabel(
        f"contribution to the score of '{explanation['label']}' ({explanation['score']:.3f})"
    )
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def concrete_rows(terms: pa.Table, embeddings: pa.Table) -> np.ndarray:
    """Rows of ``embeddings.parquet`` whose term is concrete (module docstring); all rows
    when the vocabulary has no other source than word frequency."""
    sources = dict(zip(terms["term"].to_pylist(), terms["sources"].to_pylist(), strict=True))
    concrete = {t for t, found in sources.items() if any(s != "wordfreq" for s in found)}
    rows = [i for i, t in enumerate(embeddings["term"].to_pylist()) if t in concrete]
    return np.array(rows if rows else range(embeddings.num_rows), dtype=np.int64)


def structure_caption(item: dict) -> str:
    """``parents: a, b | children: c`` for one explained concept."""

    def listed(relatives: list[dict]) -> str:
        shown = [concept_label(r["concept"], r["name"]) for r in relatives[:3]]
        more = len(relatives) - len(shown)
        return ", ".join(shown) + (f" +{more}" if more > 0 else "") if shown else "none"

    return f"parents: {listed(item['parents'])} | children: {listed(item['children'])}"


def explanation_png(
    crop: np.ndarray,
    codes: torch.Tensor,
    grid: tuple[int, int],
    explanation: dict,
    path,
) -> None:
    """Fig. 4: the image, the top concepts' heatmaps titled with names and shares, and
    each one's parents and children under it."""
    items = explanation["concepts"]
    panels = [
        (
            f"{concept_label(item['concept'], item['name'])} {item['share']:.0%}",
            codes[:, item["concept"]].reshape(grid).detach().cpu().numpy(),
        )
        for item in items
    ]
    heatmap_figure(
        crop,
        panels,
        path,
        f"why '{explanation['label']}' (score {explanation['score']:.3f})",
        captions=[structure_caption(item) for item in items],
    )


def explain_image_file(
    image_path: str | Path,
    settings: Settings,
    results: str | Path = "results",
    out: str | Path = "explanations",
    label: str | None = None,
    top: int = 5,
) -> tuple[dict, Path, Path]:
    """``insight explain``: one image through the trained run (backbone, DINOiser, SAE,
    names, families); writes ``{out}/{stem}.png`` (Fig. 4) and ``{stem}.json``. Without a
    label, the vocabulary term with the highest explained score is explained."""
    from insight.hierarchy.families import family_graph
    from insight.views.heatmaps import image_codes

    needed = () if label else ("embeddings", "terms")
    run = load_trained_run(settings, results, "explain", needed)
    models, sae, device = run.models, run.sae, run.device
    image = read_rgb_image(image_path)
    crop, _, codes, grid = image_codes(image, models.encoder, models.transform, sae, device)
    names = concept_names(run.names)
    graph = family_graph(run.families)
    if label is None:
        vocabulary = pq.read_table(run.layout.embeddings, columns=["term", "embedding"])
        terms = pq.read_table(run.layout.terms)
        rows = concrete_rows(terms, vocabulary)
        embeddings = np.stack(vocabulary["embedding"].to_numpy(zero_copy_only=False))[rows]
        best = best_row(codes, sae, embeddings.astype(np.float32))
        label = vocabulary["term"][int(rows[best])].as_py()
        text = torch.from_numpy(embeddings[best].astype(np.float32))
    else:
        encoder = cached_text_encoder(
            models.model, models.tokenizer, run.spec, run.layout.text_cache, device
        )
        text = torch.from_numpy(class_text_embeddings([label], encoder.encode)[0])
    explanation = explain_label(codes, sae, label, text.to(device), names, graph, top)
    explanation["image"] = str(image_path)
    explanation["waterfall"] = waterfall_steps(explanation)
    out = Path(out)
    stem = Path(image_path).stem
    png, json_path = out / f"{stem}.png", out / f"{stem}.json"
    explanation_png(crop, codes, grid, explanation, png)
    waterfall_png(explanation, out / f"{stem}_waterfall.png")
    write_json(explanation, json_path)
    return explanation, png, json_path
