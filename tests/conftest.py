"""Shared fixtures: a tiny random open_clip model, generated images, offline hubs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests reaches the network

import pytest
import torch

from insight.backbone import BackboneSpec, load_clip

TINY = BackboneSpec(model="insight-tiny-ViT-B-16", pretrained=None)


@pytest.fixture(scope="session")
def tiny_clip():
    torch.manual_seed(0)
    model, preprocess, tokenizer = load_clip(TINY)
    return model, preprocess, tokenizer


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
