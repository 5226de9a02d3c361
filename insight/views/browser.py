"""A static concept browser (paper Fig. 1, 3, C1-C9), opened from disk with no server and
no network: ``index.html``, one page per concept, one page per image, and ``assets/``.
The pages are Jinja2 templates (``insight/views/templates``); every value is escaped.

- The index lists the concepts (thumbnail, id, name, Matryoshka group, frequency, naming
  score, parents, children). Concepts that never fire are hidden until "show" is ticked;
  a search box matches names and ids; every column sorts. A name shared by several
  concepts is shown with the concept's id (``sand #212``).
- A concept page: the name, runner-up names with their scores, a histogram of its
  activations, its top-activating images and images from lower ranges of its activations
  (around the 25%, 50% and 75% ranks, Neuronpedia style) with the heatmap drawn on each
  and a colour scale, its parents and children with their confidences, and the family
  around it as an SVG with arrows (``+N more`` where a row is cut).
- An image page (PatchSAE style): the image as the encoder saw it with its patch grid;
  clicking a patch lists the concepts active there with their activations (the values of
  the concept shards) and draws a concept's heatmap; the image's top concepts with their
  share of its total activation.
- Thumbnails are JPEG files in a cache folder keyed by the image, the concept and the
  activations, so a rebuild only draws what changed; the browser links (or copies) them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import jinja2
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
HISTOGRAM_BINS = 24
QUANTILE_BANDS = (("q25", "25% rank", 0.25), ("q50", "median", 0.5), ("q75", "75% rank", 0.75))
FAMILY_ROW_LIMIT = 8
IMAGE_PAGE_SIZE = 336
TEMPLATES = Path(__file__).resolve().parent / "templates"


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
    runner_up_scores: list[float] = field(default_factory=list)
    display: str = ""

    @property
    def dead(self) -> bool:
        return self.frequency == 0


def concept_infos(names: pa.Table, families: pa.Table | None) -> list[ConceptInfo]:
    """One record per concept of ``names.parquet``, with its parents and children and a
    display name that tells apart concepts sharing a name (``sand #212``)."""
    graph = family_graph(families)
    shared = Counter(n for n in names["name"].to_pylist() if n)
    infos = []
    for row in names.to_pylist():
        concept, name = row["concept"], row.get("name")
        inside = concept in graph
        display = concept_label(concept, name)
        if name and shared[name] > 1:
            display = f"{name} #{concept}"
        infos.append(
            ConceptInfo(
                concept=concept,
                name=name,
                group=row.get("group", 0),
                frequency=row.get("frequency", 0),
                score=row.get("score"),
                runner_up=list(row.get("runner_up") or []),
                parents=sorted(graph.predecessors(concept)) if inside else [],
                children=sorted(graph.successors(concept)) if inside else [],
                runner_up_scores=list(row.get("runner_up_scores") or []),
                display=display,
            )
        )
    return infos


EXAMPLE_SCHEMA = pa.schema(
    [
        ("concept", pa.int32()),
        ("image_id", pa.string()),
        ("band", pa.string()),
        ("peak", pa.float32()),
        ("patches", pa.list_(pa.int32())),
        ("activations", pa.list_(pa.float32())),
    ]
)


def top_activations(
    concept_files: Iterable[str | Path], per_concept: int, per_band: int = 0
) -> pa.Table:
    """For every concept, its ``per_concept`` images with the highest peak activation
    (``band`` = ``top``) and, with ``per_band``, that many images from around the 25%, 50%
    and 75% ranks of its images by peak (``q25``, ``q50``, ``q75``), each with all of the
    image's patch activations of the concept: ``concept``, ``image_id``, ``band``, ``peak``,
    ``patches`` (list), ``activations`` (list)."""
    files = [str(p) for p in concept_files]
    if not files:
        return EXAMPLE_SCHEMA.empty_table()
    bands = " ".join(
        f"when rank > {per_concept} and rank > floor(n * {q}) and rank <= floor(n * {q}) + {per_band} then '{band}'"
        for band, _, q in QUANTILE_BANDS
    )
    connection = duckdb.connect()
    return (
        connection.sql(
            f"""
        with rows as (select * from read_parquet(?)),
        per_image as (
            select concept, image_id, max(activation) as peak from rows group by concept, image_id
        ),
        ranked as (
            select *, row_number() over (partition by concept order by peak desc, image_id) as rank,
                   count(*) over (partition by concept) as n
            from per_image
        ),
        chosen as (
            select concept, image_id, peak, rank,
                   case when rank <= ? then 'top' {bands} end as band
            from ranked
        )
        select c.concept::INTEGER as concept, c.image_id, any_value(c.band) as band,
               any_value(c.peak)::FLOAT as peak,
               list(r.patch order by r.patch)::INTEGER[] as patches,
               list(r.activation order by r.patch)::FLOAT[] as activations
        from chosen c join rows r using (concept, image_id)
        where c.band is not null
        group by c.concept, c.image_id
        order by c.concept, any_value(c.rank)
        """,
            params=[files, per_concept],
        )
        .to_arrow_table()
        .cast(EXAMPLE_SCHEMA)
    )


def activation_histograms(
    concept_files: Iterable[str | Path], bins: int = HISTOGRAM_BINS
) -> dict[int, tuple[float, list[int]]]:
    """Per concept: its largest activation and the counts of its activations in ``bins``
    equal bins from 0 to that value."""
    files = [str(p) for p in concept_files]
    if not files:
        return {}
    rows = (
        duckdb.connect()
        .sql(
            """
            with rows as (select concept, activation from read_parquet(?)),
            peaks as (select concept, max(activation) as peak from rows group by concept),
            binned as (
                select r.concept, least(floor(r.activation / p.peak * ?), ? - 1)::INTEGER as bin,
                       count(*) as n
                from rows r join peaks p using (concept) where p.peak > 0 group by all
            )
            select b.concept, any_value(p.peak) as peak, list(b.bin) as bins, list(b.n) as counts
            from binned b join peaks p using (concept) group by b.concept
            """,
            params=[files, bins, bins],
        )
        .fetchall()
    )
    histograms = {}
    for concept, peak, which, counts in rows:
        values = [0] * bins
        for b, n in zip(which, counts, strict=True):
            values[b] = int(n)
        histograms[int(concept)] = (float(peak), values)
    return histograms


def histogram_svg(peak: float, counts: Sequence[int], width: int = 360, height: int = 90) -> str:
    """An activation histogram as an SVG bar chart (id ``histogram``)."""
    if not counts or max(counts) == 0:
        return "<p>This concept never fires.</p>"
    top, bar = max(counts), width / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 15 - (height - 20) * n / top:.1f}' "
        f"width='{bar - 1:.1f}' height='{(height - 20) * n / top:.1f}' fill='#4263eb'>"
        f"<title>{n} patches</title></rect>"
        for i, n in enumerate(counts)
    )
    axis = (
        f"<text x='0' y='{height - 2}'>0</text>"
        f"<text x='{width}' y='{height - 2}' text-anchor='end'>{peak:.3f}</text>"
        f"<text x='{width / 2:.0f}' y='{height - 2}' text-anchor='middle'>activation</text>"
    )
    return (
        f"<svg id='histogram' width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>{bars}{axis}</svg>"
        f"<p class='runner-up'>{sum(counts)} activations; the largest bar holds {top}</p>"
    )


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


def render_pictures(
    image_ids: Iterable[str],
    refs: Mapping[str, ImageRef],
    crop_of,
    cache: str | Path,
    size: int = IMAGE_PAGE_SIZE,
) -> dict[str, str]:
    """The crop the encoder saw of each image, as a ``size`` JPEG in ``cache`` (reused when
    present); ``image_id -> cached file``. Images that cannot be read are left out."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    done, wanted = {}, []
    for image_id in image_ids:
        path = cache / picture_name(image_id, size)
        if path.exists():
            done[image_id] = str(path)
        elif image_id in refs:
            wanted.append(image_id)
    for ref, data, error in iter_bytes(refs[i] for i in wanted):
        image, error = decode_image(data) if data is not None else (None, error)
        if image is not None:
            path = cache / picture_name(ref.image_id, size)
            picture = Image.fromarray(crop_of(image)).resize((size, size), Image.Resampling.BICUBIC)
            tmp = path.with_suffix(".tmp.jpg")
            picture.save(tmp, format="JPEG", quality=88)
            os.replace(tmp, path)
            done[ref.image_id] = str(path)
    return done


def _key(image_id: str) -> str:
    return hashlib.sha1(image_id.encode()).hexdigest()[:16]


def picture_name(image_id: str, size: int = IMAGE_PAGE_SIZE) -> str:
    return f"{_key(image_id)}-{size}.jpg"


def image_page_name(image_id: str) -> str:
    """The file name of an image's page (a hash: image ids may hold any character)."""
    return f"{_key(image_id)}.html"


def image_activations(concept_files: Sequence[str | Path], image_ids: Sequence[str]) -> pa.Table:
    """Every (image_id, patch, concept, activation) of the given images, from the shards."""
    if not concept_files or not image_ids:
        return pa.table({"image_id": [], "patch": [], "concept": [], "activation": []})
    connection = duckdb.connect()
    connection.register("wanted", pa.table({"image_id": list(image_ids)}))
    return connection.sql(
        """
        select image_id, patch, concept, activation from read_parquet(?)
        where image_id in (select image_id from wanted)
        order by image_id, patch, activation desc
        """,
        params=[[str(p) for p in concept_files]],
    ).to_arrow_table()


def image_page_data(
    rows: Sequence[dict], grid: tuple[int, int], infos: Mapping[int, ConceptInfo], top: int = 10
) -> dict:
    """What an image page's script reads: per patch its concepts and activations (largest
    first), per concept its heatmap, display names and the image's top concepts by share."""
    patches: dict[int, list] = {}
    heatmaps: dict[int, dict[int, float]] = {}
    totals: Counter = Counter()
    for row in rows:
        patches.setdefault(row["patch"], []).append([row["concept"], row["activation"]])
        heatmaps.setdefault(row["concept"], {})[row["patch"]] = row["activation"]
        totals[row["concept"]] += row["activation"]
    total = sum(totals.values()) or 1.0
    ranked = [c for c, _ in totals.most_common(top)]
    names = {c: infos[c].display if c in infos else concept_label(c, None) for c in heatmaps}
    summary = [
        {
            "concept": c,
            "display": names[c],
            "share": totals[c] / total,
            "patches": len(heatmaps[c]),
        }
        for c in ranked
    ]
    data = {
        "grid": list(grid),
        "patches": patches,
        "heatmaps": heatmaps,
        "names": names,
        "top": ranked,
    }
    return {"data": data, "top": summary}


def _link_or_copy(source: str | Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _box_edge(start: tuple[float, float], end: tuple[float, float], half: tuple[float, float]):
    """The point where the segment from ``start`` to ``end`` leaves the box centred on
    ``start`` (half-width, half-height ``half``): arrows keep to the boxes' borders."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    scale = min(
        half[0] / abs(dx) if dx else float("inf"), half[1] / abs(dy) if dy else float("inf")
    )
    return start[0] + dx * scale, start[1] + dy * scale


def family_svg(
    concept: int,
    graph: nx.DiGraph,
    infos: Mapping[int, ConceptInfo],
    limit: int = FAMILY_ROW_LIMIT,
) -> str:
    """The family around a concept as an SVG: grandparents and parents above, children
    below (the ``limit`` most frequent per row, then a ``+N more`` box), parent -> child
    arrows from box border to box border labelled with their confidence, nodes as links."""
    from html import escape

    if concept not in graph:
        return "<p>This concept belongs to no family.</p>"
    parents = set(graph.predecessors(concept))
    grandparents = {g for p in parents for g in graph.predecessors(p)} - parents - {concept}
    layers, more = [], []
    for layer in (grandparents, parents, {concept}, set(graph.successors(concept))):
        ordered = sorted(layer, key=lambda c: (-infos[c].frequency if c in infos else 0, c))
        if ordered:
            layers.append(ordered[:limit])
            more.append(len(ordered) - len(ordered[:limit]))
    box = (136, 24)
    columns = max(
        len(layer) + (1 if extra else 0) for layer, extra in zip(layers, more, strict=True)
    )
    width, row_height = 150 * columns, 80
    position = {}
    extras = []
    for y, (layer, extra) in enumerate(zip(layers, more, strict=True)):
        slots = len(layer) + (1 if extra else 0)
        step = width / slots
        for x, node in enumerate(layer):
            position[node] = (step * (x + 0.5), 25 + y * row_height)
        if extra:
            extras.append((step * (slots - 0.5), 25 + y * row_height, extra))
    half = (box[0] / 2, box[1] / 2)
    arrows = []
    for a, b in graph.subgraph(position).edges:
        x1, y1 = _box_edge(position[a], position[b], half)
        x2, y2 = _box_edge(position[b], position[a], (half[0] + 3, half[1] + 3))
        confidence = graph.edges[a, b].get("confidence")
        label = (
            f"<text x='{(x1 + x2) / 2 + 4:.0f}' y='{(y1 + y2) / 2:.0f}' class='confidence'>"
            f"{confidence:.2f}</text>"
            if confidence is not None
            else ""
        )
        arrows.append(
            f"<line x1='{x1:.0f}' y1='{y1:.0f}' x2='{x2:.0f}' y2='{y2:.0f}' stroke='#868e96' "
            f"marker-end='url(#arrow)'/>{label}"
        )
    nodes = []
    for node, (x, y) in position.items():
        info = infos.get(node)
        label = escape((info.display if info else concept_label(node, None))[:22])
        fill = "#ffd43b" if node == concept else "#e7f5ff"
        nodes.append(
            f"<a href='{node}.html'><rect x='{x - half[0]:.0f}' y='{y - half[1]:.0f}' "
            f"width='{box[0]}' height='{box[1]}' rx='6' fill='{fill}' stroke='#1864ab'/>"
            f"<text x='{x:.0f}' y='{y + 4:.0f}' text-anchor='middle'>{label}</text></a>"
        )
    for x, y, extra in extras:
        nodes.append(
            f"<text x='{x:.0f}' y='{y + 4:.0f}' text-anchor='middle' class='more'>+{extra} more</text>"
        )
    height = 25 + (len(layers) - 1) * row_height + 25
    marker = (
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' "
        "fill='#868e96'/></marker></defs>"
    )
    return (
        f"<svg class='family' width='{width:.0f}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>{marker}{''.join(arrows)}{''.join(nodes)}</svg>"
    )


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
    by_concept = {info.concept: info for info in infos}
    pictures = dict(pictures or {})
    histograms = histograms or {}
    environment = _environment()
    first_thumbnail: dict[int, str] = {}
    concept_examples: dict[int, dict[str, list[dict]]] = {}
    with atomic_dir(out) as tmp:
        for folder in ("concepts", "images", "assets/thumbs", "assets/images"):
            (tmp / folder).mkdir(parents=True)
        for asset in ("style.css", "browser.js"):
            shutil.copyfile(TEMPLATES / asset, tmp / "assets" / asset)
        for row in examples.select(["concept", "image_id", "band", "peak"]).to_pylist():
            cached = thumbnails.get((row["concept"], row["image_id"]))
            name = Path(cached).name if cached else None
            if cached and not (tmp / "assets/thumbs" / name).exists():
                _link_or_copy(cached, tmp / "assets/thumbs" / name)
            if name and row["band"] == "top":
                first_thumbnail.setdefault(row["concept"], name)
            concept_examples.setdefault(row["concept"], {}).setdefault(row["band"], []).append(
                {
                    "image_id": row["image_id"],
                    "peak": row["peak"],
                    "thumbnail": name,
                    "page": image_page_name(row["image_id"]),
                }
            )

        def relatives(concept: int, nodes: Iterable[int], parent_side: bool) -> list[dict]:
            out_list = []
            for other in nodes:
                edge = (other, concept) if parent_side else (concept, other)
                info = by_concept.get(other)
                out_list.append(
                    {
                        "concept": other,
                        "display": info.display if info else concept_label(other, None),
                        "confidence": graph.edges[edge].get("confidence") or float("nan"),
                    }
                )
            return sorted(out_list, key=lambda r: (-r["confidence"], r["concept"]))

        index = environment.get_template("index.html.j2").render(
            title="INSIGHT concepts",
            root="",
            dead=sum(info.dead for info in infos),
            concepts=[
                {**info.__dict__, "dead": info.dead, "thumbnail": first_thumbnail.get(info.concept)}
                for info in infos
            ],
        )
        (tmp / "index.html").write_text(index)
        concept_page = environment.get_template("concept.html.j2")
        for info in infos:
            peak, counts = histograms.get(info.concept, (0.0, []))
            page = concept_page.render(
                title=info.display,
                root="../",
                bands=[(band, label) for band, label, _ in QUANTILE_BANDS],
                histogram=histogram_svg(peak, counts),
                family=family_svg(info.concept, graph, by_concept),
                c={
                    **info.__dict__,
                    "runner_up": list(
                        zip(
                            info.runner_up,
                            info.runner_up_scores or [float("nan")] * len(info.runner_up),
                            strict=False,
                        )
                    ),
                    "parents": relatives(info.concept, info.parents, True),
                    "children": relatives(info.concept, info.children, False),
                    "examples": concept_examples.get(info.concept, {}),
                },
            )
            (tmp / "concepts" / f"{info.concept}.html").write_text(page)
        rows_by_image: dict[str, list[dict]] = {}
        if activations is not None:
            for row in activations.to_pylist():
                rows_by_image.setdefault(row["image_id"], []).append(row)
        image_page = environment.get_template("image.html.j2")
        listed = []
        for image_id, cached in pictures.items():
            picture = Path(cached).name
            _link_or_copy(cached, tmp / "assets/images" / picture)
            content = image_page_data(rows_by_image.get(image_id, []), grid or (1, 1), by_concept)
            page = image_page.render(
                title=image_id,
                root="../",
                image_id=image_id,
                picture=picture,
                size=IMAGE_PAGE_SIZE,
                **content,
            )
            (tmp / "images" / image_page_name(image_id)).write_text(page)
            listed.append(
                {"image_id": image_id, "page": image_page_name(image_id), "picture": picture}
            )
        (tmp / "images.html").write_text(
            environment.get_template("images.html.j2").render(
                title="Images", root="", images=listed
            )
        )
        (tmp / "browser.json").write_text(
            json.dumps(
                {"concepts": len(infos), "thumbnails": len(thumbnails), "image_pages": len(listed)},
                indent=2,
            )
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
    shards of one dataset and, when it has images, their index (for the thumbnails and the
    image pages)."""
    from insight.features.shards import shard_grid

    names = pq.read_table(names_path)
    families = pq.read_table(families_path) if families_path else None
    infos = concept_infos(names, families)
    examples = top_activations(
        concept_files, cfg["images_per_concept"], cfg.get("images_per_band", 0)
    )
    histograms = activation_histograms(concept_files)
    thumbnails, pictures, activations, grid = {}, {}, None, None
    if index_path and concept_files:
        index = pq.read_table(index_path).to_pylist()
        refs = {r["image_id"]: ImageRef(r["image_id"], r["path"], r["member"]) for r in index}
        _, preprocess, _ = load_clip(spec)
        transform = BatchTransform(preprocess)
        grid = shard_grid(concept_files[0])
        thumbnails = render_thumbnails(
            examples, refs, transform.pil, grid, cache, cfg["thumbnail_size"]
        )
        shown = list(dict.fromkeys(examples["image_id"].to_pylist()))[: cfg.get("image_pages", 0)]
        pictures = render_pictures(shown, refs, transform.pil, Path(cache) / "pictures")
        activations = image_activations(concept_files, list(pictures))
    write_browser(
        infos, examples, thumbnails, families, out, histograms, pictures, activations, grid
    )
    return {
        "concepts": len(infos),
        "images": examples.num_rows,
        "thumbnails": len(thumbnails),
        "image_pages": len(pictures),
    }
