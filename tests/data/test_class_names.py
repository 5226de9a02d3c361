"""Class names of ImageFolder datasets: WordNet ids become CLIP's ImageNet names."""

import pytest
from PIL import Image

from insight.data.benchmarks import class_names, imagefolder


def write_folder(root, split, folders):
    for name in folders:
        (root / split / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / name / "0.jpg")


def test_a_folder_of_wordnet_ids_is_named_with_clips_imagenet_names(tmp_path):
    # the standard ImageNet layout: folders are WordNet ids
    write_folder(tmp_path, "val", ["n01443537", "n01440764", "n02102040"])
    pairs, names = imagefolder(tmp_path, "val")
    # sorted folders: n01440764 (tench), n01443537 (goldfish), n02102040 (English springer)
    assert names == ["tench", "goldfish", "English Springer Spaniel"]
    assert [label for _, label in pairs] == [0, 1, 2]
    _, raw = imagefolder(tmp_path, "val", names="folder")
    assert raw == ["n01440764", "n01443537", "n02102040"]


def test_places_folders_read_as_words_and_unknown_ids_fail_by_name(tmp_path):
    assert class_names(["church-outdoor", "bazaar/indoor", "ice_cream_parlor"]) == [
        "outdoor church",
        "indoor bazaar",
        "ice cream parlor",
    ]
    with pytest.raises(ValueError, match="not ImageNet-1k classes, e.g. n99999999"):
        class_names(["n01440764", "n99999999"])
    with pytest.raises(ValueError, match="clip or folder"):
        class_names(["a"], "wordnet")
