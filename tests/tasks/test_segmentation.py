import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from insight.models.prompts import imagenet_prompts
from insight.tasks.segmentation import IoUAccumulator, chance_miou, protocol_size, slide_inference


def reference_miou(pairs, num_classes, reduce_zero_label=False):
    """torchmetrics' Jaccard index accumulated over the dataset (ignore 255, no averaging
    over images), the mean over classes present in prediction or label."""
    metric = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=255, average="none")
    present = torch.zeros(num_classes, dtype=torch.bool)
    for prediction, label in pairs:
        label = torch.from_numpy(label.astype(np.int64))
        if reduce_zero_label:
            label = torch.where(label == 0, 255, label - 1)
            label[label == 254] = 255
        prediction = torch.from_numpy(prediction.astype(np.int64))
        metric.update(prediction[None], label[None])
        valid = label != 255
        present |= torch.bincount(prediction[valid], minlength=num_classes)[:num_classes] > 0
        present |= torch.bincount(label[valid], minlength=num_classes)[:num_classes] > 0
    return float(metric.compute()[present].mean())


@pytest.mark.parametrize("reduce_zero_label", [False, True])
def test_miou_matches_torchmetrics_over_a_dataset(reduce_zero_label):
    rng = np.random.default_rng(0)
    num_classes = 7
    pairs = []
    for _ in range(5):
        label = rng.integers(0, num_classes, size=(30, 40))
        label[rng.random(label.shape) < 0.1] = 255  # ignored border pixels
        label[label == 5] = 3  # class 5 never in the ground truth
        prediction = np.where(
            rng.random(label.shape) < 0.6,
            label % num_classes,
            rng.integers(0, num_classes, size=label.shape),
        )
        prediction[prediction == 6] = 0  # class 6 never predicted
        pairs.append((prediction, label))
    ours = IoUAccumulator(num_classes, reduce_zero_label=reduce_zero_label)
    for prediction, label in pairs:
        ours.add(prediction, label)
    assert ours.miou() == pytest.approx(
        reference_miou(pairs, num_classes, reduce_zero_label), abs=1e-6
    )


def test_absent_classes_are_excluded_from_the_mean():
    acc = IoUAccumulator(4)
    # valid pixels (prediction, label): (0, 0), (0, 1), (1, 1); the fourth is ignored
    acc.add(np.array([[0, 0], [1, 1]]), np.array([[0, 1], [1, 255]]))
    iou = acc.iou()
    assert iou[0] == 0.5 and iou[1] == 0.5 and np.isnan(iou[2]) and np.isnan(iou[3])
    assert acc.miou() == pytest.approx(0.5)


def test_label_area_and_chance_miou_by_hand():
    acc = IoUAccumulator(3, reduce_zero_label=True)
    # labels 0 and 255 are ignored; 1, 2, 3 become classes 0, 1, 2
    acc.add(np.zeros((2, 3), dtype=np.int64), np.array([[0, 1, 1], [2, 255, 1]]))
    assert acc.label_area.tolist() == [3, 1, 0]
    # K = 3 classes, N = 4 pixels: class c gets a_c / 3 over a_c + 4/3 - a_c / 3
    expected = np.mean([1 / (3 + 4 / 3 - 1), (1 / 3) / (1 + 4 / 3 - 1 / 3), 0.0])
    assert chance_miou(acc.label_area) == pytest.approx(expected)


def test_sliding_window_equals_whole_image_when_it_fits_one_window():
    image = torch.randn(1, 3, 300, 448)
    weights = torch.randn(5, 3, 1, 1)

    def model(crop):
        return torch.nn.functional.conv2d(crop, weights)

    torch.testing.assert_close(slide_inference(image, model, 5), model(image))


def test_sliding_windows_cover_and_average_like_mmseg():
    image = torch.zeros(1, 1, 448, 900)
    seen = []

    def model(crop):
        seen.append(tuple(crop.shape[-2:]))
        return torch.ones(1, 1, *crop.shape[-2:]) * len(seen)

    logits = slide_inference(image, model, 1)
    # 900 wide: (900 - 448 + 223) // 224 + 1 = 4 windows at 0, 224, 448 and, shifted
    # back to end at the border, 452
    assert seen == [(448, 448)] * 4
    assert logits[0, 0, 0, 0] == 1 and logits[0, 0, 0, 300] == pytest.approx((1 + 2) / 2)
    assert logits[0, 0, 0, 460] == pytest.approx((2 + 3 + 4) / 3) and logits[0, 0, 0, 899] == 4


def test_protocol_size_and_prompts():
    assert protocol_size(375, 500) == (448, 597)
    assert protocol_size(100, 5000) == (41, 2048)
    prompts = imagenet_prompts()
    assert len(prompts) == 80 and prompts[0]("dog") == "a bad photo of a dog."
