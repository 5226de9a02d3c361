"""The demo world (insight.world, insight.demo): labels, captions, layouts, recovery counts."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from insight.core.io import read_label_map
from insight.demo import layouts as demo
from insight.demo import recovery, world
from insight.hierarchy.cooccurrence import CooccurrencePartial, cooccurrence_table, totals_table
from insight.hierarchy.families import FamilyCriterion, family_dag
from insight.hierarchy.streaming import accumulate
from insight.models.prompts import imagenet_prompts

ROOT = Path(__file__).resolve().parents[2]


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
        plain = world.scene_caption(scene.objects, scene.ground, colours=False)
        assert not set(world.COLOURS) & set(plain.replace(",", "").split())
        # the article agrees with the name: "a house", not "an house" (from "an orange house")
        assert plain.replace(",", "").split().count("a") == len(scene.objects)
        assert plain.endswith(f" on {scene.ground}")


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
        image, caption, box = result
        seen += 1
        assert image.size == (64, 64)
        left, top, right, bottom = box
        assert right - left == bottom - top and 0 <= left and right <= scene.image.size[0]
        regions = world.region_map(scene, box, 64)
        assert regions.shape == (64, 64)
        # the crop's region map is the scene's, cropped: its centre pixel agrees
        centre = world.region_map(scene)[(top + bottom) // 2, (left + right) // 2]
        assert regions[32, 32] == centre
        assert any(f" {w}" in f" {caption}" for w in words), caption
        # no black border: the crop stays inside the scene
        assert (np.asarray(image).reshape(-1, 3).max(1) > 0).all()
    assert seen >= 20


def test_region_map_is_the_part_on_objects_and_the_class_elsewhere(scenes):
    for scene in scenes[:5]:
        regions = world.region_map(scene)
        on_object = scene.parts != world.PART_BACKGROUND
        names = np.array(world.REGIONS)[regions]
        assert (names[on_object] == np.array(world.PARTS)[scene.parts[on_object]]).all()
        assert (names[~on_object] == np.array(world.CLASSES)[scene.classes[~on_object]]).all()


def test_texture_of_unknown_name_fails_with_the_name():
    with pytest.raises(KeyError, match="no texture for 'marble'"):
        world.texture("marble", np.random.default_rng(0), 8, 8)


def test_patch_labels_and_label_stats_by_hand():
    part_map = np.full((4, 4), world.PART_BACKGROUND, np.uint8)
    part_map[:2, :2] = world.PARTS.index("roof")
    part_map[2:, 2:] = world.PARTS.index("wheel")
    labels = recovery.patch_labels(part_map, (2, 2))
    background = len(world.PARTS)
    roof, wheel = world.PARTS.index("roof"), world.PARTS.index("wheel")
    assert labels.tolist() == [roof, background, background, wheel]
    stats = recovery.LabelStats.zeros(2)
    stats.add(np.array([[1.0, 0.0], [0.5, 0.0], [0.0, 0.0], [2.0, 3.0]]), labels)
    stats.add(np.array([[0.0, 0.0], [0.0, 1.0]]), np.array([background, background]))
    assert stats.mass[0, roof] == 1.0 and stats.mass[0, background] == 0.5
    assert stats.mass[0, wheel] == 2.0 and stats.mass[1, wheel] == 3.0
    assert stats.mass[1, background] == 1.0
    assert stats.patches[roof] == 1 and stats.patches[wheel] == 1 and stats.patches[background] == 4
    assert stats.active.tolist() == [3, 2]


def test_concept_labels_use_the_rate_per_patch_not_the_area():
    """Rate profile by hand: 8 body patches, 2 wheel patches, 10 background patches."""
    body, wheel, background = world.PARTS.index("body"), world.PARTS.index("wheel"), 8
    stats = recovery.LabelStats.zeros(5)
    stats.patches[[body, wheel, background]] = [8, 2, 10]
    # 0: 1.0 on every car patch: mass 8 on the body, 2 on the wheel (80% by mass), but
    #    rate 1 on both: profile 0.5 / 0.5 -> the car, not a body concept
    # 1: on the wheels only -> wheel; 2: body 4 (rate 0.5), background 10 (rate 1):
    #    profile 1/3 body -> neither; 3: the car and the background alike (profile 1/3
    #    each, 2/3 < 0.7 on the car) -> neither;
    # 4: the car's rate profile but active on 5 patches only -> too few to tell
    stats.mass[0, [body, wheel]] = [8.0, 2.0]
    stats.mass[1, wheel] = 2.0
    stats.mass[2, [body, background]] = [4.0, 10.0]
    stats.mass[3, [body, wheel, background]] = [8.0, 2.0, 10.0]
    stats.mass[4, [body, wheel]] = [4.0, 1.0]
    stats.active[:] = [10, 10, 14, 20, 5]
    part, obj = recovery.concept_labels(stats)
    assert part == [None, "wheel", None, None, None]
    assert obj == ["car", None, None, None, None]
    assert recovery.concept_labels(stats, min_patches=5)[1][4] == "car"
    assert recovery.concept_labels(recovery.LabelStats.zeros(1)) == ([None], [None])


def test_planted_edges_are_object_parent_and_part_child():
    part = ["wheel", "wheel", "roof", None, "body", None]
    obj = [None, None, "house", None, None, "car"]
    edges = [(5, 0), (0, 1), (2, 0), (3, 2), (5, 4), (1, 4)]
    # 5 (car) -> 0 (wheel): planted; 0 -> 1: a part specialisation, not planted;
    # 2 (house) -> 0 (wheel): wrong object; 3 -> 2: unlabelled parent; 5 -> 4 (body): planted
    assert recovery.planted_edges(edges, part, obj) == [(5, 0), (5, 4)]
    shuffled = recovery.shuffled_planted_edges(edges, part, obj, rounds=200)
    assert (
        shuffled.shape == (200, 8) and shuffled.min() >= 0 and shuffled.sum(1).max() <= len(edges)
    )
    counts = dict(
        zip(recovery.PLANTED_PAIRS, recovery.planted_pair_counts(edges, part, obj), strict=True)
    )
    assert counts["car wheel"] == counts["car body"] == 1 and sum(counts.values()) == 2
    assert len(recovery.shuffled_planted_edges([], part, obj)) == 0
    assert recovery.is_world_name("red car") and recovery.is_world_name("wheel")
    assert not recovery.is_world_name("happiness") and not recovery.is_world_name(None)


def test_own_word_naming_against_shuffled_names_by_hand():
    """A wheel concept named "red car" (its object's word) and a car concept named "wheel"
    (its part's) are named right; "mushroom" on a roof concept and no name are not.
    Shuffled, "red car" and "wheel" each land on the wheel or the car concept with
    probability 2/4, so 1.0 right on average, and both with (2/4)(1/3) = 1/6."""
    labels = ["wheel", "car", None, "roof", "house"]
    name_of = {0: "red car", 1: "wheel", 2: "car", 3: "mushroom"}
    result = recovery.own_word_naming(labels, name_of, rounds=4000)
    assert (result["concepts"], result["named"], result["fraction"]) == (4, 2, 0.5)
    assert result["shuffled_names"] == pytest.approx(1.0, abs=0.05)
    assert result["p_value"] == pytest.approx(1 / 6, abs=0.03)
    nothing_right = recovery.own_word_naming(labels, {0: "sky", 1: "roof"})
    assert nothing_right["named"] == 0 and nothing_right["p_value"] == 1.0
    assert recovery.own_word_naming([None, None], name_of)["concepts"] == 0


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
    assert [r["regions"] for r in rows] == [
        f"regions/{kind}_{i:05d}.png" for i in range(3) for kind in ("scene", "close")
    ]
    for row in rows:
        with Image.open(tmp_path / row["regions"]) as regions:
            assert regions.size == (96, 96)
            assert set(np.unique(np.asarray(regions)).tolist()) <= set(range(len(world.REGIONS)))
    assert " on " in rows[0]["caption"]


def test_clip_pairs_name_colours_in_the_given_share_of_scene_captions(tmp_path):
    import csv

    colours = set(world.COLOURS)

    def coloured_share(folder, share):
        pairs = demo.make_clip_pairs(folder, 40, size=(64, 64), colour_share=share)
        scenes = [r for r in csv.DictReader(pairs.open()) if "/scene_" in r["path"]]
        return np.mean([bool(colours & set(r["caption"].split())) for r in scenes])

    assert coloured_share(tmp_path / "all", 1.0) == 1.0
    assert coloured_share(tmp_path / "none", 0.0) == 0.0
    assert 0.25 < coloured_share(tmp_path / "half", 0.5) < 0.75


def test_ideal_concepts_give_planted_family_edges_through_eq5():
    """The recovery count end to end on ideal concepts: one concept per object active on
    all its patches (activation 2), one per part on its patches (1), one on the background.
    Eq. 5 gives D[part, its object] = 1 and nothing else >= 0.75 but D[object, its main
    part] where that part holds >= 75% of the object's mass: those 3 pairs pass both ways
    and are listed as equivalent, the other 5 object -> part pairs are edges; with the
    equivalents read as object -> part, the rate profiles label every concept, so all
    8 count as planted and cover the 8 (object, part) pairs. Shuffling the parents plants
    about 2 (each object concept has 2 of the 8 children); a shuffle plants all 8 only
    when it hits the identity pairing or an equivalent one."""
    rng = np.random.default_rng(3)
    labels = np.concatenate(
        [recovery.patch_labels(world.draw_scene(rng).parts, (14, 14)) for _ in range(24)]
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
    accumulate(partial.halves[0], patch // 196, patch, concept, codes[patch, concept], 196)
    graph, report = family_dag(
        cooccurrence_table(partial, 0.05), totals_table(partial), FamilyCriterion("confidence")
    )
    equivalent = [(row["concept"], row["other"]) for row in report["equivalents"].to_pylist()]
    assert len(equivalent) == 3 and all(a in object_concept.values() for a, _ in equivalent)
    edges = sorted([*graph.edges, *equivalent])
    assert edges == sorted((object_concept[world.PART_OF[p]], c) for p, c in part_concept.items())

    stats = recovery.LabelStats.zeros(m)
    stats.add(codes, labels)
    part, obj = recovery.concept_labels(stats)
    assert obj == [None, *world.OBJECTS, *[None] * len(world.PARTS)]
    assert part == [None, *[None] * len(world.OBJECTS), *world.PARTS]
    families = recovery.family_recovery(edges, part, obj, {c: p for p, c in part_concept.items()})
    assert families["edges"] == families["planted_edges"] == 8
    assert families["planted_pairs"] == sorted(f"{world.PART_OF[p]} {p}" for p in world.PARTS)
    for example in families["examples"]:
        assert example["child_name"] == example["child_part"]
        assert example["parent_object"] == world.PART_OF[example["child_part"]]
    assert 1.5 < families["planted_edges_shuffled_parents"] < 2.5
    assert families["p_value"] < 0.01

    assert [row["planted_edges"] for row in families["pairs"].values()] == [1] * 8
    assert sum(row["shuffled_parents"] for row in families["pairs"].values()) == pytest.approx(
        families["planted_edges_shuffled_parents"]
    )

    shuffled_truth = recovery.family_recovery(edges, part, obj[1:] + obj[:1])  # objects renamed
    assert shuffled_truth["planted_edges"] == 0 and shuffled_truth["p_value"] == 1.0
    assert shuffled_truth["significant_pairs"] == shuffled_truth["significant_objects"] == []


def test_a_pair_is_significant_on_its_own_when_its_edges_beat_its_shuffles():
    """Ten object concepts each with their own part children: the house's roof edges
    (many, all planted) are significant alone; one tree edge among many is not."""
    houses, roofs, trees = range(0, 10), range(10, 20), range(20, 30)
    part = [None] * 10 + ["roof"] * 10 + ["leaves"] * 10 + [None] * 10
    obj = ["house"] * 10 + [None] * 20 + ["tree"] * 10
    edges = [(h, r) for h, r in zip(houses, roofs, strict=True)]
    edges += [(30, trees[0])] + [(31 + i, 32 + i) for i in range(8)]  # 1 planted, 8 not
    report = recovery.family_recovery(edges, part, obj)
    assert report["pairs"]["house roof"]["planted_edges"] == 10
    assert report["pairs"]["house roof"]["p_value"] < 0.01
    assert report["pairs"]["tree leaves"]["planted_edges"] == 1
    assert report["pairs"]["tree leaves"]["p_value"] > 0.01
    assert report["significant_pairs"] == ["house roof"] and report["significant_objects"] == [
        "house"
    ]


def test_read_label_map_keeps_palette_ids_and_resizes_nearest(tmp_path):
    ids = np.array([[0, 5], [255, 8]], np.uint8)
    png = Image.frombytes("P", (2, 2), ids.tobytes())
    png.putpalette(demo.voc_palette())
    png.save(tmp_path / "label.png")
    assert read_label_map(tmp_path / "label.png").tolist() == ids.tolist()
    resized = read_label_map(tmp_path / "label.png", (4, 6))
    assert resized.shape == (4, 6) and set(np.unique(resized)) == {0, 5, 8, 255}
    assert resized[:2, :3].tolist() == [[0] * 3] * 2 and resized[2:, 3:].tolist() == [[8] * 3] * 2
