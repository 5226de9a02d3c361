import pytest
import torch
import torch.nn.functional as F

from insight.models.dinoiser import DINOiser, guided_pooling, load_dinoiser, save_dinoiser
from insight.models.dinoiser_training import (
    DinoiserTrainConfig,
    affinity_loss,
    binarise,
    train_dinoiser,
)
from insight.models.teachers import TeacherSpec, load_teacher, teacher_affinity


def test_guided_pooling_eq1_by_hand():
    # a 1x3 grid, d = 2
    features = torch.tensor([[[[1.0, 3.0, 10.0]], [[0.0, 2.0, -4.0]]]])  # (1, 2, 1, 3)
    affinity = torch.tensor([[[1.0, 0.5, 0.1], [0.5, 1.0, -0.3], [0.25, 0.1, 1.0]]])
    pooled = guided_pooling(features, affinity, gamma=0.2)
    # patch 0: weights (1, .5, 0) -> ((1*1 + .5*3)/1.5, (0 + .5*2)/1.5)
    # patch 1: weights (.5, 1, 0) -> ((.5 + 3)/1.5, (0 + 2)/1.5)
    # patch 2: weights (.25, 0, 1) -> ((.25 + 10)/1.25, (0 - 4)/1.25)
    expected = torch.tensor(
        [[[[2.5 / 1.5, 3.5 / 1.5, 10.25 / 1.25]], [[1 / 1.5, 2 / 1.5, -4 / 1.25]]]]
    )
    torch.testing.assert_close(pooled, expected)


def test_guided_pooling_with_all_weights_is_a_weighted_mean():
    features = torch.randn(2, 5, 3, 4)
    affinity = torch.ones(2, 12, 12)
    pooled = guided_pooling(features, affinity, gamma=0.2)
    mean = features.flatten(2).mean(-1)
    torch.testing.assert_close(pooled, mean[..., None, None].expand_as(pooled))


def test_predicted_affinity_is_cosine_of_g_features_eq2():
    model = DINOiser(8, 4)
    feats = torch.randn(2, 8, 3, 3)
    g = F.normalize(model.g(feats).flatten(2), dim=1)
    expected = torch.einsum("bcp,bcq->bpq", g, g)
    torch.testing.assert_close(model.affinity(feats), expected)
    assert torch.allclose(
        model.affinity(feats).diagonal(dim1=1, dim2=2), torch.ones(2, 9), atol=1e-5
    )


def test_affinity_loss_is_bce_on_cosine_logits():
    predicted = torch.tensor([[0.5, -0.25], [1.0, 0.0]])
    target = torch.tensor([[True, False], [True, True]])
    by_hand = (
        -(
            torch.log(torch.sigmoid(torch.tensor(0.5)))
            + torch.log(1 - torch.sigmoid(torch.tensor(-0.25)))
            + torch.log(torch.sigmoid(torch.tensor(1.0)))
            + torch.log(torch.sigmoid(torch.tensor(0.0)))
        )
        / 4
    )
    torch.testing.assert_close(affinity_loss(predicted, target), by_hand)


def test_training_learns_teacher_affinities():
    torch.manual_seed(0)
    # two "objects": patches share a random direction per object; teacher = same object
    n, d, h, w = 12, 16, 4, 4
    labels = torch.randint(0, 2, (n, h * w))
    prototypes = torch.randn(2, d)
    feats = prototypes[labels] + 0.3 * torch.randn(n, h * w, d)
    feats = feats.transpose(1, 2).reshape(n, d, h, w)
    targets = labels[:, :, None] == labels[:, None, :]
    config = DinoiserTrainConfig(epochs=60, lr=5e-3, batch_size=4, d_out=8, head="paper")
    model, metrics = train_dinoiser(feats, targets, config)
    untrained = DINOiser(d, 8)
    before = affinity_loss(untrained.affinity(feats), targets).item()
    assert metrics["final_loss"] < before
    assert metrics["pair_accuracy"] > 0.9


def test_nan_features_stop_training_with_location():
    feats = torch.full((2, 4, 2, 2), float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 0"):
        train_dinoiser(
            feats,
            torch.ones(2, 4, 4, dtype=torch.bool),
            DinoiserTrainConfig(epochs=1, head="paper"),
        )


def test_save_load_roundtrip(tmp_path):
    model = DINOiser(8, 4)
    save_dinoiser(model, tmp_path / "g.safetensors")
    loaded = load_dinoiser(tmp_path / "g.safetensors")
    feats = torch.randn(1, 8, 3, 3)
    torch.testing.assert_close(loaded(feats), model(feats))


@pytest.mark.parametrize(
    "name, size", [("vit_small_patch16_224.dino", 224), ("vit_small_patch14_dinov2.lvd142m", 196)]
)
def test_teacher_grid_matches_clip(name, size):
    spec = TeacherSpec(
        name, pretrained=False, overrides={"depth": 1, "embed_dim": 32, "num_heads": 2}
    )
    teacher = load_teacher(spec, (14, 14))
    assert tuple(teacher.patch_embed.img_size) == (size, size)
    affinity = teacher_affinity(teacher, torch.randn(2, 3, 224, 224))
    assert affinity.shape == (2, 196, 196)
    torch.testing.assert_close(affinity, affinity.transpose(1, 2))
    torch.testing.assert_close(affinity.diagonal(dim1=1, dim2=2), torch.ones(2, 196))
    assert binarise(affinity, 0.2).dtype == torch.bool


def test_teacher_uses_the_requested_qkv_slice():
    spec = TeacherSpec(
        "vit_small_patch16_224.dino",
        pretrained=False,
        overrides={"depth": 1, "embed_dim": 32, "num_heads": 2},
    )
    teacher = load_teacher(spec, (14, 14))
    images = torch.randn(1, 3, 224, 224)
    keys = teacher_affinity(teacher, images, "key")
    values = teacher_affinity(teacher, images, "value")
    assert not torch.allclose(keys, values)
