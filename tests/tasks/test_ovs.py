import numpy as np
import pytest
import torch
from PIL import Image

from insight.data.batches import BatchTransform
from insight.data.benchmarks import DATASETS, list_pairs
from insight.data.images import DatasetLayoutError
from insight.models.dense import DenseEncoder
from insight.models.dinoiser import DINOiser
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig
from insight.tasks.ovs import (
    METHODS,
    OVSConfig,
    background_rule,
    evaluate,
    found_background,
    predict,
    protocol_short_side,
    resolved_protocol,
)


def write_pair(image_path, label_path, size=(64, 48), label_value=1, palette=False):
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 60, 30)).save(image_path)
    label = np.full((size[1], size[0]), label_value, dtype=np.uint8)
    label[0, :] = 255
    out = Image.fromarray(label)
    if palette:
        out = out.convert("P")
    out.save(label_path)


def make_layout(root, layout, ids=("a", "b")):
    for i in ids:
        if layout == "voc":
            write_pair(
                root / "JPEGImages" / f"{i}.jpg",
                root / "SegmentationClass" / f"{i}.png",
                palette=True,
            )
        elif layout == "context":
            write_pair(
                root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClassContext" / f"{i}.png"
            )
        elif layout == "coco":
            for suffix in ("_instanceTrainIds.png", "_labelTrainIds.png"):
                write_pair(
                    root / "images/val2017" / f"{i}.jpg",
                    root / "annotations/val2017" / f"{i}{suffix}",
                )
        elif layout == "cityscapes":
            write_pair(
                root / "leftImg8bit/val/aachen" / f"{i}_leftImg8bit.png",
                root / "gtFine/val/aachen" / f"{i}_gtFine_labelTrainIds.png",
            )
        else:
            write_pair(
                root / "images/validation" / f"{i}.jpg",
                root / "annotations/validation" / f"{i}.png",
            )
    split = {
        "voc": "ImageSets/Segmentation/val.txt",
        "context": "ImageSets/SegmentationContext/val.txt",
    }.get(layout)
    if split:
        (root / split).parent.mkdir(parents=True, exist_ok=True)
        (root / split).write_text("\n".join(ids) + "\n")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_reader_finds_its_pairs(tmp_path, name):
    dataset = DATASETS[name]
    make_layout(tmp_path, dataset.layout)
    pairs = list_pairs(dataset, tmp_path)
    assert [p[0] for p in pairs] == ["a", "b"]
    assert all(image.is_file() and label.is_file() for _, image, label in pairs)
    assert np.array(Image.open(pairs[0][2]))[1, 1] == 1


def test_class_counts_and_conventions():
    counts = {name: d.num_classes for name, d in DATASETS.items()}
    assert counts == {
        "voc": 21, "voc20": 20, "context": 60, "context59": 59, "coco_object": 81,
        "coco_stuff": 171, "cityscapes": 19, "ade20k": 150,
    }  # fmt: skip
    assert DATASETS["ade20k"].reduce_zero_label and DATASETS["voc20"].reduce_zero_label
    assert DATASETS["voc"].background and not DATASETS["coco_stuff"].background


def test_missing_dataset_names_its_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="SegmentationClass"):
        list_pairs(DATASETS["voc"], tmp_path / "VOC2012")
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetLayoutError, match="no split file"):
        list_pairs(DATASETS["voc"], tmp_path)


@pytest.fixture
def models(tiny_clip):
    model, preprocess, _ = tiny_clip
    encoder = DenseEncoder(model.visual, DINOiser(64, 8))
    sae = MatryoshkaBatchTopKSAE(SAEConfig(d_in=64, d_sae=32, k=4, group_sizes=(8, 24)))
    sae.threshold.fill_(0.0)
    return encoder, BatchTransform(preprocess), sae


def test_predictions_have_the_image_size_for_every_method(models):
    encoder, transform, sae = models
    text = torch.nn.functional.normalize(torch.randn(21, 64), dim=-1)
    image = Image.new("RGB", (500, 375), (10, 200, 30))
    out = predict(image, encoder, transform, text, sae, DATASETS["voc"], OVSConfig())
    assert set(out) == set(METHODS)
    assert all(p.shape == (375, 500) and p.min() >= 0 and p.max() < 21 for p in out.values())
    # threshold mode: background wherever the best class probability is below the threshold
    config = OVSConfig(background="threshold", background_threshold=1.01)
    out = predict(image, encoder, transform, text[1:], sae, DATASETS["voc"], config)
    assert all((p == 0).all() for p in out.values())


def test_evaluate_reduces_zero_label(tmp_path, models):
    encoder, transform, sae = models
    make_layout(tmp_path, "voc", ids=("x",))
    text = torch.nn.functional.normalize(torch.randn(20, 64), dim=-1)
    result = evaluate(
        list_pairs(DATASETS["voc20"], tmp_path),
        DATASETS["voc20"],
        encoder,
        transform,
        text,
        sae,
        OVSConfig(),
    )
    assert result["images"] == 1 and set(result["methods"]) == set(METHODS)
    # the label is class 1 (aeroplane) everywhere: reduced to index 0 of the 20 classes
    for method in METHODS:
        per_class = result["methods"][method]["per_class_iou"]
        assert per_class["aeroplane"] is not None


def test_concept_contribution_is_activation_times_cosine():
    from insight.tasks.ovs_explain import concept_contributions

    codes = torch.tensor([[2.0, 0.0, 1.0], [4.0, 1.0, 0.0], [9.0, 9.0, 9.0]])
    segment = torch.tensor([True, True, False])
    w_dec = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    label_text = torch.tensor([2.0, 0.0])
    # mean activations on the segment (3, 0.5, 0.5) times cos with the label (1, 0, 1/sqrt 2)
    expected = torch.tensor([3.0, 0.0, 0.5 / 2**0.5])
    torch.testing.assert_close(concept_contributions(codes, segment, w_dec, label_text), expected)
    assert (
        concept_contributions(codes, torch.zeros(3, dtype=torch.bool), w_dec, label_text)
        .abs()
        .sum()
        == 0
    )


def test_release_contributions_by_hand_sum_to_the_segments_mean_cosine():
    """cfm.py's split: z_c <W_dec[c], t> / |x_hat| per concept plus <b_dec, t> / |x_hat|."""
    from insight.tasks.ovs_explain import release_contributions

    codes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    segment = torch.tensor([True, True, False])
    w_dec = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    b_dec = torch.tensor([0.0, 4.0])
    text = torch.tensor([0.6, 0.8])
    # patch 0: x_hat = (3, 4), |x_hat| = 5; patch 1: x_hat = (0, 6), |x_hat| = 6
    per_concept, bias = release_contributions(codes, segment, w_dec, b_dec, text)
    expected = torch.tensor([(1 * 1.8 / 5 + 0) / 2, (0 + 2 * 0.8 / 6) / 2])
    torch.testing.assert_close(per_concept, expected)
    assert bias == pytest.approx((3.2 / 5 + 3.2 / 6) / 2)
    mean_cos = ((3 * 0.6 + 4 * 0.8) / 5 + (6 * 0.8) / 6) / 2
    assert float(per_concept.sum()) + bias == pytest.approx(mean_cos)


def test_explanation_figure_and_prediction_png(tmp_path, models):
    from insight.tasks.ovs_explain import explain_image, explanation_figure, save_prediction_png

    encoder, transform, sae = models
    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    image = Image.new("RGB", (300, 200), (200, 30, 30))
    explanation = explain_image(
        image, encoder, transform, text, sae, ["a", "b", "c"], short_side=224, top=4
    )
    assert explanation["label"] in ("a", "b", "c") and len(explanation["concepts"]) == 4
    assert explanation["contributions"] == sorted(explanation["contributions"], reverse=True)
    assert explanation["reading"] == "release" and explanation["bias"] is not None
    explanation_figure(
        image, explanation, {explanation["concepts"][0]: "<script>"}, tmp_path / "f.png"
    )
    assert Image.open(tmp_path / "f.png").size[0] > 500
    save_prediction_png(np.array([[0, 1], [2, 255]]), tmp_path / "p.png")
    saved = Image.open(tmp_path / "p.png")
    assert saved.mode == "P" and np.array(saved).tolist() == [[0, 1], [2, 255]]


def test_found_background_rule_by_hand():
    """Background where the best class probability < 0.99 AND the foreground score < 0.5."""
    probabilities = torch.tensor(
        [[[0.995, 0.6, 0.6, 0.3]], [[0.005, 0.4, 0.4, 0.7]]]
    )  # (C=2, H=1, W=4): best 0.995, 0.6, 0.6, 0.7
    foreground = torch.tensor([[0.1, 0.1, 0.9, 0.49]])
    assert found_background(probabilities, foreground).tolist() == [[False, True, False, True]]
    assert found_background(probabilities, foreground, 0.5, 0.5).tolist() == [
        [False, False, False, False]
    ]


def test_by_default_found_applies_only_where_the_release_applies_it():
    for name, dataset in DATASETS.items():
        rule = background_rule(dataset, "auto", has_foreground=True)
        if not dataset.background:
            assert rule == "none", name
        else:
            assert rule == ("found" if name in ("voc", "coco_object") else "prompt"), name
        if dataset.background:  # a head without a background decoder: the prompt
            assert background_rule(dataset, "auto", has_foreground=False) == "prompt"
    assert background_rule(DATASETS["context"], "found", True) == "found"
    with pytest.raises(ValueError, match="found needs the published CLIP-DINOiser head"):
        background_rule(DATASETS["voc"], "found", has_foreground=False)


def test_short_side_per_benchmark_as_released_or_one_for_all():
    assert [protocol_short_side(n, "release") for n in ("voc", "ade20k", "coco_stuff")] == [
        448,
        512,
        512,
    ]
    assert protocol_short_side("cityscapes", "release") == 1024
    assert protocol_short_side("cityscapes", 448) == 448
    config = resolved_protocol(OVSConfig(short_side="release"), DATASETS["ade20k"], False)
    assert (config.short_side, config.background) == (512, "none")


@pytest.mark.parametrize("found_at", ["window", "image"])
@pytest.mark.parametrize("bias, expect_background", [(-10.0, True), (10.0, False)])
def test_predict_with_found_uses_the_heads_foreground(models, bias, expect_background, found_at):
    from insight.models.dinoiser import ClipDINOiserHead

    encoder, transform, sae = models
    head = ClipDINOiserHead(64, block=-2)
    with torch.no_grad():
        head.bkg_decoder.weight.zero_()
        head.bkg_decoder.bias.fill_(bias)
    found_encoder = DenseEncoder(encoder.visual, head.eval())
    # per window "background" is scored as class 0; on the whole image it is not
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(21, 64), dim=-1)
    text = text if found_at == "window" else text[1:]
    config = OVSConfig(logit_scale=1.0, found_at=found_at)
    config = resolved_protocol(config, DATASETS["voc"], True)
    assert config.background == "found"
    image = Image.new("RGB", (96, 64), (10, 200, 30))
    out = predict(image, found_encoder, transform, text, sae, DATASETS["voc"], config)
    if found_at == "window":  # where the head says foreground, FOUND changes nothing
        prompt = OVSConfig(logit_scale=1.0, background="prompt")
        plain = predict(image, found_encoder, transform, text, sae, DATASETS["voc"], prompt)
    for method, prediction in out.items():  # at scale 1 no class is 99% sure
        if expect_background:
            assert (prediction == 0).all()
        elif found_at == "window":
            np.testing.assert_array_equal(prediction, plain[method])
        else:
            assert (prediction >= 1).all()
