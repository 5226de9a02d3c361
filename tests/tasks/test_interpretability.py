import math

import numpy as np
import pytest

from insight.tasks.interpretability import InterpretabilityAccumulator, upsample_nearest

BG = 9


def label_map():
    """4x4: part 0 on the left half, part 1 on the top right, background bottom right."""
    labels = np.full((4, 4), BG)
    labels[:, :2] = 0
    labels[:2, 2:] = 1
    return labels


def masks(*arrays):
    return np.stack([np.asarray(a, dtype=bool) for a in arrays])


def test_perfect_concept_scores_one_and_zero_impurity():
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=1)
    part0 = label_map() == 0
    part1 = label_map() == 1
    acc.add(np.array([7, 8]), masks(part0, part1), label_map())
    assert acc.locality() == 1.0 and acc.consistency() == 1.0 and acc.impurity() == 0.0


def test_shifted_concept_by_hand():
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=1)
    shifted = np.zeros((4, 4), dtype=bool)
    shifted[:, 1:3] = True  # half on part 0 (4 px), 2 px on part 1, 2 px on background
    acc.add(np.array([3]), masks(shifted), label_map())
    iou0 = 4 / (8 + 8 - 4)  # concept 8 px, part 0 8 px, overlap 4
    iou1 = 2 / (8 + 4 - 2)
    assert acc.locality() == pytest.approx((iou0 + iou1) / 2)
    assert acc.consistency() == pytest.approx((iou0 + iou1) / 2)
    p = np.array([4, 2, 2]) / 8
    assert acc.impurity() == pytest.approx(-(p * np.log(p)).sum())


def test_concept_spread_over_two_parts_by_hand():
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=2)
    spread = (label_map() == 0) | (label_map() == 1)  # 8 + 4 px
    for _ in range(2):
        acc.add(np.array([5]), masks(spread), label_map())
    assert acc.locality() == pytest.approx((8 / 12 + 4 / 12) / 2)
    assert acc.impurity() == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    # a concept seen in one image only is not active for Impurity at min_images = 2
    acc.add(np.array([6]), masks(label_map() == 0), label_map())
    assert acc.impurity() == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))


def test_consistency_takes_the_best_concept_per_label_over_images():
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=1)
    part0 = label_map() == 0
    half = np.zeros((4, 4), dtype=bool)
    half[:2, :2] = True  # IoU 0.5 with part 0
    acc.add(np.array([1, 2]), masks(part0, half), label_map())  # concept 1: 1.0, concept 2: 0.5
    acc.add(np.array([2]), masks(part0), label_map())  # concept 2: 1.0 here
    # label 0: concept 1 mean 1.0 (one image), concept 2 mean 0.75 -> best 1.0; label 1 never covered: 0
    assert acc.consistency() == pytest.approx((1.0 + 0.0) / 2)
    # locality: label 0 best per image (1.0, 1.0); label 1 best (0, 0)
    assert acc.locality() == pytest.approx((1.0 + 0.0) / 2)


def test_ignored_pixels_do_not_count():
    labels = label_map()
    labels[3, 3] = 255
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=1)
    everything = np.ones((4, 4), dtype=bool)
    acc.add(np.array([0]), masks(everything), labels)
    assert acc.locality() == pytest.approx((8 / 15 + 4 / 15) / 2)


def test_upsample_nearest():
    grid = np.array([[[1, 2], [3, 4]]])
    assert upsample_nearest(grid, 4, 4)[0].tolist() == [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 4, 4],
        [3, 3, 4, 4],
    ]


@pytest.mark.parametrize("background", [BG, -1])
def test_patch_footprints_match_the_upsampled_pixel_maps(background):
    """The pipeline's patch-level sums equal the pixel-level metrics on the nearest-upsampled
    maps (uneven footprints, ignored pixels, a concept that covers only ignored pixels)."""
    rng = np.random.default_rng(0)
    grid, height, width = (3, 4), 10, 13
    labels = rng.choice([0, 1, 2, BG, 255], size=(height, width)).astype(np.uint8)
    labels[:4, :4] = 255  # the first patch holds only ignored pixels
    pixelwise = InterpretabilityAccumulator([0, 1, 2], background, min_images=1)
    patchwise = InterpretabilityAccumulator([0, 1, 2], background, min_images=1)
    for _ in range(3):
        patch_masks = rng.random((5, grid[0] * grid[1])) < 0.4
        patch_masks[0] = False
        patch_masks[0, 0] = True  # fires on the ignored patch only: not counted as active
        concepts = np.arange(10, 15)
        upsampled = upsample_nearest(patch_masks.reshape(5, *grid), height, width)
        pixelwise.add(concepts, upsampled, labels)
        patchwise.add_patches(concepts, patch_masks, grid, labels)
    assert 10 not in patchwise.entropy_count
    assert patchwise.pair_count == pixelwise.pair_count
    for metric in ("locality", "consistency", "impurity"):
        assert getattr(patchwise, metric)() == pytest.approx(getattr(pixelwise, metric)())
    assert patchwise.summary()["active_concepts"] == 4


def test_an_image_where_no_concept_fires_scores_zero_locality_for_its_labels():
    acc = InterpretabilityAccumulator(labels=[0, 1], background=BG, min_images=1)
    acc.add(np.array([], dtype=int), np.zeros((0, 4, 4), dtype=bool), label_map())
    assert acc.locality_count == {0: 1, 1: 1} and acc.locality() == 0.0
    assert acc.entropy_count == {} and math.isnan(acc.impurity())
