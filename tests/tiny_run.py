"""A whole run at toy size, built by calling each stage's entry point in the order the
workflow does (no Snakemake): the stage tests check what each call wrote, in seconds.

The sizes are the demo config's with everything shrunk: the tiny random CLIP, 8 scenes,
a 32-concept SAE trained for a few steps, a 1-epoch DINOiser and captioner.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from insight.cli import load_config_dict
from insight.core.io import write_parquet
from insight.core.sections import Settings
from insight.core.settings import settings_from_config
from insight.data.images import assign_shards, decode_policy, list_images
from insight.demo.layouts import (
    make_caption_dataset,
    make_imagefolder,
    make_part_dataset,
    make_scene_images,
    make_voc_dataset,
)
from insight.demo.world import world_words
from insight.features.extract import extract_config, extract_shard_from_index
from insight.hierarchy.cooccurrence import cooccurrence_table, reduce_partials, totals_table
from insight.hierarchy.families import family_dag, write_families
from insight.hierarchy.streaming import shards_partial
from insight.models.backbone import backbone_spec
from insight.models.dinoiser import save_dinoiser
from insight.models.dinoiser_training import dinoiser_train_config, train_dinoiser_from_images
from insight.models.frozen import model_bundle
from insight.models.teachers import teacher_spec
from insight.naming.embed import embed_vocabulary
from insight.naming.names import name_concepts
from insight.naming.vocabulary import build_index, build_vocabulary, save_index
from insight.sae.encode import encode_concept_shard
from insight.sae.model import save_sae
from insight.sae.training import train_sae_from_shards

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY_BACKBONE = {
    "model": "insight-tiny-ViT-B-16",
    "pretrained": None,
    "checkpoint": None,
    "cache_dir": None,
}


@dataclasses.dataclass
class TinyRun:
    """Where each stage's output of the toy run is, and what the stages returned."""

    root: Path
    cfg: Settings
    config: dict  # the validated config cfg was built from (what a config file holds)
    results: Path
    index: object
    refs: list
    frozen: object
    reports: dict


def tiny_config(root: Path) -> dict:
    """config.yaml + config/demo.yaml, validated (defaults in), then shrunk; the captioning
    data under ``root``."""
    cfg = load_config_dict([REPO / "config/demo.yaml"], base=REPO / "config.yaml")
    cfg["backbone"] = dict(TINY_BACKBONE)
    cfg["dinoiser"].update(epochs=1, batch_size=4, images=4)
    cfg["features"].update(batch_size=4, row_group_images=4)
    cfg["sae"].update(
        d_sae=32, k=4, groups=[8, 24], k_aux=8, batch_size=256, epochs=2, shuffle_buffer=512
    )
    cfg["sae"].update(checkpoint_every=1000, calibration_fraction=0.0)  # 8 images: none to spare
    cfg["sae"].update(threshold_start_step=0)  # a few steps: the EMA starts at once
    cfg["naming"].update(top_patches=5)
    cfg["classification"].update(epochs=2, explain_images=2, l1s=[0.0])
    cfg["captioning"].update(epochs=1, batch_size=4, max_new_tokens=6)
    cfg["captioning"]["images"] = {"train": 6, "val": 2, "test": 2}
    cfg["ovs"].update(explain_images=1)
    cfg["captioning"]["split_file"] = str(root / "captions/dataset_coco.json")
    cfg["captioning"]["images_root"] = str(root / "captions")
    cfg["captioning"]["language_model"] = str(root / "captions/gpt2")
    return cfg


def build_tiny_run(root: Path) -> TinyRun:
    torch.manual_seed(0)
    config = tiny_config(root)
    cfg = settings_from_config(config)
    results = root / "results"
    spec = backbone_spec(cfg.backbone)
    reports: dict = {}

    make_scene_images(root / "images", 8, seed=0)
    refs = list_images(root / "images", "folder")
    index = assign_shards(refs, 8)
    write_parquet(index, results / "images/demo/index.parquet")

    g, reports["dinoiser"] = train_dinoiser_from_images(
        refs[: cfg.dinoiser.images],
        spec,
        teacher_spec(cfg.dinoiser.teacher),
        dinoiser_train_config(cfg.dinoiser),
        decode_policy(cfg.images),
        CPU,
        batch_size=4,
    )
    save_dinoiser(g, results / "models/dinoiser.safetensors")
    frozen = model_bundle(cfg, [results / "models/dinoiser.safetensors"])

    shard = results / "features/demo/shard-00000.parquet"
    reports["features"] = extract_shard_from_index(
        index,
        0,
        frozen,
        extract_config(cfg.features, cfg.images),
        CPU,
        shard,
        results / "features/demo/rejected/shard-00000.parquet",
    )

    sae, reports["sae"] = train_sae_from_shards([shard], cfg.sae, CPU, results / "checkpoints")
    save_sae(sae, results / "models/sae.safetensors")
    concepts = results / "concepts/demo/shard-00000.parquet"
    reports["concepts"] = encode_concept_shard(
        results / "models/sae.safetensors", shard, concepts, cfg.sae.encode_chunk, CPU
    )

    partial = reduce_partials([_saved_partial(concepts, cfg, results)], cfg.sae.d_sae)
    write_parquet(cooccurrence_table(partial, 0.05), results / "hierarchy/cooccurrence.parquet")
    write_parquet(totals_table(partial), results / "hierarchy/totals.parquet")
    graph, _ = family_dag(cooccurrence_table(partial, 0.05), totals_table(partial))
    write_families(
        graph, results / "hierarchy/families.parquet", results / "hierarchy/families.graphml"
    )

    vocabulary, _ = build_vocabulary(
        {"list:world.txt": world_words(), "wordfreq": ["apple", "river", "chair"]}
    )
    write_parquet(vocabulary, results / "vocabulary/terms.parquet")
    terms = vocabulary["term"].to_pylist()
    table, reports["vocabulary"] = embed_vocabulary(
        terms, spec, cfg.vocabulary, results / "vocabulary/cache", CPU
    )
    write_parquet(table, results / "vocabulary/embeddings.parquet")
    vectors = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    save_index(build_index(vectors, "flat"), results / "vocabulary/index.faiss")
    names = name_concepts(
        results / "models/sae.safetensors",
        results / "hierarchy/families.parquet",
        results / "hierarchy/totals.parquet",
        [concepts],
        results / "vocabulary/embeddings.parquet",
        results / "vocabulary/index.faiss",
        cfg.naming,
    )
    write_parquet(names, results / "naming/names.parquet")

    make_voc_dataset(root / "voc", 2, size=(160, 120))
    make_part_dataset(root / "parts", 2, size=(96, 96))
    make_imagefolder(root / "imagefolder", {"train": 3, "val": 2}, size=(96, 96))
    make_caption_dataset(
        root / "captions",
        {"train": 6, "val": 2, "test": 2},
        size=(96, 96),
        language_model={"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64},
    )
    return TinyRun(root, cfg, config, results, index, refs, frozen, reports)


def _saved_partial(concepts: Path, cfg: Settings, results: Path) -> Path:
    path = results / "hierarchy/partials/0000.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    shards_partial([concepts], cfg.sae.d_sae).save(path)
    return path
