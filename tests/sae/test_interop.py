"""The SAE in and out of the field's layouts: dictionary_learning (the release) and SAELens.

The dictionary_learning checkpoint is written by the ``dictionary-learning`` package itself
(a test dependency); SAELens is not installed (it would pull another torch), so its layout
and its JumpReLU encoder are reproduced here from its documentation."""

import json

import pytest
import torch
from dictionary_learning.trainers.matryoshka_batch_top_k import (
    MatryoshkaBatchTopKSAE as DictionaryLearningSAE,
)
from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
from dictionary_learning.training import trainSAE
from safetensors.torch import load_file

from insight.sae.interop import (
    export_sae,
    read_concept_names,
    read_dictionary_learning,
    write_dictionary_learning,
    write_saelens,
)
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig


def planted_batches(d=16, atoms=32, batch=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.nn.functional.normalize(torch.randn(atoms, d, generator=generator), dim=1)
    while True:
        mask = torch.rand(batch, atoms, generator=generator) < 0.1
        yield (torch.rand(batch, atoms, generator=generator) * mask) @ dictionary


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A trainer folder written by dictionary_learning's own trainSAE."""
    out = tmp_path_factory.mktemp("released")
    trainer = {
        "trainer": MatryoshkaBatchTopKTrainer,
        "steps": 40,
        "activation_dim": 16,
        "dict_size": 64,
        "k": 4,
        "layer": 0,
        "lm_name": "planted",
        "group_fractions": [0.25, 0.75],
        "device": "cpu",
        "warmup_steps": 5,
        "threshold_start_step": 5,
        "lr": 1e-3,
        "seed": 0,
    }
    trainSAE(planted_batches(), [trainer], steps=40, save_dir=str(out), device="cpu")
    return out / "trainer_0"


def test_imported_codes_equal_the_packages_encode(released):
    ours, settings = read_dictionary_learning(released)
    theirs = DictionaryLearningSAE.from_pretrained(released / "ae.pt", device="cpu")
    assert settings["trainer"]["dict_class"] == "MatryoshkaBatchTopKSAE"
    assert ours.config.group_sizes == (16, 48) and ours.config.k == 4
    assert float(ours.threshold) == float(theirs.threshold) > 0
    x = next(planted_batches(seed=1))
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(
            ours.encode_batch_topk(x), theirs.encode(x, use_threshold=False), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs(x), atol=1e-6, rtol=0)


def trained_like_sae(seed=0):
    sae = MatryoshkaBatchTopKSAE(SAEConfig(d_in=16, d_sae=64, k=4, group_sizes=(16, 48)), seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        sae.threshold.fill_(0.125)
    return sae


def test_export_then_import_is_bit_exact_and_the_package_loads_it(tmp_path):
    sae = trained_like_sae()
    names = [f"concept {i}" for i in range(63)] + ["café au lait"]
    write_dictionary_learning(sae, tmp_path / "out", names)
    back, settings = read_dictionary_learning(tmp_path / "out")
    for key in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.equal(getattr(back, key), getattr(sae, key)), key
    assert back.config.group_sizes == sae.config.group_sizes
    assert settings["trainer"]["group_sizes"] == [16, 48]
    assert read_concept_names(tmp_path / "out", 64) == names
    theirs = DictionaryLearningSAE.from_pretrained(tmp_path / "out/ae.pt", device="cpu")
    x = torch.randn(32, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=0, rtol=0)


def test_saelens_layout_and_its_jumprelu_encoder_give_our_codes(tmp_path):
    sae = trained_like_sae(1)
    write_saelens(sae, tmp_path / "saelens", {"model_name": "tiny"})
    cfg = json.loads((tmp_path / "saelens/cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"]) == ("jumprelu", 16, 64)
    assert cfg["apply_b_dec_to_input"] is True and cfg["metadata"]["model_name"] == "tiny"
    weights = load_file(tmp_path / "saelens/sae_weights.safetensors")
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "W_enc": (16, 64),
        "b_enc": (64,),
        "W_dec": (64, 16),
        "b_dec": (16,),
        "threshold": (64,),
    }
    x = torch.randn(32, 16)
    # SAELens' JumpReLU: hidden_pre = (x - b_dec) @ W_enc + b_enc; relu(pre) * (pre > threshold)
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
    codes = torch.relu(pre) * (pre > weights["threshold"])
    with torch.no_grad():
        torch.testing.assert_close(codes, sae.encode(x), atol=1e-6, rtol=0)
        torch.testing.assert_close(codes @ weights["W_dec"] + weights["b_dec"], sae.decode(codes))


def test_wrong_folders_and_formats_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ae.pt"):
        read_dictionary_learning(tmp_path)
    torch.save({"W_enc": torch.zeros(2, 3)}, tmp_path / "ae.pt")
    with pytest.raises(ValueError, match="missing b_enc, W_dec, b_dec, threshold, k, group_sizes"):
        read_dictionary_learning(tmp_path)
    (tmp_path / "concept_names.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 names for 3 concepts"):
        read_concept_names(tmp_path, 3)
    with pytest.raises(ValueError, match="export format must be one of"):
        export_sae(trained_like_sae(), tmp_path / "x", "onnx")
