"""The prompt cache key of a text tower, and the cached encoder over it."""

import numpy as np
import torch

from insight.models.backbone import BackboneSpec
from insight.models.text import cached_text_encoder, model_key


def test_model_key_names_pretrained_weights_or_hashes_a_local_file(tmp_path):
    assert model_key(BackboneSpec("ViT-B-16", "openai")) == "ViT-B-16/openai"
    assert model_key(BackboneSpec("tiny", None)).startswith("tiny/random-init-")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    first = model_key(BackboneSpec("tiny", None, str(weights)))
    weights.write_bytes(b"two")
    assert (
        first.startswith("tiny/sha256:")
        and model_key(BackboneSpec("tiny", None, str(weights))) != first
    )


def test_cached_text_encoder_encodes_each_prompt_once(tiny_clip, tmp_path):
    model, _, tokenizer = tiny_clip
    spec = BackboneSpec("insight-tiny-ViT-B-16", None)
    first = cached_text_encoder(model, tokenizer, spec, tmp_path, torch.device("cpu"))
    vectors = first.encode(["a photo of a house.", "a photo of a tree."])
    assert first.encoded == 2
    again = cached_text_encoder(model, tokenizer, spec, tmp_path, torch.device("cpu"))
    assert np.allclose(again.encode(["a photo of a tree."]), vectors[1:], atol=1e-6)
    assert again.encoded == 0 and again.cache.hits == 1
