"""The released OVS protocol: class lists, window probabilities, FOUND per window.

The release's behaviour is computed here independently (CLIP-DINOiser's ``forward`` and
``cls_seg``, mmseg 0.x's ``slide_inference``, written out from their published text) and
compared with :func:`insight.tasks.ovs.predict`, on hand-built windows where the old and the
new rules give different labels.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import ToTensor

from insight.data.batches import BatchTransform
from insight.data.benchmarks import DATASETS, benchmark, readable_class_name
from insight.tasks.ovs import OVSConfig, predict, resolved_protocol, scored_classes

# ---- class lists -------------------------------------------------------------------------


def test_class_lists_are_the_released_tuples_with_readable_forms_on_request():
    counts = {name: benchmark(name).num_classes for name in DATASETS}
    assert counts == {
        "voc": 21, "voc20": 20, "context": 60, "context59": 59, "coco_object": 81,
        "coco_stuff": 171, "cityscapes": 19, "ade20k": 150,
    }  # fmt: skip
    voc, stuff = benchmark("voc").classes, benchmark("coco_stuff").classes
    # spot checks against CLIP-DINOiser's segmentation/datasets/*.py and CFM's cls_coco_object.txt
    assert voc[11] == "dining table" and voc[20] == "tvmonitor"
    assert benchmark("context").classes[55] == "tvmonitor"
    obj = benchmark("coco_object").classes
    assert obj[:6] == ("background", "person", "bicycle", "car", "motorcycle", "aeroplane")
    assert obj[63] == "tv" and obj[-1] == "toothbrush"
    assert stuff[4] == "airplane" and stuff[80:83] == ("banner", "blanket", "branch")
    assert stuff[102] == "floor-marble" and stuff[-3:] == ("window-blind", "window-other", "wood")
    assert benchmark("ade20k").classes[7] == "bed "  # mmseg's tuple, trailing space included
    readable = benchmark("coco_stuff", class_names="readable").classes
    assert sum(a != b for a, b in zip(stuff, readable, strict=True)) == 29
    assert readable[102] == "marble floor" and "floor-marble" not in readable
    assert [readable_class_name(n) for n in ("building-other", "ceiling-tile", "wall-brick")] == [
        "building",
        "ceiling tile",
        "brick wall",
    ]
    assert benchmark("voc", class_names="readable").classes[20] == "tv monitor"
    assert benchmark("coco_object", class_names="readable").classes[5] == "airplane"
    with pytest.raises(ValueError, match="ovs.class_names must be one of"):
        benchmark("voc", class_names="pretty")


# ---- the release, written out independently ------------------------------------------------


def release_predict(image, encoder, text, window, stride, scale, found, delta=0.99):
    """CLIP-DINOiser's evaluation of one image: per window ``softmax(scale * cos)`` at feature
    resolution; with FOUND, class 0 set to 1 where the best probability < delta and the
    foreground is not > 0.5; bilinear to the window; windows averaged; bilinear to the image."""
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    _, _, height, width = x.shape
    total = torch.zeros(1, text.shape[0], height, width)
    count = torch.zeros(1, 1, height, width)
    rows = max(height - window + stride - 1, 0) // stride + 1
    cols = max(width - window + stride - 1, 0) // stride + 1
    for r in range(rows):
        for c in range(cols):
            y1, x1 = r * stride, c * stride
            y2, x2 = min(y1 + window, height), min(x1 + window, width)
            y1, x1 = max(y2 - window, 0), max(x2 - window, 0)
            crop = x[:, :, y1:y2, x1:x2]
            features, foreground = encoder.features_and_foreground(crop, found)
            h, w = crop.shape[-2] // 16, crop.shape[-1] // 16
            feat = features[0].T.reshape(1, -1, h, w)
            feat = feat / feat.norm(dim=1, keepdim=True)
            output = F.softmax(F.conv2d(feat, text[:, :, None, None]) * scale, dim=1)
            if found:
                uncertain = (output.max(dim=1)[0] < delta).reshape(-1)
                hard = (foreground.reshape(-1) > 0.5).float()
                output.reshape(1, text.shape[0], -1)[:, 0, uncertain & ~hard.bool()] = 1.0
            output = F.interpolate(
                output, size=crop.shape[-2:], mode="bilinear", align_corners=False
            )
            total[:, :, y1:y2, x1:x2] += output
            count[:, :, y1:y2, x1:x2] += 1
    return (total / count)[0].argmax(0).numpy()


class WindowStub:
    """A dense encoder whose every patch has one feature per window: the window starting
    in the image's dark left third gets ``left``, the other ``right``; no foreground."""

    has_foreground = True
    visual = SimpleNamespace(patch_size=(16, 16))

    def __init__(self, left: torch.Tensor, right: torch.Tensor):
        self.left, self.right = left, right

    def features_and_foreground(self, crop, foreground=False):
        h, w = crop.shape[-2] // 16, crop.shape[-1] // 16
        feature = self.left if crop[0, 0, 0, 0] < 0.5 else self.right
        scores = torch.zeros(1, h, w) if foreground else None
        return feature.expand(1, h * w, -1).clone(), scores


def two_window_image() -> Image.Image:
    """48 x 16 pixels: windows of 32 with stride 16 cover x 0-32 and 16-48."""
    pixels = np.zeros((16, 48, 3), np.uint8)
    pixels[:, 16:] = 255
    return Image.fromarray(pixels)


def cosines(*values: float) -> torch.Tensor:
    """A unit feature whose cosines with the unit axes (the class embeddings) are ``values``."""
    rest = (1 - sum(v * v for v in values)) ** 0.5
    return torch.tensor([*values, rest])


CLASSES_3 = {"custom": {"three": {"classes": ["background", "car", "tree"], "background": True}}}
TEXT = torch.eye(4)[:3]  # background, car, tree on the first three axes


def run(stub, config, dataset, text=TEXT):
    config = resolved_protocol(config, dataset, has_foreground=True)
    out = predict(two_window_image(), stub, BatchTransform(ToTensor()), text, None, dataset, config)
    return out["clip_dinoiser"]


def test_windows_average_probabilities_as_released_where_logits_would_disagree():
    dataset = benchmark("three", {"three": {"classes": ["sky", "car", "tree"]}})
    # window 1: car 0.100 and tree 0.099 (probabilities .52 / .48); window 2: sky 0.03
    stub = WindowStub(cosines(0.0, 0.100, 0.099), cosines(0.03, 0.0, 0.0))
    config = OVSConfig(short_side=16, window=32, stride=16, background="prompt")
    released = release_predict(two_window_image(), stub, TEXT, 32, 16, 100.0, found=False)
    project = run(stub, config, dataset)
    np.testing.assert_array_equal(project, released)
    # the overlap: probabilities give sky (.91 against .52 for car), logits car (10 > 3)
    assert (project[:, 16:32] == 0).all() and (project[:, :16] == 1).all()
    logits = run(stub, OVSConfig(**{**config.__dict__, "window_scores": "logits"}), dataset)
    assert (logits[:, 16:32] == 1).all()


def test_found_marks_background_per_window_as_released_where_the_image_rule_would_not():
    dataset = benchmark("three", CLASSES_3["custom"])
    # each window is sure of its class (> 0.99); the overlap averages car and tree to ~.5 each
    stub = WindowStub(cosines(0.0, 0.2, 0.0), cosines(0.0, 0.0, 0.2))
    config = OVSConfig(short_side=16, window=32, stride=16, background="found")
    assert scored_classes(dataset, resolved_protocol(config, dataset, True)) == [
        "background",
        "car",
        "tree",
    ]
    released = release_predict(two_window_image(), stub, TEXT, 32, 16, 100.0, found=True)
    project = run(stub, config, dataset)
    np.testing.assert_array_equal(project, released)
    assert not (project == 0).any()  # no window was unsure: no background
    # the old rule, after averaging at full resolution: the unsure overlap becomes background
    image_rule = OVSConfig(**{**config.__dict__, "found_at": "image"})
    old = run(stub, image_rule, dataset, TEXT[1:])
    assert (old[:, 20:28] == 0).all() and (old[:, :16] == 1).all() and (old[:, 32:] == 2).all()


def test_found_per_window_gives_background_where_a_window_is_unsure():
    dataset = benchmark("three", CLASSES_3["custom"])
    # window 1 unsure (car .02 over tree .015 at scale 100: .62 / .38), window 2 sure of tree
    stub = WindowStub(cosines(0.0, 0.020, 0.015), cosines(0.0, 0.0, 0.2))
    config = OVSConfig(short_side=16, window=32, stride=16, background="found")
    released = release_predict(two_window_image(), stub, TEXT, 32, 16, 100.0, found=True)
    project = run(stub, config, dataset)
    np.testing.assert_array_equal(project, released)
    assert (project[:, :16] == 0).all() and (project[:, 32:] == 2).all()


def test_window_found_needs_probabilities():
    dataset = benchmark("three", CLASSES_3["custom"])
    config = OVSConfig(background="found", window_scores="logits")
    with pytest.raises(ValueError, match="needs ovs.window_scores: probabilities"):
        resolved_protocol(config, dataset, has_foreground=True)
    image_rule = OVSConfig(background="found", window_scores="logits", found_at="image")
    assert resolved_protocol(image_rule, dataset, True).background == "found"


def test_release_protocol_on_a_tiny_vit_with_the_published_head(tiny_clip):
    """The whole window path on a tiny open_clip ViT and a CLIP-DINOiser head, against
    the independent release evaluation above."""
    from insight.models.dense import DenseEncoder
    from insight.models.dinoiser import ClipDINOiserHead

    model, _, _ = tiny_clip
    torch.manual_seed(0)
    head = ClipDINOiserHead(64, block=-2).eval()
    encoder = DenseEncoder(model.visual, head)
    dataset = benchmark("three", CLASSES_3["custom"])
    text = F.normalize(torch.randn(3, 64), dim=-1)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8))
    patch = model.visual.patch_size[0]
    config = OVSConfig(short_side=32, window=32, stride=16, background="found", logit_scale=30.0)
    config = resolved_protocol(config, dataset, True)
    project = predict(image, encoder, BatchTransform(ToTensor()), text, None, dataset, config)
    with torch.no_grad():
        released = release_predict(image, encoder, text, 32, 16, 30.0, found=True)
    assert patch == 16
    np.testing.assert_array_equal(project["clip_dinoiser"], released)
