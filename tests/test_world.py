"""The demo world (insight.world, insight.demo): labels, captions, layouts, recovery counts."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from insight import demo, world
from insight.hierarchy import (
    CooccurrencePartial,
    accumulate_patches,
    cooccurrence_table,
    family_dag,
    totals_table,
)
from insight.segmentation import imagenet_prompts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(0)
    return [world.draw_scene(rng, (160, 120)) for _ in range(30)]


def test_every_part_pixel_belongs_to_its_object_and_stuff_has_no_part(scenes):
    for scene in scenes:
        for part_id, part in enumerate(world.PARTS):
            at_part = scene.parts == part_id
            owner = world.CLASSES.index(world.PART_OF[part])
            assert (scene.classes[at_part] == owner).all()
        stuff = scene.classes < len(world.STUFF)
        assert (scene.parts[stuff] == world.PART_BACKGROUND).all()
        assert (scene.parts[~stuff] != world.PART_BACKGROUND).all()


def test_nearer_objects_cover_farther_ones_in_the_labels(scenes):
    for scene in scenes:
        for i, obj in enumerate(scene.objects):
            visible = obj.mask.copy()
            for nearer in scene.objects[i + 1 :]:
                visible &= ~nearer.mask
            assert (scene.classes[visible] == world.CLASSES.index(obj.name)).all()


def test_caption_names_every_object_with_its_colour_and_the_ground(scenes):
    for scene in scenes:
        caption = scene.caption
        assert caption.endswith(f" on {scene.ground}")
        for obj in scene.objects:
            assert f"{obj.colour} {obj.name}" in caption
        reverse = world.scene_caption(scene.objects, scene.ground, reverse=True)
        assert sorted(reverse.replace(",", "").split()) == sorted(caption.replace(",", "").split())


def test_objects_argument_draws_exactly_those_objects():
    scene = world.draw_scene(np.random.default_rng(3), objects=["car"])
    assert [o.name for o in scene.objects] == ["car"]
    assert set(np.unique(scene.parts)) <= {
        world.PARTS.index("body"),
        world.PARTS.index("wheel"),
        40,
    }


def test_close_up_is_inside_the_image_and_captioned_with_its_target(scenes):
    templates = tuple(t("{}") for t in imagenet_prompts())
    rng = np.random.default_rng(1)
    words = set(world.world_words()) | set(world.CLASSES) | set(world.PARTS)
    seen = 0
    for scene in scenes:
        result = world.close_up(scene, rng, templates, size=64)
        if result is None:
            continue
        image, caption = result
        seen += 1
        assert image.size == (64, 64)
        assert any(f" {w}" in f" {caption}" for w in words), caption
        # no black border: the crop stays inside the scene
        assert (np.asarray(image).reshape(-1, 3).max(1) > 0).all()
    assert seen >= 20


def test_texture_of_unknown_name_fails_with_the_name():
    with pytest.raises(KeyError, match="no texture for 'marble'"):
        world.texture("marble", np.random.default_rng(0), 8, 8)


def test_patch_labels_and_label_mass_by_hand():
    part_map = np.full((4, 4), world.PART_BACKGROUND, np.uint8)
    part_map[:2, :2] = world.PARTS.index("roof")
    part_map[2:, 2:] = world.PARTS.index("wheel")
    labels = world.patch_labels(part_map, (2, 2))
    background = len(world.PARTS)
    assert labels.tolist() == [
        world.PARTS.index("roof"),
        background,
        background,
        world.PARTS.index("wheel"),
    ]
    codes = np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0], [2.0, 3.0]])
    mass = world.label_mass(codes, labels)
    assert mass[0, world.PARTS.index("roof")] == 1.0 and mass[0, background] == 0.5
    assert mass[0, world.PARTS.index("wheel")] == 2.0 and mass[1, world.PARTS.index("wheel")] == 3.0
    part, obj = world.concept_labels(mass)
    assert part == ["wheel", "wheel"] and obj == ["car", "car"]
    assert world.concept_labels(np.zeros((1, len(world.LABELS)))) == ([None], [None])


def test_planted_edges_are_object_parent_and_part_child():
    part = ["wheel", "wheel", "roof", "sky", "body"]
    obj = ["car", "car", "house", "background", "car"]
    edges = [(4, 0), (0, 1), (2, 0), (3, 2), (0, 4)]
    # 4 (car body, object car) -> 0 (wheel): planted; 0 -> 1: same part, not planted;
    # 2 (house) -> 0 (wheel): wrong object; 3 -> 2: parent is background; 0 (car) -> 4 (body): planted
    assert world.planted_edges(edges, part, obj) == [(4, 0), (0, 4)]
    assert 0 <= world.shuffled_planted_edges(edges, part, obj) <= len(edges)
    assert world.is_world_name("red car") and world.is_world_name("wheel")
    assert not world.is_world_name("happiness") and not world.is_world_name(None)


def test_demo_config_matches_the_world():
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    assert cfg["ovs"]["custom"]["world"]["classes"] == list(world.CLASSES)
    words = (ROOT / "config/demo_words.txt").read_text().split("\n")
    assert [w for w in words if w] == world.world_words()


def test_voc_and_part_layouts_hold_the_world_labels(tmp_path):
    demo.make_voc_dataset(tmp_path / "voc", 3, size=(96, 80))
    ids = (tmp_path / "voc/ImageSets/Segmentation/val.txt").read_text().split()
    assert len(ids) == 3
    for name in ids:
        label = Image.open(tmp_path / f"voc/SegmentationClass/{name}.png")
        assert label.mode == "P" and label.size == (96, 80)
        values = set(np.unique(np.array(label)).tolist())
        assert values <= set(range(len(world.CLASSES))) | {255}
        assert Image.open(tmp_path / f"voc/JPEGImages/{name}.jpg").size == (96, 80)
    demo.make_part_dataset(tmp_path / "parts", 2, size=(64, 64))
    for label in (tmp_path / "parts/annotations/test").glob("*.png"):
        values = set(np.unique(np.array(Image.open(label))).tolist())
        assert values <= set(range(len(world.PARTS))) | {world.PART_BACKGROUND}


def test_clip_pairs_csv_lists_scene_and_close_up_per_scene(tmp_path):
    import csv

    pairs = demo.make_clip_pairs(tmp_path, 3, size=(96, 96))
    rows = list(csv.DictReader(pairs.open()))
    assert [r["path"] for r in rows] == [
        f"images/{kind}_{i:05d}.jpg" for i in range(3) for kind in ("scene", "close")
    ]
    assert all((tmp_path / r["path"]).is_file() and r["caption"] for r in rows)
    assert " on " in rows[0]["caption"]


def test_ideal_concepts_give_planted_family_edges_through_eq5():
    """The recovery count end to end on ideal concepts: one concept per object active on
    all its patches (activation 2), one per part on its patches (1), one on the background.
    Eq. 5 gives D[part, its object] = 1 and nothing else >= 0.75, so the family DAG holds
    exactly the 8 object -> part edges. An object concept's dominant part (by mass) is
    its larger part, so only the 4 edges to the smaller parts count as planted (the
    others look like same-part specialisations): the count is a lower bound. Shuffling
    the parents leaves about one."""
    rng = np.random.default_rng(3)
    labels = np.concatenate(
        [world.patch_labels(world.draw_scene(rng).parts, (14, 14)) for _ in range(24)]
    )
    background = len(world.PARTS)
    object_concept = {o: 1 + i for i, o in enumerate(world.OBJECTS)}
    part_concept = {p: 1 + len(world.OBJECTS) + i for i, p in enumerate(world.PARTS)}
    m = 1 + len(world.OBJECTS) + len(world.PARTS)
    codes = np.zeros((len(labels), m))
    codes[labels == background, 0] = 1.0
    for part, concept in part_concept.items():
        at_part = labels == world.PARTS.index(part)
        codes[at_part, concept] = 1.0
        codes[at_part, object_concept[world.PART_OF[part]]] = 2.0
    patch, concept = np.nonzero(codes)
    partial = CooccurrencePartial.zeros(m)
    accumulate_patches(partial, patch, concept, codes[patch, concept])
    graph, _ = family_dag(cooccurrence_table(partial, 0.05), totals_table(partial))
    edges = sorted(graph.edges)
    assert edges == sorted((object_concept[world.PART_OF[p]], c) for p, c in part_concept.items())

    part, obj = world.concept_labels(world.label_mass(codes, labels))
    area = np.bincount(labels, minlength=len(world.LABELS))
    smaller = [
        min(parts, key=lambda p: area[world.PARTS.index(p)])
        for parts in world.OBJECT_PARTS.values()
    ]
    families = world.family_recovery(edges, part, obj, {c: p for p, c in part_concept.items()})
    assert families["edges"] == 8 and families["planted_edges"] == 4
    planted = [(e["parent"], e["child"]) for e in families["examples"]]
    assert planted == sorted((object_concept[world.PART_OF[p]], part_concept[p]) for p in smaller)
    for example in families["examples"]:
        assert example["child_name"] == example["child_part"]
        assert example["parent_object"] == world.PART_OF[example["child_part"]]
    assert families["planted_edges_shuffled_parents"] < 2
