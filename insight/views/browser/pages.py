"""The browser's HTML: the index, one page per concept, one page per image, and the two
SVG figures (activation histogram, family around a concept). Every page and figure is a
Jinja2 template in ``insight/views/templates`` rendered with autoescaping, so names and image
ids reach the HTML escaped; this module only lays out the data the templates draw."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import jinja2
import networkx as nx
import pyarrow as pa

from insight.core.io import atomic_dir
from insight.hierarchy.families import direct_edges, evidence_text, family_graph
from insight.views.browser.examples import QUANTILE_BANDS
from insight.views.browser.queries import ConceptInfo, image_page_data
from insight.views.browser.thumbnails import IMAGE_PAGE_SIZE, image_page_name, link_or_copy
from insight.views.heatmaps import concept_label

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FAMILY_ROW_LIMIT = 8
FAMILY_BOX = (136, 24)
FAMILY_COLUMN_WIDTH = 150
FAMILY_ROW_HEIGHT = 80
ASSETS = ("style.css", "browser.js")


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def histogram_svg(peak: float, counts: Sequence[int], width: int = 360, height: int = 90) -> str:
    """An activation histogram as an SVG bar chart (id ``histogram``)."""
    if not counts or max(counts) == 0:
        return "<p>This concept never fires.</p>"
    top, bar_width = max(counts), width / len(counts)
    bars = [
        {"x": i * bar_width, "height": (height - 20) * n / top, "count": n}
        for i, n in enumerate(counts)
    ]
    return (
        environment()
        .get_template("histogram.svg.j2")
        .render(
            width=width,
            height=height,
            bars=bars,
            bar_width=bar_width - 1,
            peak=peak,
            total=sum(counts),
            top=top,
        )
    )


def _box_edge(start: tuple[float, float], end: tuple[float, float], half: tuple[float, float]):
    """The point where the segment from ``start`` to ``end`` leaves the box centred on
    ``start`` (half-width, half-height ``half``): arrows keep to the boxes' borders."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    scale = min(
        half[0] / abs(dx) if dx else float("inf"), half[1] / abs(dy) if dy else float("inf")
    )
    return start[0] + dx * scale, start[1] + dy * scale


def family_layers(
    concept: int, graph: nx.DiGraph, infos: Mapping[int, ConceptInfo], limit: int
) -> tuple[list[list[int]], list[int]]:
    """The rows of the family figure, top to bottom: grandparents, parents, the concept,
    children; each row its ``limit`` most frequent concepts, and per row how many were cut."""
    parents = set(graph.predecessors(concept))
    grandparents = {g for p in parents for g in graph.predecessors(p)} - parents - {concept}
    layers, cut = [], []
    for layer in (grandparents, parents, {concept}, set(graph.successors(concept))):
        ordered = sorted(layer, key=lambda c: (-infos[c].frequency if c in infos else 0, c))
        if ordered:
            layers.append(ordered[:limit])
            cut.append(len(ordered) - len(ordered[:limit]))
    return layers, cut


def family_svg(
    concept: int,
    graph: nx.DiGraph,
    infos: Mapping[int, ConceptInfo],
    limit: int = FAMILY_ROW_LIMIT,
    implied: nx.DiGraph | None = None,
) -> str:
    """The family around a concept as an SVG: grandparents and parents above, children
    below along ``graph``'s (direct) edges (the ``limit`` most frequent per row, then a
    ``+N more`` box), parent -> child arrows from box border to box border labelled with
    their confidence, their evidence on hover, nodes as links. Edges of ``implied`` (the
    whole family graph) between drawn concepts that ``graph`` lacks are drawn dashed in
    a group the page's "show implied edges" toggle reveals."""
    if concept not in graph:
        return "<p>This concept belongs to no family.</p>"
    layers, cut = family_layers(concept, graph, infos, limit)
    columns = max(
        len(layer) + (1 if extra else 0) for layer, extra in zip(layers, cut, strict=True)
    )
    width = FAMILY_COLUMN_WIDTH * columns
    position, more = {}, []
    for row, (layer, extra) in enumerate(zip(layers, cut, strict=True)):
        step = width / (len(layer) + (1 if extra else 0))
        y = 25 + row * FAMILY_ROW_HEIGHT
        for x, node in enumerate(layer):
            position[node] = (step * (x + 0.5), y)
        if extra:
            more.append({"x": step * (len(layer) + 0.5), "y": y, "count": extra})
    half = (FAMILY_BOX[0] / 2, FAMILY_BOX[1] / 2)
    arrows = []
    for a, b, edge in (
        (implied if implied is not None else graph).subgraph(position).edges(data=True)
    ):
        x1, y1 = _box_edge(position[a], position[b], half)
        x2, y2 = _box_edge(position[b], position[a], (half[0] + 3, half[1] + 3))
        arrows.append(
            {
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "confidence": edge.get("confidence"),
                "evidence": evidence_text(edge),
                "implied": not graph.has_edge(a, b),
            }
        )
    nodes = [
        {
            "concept": node,
            "x": x,
            "y": y,
            "current": node == concept,
            "label": (infos[node].display if node in infos else concept_label(node, None))[:22],
        }
        for node, (x, y) in position.items()
    ]
    return (
        environment()
        .get_template("family.svg.j2")
        .render(
            width=width,
            height=50 + (len(layers) - 1) * FAMILY_ROW_HEIGHT,
            box=FAMILY_BOX,
            arrows=arrows,
            nodes=nodes,
            more=more,
        )
    )


def _relatives(
    concept: int,
    nodes: Iterable[int],
    parent_side: bool,
    graph: nx.DiGraph,
    by_concept: Mapping[int, ConceptInfo],
) -> list[dict]:
    """A concept's parents (``parent_side``) or children with their edge confidences and
    evidence, most confident first."""
    rows = []
    for other in nodes:
        edge = (other, concept) if parent_side else (concept, other)
        info = by_concept.get(other)
        rows.append(
            {
                "concept": other,
                "display": info.display if info else concept_label(other, None),
                "confidence": graph.edges[edge].get("confidence") or float("nan"),
                "evidence": evidence_text(graph.edges[edge]),
            }
        )
    return sorted(rows, key=lambda r: (-r["confidence"], r["concept"]))


def _place_examples(
    examples: pa.Table, thumbnails: Mapping[tuple[int, str], str], thumbs: Path
) -> dict[int, dict[str, list[dict]]]:
    """Link each example's cached thumbnail into ``thumbs``; per concept and band, what its
    page lists (image id, peak, thumbnail file, image page)."""
    by_concept: dict[int, dict[str, list[dict]]] = {}
    for row in examples.select(["concept", "image_id", "band", "peak"]).to_pylist():
        cached = thumbnails.get((row["concept"], row["image_id"]))
        name = Path(cached).name if cached else None
        if cached and not (thumbs / name).exists():
            link_or_copy(cached, thumbs / name)
        by_concept.setdefault(row["concept"], {}).setdefault(row["band"], []).append(
            {
                "image_id": row["image_id"],
                "peak": row["peak"],
                "thumbnail": name,
                "page": image_page_name(row["image_id"]),
            }
        )
    return by_concept


def _first_thumbnail(examples: Mapping[str, list[dict]]) -> str | None:
    return next((e["thumbnail"] for e in examples.get("top", []) if e["thumbnail"]), None)


def _write_concept_pages(
    out: Path,
    infos: Sequence[ConceptInfo],
    examples: Mapping[int, dict[str, list[dict]]],
    histograms: Mapping[int, tuple[float, list[int]]],
    graph: nx.DiGraph,
) -> None:
    """``out/index.html`` and ``out/concepts/{id}.html``."""
    direct = direct_edges(graph)
    env = environment()
    by_concept = {info.concept: info for info in infos}
    index = env.get_template("index.html.j2").render(
        title="INSIGHT concepts",
        root="",
        dead=sum(info.dead for info in infos),
        concepts=[
            {
                **info.__dict__,
                "dead": info.dead,
                "thumbnail": _first_thumbnail(examples.get(info.concept, {})),
            }
            for info in infos
        ],
    )
    (out / "index.html").write_text(index)
    concept_page = env.get_template("concept.html.j2")
    for info in infos:
        peak, counts = histograms.get(info.concept, (0.0, []))
        scores = info.runner_up_scores or [float("nan")] * len(info.runner_up)
        page = concept_page.render(
            title=info.display,
            root="../",
            bands=[(band, label) for band, label, _ in QUANTILE_BANDS],
            histogram=histogram_svg(peak, counts),
            family=family_svg(info.concept, direct, by_concept, implied=graph),
            c={
                **info.__dict__,
                "runner_up": list(zip(info.runner_up, scores, strict=False)),
                "parents": _relatives(info.concept, info.parents, True, graph, by_concept),
                "children": _relatives(info.concept, info.children, False, graph, by_concept),
                "implied_parents": _relatives(
                    info.concept, info.implied_parents, True, graph, by_concept
                ),
                "implied_children": _relatives(
                    info.concept, info.implied_children, False, graph, by_concept
                ),
                "examples": examples.get(info.concept, {}),
            },
        )
        (out / "concepts" / f"{info.concept}.html").write_text(page)


def _write_image_pages(
    out: Path,
    pictures: Mapping[str, str],
    activations: pa.Table | None,
    grid: tuple[int, int],
    by_concept: Mapping[int, ConceptInfo],
) -> int:
    """``out/images.html`` and ``out/images/{hash}.html`` per picture; returns how many."""
    env = environment()
    rows_by_image: dict[str, list[dict]] = {}
    if activations is not None:
        for row in activations.to_pylist():
            rows_by_image.setdefault(row["image_id"], []).append(row)
    image_page = env.get_template("image.html.j2")
    listed = []
    for image_id, cached in pictures.items():
        picture = Path(cached).name
        link_or_copy(cached, out / "assets/images" / picture)
        page = image_page.render(
            title=image_id,
            root="../",
            image_id=image_id,
            picture=picture,
            size=IMAGE_PAGE_SIZE,
            **image_page_data(rows_by_image.get(image_id, []), grid, by_concept),
        )
        (out / "images" / image_page_name(image_id)).write_text(page)
        listed.append({"image_id": image_id, "page": image_page_name(image_id), "picture": picture})
    index = env.get_template("images.html.j2").render(title="Images", root="", images=listed)
    (out / "images.html").write_text(index)
    return len(listed)


def write_browser(
    infos: list[ConceptInfo],
    examples: pa.Table,
    thumbnails: Mapping[tuple[int, str], str],
    families: pa.Table | None,
    out: str | Path,
    histograms: Mapping[int, tuple[float, list[int]]] | None = None,
    pictures: Mapping[str, str] | None = None,
    activations: pa.Table | None = None,
    grid: tuple[int, int] | None = None,
) -> None:
    """``out/index.html``, ``out/concepts/{id}.html``, ``out/images.html``,
    ``out/images/{hash}.html`` (images in ``pictures``) and ``out/assets/``, written into a
    temporary folder and renamed when complete."""
    graph = family_graph(families)
    with atomic_dir(out) as tmp:
        for folder in ("concepts", "images", "assets/thumbs", "assets/images"):
            (tmp / folder).mkdir(parents=True)
        for asset in ASSETS:
            shutil.copyfile(TEMPLATES / asset, tmp / "assets" / asset)
        placed = _place_examples(examples, thumbnails, tmp / "assets/thumbs")
        _write_concept_pages(tmp, infos, placed, histograms or {}, graph)
        by_concept = {info.concept: info for info in infos}
        pages = _write_image_pages(tmp, pictures or {}, activations, grid or (1, 1), by_concept)
        summary = {"concepts": len(infos), "thumbnails": len(thumbnails), "image_pages": pages}
        (tmp / "browser.json").write_text(json.dumps(summary, indent=2))
