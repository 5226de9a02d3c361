import io
import tarfile

import duckdb
import numpy as np
import pytest
from PIL import Image

from insight.core.settings import section_settings
from insight.data.batches import BatchTransform
from insight.data.images import (
    DatasetLayoutError,
    DecodePolicy,
    assign_shards,
    decode_image,
    decode_policy,
    list_images,
    refs_of_shard,
)
from insight.demo import layouts as demo
from insight.features.extract import extract_shard
from insight.models.dense import DenseEncoder


def test_folder_is_recursive_sorted_and_relative(tmp_path):
    demo.make_scene_images(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("not an image suffix")
    refs = list_images(tmp_path, "folder")
    ids = [r.image_id for r in refs]
    assert ids == sorted(ids)
    assert len(ids) == 6
    assert {i.split("/")[0] for i in ids} == {"jpeg", "png"}


def test_list_file_txt_and_csv(tmp_path):
    paths = demo.make_scene_images(tmp_path / "imgs", 3)
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    (tmp_path / "list.txt").write_text("# comment\n" + "\n".join(rel) + "\n\n")
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(f"{r},x" for r in rel) + "\n")
    for name in ("list.txt", "list.csv"):
        refs = list_images(tmp_path / name, "list")
        assert sorted(r.image_id for r in refs) == sorted(rel)
        assert all((tmp_path / r.image_id).as_posix() == r.path for r in refs)


def test_csv_without_path_column_names_the_layout(tmp_path):
    (tmp_path / "list.csv").write_text("file\na.jpg\n")
    with pytest.raises(DatasetLayoutError, match="'path' column"):
        list_images(tmp_path / "list.csv", "list")


def test_webdataset_tar_shards(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in range(2):
        with tarfile.open(shards / f"{shard:05d}.tar", "w") as tar:
            for i in range(3):
                key = f"{shard:05d}{i:04d}"
                buffer = io.BytesIO()
                Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(buffer, format="JPEG")
                for suffix, data in ((".jpg", buffer.getvalue()), (".txt", b"a caption")):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    refs = list_images(shards, "tar")
    assert len(refs) == 6
    assert refs[0].image_id == "00000/000000000.jpg"
    assert refs[0].member == "000000000.jpg"


def test_missing_source_names_the_expected_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="webdataset .tar shards"):
        list_images(tmp_path / "nowhere", "tar")


def test_shards_are_fixed_size_and_ordered(tmp_path):
    demo.make_scene_images(tmp_path, 7)
    index = assign_shards(list_images(tmp_path, "folder"), images_per_shard=3)
    assert index["shard"].to_pylist() == [0, 0, 0, 1, 1, 1, 2]
    assert [r.image_id for r in refs_of_shard(index, 2)] == [index["image_id"][6].as_py()]


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.jpg", "corrupt or truncated"),
        ("empty.jpg", "empty file"),
        ("not_an_image.png", "not an image"),
        ("oversized.png", "oversized"),
        ("tiny.png", "too small"),
    ],
)
def test_each_bad_kind_is_rejected_with_its_reason(name, reason):
    image, why = decode_image(demo.bad_image_bytes()[name])
    assert image is None
    assert why.startswith(reason)


def test_other_modes_are_converted_to_exact_rgb_by_default():
    other = demo.other_mode_image_bytes()
    sixteen, _ = decode_image(other["sixteen_bit.png"])
    assert np.asarray(sixteen)[0, 0].tolist() == [round(40000 / 257)] * 3
    rgba, _ = decode_image(other["rgba.png"])
    assert np.asarray(rgba)[0, 0].tolist() == [10, 120, 200]
    gif, _ = decode_image(other["animated.gif"])  # the first frame
    assert (
        np.asarray(gif)[0, 0].tolist()
        == np.asarray(Image.open(io.BytesIO(other["palette.png"])).convert("RGB"))[0, 0].tolist()
    )
    for name, data in other.items():
        image, why = decode_image(data)
        assert why is None and image.mode == "RGB", name


@pytest.mark.parametrize("name", sorted(demo.other_mode_image_bytes()))
def test_other_modes_are_rejected_naming_the_mode_when_conversion_is_off(name):
    image, why = decode_image(
        demo.other_mode_image_bytes()[name], DecodePolicy(convert_modes=False)
    )
    assert image is None
    assert why.startswith("unsupported mode ") and "images.convert_modes is false" in why


def test_decode_policy_from_the_images_section():
    policy = decode_policy(section_settings("images", {"max_pixels": 100, "convert_modes": False}))
    assert policy == DecodePolicy(max_pixels=100, convert_modes=False)


def test_shard_with_every_bad_kind_keeps_all_good_images(tmp_path, tiny_clip):
    model, preprocess, _ = tiny_clip
    good = demo.make_scene_images(tmp_path / "src", 9)
    bad = demo.write_bad_images(tmp_path / "src")
    refs = list_images(tmp_path / "src", "folder")
    stats = extract_shard(
        DenseEncoder(model.visual, None),
        BatchTransform(preprocess),
        refs,
        tmp_path / "shard-00000.parquet",
        tmp_path / "rejected.parquet",
        "tiny",
    )
    assert (stats.images, stats.rejected) == (len(good), len(bad))
    rejected = duckdb.sql(
        f"select image_id, reason from '{tmp_path}/rejected.parquet' order by 1"
    ).fetchall()
    assert [r[0] for r in rejected] == sorted(f"bad/{p.name}" for p in bad)
    assert all(reason for _, reason in rejected)
    ids = duckdb.sql(
        f"select distinct image_id from '{tmp_path}/shard-00000.parquet' order by 1"
    ).fetchall()
    assert [i[0] for i in ids] == sorted(p.relative_to(tmp_path / "src").as_posix() for p in good)
