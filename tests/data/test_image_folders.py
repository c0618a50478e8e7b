"""The file-based data sets (`mini_imagenet`, `cub`, `meta_album`) on fixtures in their layouts."""

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_fixtures import write_cub, write_image, write_meta_album, write_mini_imagenet
from metasearch import registry
from metasearch.api import DatasetOptions
from metasearch.data import cub, image_folders, meta_album, mini_imagenet
from metasearch.errors import UsageError


def _load(cls, data_dir, **options):
    return cls(DatasetOptions(str(data_dir) if data_dir else None, 28, 0, options)).load()


def _refused(cls, data_dir, *fragments, **options):
    """Loading fails with one line holding every fragment; returns the message."""
    with pytest.raises(UsageError) as caught:
        _load(cls, data_dir, **options)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def _check_splits(splits, fixture):
    for split, class_set in splits.items():
        assert class_set.images is None
        assert class_set.names == fixture.splits[split], split
        assert class_set.counts == fixture.counts(split)
        for name, sources in zip(class_set.names, class_set.files):
            assert sources == [str(p) for p in fixture.classes[name]]
    names = [set(s.names) for _, s in splits.items()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])


def _fixture_kinds(sources):
    """(grey images, colour images, JPEGs, PNGs, distinct sizes) among the source files."""
    grey = colour = jpeg = png = 0
    sizes = set()
    for source in sources:
        with Image.open(source) as image:
            grey += image.mode == "L"
            colour += image.mode == "RGB"
            jpeg += image.format == "JPEG"
            png += image.format == "PNG"
            sizes.add(image.size)
    return grey, colour, jpeg, png, len(sizes)


def test_the_data_sets_are_registered_and_colour():
    for name, cls in (
        ("mini_imagenet", mini_imagenet.MiniImageNet),
        ("cub", cub.CUB),
        ("meta_album", meta_album.MetaAlbum),
    ):
        assert registry.load("dataset", name) is cls
        assert cls.channels == 3


# mini-ImageNet


@pytest.fixture
def mini(tmp_path):
    return write_mini_imagenet(tmp_path / "mini", classes=(4, 2, 3))


def test_mini_imagenet_reads_the_three_csvs_as_the_class_sets(mini):
    splits = _load(mini_imagenet.MiniImageNet, mini.root)
    _check_splits(splits, mini)
    assert [s.num_classes for _, s in splits.items()] == [4, 2, 3]
    assert len(set(splits.train.counts)) > 1, "uneven class sizes are kept as they are"
    sources = [s for _, c in splits.items() for files in c.files for s in files]
    grey, colour, jpeg, png, sizes = _fixture_kinds(sources)
    assert grey and colour and jpeg and png and sizes > 1


@pytest.mark.parametrize("name", ["train.csv", "val.csv", "test.csv"])
def test_mini_imagenet_refuses_a_missing_csv(mini, name):
    os.remove(mini.root / name)
    _refused(mini_imagenet.MiniImageNet, mini.root, mini.root / name, "not found")


def test_mini_imagenet_refuses_a_row_naming_a_missing_file(mini):
    label = mini.splits["val"][1]
    missing = mini.classes[label][2]
    os.remove(missing)
    rows = list(csv.reader(open(mini.root / "val.csv")))
    line = 1 + [r[0] for r in rows].index(missing.name)
    _refused(mini_imagenet.MiniImageNet, mini.root, mini.root / "val.csv", f"line {line}:", missing)


def test_mini_imagenet_refuses_a_class_in_two_splits(mini):
    label = mini.splits["train"][0]
    with open(mini.root / "test.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([mini.classes[mini.splits["test"][0]][0].name, label])
    _refused(mini_imagenet.MiniImageNet, mini.root, label, "test.csv", "train.csv", "disjoint")


def test_mini_imagenet_refuses_an_image_listed_twice(mini):
    first = mini.classes[mini.splits["train"][0]][0].name
    with open(mini.root / "train.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([first, mini.splits["train"][0]])
    _refused(mini_imagenet.MiniImageNet, mini.root, first, "already listed", "line 2")


def test_mini_imagenet_refuses_an_empty_split(mini):
    (mini.root / "val.csv").write_text("filename,label\n")
    _refused(mini_imagenet.MiniImageNet, mini.root, mini.root / "val.csv", "no images")


def test_mini_imagenet_refuses_a_bad_header_and_a_short_row(mini):
    rows = (mini.root / "test.csv").read_text().splitlines()
    (mini.root / "test.csv").write_text("\n".join(rows[1:]) + "\n")
    _refused(mini_imagenet.MiniImageNet, mini.root, "test.csv line 1", "header filename,label")
    (mini.root / "test.csv").write_text("\n".join([rows[0], rows[1], "lonely.jpg"]) + "\n")
    _refused(mini_imagenet.MiniImageNet, mini.root, "test.csv line 3", "lonely.jpg")


def test_mini_imagenet_refuses_a_zero_byte_image(mini):
    empty = mini.classes[mini.splits["test"][0]][1]
    empty.write_bytes(b"")
    _refused(mini_imagenet.MiniImageNet, mini.root, "test.csv line 3", empty, "0 bytes")


def test_mini_imagenet_needs_its_folders(mini, tmp_path):
    _refused(mini_imagenet.MiniImageNet, None, "--data_dir", "train.csv")
    _refused(mini_imagenet.MiniImageNet, tmp_path / "nowhere", "--data_dir", "not a folder")
    shutil.rmtree(mini.root / "images")
    _refused(mini_imagenet.MiniImageNet, mini.root, mini.root / "images")


# CUB-200-2011


@pytest.fixture
def birds(tmp_path):
    return write_cub(tmp_path / "birds", num_classes=8)


def test_cub_splits_class_ids_in_order_half_quarter_quarter(birds):
    splits = _load(cub.CUB, birds.root)
    _check_splits(splits, birds)
    assert [s.num_classes for _, s in splits.items()] == [4, 2, 2]
    assert splits.val.names == ["005.Bird_number_5", "006.Bird_number_6"]
    assert len(set(splits.train.counts)) > 1
    sources = [s for _, c in splits.items() for files in c.files for s in files]
    grey, colour, jpeg, png, sizes = _fixture_kinds(sources)
    assert grey and colour and jpeg and png and sizes > 1


def test_cub_full_split_is_1_100_101_150_151_200():
    train, val, test = cub.split_class_ids(list(range(200, 0, -1)))
    assert train == list(range(1, 101))
    assert val == list(range(101, 151))
    assert test == list(range(151, 201))
    assert [len(ids) for ids in cub.split_class_ids(list(range(1, 4)))] == [1, 1, 1]
    with pytest.raises(UsageError, match="three class sets"):
        cub.split_class_ids([1, 2])


def test_cub_reads_the_folder_the_archive_unpacks_to(tmp_path):
    fixture = write_cub(tmp_path / "download", num_classes=4, nested=True, bounding_boxes=False)
    splits = _load(cub.CUB, fixture.root)
    _check_splits(splits, fixture)


@pytest.mark.parametrize("name", ["classes.txt", "images.txt", "image_class_labels.txt"])
def test_cub_refuses_a_missing_index_file(birds, name):
    os.remove(birds.root / name)
    _refused(cub.CUB, birds.root, birds.root / name, "not found")


def test_cub_refuses_a_label_of_an_unknown_class(birds):
    path = birds.root / "image_class_labels.txt"
    lines = path.read_text().splitlines()
    lines[6] = lines[6].split()[0] + " 9"
    path.write_text("\n".join(lines) + "\n")
    _refused(cub.CUB, birds.root, f"{path} line 7", "class '9'", "classes.txt")


def test_cub_refuses_an_image_without_a_label(birds):
    path = birds.root / "image_class_labels.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    _refused(cub.CUB, birds.root, "images.txt line 4", "image 4 has no class")


def test_cub_refuses_a_missing_or_empty_image(birds):
    victim = birds.classes["003.Bird_number_3"][1]
    lines = (birds.root / "images.txt").read_text().splitlines()
    line = 1 + [entry.split()[1] for entry in lines].index(
        os.path.relpath(victim, birds.root / "images")
    )
    victim.write_bytes(b"")
    _refused(cub.CUB, birds.root, f"images.txt line {line}", victim, "0 bytes")
    os.remove(victim)
    _refused(cub.CUB, birds.root, f"images.txt line {line}", victim, "not found")


def test_cub_refuses_a_class_with_no_images_and_malformed_lines(birds):
    with open(birds.root / "classes.txt", "a") as handle:
        handle.write("9 009.Lonely_bird\n")
    _refused(cub.CUB, birds.root, "classes.txt line 9", "009.Lonely_bird", "no images")
    with open(birds.root / "classes.txt", "a") as handle:
        handle.write("ten\n")
    _refused(cub.CUB, birds.root, "classes.txt line 10", "expected 2 fields")
    lines = (birds.root / "classes.txt").read_text().splitlines()
    (birds.root / "classes.txt").write_text("\n".join(lines[:8] + ["3 003.Again"]) + "\n")
    _refused(cub.CUB, birds.root, "classes.txt line 9", "class id 3 repeats line 3")


def test_cub_declares_crop_off_by_default_and_carries_no_boxes_without_it(birds):
    assert [(o.name, o.type, o.default) for o in cub.CUB.OPTIONS] == [("crop", bool, False)]
    splits = _load(cub.CUB, birds.root)
    assert all(class_set.boxes is None for _, class_set in splits.items())


def test_cub_crop_gives_each_image_its_box(birds):
    splits = _load(cub.CUB, birds.root, crop=True)
    _check_splits(splits, birds)
    for _, class_set in splits.items():
        for sources, boxes in zip(class_set.files, class_set.boxes):
            assert boxes == [birds.boxes[Path(source)] for source in sources]
    # Leaving classes out keeps every box with its image.
    kept = splits.train.subset([2, 0])
    assert kept.boxes == [splits.train.boxes[2], splits.train.boxes[0]]


def _independent_crop(path, box, folder):
    """The image cropped with PIL's own `crop` (box clipped to the image), saved losslessly."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        x, y, width, height = box
        clipped = (max(0, x), max(0, y), min(image.width, x + width), min(image.height, y + height))
        target = folder / f"{Path(path).stem}.png"
        image.crop(clipped).save(target)
    return str(target)


def test_cub_cropped_pixels_equal_a_crop_made_independently(birds, tmp_path):
    from metasearch.api import ClassSet
    from metasearch.data.pipeline import EpisodeImages

    train = _load(cub.CUB, birds.root, crop=True).train
    folder = tmp_path / "cropped"
    folder.mkdir()
    files = [
        [_independent_crop(source, box, folder) for source, box in zip(sources, boxes)]
        for sources, boxes in zip(train.files, train.boxes)
    ]
    assert any(b[0] + b[2] > Image.open(f).width for f, b in birds.boxes.items())  # clipped
    reference = ClassSet(None, train.names, files=files)
    everything = np.arange(sum(train.counts))
    with EpisodeImages(reference, 28, 3, 1, cache_bytes=2**26) as expected:
        want = expected.pixels(everything)
    for budget in (2**26, 0):  # cached and streamed
        with EpisodeImages(train, 28, 3, 1, cache_bytes=budget) as cropped:
            np.testing.assert_array_equal(cropped.pixels(everything), want)
    whole = ClassSet(None, train.names, files=train.files)
    with EpisodeImages(whole, 28, 3, 1, cache_bytes=2**26) as uncropped:
        assert not np.array_equal(uncropped.pixels(everything), want)


def test_cub_crop_refuses_a_missing_or_bad_bounding_boxes_file(birds):
    path = birds.root / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    os.remove(path)
    _load(cub.CUB, birds.root)  # not read without crop
    _refused(cub.CUB, birds.root, "--cub_crop", path, "not found", crop=True)
    path.write_text("\n".join(lines + ["999 1.0 2.0 3.0 4.0"]) + "\n")
    _refused(
        cub.CUB, birds.root, f"{path} line {len(lines) + 1}", "image 999", "images.txt", crop=True
    )
    path.write_text("\n".join(lines[:3] + ["4 1.0 2.0 wide 4.0"] + lines[4:]) + "\n")
    _refused(cub.CUB, birds.root, f"{path} line 4", "four numbers", crop=True)
    path.write_text("\n".join(lines[:3] + ["4 1.0 2.0 0.0 4.0"] + lines[4:]) + "\n")
    _refused(cub.CUB, birds.root, f"{path} line 4", "above zero", crop=True)
    path.write_text("\n".join(lines[:3] + lines[1:2] + lines[4:]) + "\n")
    _refused(cub.CUB, birds.root, f"{path} line 4", "image id 2 repeats line 2", crop=True)
    path.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    _refused(cub.CUB, birds.root, "images.txt line 4", "image 4 has no box", path, crop=True)


def test_cub_crop_refuses_a_box_holding_none_of_its_image(birds):
    from metasearch.data.pipeline import EpisodeImages

    path = birds.root / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["1 500.0 3.0 10.0 10.0"] + lines[1:]) + "\n")
    train = _load(cub.CUB, birds.root, crop=True).train
    victim = train.files[0][0]
    for budget in (2**26, 0):
        with pytest.raises(UsageError) as caught:
            EpisodeImages(train, 28, 3, 1, cache_bytes=budget)
        message = str(caught.value)
        assert victim in message and "holds none of the" in message and "\n" not in message


# Meta-Album


@pytest.fixture
def album(tmp_path):
    return write_meta_album(tmp_path / "album", num_classes=10)


def test_meta_album_splits_sorted_categories_60_20_20(album):
    splits = _load(meta_album.MetaAlbum, album.root)
    _check_splits(splits, album)
    assert [s.num_classes for _, s in splits.items()] == [6, 2, 2]
    every = splits.train.names + splits.val.names + splits.test.names
    assert every == sorted(every) and every[0].startswith("TOY/Species 00")
    assert len(set(splits.train.counts)) > 1
    sources = [s for _, c in splits.items() for files in c.files for s in files]
    grey, colour, jpeg, png, sizes = _fixture_kinds(sources)
    assert grey and colour and jpeg and png and sizes > 1


def test_meta_album_split_option_and_seed_independence(album):
    a = _load(meta_album.MetaAlbum, album.root, split=[0.5, 0.3, 0.2])
    assert [s.num_classes for _, s in a.items()] == [5, 3, 2]
    b = meta_album.MetaAlbum(DatasetOptions(str(album.root), 28, 123, {})).load()
    assert b.val.names == _load(meta_album.MetaAlbum, album.root).val.names
    for bad in ([0.6, 0.4], [0.6, 0.0, 0.4]):
        _refused(meta_album.MetaAlbum, album.root, "--meta_album_split", split=bad)


def test_meta_album_reads_column_names_from_info_json(tmp_path):
    fixture = write_meta_album(
        tmp_path / "custom",
        num_classes=5,
        dataset_name="Plankton",
        image_column="path",
        category_column="species",
    )
    splits = _load(meta_album.MetaAlbum, fixture.root)
    _check_splits(splits, fixture)
    assert splits.train.names[0].startswith("Plankton/")
    os.remove(fixture.root / "info.json")  # FILE_NAME and CATEGORY without it
    _refused(meta_album.MetaAlbum, fixture.root, "labels.csv line 1", "no column FILE_NAME")


def test_meta_album_without_info_json_names_classes_by_folder(tmp_path):
    fixture = write_meta_album(tmp_path / "BRD_Mini", num_classes=4, info=False)
    splits = _load(meta_album.MetaAlbum, fixture.root)
    _check_splits(splits, fixture)
    assert splits.test.names[0].startswith("BRD_Mini/")


def test_meta_album_refusals(album):
    labels = album.root / "labels.csv"
    rows = labels.read_text().splitlines()
    victim = rows[4].split(",")[-1]
    os.remove(album.root / "images" / victim)
    _refused(meta_album.MetaAlbum, album.root, f"{labels} line 5", victim, "not found")
    (album.root / "images" / victim).write_bytes(b"")
    _refused(meta_album.MetaAlbum, album.root, f"{labels} line 5", "0 bytes")
    write_image(album.root / "images" / victim, (8, 8), (1, 2, 3))
    labels.write_text("\n".join(rows + [rows[2]]) + "\n")
    _refused(meta_album.MetaAlbum, album.root, f"line {len(rows) + 1}", "already listed on line 3")
    labels.write_text("\n".join(rows + ["Group 1,,x.jpg"]) + "\n")
    _refused(meta_album.MetaAlbum, album.root, f"line {len(rows) + 1}", "empty CATEGORY")
    (album.root / "info.json").write_text("{not json")
    _refused(meta_album.MetaAlbum, album.root, "info.json", "not a readable JSON")
    (album.root / "info.json").write_text(json.dumps({"category_column_name": 3}))
    _refused(meta_album.MetaAlbum, album.root, "category_column_name")
    os.remove(album.root / "info.json")
    os.remove(labels)
    _refused(meta_album.MetaAlbum, album.root, labels, "not found")


def test_meta_album_refuses_too_few_categories(tmp_path):
    fixture = write_meta_album(tmp_path / "tiny", num_classes=2)
    _refused(meta_album.MetaAlbum, fixture.root, "labels.csv", "2 classes", "three class sets")


# The shared kit


def test_split_counts_round_half_up_with_one_class_at_least():
    assert image_folders.split_counts(10, (0.6, 0.2, 0.2), "x") == (6, 2, 2)
    assert image_folders.split_counts(6, (0.5, 0.25, 0.25), "x") == (2, 2, 2)
    assert image_folders.split_counts(3, (0.8, 0.1, 0.1), "x") == (1, 1, 1)
    assert image_folders.split_counts(100, (3, 1, 1), "x") == (60, 20, 20)
    counts = [image_folders.split_counts(n, (0.6, 0.2, 0.2), "x") for n in range(3, 60)]
    assert all(sum(c) == n and min(c) >= 1 for n, c in zip(range(3, 60), counts))


def test_the_pipeline_decodes_each_layout_to_colour_at_the_model_size(tmp_path):
    from metasearch.data.pipeline import EpisodeImages

    for fixture, cls in (
        (write_mini_imagenet(tmp_path / "m", classes=(3, 3, 3)), mini_imagenet.MiniImageNet),
        (write_cub(tmp_path / "c", num_classes=4), cub.CUB),
        (write_meta_album(tmp_path / "a", num_classes=5), meta_album.MetaAlbum),
    ):
        train = _load(cls, fixture.root).train
        images = EpisodeImages(train, 28, cls.channels, min_images=7, cache_bytes=2**26)
        assert images.mode == "cached"
        assert images.scan.grey and images.scan.colour
        assert images.left_out == [n for n, c in zip(train.names, train.counts) if c < 7]
        batch = images.images(np.arange(int(images.counts.sum())))
        assert batch.shape[1:] == (28, 28, 3)
