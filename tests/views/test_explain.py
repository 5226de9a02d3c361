import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from insight.hierarchy.families import family_graph
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig
from insight.tasks.ovs_explain import concept_contributions
from insight.views.explain import (
    best_row,
    concrete_rows,
    explain_label,
    label_contributions,
    waterfall_png,
    waterfall_steps,
)
from insight.views.steering import (
    UnknownConceptError,
    concepts_named,
    concepts_with_words,
    mentions,
    scale_concepts,
    scales_by_name,
    steered_reconstruction,
    steering_study,
)


@pytest.fixture
def sae():
    model = MatryoshkaBatchTopKSAE(SAEConfig(d_in=8, d_sae=6, k=2, group_sizes=(2, 4)))
    model.requires_grad_(False)
    with torch.no_grad():
        model.b_dec.normal_()
        model.threshold.fill_(0.0)
    return model


@pytest.fixture
def codes():
    torch.manual_seed(1)
    return torch.relu(torch.randn(5, 6))


NAMES = pa.table({"concept": [0, 1, 2, 3, 4, 5], "name": ["cat", "ear", "cat", "sky", None, "fur"]})
FAMILIES = pa.table({"parent": [0, 1], "child": [1, 5], "confidence": [0.9, 0.8]})


def test_contributions_and_bias_sum_to_the_score_by_hand(sae, codes):
    text = torch.randn(8)
    contributions, bias, score = label_contributions(codes, sae, text)
    unit = text / text.norm()
    by_hand = [float(codes[:, c].mean() * (sae.W_dec[c] @ unit)) for c in range(6)]
    assert contributions.tolist() == pytest.approx(by_hand, abs=1e-6)
    assert bias == pytest.approx(float(sae.b_dec @ unit))
    reconstruction = codes @ sae.W_dec + sae.b_dec
    assert score == pytest.approx(float((reconstruction @ unit).mean()), abs=1e-6)
    assert sum(by_hand) + bias == pytest.approx(score, abs=1e-5)


def test_explanation_shares_sum_to_one_with_structure(sae, codes):
    names = dict(zip(NAMES["concept"].to_pylist(), NAMES["name"].to_pylist(), strict=True))
    result = explain_label(codes, sae, "cat", torch.randn(8), names, family_graph(FAMILIES), 3)
    items = [*result["concepts"], result["other_concepts"], result["bias"]]
    assert len(result["concepts"]) == 3
    assert sum(i["share"] for i in items) == pytest.approx(1.0, abs=1e-5)
    assert sum(i["contribution"] for i in items) == pytest.approx(result["score"], abs=1e-5)
    shown = [c["contribution"] for c in result["concepts"]]
    assert shown == sorted(shown, reverse=True)
    for item in result["concepts"]:
        if item["concept"] == 1:
            assert item["parents"] == [{"concept": 0, "name": "cat"}]
            assert item["children"] == [{"concept": 5, "name": "fur"}]


def test_the_waterfall_ends_at_the_score(sae, codes, tmp_path):
    names = dict(zip(NAMES["concept"].to_pylist(), NAMES["name"].to_pylist(), strict=True))
    result = explain_label(codes, sae, "cat", torch.randn(8), names, family_graph(FAMILIES), 2)
    steps = waterfall_steps(result)
    assert [s["label"] for s in steps][-2:] == ["other concepts", "bias"]
    assert len(steps) == 4 and steps[0]["start"] == 0.0
    for before, after in zip(steps, steps[1:], strict=False):
        assert after["start"] == before["end"]  # each bar starts where the last one ended
    assert steps[-1]["end"] == pytest.approx(result["score"], abs=1e-4)
    waterfall_png(result, tmp_path / "waterfall.png")
    assert (tmp_path / "waterfall.png").read_bytes()[:4] == b"\x89PNG"


def test_only_concrete_terms_are_explained_without_a_label():
    terms = pa.table(
        {
            "term": ["except", "sky", "red car", "the"],
            "sources": [["wordfreq"], ["wordfreq", "brysbaert"], ["list:words.txt"], ["wordfreq"]],
        }
    )
    embeddings = pa.table({"term": ["except", "except", "red car", "sky", "the"]})
    assert concrete_rows(terms, embeddings).tolist() == [2, 3]
    only_frequency = terms.filter(pa.array([True, False, False, True]))
    assert concrete_rows(only_frequency, embeddings).tolist() == [0, 1, 2, 3, 4]


def test_best_row_is_the_highest_explained_score(sae, codes):
    embeddings = torch.randn(7, 8).numpy()
    row = best_row(codes, sae, embeddings)
    scores = [label_contributions(codes, sae, torch.from_numpy(e))[2] for e in embeddings]
    assert row == max(range(7), key=scores.__getitem__)


def test_concepts_are_found_by_name_with_their_family():
    assert concepts_named(NAMES, "cat") == [0, 2]
    assert concepts_named(NAMES, "cat", FAMILIES, with_family=True) == [0, 1, 2, 5]
    assert scales_by_name(NAMES, [("cat", 0.0), ("sky", 2.0)]) == {0: 0.0, 2: 0.0, 3: 2.0}
    with pytest.raises(UnknownConceptError, match=r"no concept is named 'kat'.*'cat'"):
        concepts_named(NAMES, "kat")


def test_names_are_matched_by_whole_words():
    assert mentions("a red car on grass", "car") and mentions("A Red Car.", "red car")
    assert not mentions("a carpet", "car") and not mentions("a car red", "red car")
    names = pa.table({"concept": [0, 1, 2, 3], "name": ["red car", "carpet", "car wheel", None]})
    assert concepts_with_words(names, ["car"]) == [0, 2]
    assert concepts_with_words(NAMES, ["cat"], FAMILIES, with_family=True) == [0, 1, 2, 5]


def test_steering_study_counts_changed_and_removed_captions_against_a_control():
    """A captioner that says "cat" while concept 0 or 2 fires, "sky" otherwise: zeroing
    the cat concepts changes and removes "cat" on every image whose references mention
    it; the control zeroes as many other active concepts and changes nothing."""
    codes = [torch.zeros(3, 6) for _ in range(4)]
    for i, concept in enumerate([0, 2, 3, 0]):
        codes[i][:, concept] = 1.0
    for c in codes:
        c[:, 4] = 0.5  # active everywhere, the control's only choice besides 3
    references = [["a cat"], ["the cat sat"], ["blue sky"], ["a dog"]]  # image 3: no cat said

    def caption(batch):
        return ["a cat" if (z[:, [0, 2]] > 0).any() else "a sky" for z in batch]

    report = steering_study(codes, references, caption, {"cat": ["cat"]}, NAMES, FAMILIES, True)
    cat = report["targets"]["cat"]
    assert (cat["concepts"], cat["images"]) == (4, 2)  # 0 and 2, with 1 and 5 from the family
    assert cat["changed_fraction"] == cat["removed_fraction"] == 1.0
    assert cat["control_changed_fraction"] == 0.0
    assert cat["examples"][0] == {"image": 0, "caption": "a cat", "steered_caption": "a sky"}
    missing = steering_study(codes, references, caption, {"dog": ["wolf"]}, NAMES)
    assert missing["targets"]["dog"]["changed_fraction"] is None


def test_the_steering_control_zeroes_as_many_concepts_as_the_named_ones_that_fire():
    """Two concepts are named "cat" but only concept 0 fires on the cat images: the
    control zeroes one other active concept, not two."""
    names = pa.table({"concept": [0, 1, 2, 3, 4], "name": ["cat", "cat", "sky", "sky", "sky"]})
    codes = [torch.zeros(2, 5) for _ in range(3)]
    for c in codes:
        c[:, [0, 2, 3, 4]] = 1.0  # concept 1 never fires
    calls = []

    def caption(batch):
        calls.append([z.clone() for z in batch])
        return ["a cat"] * len(batch)

    report = steering_study(codes, [["a cat"]] * 3, caption, {"cat": ["cat"]}, names)
    cat = report["targets"]["cat"]
    assert (cat["concepts"], cat["active_concepts"]) == (2, 1)
    before, named, *controls = calls
    assert all(z[:, 0].sum() == 0 and z[:, 2:].sum() == 6 for z in named)
    assert len(controls) == cat["control_draws"] == 50
    drawn = set()
    for control in controls:  # concept 1 plus one drawn among 2, 3 and 4, the same on every image
        zeroed = [tuple(torch.nonzero(z.sum(0) == 0).flatten().tolist()) for z in control]
        assert len(set(zeroed)) == 1 and len(zeroed[0]) == 2 and zeroed[0][0] == 1
        drawn.add(zeroed[0][1])
    assert drawn == {2, 3, 4}  # 50 draws of one among three reach all three


def test_the_steering_control_is_the_mean_over_its_draws():
    """Concept 0 is named "cat"; the caption changes only when concept 2 is zeroed, so a
    control of one concept drawn among 2, 3 and 4 changes the captions in about a third of
    the draws, and its mean is the share of draws that drew 2."""
    names = pa.table({"concept": [0, 1, 2, 3, 4], "name": ["cat", "dog", "sky", "sky", "sky"]})
    codes = [torch.ones(2, 5) for _ in range(2)]
    codes[0][:, 1] = codes[1][:, 1] = 0.0
    drawn_two = []

    def caption(batch):
        said = ["a cat" if (z[:, 2] > 0).all() else "a sky" for z in batch]
        if all(z[:, 0].sum() > 0 for z in batch):  # not the named run
            drawn_two.append(said[0] == "a sky")
        return said

    report = steering_study(
        codes, [["a cat"]] * 2, caption, {"cat": ["cat"]}, names, control_draws=30
    )
    cat = report["targets"]["cat"]
    draws = drawn_two[1:]  # the first call is the captions before steering
    assert len(draws) == 30 and 0 < sum(draws) < 30
    assert cat["control_changed_fraction"] == pytest.approx(sum(draws) / 30)
    assert cat["control_removed_fraction"] == pytest.approx(sum(draws) / 30)
    assert cat["control_changed_range"] == [0.0, 1.0] and cat["changed_fraction"] == 0.0


def test_zeroing_a_concept_removes_exactly_its_contribution(sae, codes):
    steered = steered_reconstruction(sae, codes, {2: 0.0, 4: 3.0})
    expected = sae.decode(codes) - codes[:, 2:3] * sae.W_dec[2] + 2 * codes[:, 4:5] * sae.W_dec[4]
    assert torch.allclose(steered, expected, atol=1e-6)
    assert scale_concepts(codes, {2: 0.0})[:, 2].abs().sum() == 0
    assert torch.equal(scale_concepts(codes, {})[:, 2], codes[:, 2])  # a copy, unchanged


def test_steering_the_top_segment_concepts_lowers_the_ovs_label_score(sae, codes):
    """On OVS: zeroing the concepts that explain a segment's label (Sec. 4.4) lowers the
    segment's score for that label by exactly their contributions."""
    text = F.normalize(torch.randn(8), dim=-1)
    segment = torch.tensor([True, True, False, True, False])
    contributions = concept_contributions(codes, segment, sae.W_dec, text)
    top = torch.argsort(contributions, descending=True)[:2].tolist()
    before = (sae.decode(codes)[segment] @ text).mean()
    after = (steered_reconstruction(sae, codes, dict.fromkeys(top, 0.0))[segment] @ text).mean()
    # unit-norm decoder rows: cos(W_dec[c], t) = <W_dec[c], t>
    assert float(before - after) == pytest.approx(float(contributions[top].sum()), abs=1e-5)
    assert after < before
