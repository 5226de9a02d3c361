import json
import math

import pytest
import torch

from insight.core.settings import section_settings
from insight.data.benchmarks import karpathy_split
from insight.demo.layouts import save_tiny_gpt2
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig
from insight.tasks.captioner import (
    Captioner,
    PrefixAdapter,
    caption_metrics,
    load_language_model,
    pool_tokens,
    train_captioner,
)
from insight.views.steering import scale_concepts


def test_pooling_14x14_to_8x8_matches_the_adaptive_windows():
    tokens = torch.randn(2, 196, 3)
    pooled = pool_tokens(tokens, (14, 14))
    assert pooled.shape == (2, 64, 3)
    grid = tokens.view(2, 14, 14, 3)
    for i in range(8):
        for j in range(8):
            rows = slice(math.floor(14 * i / 8), math.ceil(14 * (i + 1) / 8))
            cols = slice(math.floor(14 * j / 8), math.ceil(14 * (j + 1) / 8))
            expected = grid[:, rows, cols].mean(dim=(1, 2))
            assert torch.allclose(pooled[:, i * 8 + j], expected, atol=1e-6)
    # the first window is rows 0-1, columns 0-1; window (1, 0) starts at row 1 (overlap)
    assert torch.allclose(pooled[:, 8], grid[:, 1:4, 0:2].mean(dim=(1, 2)), atol=1e-6)


def test_zero_scaling_a_concept_removes_exactly_its_contribution_from_the_prefix_tokens():
    sae = MatryoshkaBatchTopKSAE(SAEConfig(d_in=6, d_sae=10, k=3, group_sizes=(4, 6)))
    sae.requires_grad_(False)
    codes = torch.relu(torch.randn(196, 10))
    before = pool_tokens(sae.decode(codes)[None], (14, 14))
    after = pool_tokens(sae.decode(scale_concepts(codes, {3: 0.0}))[None], (14, 14))
    contribution = pool_tokens(codes[None, :, 3:4], (14, 14)) * sae.W_dec[3]
    assert torch.allclose(before - after, contribution, atol=1e-6)


def test_bleu4_matches_a_hand_computation():
    references = {"1": ["a red circle on a green field"], "2": ["two blue squares"]}
    predictions = {"1": "a red circle on green grass", "2": "two blue squares"}
    # corpus BLEU: clipped n-gram precisions 8/9, 5/7, 3/5, 1/3; lengths 9 vs 10
    precision = (8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25
    brevity = math.exp(1 - 10 / 9)
    metrics = caption_metrics(references, predictions)
    assert metrics["bleu4"] == pytest.approx(brevity * precision, abs=1e-6)
    assert metrics["cider"] > 0 and 0 < metrics["meteor"] < 1


def test_karpathy_split_puts_restval_in_train(tmp_path):
    data = {
        "images": [
            {
                "filepath": "train2014",
                "filename": "a.jpg",
                "split": "train",
                "cocoid": 1,
                "sentences": [{"raw": "one "}],
            },
            {
                "filepath": "val2014",
                "filename": "b.jpg",
                "split": "restval",
                "cocoid": 2,
                "sentences": [{"raw": "two"}, {"raw": "deux"}],
            },
            {
                "filepath": "val2014",
                "filename": "c.jpg",
                "split": "test",
                "cocoid": 3,
                "sentences": [{"raw": "three"}],
            },
        ]
    }
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(json.dumps(data))
    train = karpathy_split(split_file, tmp_path, "train")
    assert train == [
        ("1", str(tmp_path / "train2014/a.jpg"), ["one"]),
        ("2", str(tmp_path / "val2014/b.jpg"), ["two", "deux"]),
    ]
    assert [row[0] for row in karpathy_split(split_file, tmp_path, "test")] == ["3"]
    assert len(karpathy_split(split_file, tmp_path, "train", limit=1)) == 1


def test_captioner_learns_captions_from_tokens(tmp_path):
    """Two token patterns, two captions: training drives the validation loss down and the
    greedy captions follow the tokens."""
    captions = ["a red circle on grass", "a blue square on sand"]
    save_tiny_gpt2(tmp_path, captions, {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 32})
    language_model, tokenizer = load_language_model(str(tmp_path))
    torch.manual_seed(0)
    adapter = PrefixAdapter(4, 32, n_tokens=64, queries=3, layers=1, heads=2)
    captioner = Captioner(adapter, language_model)
    patterns = torch.randn(2, 1, 4).expand(2, 64, 4)
    tokens = patterns.repeat(4, 1, 1) + 0.01 * torch.randn(8, 64, 4)
    texts = [[captions[i % 2]] for i in range(8)]
    settings = section_settings(
        "captioning",
        {"lr": 3e-3, "batch_size": 4, "epochs": 25, "warmup_steps": 1, "max_length": 12, "seed": 0},
    )
    captioner, history = train_captioner(
        captioner, tokens, texts, tokens, texts, tokenizer, settings
    )
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    assert captioner.generate(patterns, tokenizer, 8) == captions


def test_a_missing_language_model_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="captioning.language_model"):
        load_language_model(str(tmp_path / "absent"))


def test_a_captioner_giving_most_images_one_caption_is_flagged_collapsed():
    from insight.tasks.captioning import caption_diversity

    collapsed = caption_diversity(["a sky"] * 6 + ["a car", "a tree", "a house", "a sky."])
    assert collapsed == {"distinct_fraction": 0.5, "most_common_fraction": 0.6, "collapsed": True}
    varied = caption_diversity(["a sky", "a car", "a sky", "a tree"])
    assert varied["collapsed"] is False and varied["distinct_fraction"] == 0.75
    assert caption_diversity([])["collapsed"] is False
