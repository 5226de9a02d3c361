"""A static concept browser (paper Fig. 1, 3, C1-C9): ``index.html`` plus ``assets/`` and
one page per concept, opened from disk with no server and no network.

- The index lists every concept (name, Matryoshka group, frequency, parents, children);
  a search box filters it and every column header sorts it.
- A concept page has the name and runner-up names, its top-activating images with the
  concept's heatmap drawn on each (Fig. 3), its parents and children as links, and the
  family around it drawn as an SVG (ancestors two levels up, children one level down).
- Thumbnails are JPEG files in a cache folder keyed by the image, the concept and the
  activations, so a rebuild only draws what changed; the browser links (or copies) them.
- Every name, term and path is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from insight.core.io import atomic_dir
from insight.core.logs import progress
from insight.data.batches import BatchTransform
from insight.data.images import ImageRef, decode_image, iter_bytes
from insight.hierarchy.families import family_graph
from insight.models.backbone import (
    BackboneSpec,
    load_clip,
)
from insight.views.heatmaps import activation_grid, concept_label, overlay

THUMBNAIL_VERSION = "1"  # bump when the drawing changes, so cached thumbnails are redrawn


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222 }
a { color: #1864ab; text-decoration: none } a:hover { text-decoration: underline }
table { border-collapse: collapse; width: 100% }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left }
th { cursor: pointer; background: #f1f3f5; user-select: none }
th.sorted-asc::after { content: " \\25B2" } th.sorted-desc::after { content: " \\25BC" }
td.number { text-align: right; font-variant-numeric: tabular-nums }
#search { font-size: 15px; padding: 5px; width: 22em; margin-bottom: 0.8em }
.images { display: flex; flex-wrap: wrap; gap: 10px }
figure { margin: 0; width: 170px } figure img { width: 170px; height: 170px; display: block }
figcaption { font-size: 11px; color: #555; word-break: break-all }
.runner-up { color: #666 } svg text { font-size: 11px }
"""


SCRIPT = """
(function () {
  const table = document.getElementById("concepts");
  const body = table.tBodies[0];
  const search = document.getElementById("search");
  const count = document.getElementById("count");
  function filter() {
    const query = search.value.trim().toLowerCase();
    let shown = 0;
    for (const row of body.rows) {
      const match = !query || row.dataset.search.includes(query);
      row.hidden = !match;
      if (match) shown += 1;
    }
    count.textContent = shown + " of " + body.rows.length + " concepts";
  }
  function sort(header, index) {
    const ascending = !header.classList.contains("sorted-asc");
    for (const h of table.tHead.rows[0].cells) h.classList.remove("sorted-asc", "sorted-desc");
    header.classList.add(ascending ? "sorted-asc" : "sorted-desc");
    const numeric = header.dataset.type === "number";
    const rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      const x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    for (const row of rows) body.appendChild(row);
  }
  Array.from(table.tHead.rows[0].cells).forEach(function (header, index) {
    header.addEventListener("click", function () { sort(header, index); });
  });
  search.addEventListener("input", filter);
  filter();
})();
"""


@dataclass
class ConceptInfo:
    """What the index and a concept page show of one concept."""

    concept: int
    name: str | None
    group: int
    frequency: int
    score: float | None
    runner_up: list[str]
    parents: list[int]
    children: list[int]


def concept_infos(names: pa.Table, families: pa.Table | None) -> list[ConceptInfo]:
    """One record per concept of ``names.parquet``, with its parents and children."""
    graph = family_graph(families)
    infos = []
    for row in names.to_pylist():
        concept = row["concept"]
        inside = concept in graph
        infos.append(
            ConceptInfo(
                concept=concept,
                name=row.get("name"),
                group=row.get("group", 0),
                frequency=row.get("frequency", 0),
                score=row.get("score"),
                runner_up=list(row.get("runner_up") or []),
                parents=sorted(graph.predecessors(concept)) if inside else [],
                children=sorted(graph.successors(concept)) if inside else [],
            )
        )
    return infos


def top_activations(concept_files: Iterable[str | Path], per_concept: int) -> pa.Table:
    """For every concept, its ``per_concept`` images with the highest peak activation,
    with all of that image's patch activations of the concept: ``concept``, ``image_id``,
    ``peak``, ``patches`` (list), ``activations`` (list)."""
    files = [str(p) for p in concept_files]
    if not files:
        return pa.table(
            {
                "concept": pa.array([], pa.int32()),
                "image_id": pa.array([], pa.string()),
                "peak": pa.array([], pa.float32()),
                "patches": pa.array([], pa.list_(pa.int32())),
                "activations": pa.array([], pa.list_(pa.float32())),
            }
        )
    connection = duckdb.connect()
    return connection.sql(
        """
        with rows as (select * from read_parquet(?)),
        best as (
            select concept, image_id, max(activation) as peak from rows group by concept, image_id
            qualify row_number() over (partition by concept order by peak desc, image_id) <= ?
        )
        select b.concept, b.image_id, any_value(b.peak) as peak,
               list(r.patch order by r.patch) as patches,
               list(r.activation order by r.patch) as activations
        from best b join rows r using (concept, image_id)
        group by b.concept, b.image_id
        order by b.concept, peak desc, b.image_id
        """,
        params=[files, per_concept],
    ).to_arrow_table()


def thumbnail_key(image_id: str, concept: int, activations: np.ndarray, size: int) -> str:
    digest = hashlib.sha1(f"{THUMBNAIL_VERSION}|{size}|{image_id}|{concept}|".encode())
    digest.update(np.ascontiguousarray(activations, dtype=np.float32).tobytes())
    return digest.hexdigest()[:20]


def render_thumbnails(
    top: pa.Table,
    refs: Mapping[str, ImageRef],
    crop_of,
    grid: tuple[int, int],
    cache: str | Path,
    size: int = 170,
) -> dict[tuple[int, str], str]:
    """Draw (or reuse from ``cache``) one heatmap thumbnail per row of ``top``; returns
    ``(concept, image_id) -> cached file``. ``crop_of`` turns a decoded PIL image into the
    crop the encoder saw. Images that cannot be read are left out."""

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = top.to_pylist()
    wanted: dict[str, list[tuple[dict, Path]]] = {}
    done: dict[tuple[int, str], str] = {}
    for row in rows:
        activations = np.asarray(row["activations"], dtype=np.float32)
        key = thumbnail_key(row["image_id"], row["concept"], activations, size)
        path = cache / f"{key}.jpg"
        if path.exists():
            done[(row["concept"], row["image_id"])] = str(path)
        elif row["image_id"] in refs:
            wanted.setdefault(row["image_id"], []).append((row, path))
    bar = progress(len(wanted), "browser thumbnails", "img")
    for ref, data, error in iter_bytes(refs[i] for i in wanted):
        image, error = decode_image(data) if data is not None else (None, error)
        if image is not None:
            crop = crop_of(image)
            for row, path in wanted[ref.image_id]:
                heat = activation_grid(row["patches"], np.asarray(row["activations"]), grid)
                picture = overlay(crop, heat).resize((size, size), Image.Resampling.BICUBIC)
                tmp = path.with_suffix(".tmp.jpg")
                picture.save(tmp, format="JPEG", quality=85)
                os.replace(tmp, path)
                done[(row["concept"], row["image_id"])] = str(path)
        bar.update(1)
    bar.close()
    return done


def _link_or_copy(source: str | Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _page(title: str, body: str, depth: int) -> str:
    root = "../" * depth
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<link rel='stylesheet' href='{root}assets/style.css'></head>\n<body>\n{body}\n</body></html>\n"
    )


def _display(info: ConceptInfo) -> str:
    return html.escape(concept_label(info.concept, info.name))


def index_html(infos: list[ConceptInfo]) -> str:
    """The searchable, sortable concept list."""
    rows = []
    for info in infos:
        label = concept_label(info.concept, info.name)
        search = html.escape(f"{info.concept} {label}".lower(), quote=True)
        rows.append(
            f"<tr data-search='{search}'>"
            f"<td class='number' data-value='{info.concept}'>{info.concept}</td>"
            f"<td data-value='{html.escape(label.lower(), quote=True)}'>"
            f"<a href='concepts/{info.concept}.html'>{_display(info)}</a></td>"
            f"<td class='number' data-value='{info.group}'>{info.group}</td>"
            f"<td class='number' data-value='{info.frequency}'>{info.frequency}</td>"
            f"<td class='number' data-value='{len(info.parents)}'>{len(info.parents)}</td>"
            f"<td class='number' data-value='{len(info.children)}'>{len(info.children)}</td></tr>"
        )
    headers = [
        ("concept", "number"),
        ("name", "text"),
        ("group", "number"),
        ("frequency", "number"),
        ("parents", "number"),
        ("children", "number"),
    ]
    head = "".join(f"<th data-type='{kind}'>{label}</th>" for label, kind in headers)
    body = (
        "<h1>INSIGHT concepts</h1>\n"
        "<input id='search' type='search' placeholder='search names or ids' autofocus>"
        " <span id='count'></span>\n"
        f"<table id='concepts'><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n<script src='assets/browser.js'></script>"
    )
    return _page("INSIGHT concepts", body, 0)


def family_svg(concept: int, graph: nx.DiGraph, infos: Mapping[int, ConceptInfo]) -> str:
    """The family around a concept as an SVG: grandparents and parents above, children
    below (at most 8 per row, the most frequent), edges as lines, nodes as links."""
    if concept not in graph:
        return "<p>This concept belongs to no family.</p>"
    parents = set(graph.predecessors(concept))
    grandparents = {g for p in parents for g in graph.predecessors(p)} - parents - {concept}
    layers = [grandparents, parents, {concept}, set(graph.successors(concept))]
    layers = [
        sorted(layer, key=lambda c: (-infos[c].frequency if c in infos else 0, c))[:8]
        for layer in layers
    ]
    layers = [layer for layer in layers if layer]
    width, row_height = 150 * max(len(layer) for layer in layers), 70
    position = {}
    for y, layer in enumerate(layers):
        step = width / len(layer)
        for x, node in enumerate(layer):
            position[node] = (step * (x + 0.5), 25 + y * row_height)
    lines = [
        f"<line x1='{position[a][0]:.0f}' y1='{position[a][1]:.0f}' "
        f"x2='{position[b][0]:.0f}' y2='{position[b][1]:.0f}' stroke='#adb5bd'/>"
        for a, b in graph.subgraph(position).edges
    ]
    nodes = []
    for node, (x, y) in position.items():
        info = infos.get(node)
        label = html.escape(concept_label(node, info.name if info else None)[:22])
        fill = "#ffd43b" if node == concept else "#e7f5ff"
        nodes.append(
            f"<a href='{node}.html'><rect x='{x - 68:.0f}' y='{y - 12:.0f}' width='136' "
            f"height='24' rx='6' fill='{fill}' stroke='#1864ab'/>"
            f"<text x='{x:.0f}' y='{y + 4:.0f}' text-anchor='middle'>{label}</text></a>"
        )
    height = 25 + (len(layers) - 1) * row_height + 25
    return (
        f"<svg class='family' width='{width:.0f}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(lines)}{''.join(nodes)}</svg>"
    )


def concept_html(
    info: ConceptInfo,
    images: list[tuple[str, float, str | None]],
    graph: nx.DiGraph,
    infos: Mapping[int, ConceptInfo],
) -> str:
    """One concept's page; ``images`` are ``(image_id, peak, thumbnail file or None)``."""

    def links(concepts: list[int]) -> str:
        if not concepts:
            return "none"
        return ", ".join(
            f"<a href='{c}.html'>{_display(infos[c]) if c in infos else c}</a>" for c in concepts
        )

    figures = []
    for image_id, peak, thumbnail in images:
        picture = (
            f"<img src='../assets/thumbs/{html.escape(thumbnail, quote=True)}' "
            f"alt='{html.escape(image_id, quote=True)}'>"
            if thumbnail
            else "<div>(image unavailable)</div>"
        )
        figures.append(
            f"<figure>{picture}<figcaption>{html.escape(image_id)} "
            f"(peak {peak:.2f})</figcaption></figure>"
        )
    runner_up = ", ".join(html.escape(name) for name in info.runner_up) or "none"
    score = f"{info.score:.3f}" if info.score is not None else "-"
    body = (
        f"<p><a href='../index.html'>all concepts</a></p>\n<h1>{_display(info)}</h1>\n"
        f"<p class='runner-up'>runner-up names: {runner_up}</p>\n"
        f"<p>concept {info.concept} &middot; Matryoshka group {info.group} &middot; "
        f"active on {info.frequency} patches &middot; naming score {score}</p>\n"
        f"<p>parents: {links(info.parents)}</p>\n<p>children: {links(info.children)}</p>\n"
        f"<h2>Top-activating images</h2>\n<div class='images'>{''.join(figures) or 'none'}</div>\n"
        f"<h2>Family</h2>\n{family_svg(info.concept, graph, infos)}"
    )
    return _page(concept_label(info.concept, info.name), body, 1)


def write_browser(
    infos: list[ConceptInfo],
    top: pa.Table,
    thumbnails: Mapping[tuple[int, str], str],
    families: pa.Table | None,
    out: str | Path,
) -> None:
    """``out/index.html``, ``out/concepts/{id}.html`` and ``out/assets/`` (style, script,
    thumbnails), written into a temporary folder and renamed when complete."""
    graph = family_graph(families)
    by_concept = {info.concept: info for info in infos}
    images: dict[int, list[tuple[str, float, str | None]]] = {}
    with atomic_dir(out) as tmp:
        (tmp / "concepts").mkdir()
        (tmp / "assets/thumbs").mkdir(parents=True)
        (tmp / "assets/style.css").write_text(STYLE)
        (tmp / "assets/browser.js").write_text(SCRIPT)
        for row in top.select(["concept", "image_id", "peak"]).to_pylist():
            cached = thumbnails.get((row["concept"], row["image_id"]))
            name = Path(cached).name if cached else None
            if cached and not (tmp / "assets/thumbs" / name).exists():
                _link_or_copy(cached, tmp / "assets/thumbs" / name)
            images.setdefault(row["concept"], []).append((row["image_id"], row["peak"], name))
        (tmp / "index.html").write_text(index_html(infos))
        for info in infos:
            page = concept_html(info, images.get(info.concept, []), graph, by_concept)
            (tmp / "concepts" / f"{info.concept}.html").write_text(page)
        (tmp / "browser.json").write_text(
            json.dumps({"concepts": len(infos), "thumbnails": len(thumbnails)}, indent=2)
        )


def build_browser(
    names_path: str | Path,
    families_path: str | Path | None,
    concept_files: Sequence[str | Path],
    index_path: str | Path | None,
    spec: BackboneSpec,
    cfg: dict,
    cache: str | Path,
    out: str | Path,
) -> dict:
    """The concept browser (:func:`write_browser`) from the names, the families, the concept
    shards of one dataset and, when it has images, their index (for the thumbnails)."""
    from insight.features.shards import shard_grid

    names = pq.read_table(names_path)
    families = pq.read_table(families_path) if families_path else None
    infos = concept_infos(names, families)
    top = top_activations(concept_files, cfg["images_per_concept"])
    thumbnails = {}
    if index_path and concept_files:
        index = pq.read_table(index_path).to_pylist()
        refs = {r["image_id"]: ImageRef(r["image_id"], r["path"], r["member"]) for r in index}
        _, preprocess, _ = load_clip(spec)
        transform = BatchTransform(preprocess)
        thumbnails = render_thumbnails(
            top,
            refs,
            transform.pil,
            shard_grid(concept_files[0]),
            cache,
            cfg["thumbnail_size"],
        )
    write_browser(infos, top, thumbnails, families, out)
    return {"concepts": len(infos), "images": top.num_rows, "thumbnails": len(thumbnails)}
