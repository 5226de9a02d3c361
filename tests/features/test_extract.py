import copy

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from insight.data.batches import BatchTransform
from insight.data.images import list_images
from insight.demo import layouts as demo
from insight.features.extract import ExtractConfig, extract_shard
from insight.features.shards import (
    embeddings_of,
    iter_feature_batches,
    shard_grid,
    summarise_shards,
)
from insight.models.dense import DenseEncoder
from insight.models.dinoiser import DINOiser


@pytest.fixture
def shard(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    demo.make_scene_images(tmp_path / "src", 10)
    refs = list_images(tmp_path / "src", "folder")
    encoder = DenseEncoder(model.visual, DINOiser(64, 8))
    config = ExtractConfig(batch_size=4, row_group_images=4)
    out = tmp_path / "shard-00000.parquet"
    extract_shard(
        encoder,
        BatchTransform(preprocess),
        refs,
        out,
        tmp_path / "rejected.parquet",
        "tiny/random-init",
        config,
    )
    return out, encoder, preprocess, refs


def test_shard_follows_the_contract(shard):
    path, encoder, _, refs = shard
    schema = pq.read_schema(path)
    assert str(schema.field("image_id").type) == "string"
    assert str(schema.field("patch").type) == "int32"
    assert schema.field("embedding").type.list_size == 64
    assert str(schema.field("embedding").type.value_type) == "float"
    assert shard_grid(path) == (14, 14)
    assert schema.metadata[b"insight.backbone"] == b"tiny/random-init"
    rows = duckdb.sql(
        f"select count(*), count(distinct image_id), min(patch), max(patch) from '{path}'"
    ).fetchall()[0]
    assert rows == (10 * 196, 10, 0, 195)
    column_type = duckdb.sql(
        f"select typeof(embedding), len(embedding) from '{path}' limit 1"
    ).fetchall()[0]
    assert column_type[0] in ("FLOAT[]", "FLOAT[64]") and column_type[1] == 64
    # a row group holds whole images
    for _, group in iter_feature_batches([path], ["image_id", "patch"]):
        assert group.num_rows % 196 == 0


def test_shard_values_equal_the_encoder(shard):
    path, encoder, preprocess, refs = shard
    from PIL import Image

    image = Image.open(refs[3].path).convert("RGB")
    expected = encoder(preprocess(image)[None])[0].numpy()
    rows = pq.read_table(path, filters=[("image_id", "=", refs[3].image_id)])
    assert rows["patch"].to_pylist() == list(range(196))
    np.testing.assert_allclose(embeddings_of(rows), expected, atol=1e-5)


def test_float16_storage_reads_as_float_list(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    demo.make_scene_images(tmp_path / "src", 2)
    out = tmp_path / "half.parquet"
    extract_shard(
        DenseEncoder(model.visual, None),
        BatchTransform(preprocess),
        list_images(tmp_path / "src", "folder"),
        out,
        tmp_path / "rej.parquet",
        "tiny",
        ExtractConfig(storage="float16"),
    )
    assert str(pq.read_schema(out).field("embedding").type.value_type) == "halffloat"
    kind, length = duckdb.sql(
        f"select typeof(embedding), len(embedding) from '{out}' limit 1"
    ).fetchall()[0]
    assert kind.startswith("FLOAT") and length == 64
    assert embeddings_of(pq.read_table(out)).dtype == np.float32


def test_bf16_path_is_close_to_fp32(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    demo.make_scene_images(tmp_path / "src", 2)
    refs = list_images(tmp_path / "src", "folder")
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.parquet"
        encoder = DenseEncoder(copy.deepcopy(model.visual), None, precision=precision)
        extract_shard(encoder, BatchTransform(preprocess), refs, out, tmp_path / "r.parquet", "t")
        outs[precision] = embeddings_of(pq.read_table(out))
    rel = np.linalg.norm(outs["bf16"] - outs["fp32"]) / np.linalg.norm(outs["fp32"])
    assert rel < 0.05


def test_failure_mid_shard_leaves_no_output(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    demo.make_scene_images(tmp_path / "src", 6)

    class Exploding(DenseEncoder):
        calls = 0

        def forward(self, images):
            Exploding.calls += 1
            if Exploding.calls == 2:
                raise RuntimeError("killed")
            return super().forward(images)

    out = tmp_path / "out" / "shard-00000.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        extract_shard(
            Exploding(model.visual, None),
            BatchTransform(preprocess),
            list_images(tmp_path / "src", "folder"),
            out,
            tmp_path / "out" / "rejected.parquet",
            "t",
            ExtractConfig(batch_size=2, row_group_images=2),
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_nan_features_name_the_images(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    demo.make_scene_images(tmp_path / "src", 2)

    class NaNs(DenseEncoder):
        def forward(self, images):
            return torch.full((images.shape[0], 196, 64), float("nan"))

    refs = list_images(tmp_path / "src", "folder")
    with pytest.raises(FloatingPointError, match=refs[0].image_id):
        extract_shard(
            NaNs(model.visual, None),
            BatchTransform(preprocess),
            refs,
            tmp_path / "o.parquet",
            tmp_path / "r.parquet",
            "t",
        )


def test_summary_counts(shard, tmp_path):
    path, *_ = shard
    summary = summarise_shards([path], [tmp_path / "rejected.parquet"])
    assert summary == {
        "shards": 1,
        "images": 10,
        "patches": 1960,
        "rejected": 0,
        "rejected_by_reason": {},
    }


@pytest.mark.parametrize(
    "size, mode", [((500, 375), "RGB"), ((180, 260), "RGB"), ((224, 224), "L")]
)
def test_batch_transform_equals_open_clip_preprocess(tiny_clip, size, mode):
    from PIL import Image

    _, preprocess, _ = tiny_clip
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8).squeeze()
    image = Image.fromarray(array)
    assert image.mode == mode
    transform = BatchTransform(preprocess)
    ours = transform.batch(torch.from_numpy(np.stack([transform.pil(image)])))[0]
    torch.testing.assert_close(ours, preprocess(image), atol=1e-6, rtol=0)
