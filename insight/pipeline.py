"""Stage entry points that the workflow scripts call: config dicts in, files out.

Each function turns the validated config sections (see
``workflow/schemas/config.schema.yaml``) into the library's typed objects and runs one
stage, so the scripts under ``workflow/scripts`` only wire Snakemake to these calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from insight.backbone import (
    RANDOM_INIT_SEED,
    BackboneSpec,
    load_clip,
    maskclip_features,
    patch_grid,
)
from insight.concepts import encode_shard
from insight.dinoiser import (
    CLIP_TEACHER,
    DINOiser,
    DinoiserTrainConfig,
    TeacherSpec,
    binarise,
    clip_teacher_affinity,
    load_dinoiser,
    load_teacher,
    teacher_affinity,
    train_dinoiser,
)
from insight.explain_ovs import explain_image, explanation_figure, save_prediction_png
from insight.features import (
    BatchTransform,
    DenseEncoder,
    ExtractConfig,
    ShardStats,
    decoded_batches,
    extract_shard,
)
from insight.images import DecodePolicy, ImageRef, refs_of_shard
from insight.io import read_label_map, write_json
from insight.logs import progress
from insight.naming import concept_names, concept_vectors, names_table, top_patch_weights
from insight.ovs import OVSConfig, class_text_embeddings, scored_classes
from insight.ovs import evaluate as evaluate_segmentation
from insight.ovs_datasets import benchmark, list_pairs
from insight.sae import MatryoshkaBatchTopKSAE, SAEConfig, load_sae, matryoshka_group_sizes
from insight.sae_training import FeatureBatches, SAETrainer, TrainConfig, evaluate
from insight.text import EmbeddingCache, TextEncoder
from insight.vocabulary import TEMPLATES, embedding_table, load_index, template_embeddings

log = logging.getLogger(__name__)


def backbone_spec(cfg: dict) -> BackboneSpec:
    return BackboneSpec(
        model=cfg["model"],
        pretrained=cfg.get("pretrained"),
        checkpoint=cfg.get("checkpoint"),
        cache_dir=cfg.get("cache_dir"),
    )


def teacher_spec(cfg: dict) -> TeacherSpec:
    return TeacherSpec(
        model=cfg["model"],
        pretrained=cfg["pretrained"],
        checkpoint=cfg.get("checkpoint"),
        features=cfg["features"],
        overrides=dict(cfg.get("overrides") or {}),
    )


def from_config(cls: type, cfg: dict):
    """A config dataclass from the keys of a config section that name its fields."""
    return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


def dinoiser_train_config(cfg: dict) -> DinoiserTrainConfig:
    return from_config(DinoiserTrainConfig, cfg)


def decode_policy(cfg: dict) -> DecodePolicy:
    return DecodePolicy(max_pixels=cfg["max_pixels"], convert_modes=cfg["convert_modes"])


def extract_config(features: dict, images: dict) -> ExtractConfig:
    return ExtractConfig(
        batch_size=features["batch_size"],
        storage=features["storage"],
        row_group_images=features["row_group_images"],
        decode_threads=features["decode_threads"],
        policy=decode_policy(images),
    )


def train_clip_from_pairs(
    pairs_csv: str | Path,
    spec: BackboneSpec,
    cfg: dict,
    out_path: str | Path,
    device: torch.device,
) -> dict:
    """Train ``spec.model`` from scratch on a CSV of (path, caption) pairs and save its
    weights (safetensors) for ``backbone.checkpoint``; returns the training metrics."""
    import open_clip
    import pyarrow.csv as pcsv

    from insight.clip_training import ClipTrainConfig, images_to_tensor, save_clip, train_clip

    table = pcsv.read_csv(pairs_csv)
    missing = {"path", "caption"} - set(table.column_names)
    if missing:
        raise ValueError(f"{pairs_csv}: missing columns {sorted(missing)} (need path, caption)")
    root = Path(pairs_csv).parent
    paths, captions = table["path"].to_pylist(), table["caption"].to_pylist()
    config = from_config(ClipTrainConfig, cfg)
    size = open_clip.get_model_config(spec.model)["vision_cfg"]["image_size"]  # no model built
    images, bar = [], progress(len(paths), "load pairs", "img")
    for path in paths:
        with Image.open(root / path) as image:
            images.append(image.convert("RGB"))
        bar.update(1)
    bar.close()
    pixels = images_to_tensor(images, size)
    bar = progress(config.epochs, "train CLIP", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
        log.info("epoch %d: contrastive loss %.4f", epoch, loss)

    model, metrics = train_clip(spec, pixels, captions, config, device, on_epoch)
    bar.close()
    save_clip(model, out_path, {"model": spec.model, "pairs": str(pairs_csv)})
    return {**metrics, "model": spec.model, "config": dataclasses.asdict(config)}


def train_dinoiser_from_images(
    refs: Sequence[ImageRef],
    spec: BackboneSpec,
    teacher: TeacherSpec,
    config: DinoiserTrainConfig,
    policy: DecodePolicy,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[DINOiser, dict]:
    """App. B.1: cache frozen CLIP features and binarised teacher affinities, then fit g."""
    model, preprocess, _ = load_clip(spec, device)
    transform = BatchTransform(preprocess)
    visual = model.visual
    mean, std = visual.preprocess_cfg["mean"], visual.preprocess_cfg["std"]
    if teacher.model == CLIP_TEACHER:

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return clip_teacher_affinity(visual, images, teacher.features)
    else:
        teacher_model = load_teacher(teacher, tuple(visual.grid_size), device)

        def affinity_of(images: torch.Tensor) -> torch.Tensor:
            return teacher_affinity(teacher_model, images, teacher.features, mean, std)

    features, targets, rejected = [], [], 0
    bar = progress(len(refs), "teacher affinities", "img")
    with torch.no_grad():
        for good, pixels, bad in decoded_batches(refs, transform, batch_size, policy):
            rejected += len(bad)
            if pixels is not None:
                images = transform.batch(pixels, device)
                features.append(maskclip_features(visual, images).float().cpu())
                affinity = affinity_of(images)
                targets.append(binarise(affinity, config.teacher_threshold).cpu())
            bar.update(len(good) + len(bad))
    bar.close()
    if not features:
        raise ValueError("no readable image to train the DINOiser on")
    bar = progress(config.epochs, "train DINOiser", "epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)

    g, metrics = train_dinoiser(torch.cat(features), torch.cat(targets), config, device, on_epoch)
    bar.close()
    metrics["rejected_images"] = rejected
    return g, metrics


@dataclasses.dataclass
class FrozenModels:
    """What a model job loads once: the frozen CLIP (text tower, global embedding), its
    tokenizer, the DINOised dense encoder over its visual tower, and the image transform."""

    model: torch.nn.Module
    tokenizer: object
    encoder: DenseEncoder
    transform: BatchTransform


@dataclasses.dataclass(frozen=True)
class FrozenSpec:
    """What :func:`load_frozen` loads: the CLIP backbone, the DINOiser weights (None: plain
    MaskCLIP features), the guided-pooling threshold gamma (Eq. 1) and the precision the
    visual weights are cast to."""

    backbone: BackboneSpec
    dinoiser_path: str | Path | None
    gamma: float
    precision: str = "fp32"


def frozen_spec(
    backbone: dict, dinoiser: Sequence[str | Path], gamma: float, precision: str = "fp32"
) -> FrozenSpec:
    """A :class:`FrozenSpec` from the ``backbone`` config section and a model job's
    ``dinoiser`` input (empty when the DINOiser is disabled, else its one weights file)."""
    return FrozenSpec(backbone_spec(backbone), dinoiser[0] if dinoiser else None, gamma, precision)


def load_frozen(frozen: FrozenSpec, device: torch.device) -> FrozenModels:
    """Load CLIP and the DINOiser once; the visual weights are cast to ``frozen.precision``."""
    model, preprocess, tokenizer = load_clip(frozen.backbone, device)
    dinoiser = load_dinoiser(frozen.dinoiser_path).to(device) if frozen.dinoiser_path else None
    encoder = DenseEncoder(model.visual, dinoiser, frozen.gamma, frozen.precision)
    return FrozenModels(model, tokenizer, encoder.to(device).eval(), BatchTransform(preprocess))


def extract_shard_from_index(
    index: pa.Table,
    shard: int,
    frozen: FrozenSpec,
    config: ExtractConfig,
    device: torch.device,
    out_path: str | Path,
    rejected_path: str | Path,
) -> ShardStats:
    """Extract one shard of the image index to the feature contract."""
    refs = refs_of_shard(index, shard)
    if not refs:
        raise ValueError(f"shard {shard} is empty in the image index")
    models = load_frozen(frozen, device)
    bar = progress(len(refs), f"features shard {shard:05d}", "img")
    stats = extract_shard(
        models.encoder,
        models.transform,
        refs,
        out_path,
        rejected_path,
        frozen.backbone.name,
        config,
        device,
        bar.update,
    )
    bar.close()
    if stats.rejected:
        log.warning(
            "shard %05d: %d of %d images rejected (see %s)",
            shard,
            stats.rejected,
            len(refs),
            rejected_path,
        )
    return stats


def sae_config(cfg: dict, d_in: int) -> SAEConfig:
    """The SAE architecture from the ``sae`` config section (groups from ratios unless given)."""
    groups = (
        tuple(cfg["groups"])
        if cfg.get("groups")
        else matryoshka_group_sizes(cfg["d_sae"], tuple(cfg["group_ratios"]))
    )
    return SAEConfig(
        d_in=d_in,
        d_sae=cfg["d_sae"],
        k=cfg["k"],
        group_sizes=groups,
        k_aux=cfg["k_aux"],
        aux_coefficient=cfg["aux_coefficient"],
        dead_after=cfg["dead_after"],
        threshold_momentum=cfg["threshold_momentum"],
    )


def train_sae_from_shards(
    feature_paths: Sequence[str | Path],
    cfg: dict,
    device: torch.device,
    checkpoint_dir: str | Path,
) -> tuple[MatryoshkaBatchTopKSAE, dict]:
    """App. B.2: train on the training split of the shards, evaluate on the held-out images.

    The checkpoint file name is a hash of the config and the inputs, so a changed
    setting never resumes from a stale run; it is removed once training has finished.
    """
    paths = [str(p) for p in feature_paths]
    d_in = pq.read_schema(paths[0]).field("embedding").type.list_size
    config = sae_config(cfg, d_in)
    train = from_config(TrainConfig, cfg)
    data = FeatureBatches(
        paths, train.batch_size, "train", cfg["holdout_fraction"], cfg["shuffle_buffer"], train.seed
    )
    key = hashlib.sha256(json.dumps([cfg, paths], sort_keys=True).encode()).hexdigest()[:16]
    checkpoint = Path(checkpoint_dir) / f"sae-{key}.pt"
    trainer = SAETrainer(
        MatryoshkaBatchTopKSAE(config, seed=train.seed), train, data, checkpoint, device
    )
    trainer.load_checkpoint()
    bar = progress(trainer.total_steps(), "train SAE", "step")
    bar.update(trainer.global_step)

    def on_step(_trainer: SAETrainer, step_metrics: dict) -> None:
        bar.update(1)
        if _trainer.global_step % train.log_every == 0 or _trainer.global_step == 1:
            metrics = _trainer.last_metrics
            bar.set_postfix(
                loss=f"{metrics['loss']:.4g}",
                fve=f"{metrics['fve']:.3f}",
                l0=f"{metrics['l0']:.1f}",
                dead=metrics["dead"],
            )
            log.info("step %d: %s", _trainer.global_step, metrics)

    last = trainer.fit(on_step)
    bar.close()
    heldout = FeatureBatches(
        paths, train.batch_size, "heldout", cfg["holdout_fraction"], seed=train.seed
    )
    metrics = {
        "train_last_step": last,
        "steps": trainer.global_step,
        "train_rows_per_epoch": data.count_rows(),
        "heldout": evaluate(trainer.sae, heldout.epoch(0, shuffle=False, drop_last=False), device),
    }
    trainer.sae.cpu()
    checkpoint.unlink(missing_ok=True)
    return trainer.sae, {
        "config": config.to_dict(),
        "training": {**train.__dict__},
        "metrics": metrics,
    }


def encode_concept_shard(
    sae_path: str | Path,
    feature_path: str | Path,
    out_path: str | Path,
    chunk_rows: int,
    device: torch.device,
) -> dict:
    sae = load_sae(sae_path)
    return encode_shard(sae, feature_path, out_path, chunk_rows, device)


def model_key(spec: BackboneSpec) -> str:
    """What identifies a text tower for the embedding cache (a local checkpoint by content)."""
    if spec.checkpoint:
        digest = hashlib.sha256()
        with open(spec.checkpoint, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        return f"{spec.model}/sha256:{digest.hexdigest()}"
    return f"{spec.model}/{spec.pretrained or f'random-init-{RANDOM_INIT_SEED}'}"


def cached_text_encoder(
    model,
    tokenizer,
    spec: BackboneSpec,
    cache_dir: str | Path,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 256,
) -> TextEncoder:
    """A text encoder over the shared prompt cache of this model (one folder per model key)."""
    key = model_key(spec)
    cache = EmbeddingCache(Path(cache_dir) / hashlib.sha1(key.encode()).hexdigest()[:16], key)
    return TextEncoder(model, tokenizer, key, device, precision, batch_size, cache)


def embed_vocabulary(
    terms: list[str], spec: BackboneSpec, cfg: dict, cache_dir: str | Path, device: torch.device
) -> tuple[pa.Table, dict]:
    """Eq. B.11 for every term (per part of speech), through the prompt cache."""
    model, _, tokenizer = load_clip(spec, device)
    encoder = cached_text_encoder(
        model, tokenizer, spec, cache_dir, device, cfg["precision"], cfg["batch_size"]
    )
    cache = encoder.cache
    bar = progress(None, "encode prompts", "prompt")
    by_pos = template_embeddings(terms, lambda prompts: encoder.encode(prompts, bar.update))
    bar.close()
    stats = {
        "terms": len(terms),
        "prompts_encoded": encoder.encoded,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    log.info(
        "encoded %d prompts (%d new terms x %d templates); %d prompts from the cache",
        encoder.encoded,
        encoder.encoded // sum(len(t) for t in TEMPLATES.values()),
        sum(len(t) for t in TEMPLATES.values()),
        cache.hits,
    )
    return embedding_table(terms, by_pos), stats


def name_concepts(
    sae_path: str | Path,
    families_path: str | Path,
    totals_path: str | Path,
    concept_paths: Sequence[str | Path],
    embeddings_path: str | Path,
    index_path: str | Path,
    cfg: dict,
) -> pa.Table:
    """Sec. 3.4: concept vectors (Eq. 6 or B.9) named against the vocabulary (B.12-B.13)."""
    sae = load_sae(sae_path)
    w_dec, b_dec = sae.W_dec.double().numpy(), sae.b_dec.double().numpy()
    families = pq.read_table(families_path)
    weights = (
        top_patch_weights(concept_paths, families, cfg["top_patches"])
        if cfg["method"] == "hierarchy"
        else None
    )
    vectors = concept_vectors(w_dec, b_dec, cfg["method"], weights, families, cfg["alpha"])
    terms = pq.read_table(embeddings_path, columns=["term"])["term"].to_pylist()
    totals = pq.read_table(totals_path)
    groups = sae.group_of(torch.arange(sae.config.d_sae)).numpy()
    return names_table(
        vectors,
        load_index(index_path),
        terms,
        cfg["method"],
        groups,
        totals["frequency"].to_numpy(),
        cfg["runner_up"],
    )


def evaluate_ovs(
    name: str,
    root: str | Path,
    frozen: FrozenSpec,
    sae_path: str | Path,
    cfg: dict,
    cache_dir: str | Path,
    device: torch.device,
    out_dir: str | Path | None = None,
    names_path: str | Path | None = None,
) -> dict:
    """Sec. 4.4: one benchmark, the three methods in one pass (see insight.ovs). With
    ``out_dir``: predicted label maps as PNG (``save_predictions``) and explanation
    figures of the first ``explain_images`` images (Fig. 7)."""
    dataset = benchmark(name, cfg.get("custom"))
    pairs = list_pairs(dataset, root)  # raises DatasetLayoutError naming the layout
    config = from_config(OVSConfig, cfg)
    models = load_frozen(frozen, device)
    encoder, transform = models.encoder, models.transform
    text_encoder = cached_text_encoder(
        models.model, models.tokenizer, frozen.backbone, cache_dir, device
    )
    classes = scored_classes(dataset, config)
    text = torch.from_numpy(class_text_embeddings(classes, text_encoder.encode)).to(device)
    sae = load_sae(sae_path).to(device)
    out = Path(out_dir) if out_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    bar = progress(min(len(pairs), config.max_images or len(pairs)), f"ovs {name}", "img")

    def on_image(image_id: str, predictions: dict) -> None:
        bar.update(1)
        if out is not None and cfg.get("save_predictions"):
            for method, prediction in predictions.items():
                save_prediction_png(prediction, out / "pred" / method / f"{image_id}.png")

    result = evaluate_segmentation(
        pairs, dataset, encoder, transform, text, sae, config, device, on_image
    )
    bar.close()
    if out is not None and cfg.get("explain_images"):
        names = concept_names(names_path)
        explanations = {}
        for image_id, image_path, _ in pairs[: cfg["explain_images"]]:
            with Image.open(image_path) as image:
                explanation = explain_image(
                    image, encoder, transform, text, sae, classes, config.short_side, device=device
                )
                explanation_figure(image, explanation, names, out / "explain" / f"{image_id}.png")
            explanations[image_id] = {k: v for k, v in explanation.items() if k != "segmentation"}
        write_json(explanations, out / "explain" / "explanations.json")
    for method, values in result["methods"].items():
        log.info("%s %s: mIoU %.4f", name, method, values["miou"])
    return {
        "dataset": name,
        "classes": list(dataset.classes),
        "settings": dataclasses.asdict(config),
        **result,
    }


def squashed_input(
    image_path: str | Path, models: FrozenModels, device: torch.device
) -> torch.Tensor:
    """One image resized (squashed, bicubic) to the model's input size and normalised, as a
    batch of one: its patch grid then maps onto the image's label map exactly."""
    size = tuple(models.model.visual.image_size)
    with Image.open(image_path) as image:
        pixels = np.array(image.convert("RGB").resize(size[::-1], Image.BICUBIC), np.uint8)
    return models.transform.batch(torch.from_numpy(pixels)[None], device)


def interpretability_rows(
    datasets: dict[str, str],
    frozen: FrozenSpec,
    sae_path: str | Path,
    cfg: dict,
    device: torch.device,
) -> list[dict]:
    """App. A.1 on each part-annotated dataset, for INSIGHT (patch codes) and for the same
    SAE on the global image embedding broadcast to every patch (no spatial grounding).

    Images are resized (squashed) to the model's input size, so the patch grid maps onto
    the label map exactly; concept maps are binarised at activation > 0."""
    from insight.images import DatasetLayoutError
    from insight.interpretability import (
        PART_DATASETS,
        InterpretabilityAccumulator,
        concept_masks_of_image,
        part_pairs,
    )

    models = load_frozen(frozen, device)
    model, encoder = models.model, models.encoder
    sae = load_sae(sae_path).to(device)
    grid = tuple(model.visual.grid_size)
    rows = []
    for name, root in datasets.items():
        n_labels, background, _ = PART_DATASETS[name]
        try:
            pairs = part_pairs(name, root, cfg["split"])
        except DatasetLayoutError as err:
            log.warning("%s not run: %s", name, err)
            rows += [
                {"method": m, "dataset": name, "status": "not run"}
                for m in ("insight", "global_broadcast")
            ]
            continue
        pairs = pairs[: cfg["max_images"]] if cfg["max_images"] else pairs
        minimum = cfg["min_images"][name]
        accumulators = {
            m: InterpretabilityAccumulator(list(range(n_labels)), background, minimum)
            for m in ("insight", "global_broadcast")
        }
        bar = progress(len(pairs), f"interpretability {name}", "img")
        for _, image_path, label_path in pairs:
            label_map = read_label_map(label_path)
            x = squashed_input(image_path, models, device)
            with torch.no_grad():
                patch_codes = sae.encode(encoder(x)[0]).cpu().numpy()
                global_codes = sae.encode(model.visual(x)).cpu().numpy()
            h, w = label_map.shape
            active, masks = concept_masks_of_image(patch_codes, grid, h, w)
            accumulators["insight"].add(active, masks, label_map)
            broadcast = np.repeat(global_codes, grid[0] * grid[1], axis=0)
            active, masks = concept_masks_of_image(broadcast, grid, h, w)
            accumulators["global_broadcast"].add(active, masks, label_map)
            bar.update(1)
        bar.close()
        for method, accumulator in accumulators.items():
            rows.append(
                {"method": method, "dataset": name, "images": len(pairs), **accumulator.summary()}
            )
    return rows


def world_recovery(
    parts_root: str | Path,
    frozen: FrozenSpec,
    sae_path: str | Path,
    families_path: str | Path,
    names_path: str | Path,
    device: torch.device,
    top_concepts: int = 20,
) -> dict:
    """How much of the demo world the concepts recovered (issue 12): the share of the most
    frequent concepts named with the world's words, and the family edges that mirror the
    world's part-of structure, against the count expected with shuffled parents. Concept
    labels come from the thresholded codes on the world's part-annotated scenes."""
    from insight import world
    from insight.hierarchy import load_families
    from insight.interpretability import part_pairs

    models = load_frozen(frozen, device)
    sae = load_sae(sae_path).to(device)
    size = tuple(models.model.visual.image_size)
    grid = tuple(models.model.visual.grid_size)
    stats = world.LabelStats.zeros(sae.config.d_sae)
    pairs = part_pairs("partimagenet", parts_root)
    bar = progress(len(pairs), "world recovery", "img")
    for _, image_path, label_path in pairs:
        part_map = read_label_map(label_path, size)
        with torch.no_grad():
            codes = sae.encode(models.encoder(squashed_input(image_path, models, device))[0])
        stats.add(codes.cpu().numpy(), world.patch_labels(part_map, grid))
        bar.update(1)
    bar.close()
    part, obj = world.concept_labels(stats)
    names = pq.read_table(names_path, columns=["concept", "name", "frequency"])
    frequent = sorted(
        (r for r in names.to_pylist() if r["frequency"] > 0),
        key=lambda r: (-r["frequency"], r["concept"]),
    )[:top_concepts]
    world_named = [world.is_world_name(r["name"]) for r in frequent]
    edges = sorted(load_families(families_path).edges)
    return {
        "images": len(pairs),
        "naming": {
            "top_concepts": len(frequent),
            "world_named": sum(world_named),
            "world_named_fraction": float(np.mean(world_named)) if world_named else 0.0,
            "concepts": [
                {**r, "part": part[r["concept"]], "object": obj[r["concept"]]} for r in frequent
            ],
        },
        "families": world.family_recovery(edges, part, obj, concept_names(names)),
    }


def classification_vectors(
    pairs: Sequence[tuple[str, int]],
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    batch_size: int = 32,
) -> pa.Table:
    """Image-level vectors for the probes (cached once, not recomputed per epoch):
    ``insight`` = [max ; mean] of the image's BatchTopK codes (BatchTopK over its own
    patches), ``insight_thresholded`` = the same of the thresholded codes, ``clip`` = the
    CLIP image embedding (the linear-probe and zero-shot baselines)."""
    from insight.classification import pool_concepts

    model, encoder, transform = models.model, models.encoder, models.transform
    refs = [ImageRef(path, path) for path, _ in pairs]
    label_of = {path: label for path, label in pairs}
    rows: dict[str, list] = {
        "image_id": [],
        "label": [],
        "insight": [],
        "insight_thresholded": [],
        "clip": [],
    }
    bar = progress(len(refs), "classification vectors", "img")
    with torch.no_grad():
        for good, pixels, bad in decoded_batches(refs, transform, batch_size):
            if bad:
                log.warning(
                    "skipped %d unreadable images: %s", len(bad), [b["path"] for b in bad][:3]
                )
            if pixels is not None:
                x = transform.batch(pixels, device)
                features = encoder(x)
                clip = model.visual(x)
                for ref, patches, embedding in zip(good, features, clip, strict=True):
                    rows["image_id"].append(ref.image_id)
                    rows["label"].append(label_of[ref.path])
                    rows["insight"].append(
                        pool_concepts(sae.encode_batch_topk(patches)).cpu().numpy()
                    )
                    rows["insight_thresholded"].append(
                        pool_concepts(sae.encode(patches)).cpu().numpy()
                    )
                    rows["clip"].append(embedding.float().cpu().numpy())
            bar.update(len(good) + len(bad))
    bar.close()
    columns = {
        "image_id": pa.array(rows["image_id"], pa.string()),
        "label": pa.array(rows["label"], pa.int32()),
    }
    for name in ("insight", "insight_thresholded", "clip"):
        matrix = np.stack(rows[name]).astype(np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(
            pa.array(matrix.reshape(-1)), matrix.shape[1]
        )
    return pa.table(columns)


def classification_results(
    name: str,
    train: pa.Table,
    test: pa.Table,
    class_names: list[str],
    models: FrozenModels,
    spec: BackboneSpec,
    cfg: dict,
    cache_dir: str | Path,
    device: torch.device,
    names_path: str | Path | None = None,
) -> tuple[list[dict], dict]:
    """Table rows (method, dataset, top1, top5, nonzero weights per class) for the probes
    on INSIGHT concepts (both variants) and on the CLIP embedding, plus zero-shot CLIP;
    and explanations of the first test images by the INSIGHT probe."""
    from insight.classification import accuracy, explain, sweep

    def matrix(table: pa.Table, column: str) -> torch.Tensor:
        return torch.from_numpy(
            np.stack(table[column].to_numpy(zero_copy_only=False)).astype(np.float32)
        )

    y_train = torch.from_numpy(train["label"].to_numpy().astype(np.int64))
    y_test = torch.from_numpy(test["label"].to_numpy().astype(np.int64))
    n_classes = len(class_names)
    rows, probes = [], {}
    for method in ("insight", "insight_thresholded", "clip"):
        probe, trials = sweep(
            matrix(train, method),
            y_train,
            n_classes,
            cfg["batch_sizes"],
            cfg["lrs"],
            cfg["l1s"],
            cfg["epochs"],
            cfg["holdout_fraction"],
        )
        logits = probe.logits(matrix(test, method))
        probes[method] = probe
        rows.append(
            {
                "method": "linear_probe_clip" if method == "clip" else method,
                "dataset": name,
                "top1": accuracy(logits, y_test, 1),
                "top5": accuracy(logits, y_test, 5),
                "nonzero_per_class": probe.nonzero_per_class(),
                "settings": probe.settings,
            }
        )
        log.info("%s %s: %s (sweep: %s)", name, method, rows[-1], trials)
    text_encoder = cached_text_encoder(models.model, models.tokenizer, spec, cache_dir, device)
    text = torch.from_numpy(class_text_embeddings(class_names, text_encoder.encode))
    zero_shot = torch.nn.functional.normalize(matrix(test, "clip"), dim=-1) @ text.T
    rows.append(
        {
            "method": "zero_shot_clip",
            "dataset": name,
            "top1": accuracy(zero_shot, y_test, 1),
            "top5": accuracy(zero_shot, y_test, 5),
            "nonzero_per_class": None,
            "settings": {},
        }
    )
    names = concept_names(names_path)
    explanations = {}
    x_test = matrix(test, "insight")
    m = x_test.shape[1] // 2
    for i in range(min(cfg["explain_images"], len(test))):
        result = explain(probes["insight"], x_test[i])
        result["class"] = class_names[result["class"]]
        # feature f is concept f % m, pooled by max (f < m) or mean (f >= m)
        result["concepts"] = [
            {"concept": f % m, "pool": "max" if f < m else "mean", "name": names.get(f % m)}
            for f in result.pop("features")
        ]
        explanations[test["image_id"][i].as_py()] = result
    return rows, explanations


def classification_heatmaps(
    explanations: dict,
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    folder: str | Path,
) -> None:
    """For each explained image (keyed by path): ``{folder}/{i:03d}.png`` with the image and
    the heatmaps of its top concepts (the BatchTopK codes the probe saw), titled with the
    concept's name, pooling and share of the logit; the file name goes in ``figure``."""
    from insight.heatmaps import concept_label, heatmap_figure, image_codes

    Path(folder).mkdir(parents=True, exist_ok=True)
    for i, (path, result) in enumerate(explanations.items()):
        with Image.open(path) as image:
            crop, _, codes, grid = image_codes(
                image, models.encoder, models.transform, sae, device, batch_topk=True
            )
        panels = [
            (
                f"{concept_label(item['concept'], item['name'])} ({item['pool']}) {share:.0%}",
                codes[:, item["concept"]].reshape(grid).cpu().numpy(),
            )
            for item, share in zip(result["concepts"], result["shares"], strict=True)
        ]
        result["figure"] = f"{i:03d}.png"
        heatmap_figure(
            crop,
            panels,
            Path(folder) / result["figure"],
            f"predicted '{result['class']}' (logit {result['logit']:.2f})",
        )


class RunNotFoundError(FileNotFoundError):
    """A trained run's file is missing: the workflow has not been run far enough."""


@dataclasses.dataclass
class TrainedRun:
    """What the ``insight`` commands load of a finished run: the frozen models, the SAE,
    the names table and the families table (None before the hierarchy exists)."""

    results: Path
    spec: BackboneSpec
    device: torch.device
    models: FrozenModels
    sae: MatryoshkaBatchTopKSAE
    names: pa.Table
    families: pa.Table | None


def load_trained_run(
    cfg: dict, results: str | Path, command: str, extra: Sequence[str] = ()
) -> TrainedRun:
    """Load a run's backbone, DINOiser, SAE, names and families; a missing file (these, or
    ``extra`` paths under ``results``) raises :class:`RunNotFoundError` naming the file and
    the snakemake command that makes it."""
    from insight.runtime import resolve_device

    results = Path(results)
    needed = {
        "sae": results / "models/sae.safetensors",
        "names": results / "naming/names.parquet",
        **{path: results / path for path in extra},
    }
    if cfg["dinoiser"]["enabled"]:
        needed["dinoiser"] = results / "models/dinoiser.safetensors"
    for what, path in needed.items():
        if not path.exists():
            raise RunNotFoundError(
                f"{path} ({what}) is missing: run the workflow first, e.g. "
                f"`snakemake --cores all {path}` with the same config (needed by insight {command})"
            )
    spec, device = backbone_spec(cfg["backbone"]), resolve_device(cfg["device"])
    families = results / "hierarchy/families.parquet"
    return TrainedRun(
        results=results,
        spec=spec,
        device=device,
        models=load_frozen(
            FrozenSpec(spec, needed.get("dinoiser"), cfg["dinoiser"]["gamma"]), device
        ),
        sae=load_sae(needed["sae"]).to(device),
        names=pq.read_table(needed["names"], columns=["concept", "name"]),
        families=pq.read_table(families) if families.exists() else None,
    )


def explain_image_file(
    image_path: str | Path,
    cfg: dict,
    results: str | Path = "results",
    out: str | Path = "explanations",
    label: str | None = None,
    top: int = 5,
) -> tuple[dict, Path, Path]:
    """``insight explain``: one image through the trained run (backbone, DINOiser, SAE,
    names, families); writes ``{out}/{stem}.png`` (Fig. 4) and ``{stem}.json``. Without a
    label, the vocabulary term with the highest explained score is explained."""
    from insight.explain import best_row, explain_label, explanation_png
    from insight.heatmaps import image_codes
    from insight.hierarchy import family_graph

    run = load_trained_run(
        cfg, results, "explain", [] if label else ["vocabulary/embeddings.parquet"]
    )
    models, sae, device = run.models, run.sae, run.device
    with Image.open(image_path) as image:
        crop, _, codes, grid = image_codes(image, models.encoder, models.transform, sae, device)
    names = concept_names(run.names)
    graph = family_graph(run.families)
    if label is None:
        vocabulary = pq.read_table(
            run.results / "vocabulary/embeddings.parquet", columns=["term", "embedding"]
        )
        embeddings = np.stack(vocabulary["embedding"].to_numpy(zero_copy_only=False))
        row = best_row(codes, sae, embeddings.astype(np.float32))
        label = vocabulary["term"][row].as_py()
        text = torch.from_numpy(embeddings[row].astype(np.float32))
    else:
        encoder = cached_text_encoder(
            models.model, models.tokenizer, run.spec, run.results / "vocabulary/cache", device
        )
        text = torch.from_numpy(class_text_embeddings([label], encoder.encode)[0])
    explanation = explain_label(codes, sae, label, text.to(device), names, graph, top)
    explanation["image"] = str(image_path)
    out = Path(out)
    stem = Path(image_path).stem
    png, json_path = out / f"{stem}.png", out / f"{stem}.json"
    explanation_png(crop, codes, grid, explanation, png)
    write_json(explanation, json_path)
    return explanation, png, json_path


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
    """The concept browser (``insight.browser``) from the names, the families, the concept
    shards of one dataset and, when it has images, their index (for the thumbnails)."""
    from insight.browser import concept_infos, render_thumbnails, top_activations, write_browser
    from insight.features import shard_grid

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


CAPTION_SPLITS = ("train", "val", "test")


def caption_tokens(
    split_file: str | Path,
    images_root: str | Path,
    cfg: dict,
    models: FrozenModels,
    sae: MatryoshkaBatchTopKSAE,
    device: torch.device,
    batch_size: int = 32,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Pooled 8x8 tokens of every Karpathy split, cached once for both captioners:
    ``{split}/clip`` (the DINOised backbone tokens) and ``{split}/insight`` (their SAE
    reconstruction from the thresholded codes), each ``(n, 64, d)``; and per split the image
    ids and reference captions, in the same order. Unreadable images are skipped."""
    from insight.captioning import karpathy_split, pool_tokens

    tensors, captions = {}, {}
    for split in CAPTION_SPLITS:
        rows = karpathy_split(split_file, images_root, split, cfg["images"][split])
        refs = [ImageRef(image_id, path) for image_id, path, _ in rows]
        references = {image_id: sentences for image_id, _, sentences in rows}
        pooled: dict[str, list[torch.Tensor]] = {"clip": [], "insight": []}
        ids: list[str] = []
        bar = progress(len(refs), f"caption tokens ({split})", "img")
        with torch.no_grad():
            for good, pixels, bad in decoded_batches(refs, models.transform, batch_size):
                if bad:
                    log.warning("%s: skipped %d unreadable images: %s", split, len(bad), bad[:3])
                if pixels is not None:
                    x = models.transform.batch(pixels, device)
                    features = models.encoder(x)
                    grid = patch_grid(models.encoder.visual, *x.shape[-2:])
                    reconstruction = sae.decode(sae.encode(features.flatten(0, 1)))
                    pooled["clip"].append(pool_tokens(features, grid).cpu())
                    pooled["insight"].append(
                        pool_tokens(reconstruction.view_as(features), grid).cpu()
                    )
                    ids += [ref.image_id for ref in good]
                bar.update(len(good) + len(bad))
        bar.close()
        if not ids:
            raise ValueError(f"captioning: no readable images in the {split} split of {split_file}")
        for method, chunks in pooled.items():
            tensors[f"{split}/{method}"] = torch.cat(chunks)
        captions[split] = {"image_ids": ids, "captions": [references[i] for i in ids]}
    return tensors, captions


def build_captioner(language_model: str, d_in: int, cfg: dict):
    """A fresh adapter in front of the configured GPT-2 (name or local folder)."""
    from insight.captioning import Captioner, PrefixAdapter, load_language_model

    lm, tokenizer = load_language_model(language_model)
    adapter = PrefixAdapter(
        d_in,
        lm.config.n_embd,
        queries=cfg["queries"],
        layers=cfg["adapter_layers"],
        heads=cfg["adapter_heads"],
    )
    return Captioner(adapter, lm), tokenizer


def train_captioning_method(
    tokens_path: str | Path,
    captions_path: str | Path,
    method: str,
    cfg: dict,
    device: torch.device,
    out: str | Path,
) -> dict:
    """Train one captioner (``insight`` or ``clip`` tokens) on train, choose the epoch on
    val, caption test and score it; saves the adapter and the fine-tuned GPT-2 to ``out``."""
    from insight.captioning import caption_metrics, generate_captions, train_captioner
    from insight.io import atomic_dir, load_safetensors, read_json, save_safetensors

    tensors, _ = load_safetensors(tokens_path)
    captions = read_json(captions_path)
    torch.manual_seed(cfg["seed"])
    captioner, tokenizer = build_captioner(
        cfg["language_model"], tensors[f"train/{method}"].shape[-1], cfg
    )
    captioner, history = train_captioner(
        captioner,
        tensors[f"train/{method}"],
        captions["train"]["captions"],
        tensors[f"val/{method}"],
        captions["val"]["captions"],
        tokenizer,
        cfg,
        device,
    )
    test = captions["test"]
    predicted = generate_captions(captioner, tensors[f"test/{method}"], tokenizer, cfg, device)
    predictions = dict(zip(test["image_ids"], predicted, strict=True))
    references = dict(zip(test["image_ids"], test["captions"], strict=True))
    metrics = caption_metrics(references, predictions)
    with atomic_dir(out) as tmp:
        save_safetensors(captioner.adapter.state_dict(), tmp / "adapter.safetensors")
        captioner.language_model.save_pretrained(tmp / "language_model")
        tokenizer.save_pretrained(tmp / "language_model")
        write_json({"d_in": tensors[f"train/{method}"].shape[-1], **cfg}, tmp / "adapter.json")
    examples = [{"image_id": i, "caption": predictions[i]} for i in test["image_ids"][:10]]
    return {"method": method, **metrics, "history": history, "examples": examples}


def caption_image_file(
    image_path: str | Path,
    cfg: dict,
    results: str | Path = "results",
    requests: Sequence[tuple[str, float]] = (),
    with_family: bool = False,
) -> dict:
    """``insight caption``: the INSIGHT captioner's caption of one image, and with
    ``requests`` ((name, factor) pairs) the caption after scaling those concepts."""
    from insight.captioning import pool_tokens
    from insight.heatmaps import image_codes
    from insight.io import load_safetensors, read_json
    from insight.steering import scale_concepts, scales_by_name

    run = load_trained_run(cfg, results, "caption", ["models/captioner/insight"])
    models, sae, device = run.models, run.sae, run.device
    scales = scales_by_name(run.names, requests, run.families, with_family)
    folder = run.results / "models/captioner/insight"
    settings = read_json(folder / "adapter.json")
    captioner, tokenizer = build_captioner(
        str(folder / "language_model"), settings["d_in"], settings
    )
    captioner.adapter.load_state_dict(load_safetensors(folder / "adapter.safetensors")[0])
    captioner.to(device).eval()
    with Image.open(image_path) as image:
        _, _, codes, grid = image_codes(image, models.encoder, models.transform, sae, device)

    def caption(concept_codes: torch.Tensor) -> str:
        tokens = pool_tokens(sae.decode(concept_codes)[None], grid)
        return captioner.generate(tokens, tokenizer, settings["max_new_tokens"])[0]

    steered = scale_concepts(codes, scales)
    return {
        "image": str(image_path),
        "caption": caption(codes),
        "steered_caption": caption(steered) if scales else None,
        "scaled_concepts": {str(c): f for c, f in sorted(scales.items())},
        "scaled_activation": float(codes[:, list(scales)].sum()) if scales else 0.0,
    }
