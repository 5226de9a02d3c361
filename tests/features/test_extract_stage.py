"""The extraction stage's entry point: one shard of the index to the feature contract."""

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from insight.core.settings import section_settings
from insight.features.extract import ExtractConfig, extract_config, extract_shard_from_index
from insight.models.frozen import load_frozen


def test_extract_config_reads_features_and_images():
    config = extract_config(
        section_settings(
            "features",
            {"batch_size": 8, "storage": "float16", "row_group_images": 4, "decode_threads": 3},
        ),
        section_settings("images", {"max_pixels": 1000, "convert_modes": False}),
    )
    assert config == ExtractConfig(8, "float16", 4, 3, config.policy)
    assert (config.policy.max_pixels, config.policy.convert_modes) == (1000, False)


def test_extract_shard_from_index_writes_the_encoders_features(tiny_run):
    stats = tiny_run.reports["features"]
    grid = tiny_run.frozen.backbone  # the spec; the grid comes from the loaded model
    models = load_frozen(tiny_run.frozen, torch.device("cpu"))
    h, w = models.model.visual.grid_size
    assert (stats.images, stats.patches, stats.rejected) == (8, 8 * h * w, 0)
    table = pq.read_table(tiny_run.results / "features/demo/shard-00000.parquet")
    assert table.schema.metadata[b"insight.grid"] == f"{h},{w}".encode()
    assert table.schema.metadata[b"insight.backbone"].decode() == grid.name
    first = tiny_run.refs[0]
    pixels = models.transform.pil(Image.open(first.path).convert("RGB"))
    assert pixels.flags.writeable  # torch.from_numpy shares it without a warning
    x = models.transform.batch(torch.from_numpy(pixels)[None], "cpu")
    expected = models.encoder(x)[0]
    rows = table.filter(pc.equal(table["image_id"], first.image_id))
    got = torch.tensor(rows["embedding"].to_pylist())
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_an_empty_shard_is_an_error(tiny_run):
    with pytest.raises(ValueError, match="shard 7 is empty"):
        extract_shard_from_index(
            tiny_run.index,
            7,
            tiny_run.frozen,
            extract_config(tiny_run.cfg.features, tiny_run.cfg.images),
            torch.device("cpu"),
            tiny_run.root / "x.parquet",
            tiny_run.root / "y.parquet",
        )
