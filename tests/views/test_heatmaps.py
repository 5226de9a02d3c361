import numpy as np
import torch
from PIL import Image

from insight.data.batches import BatchTransform
from insight.models.dense import DenseEncoder
from insight.sae.model import MatryoshkaBatchTopKSAE, SAEConfig
from insight.views.heatmaps import activation_grid, heatmap_figure, image_codes, overlay


def test_activation_grid_places_patches_row_major():
    heat = activation_grid(np.array([0, 5]), np.array([2.0, 3.0]), (2, 3))
    assert heat.tolist() == [[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]


def test_overlay_leaves_inactive_patches_unchanged_and_colours_active_ones():
    crop = np.full((32, 32, 3), 100, dtype=np.uint8)
    heat = np.zeros((2, 2), dtype=np.float32)
    assert np.array_equal(np.asarray(overlay(crop, heat)), crop)
    heat[0, 0] = 1.0
    result = np.asarray(overlay(crop, heat)).astype(int)
    assert np.abs(result[0, 0] - 100).sum() > 30  # the active corner is coloured
    assert np.array_equal(result[-1, -1], [100, 100, 100])  # the far corner is not


def test_image_codes_are_the_sae_codes_of_the_encoder_features(tiny_clip, tmp_path):
    model, preprocess, _ = tiny_clip
    encoder = DenseEncoder(model.visual, None).eval()
    transform = BatchTransform(preprocess)
    sae = MatryoshkaBatchTopKSAE(SAEConfig(d_in=64, d_sae=32, k=4, group_sizes=(8, 24)))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), np.uint8))
    crop, features, codes, grid = image_codes(image, encoder, transform, sae, batch_topk=True)
    assert crop.shape == (224, 224, 3) and grid == (14, 14)
    expected = encoder(transform.batch(torch.from_numpy(transform.pil(image))[None]))[0]
    assert torch.allclose(features, expected)
    assert torch.equal(codes, sae.encode_batch_topk(expected))
    path = tmp_path / "figure.png"
    heatmap_figure(crop, [("a", codes[:, 0].reshape(grid).numpy())], path, "title")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > png.height
