"""`image_folder`: both layouts, class lists, the ratio split, and bad data refused in one line."""

import hashlib

import pytest

from cli_support import run_cli_in_process
from image_fixtures import class_colour, write_image
from metasearch.api import DatasetOptions
from metasearch.data.image_folder import ImageFolder
from metasearch.errors import UsageError


def _classes(root, counts, prefix="class_"):
    for index, count in enumerate(counts):
        for j in range(count):
            suffix = ".png" if j % 2 else ".jpg"
            write_image(
                root / f"{prefix}{index}" / f"{j}{suffix}",
                (20 + j, 18),
                class_colour(index),
                j == 1,
                j,
            )
    return root


def _load(root, **options):
    return ImageFolder(DatasetOptions(str(root), 16, 0, options)).load()


def test_one_folder_layout_splits_by_fixed_ratios_whatever_the_seed(tmp_path):
    _classes(tmp_path, [4] * 10)
    splits = _load(tmp_path)
    assert [s.num_classes for _, s in splits.items()] == [6, 2, 2]
    names = [n for _, s in splits.items() for n in s.names]
    assert sorted(names) == [f"class_{i}" for i in range(10)]
    again = ImageFolder(DatasetOptions(str(tmp_path), 16, 99, {})).load()
    assert [s.names for _, s in again.items()] == [s.names for _, s in splits.items()]
    assert splits.train.counts == [4] * 6 and all(
        path.endswith((".jpg", ".png")) for path in splits.train.files[0]
    )


def test_split_folders_are_the_class_sets(tmp_path):
    for split, counts in (("train", [3, 5]), ("val", [4]), ("test", [2, 6])):
        _classes(tmp_path / split, counts, prefix=f"{split}_")
    splits = _load(tmp_path)
    assert splits.train.names == ["train_0", "train_1"] and splits.train.counts == [3, 5]
    assert splits.val.names == ["val_0"] and splits.test.counts == [2, 6]


def test_class_lists_choose_the_class_sets(tmp_path):
    _classes(tmp_path / "data", [3] * 5)
    lists = {}
    for split, names in (
        ("train", "class_0\nclass_3 # a comment\n"),
        ("val", "class_1\n"),
        ("test", "class_4\n"),
    ):
        lists[f"{split}_classes"] = str(tmp_path / f"{split}.txt")
        (tmp_path / f"{split}.txt").write_text(names)
    splits = _load(tmp_path / "data", **lists)
    assert splits.train.names == ["class_0", "class_3"] and splits.test.names == ["class_4"]
    (tmp_path / "val.txt").write_text("class_1\nclass_9\n")
    with pytest.raises(UsageError, match=r"val.txt line 2: unknown class 'class_9'"):
        _load(tmp_path / "data", **lists)
    (tmp_path / "val.txt").write_text("class_3\n")
    with pytest.raises(UsageError, match="class 'class_3' is also in the meta-train list"):
        _load(tmp_path / "data", **lists)


def test_an_empty_class_folder_is_named(tmp_path):
    _classes(tmp_path, [3] * 5)
    (tmp_path / "class_7").mkdir()
    (tmp_path / "class_7" / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match=r"class_7: an empty class folder"):
        _load(tmp_path)


def _hashes(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda root: (root / "class_2" / "0.jpg").write_bytes(b""),
            "0.jpg is an empty file (0 bytes)",
        ),
        (
            lambda root: (root / "class_2" / "1.png").write_bytes(b"not an image"),
            "1.png: not a readable image",
        ),
        (lambda root: (root / "class_15").mkdir(), "class_15: an empty class folder"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_an_earlier_run_is_untouched(tmp_path, damage, message):
    data = _classes(tmp_path / "data", [3, 4] * 5)
    out = tmp_path / "run"
    args = [
        "--dataset=image_folder",
        f"--data_dir={data}",
        "--image_folder_split=0.6,0.2,0.2",
        "--n_way=2",
        "--k_shot=1",
        "--n_query=1",
        "--image_size=12",
        "--max_trials=1",
        f"--output_dir={out}",
    ]
    # An earlier run's description is in place before the data goes bad.
    (out).mkdir()
    (out / "keep.txt").write_text("a user's file")
    before = _hashes(out)
    damage(data)
    result = run_cli_in_process(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert _hashes(out) == before
    assert not (out / "config.json").exists()


def test_a_zero_byte_omniglot_archive_is_named(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"")
    result = run_cli_in_process(
        "--dataset=omniglot", f"--data_dir={tmp_path}", f"--output_dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "images_background.zip: not a readable zip archive" in lines[0]


def test_grey_and_colour_images_mixed_are_converted_and_recorded(tmp_path):
    from metasearch.config import RunConfig
    from metasearch.tasks import kind_of

    data = _classes(tmp_path / "data", [3] * 10)
    config = RunConfig(dataset="image_folder", n_way=2, k_shot=1, n_query=1, image_size=12)
    loaded = kind_of("classification").load(
        ImageFolder(DatasetOptions(str(data), 12, 0, {})), config
    )
    converted = [s["converted"] for s in loaded.info["class_sets"].values()]
    assert sum(c["grey_images"] for c in converted) == 10  # image 1 of each class is grey
    assert all(c["to_channels"] == 3 for c in converted)
