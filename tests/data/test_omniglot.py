import shutil
import zipfile

import numpy as np
import pytest

from metasearch.api import DatasetOptions
from metasearch.data import omniglot
from metasearch.errors import UsageError

SMALL2_ONLY = ["Japanese_(katakana)", "Sanskrit", "Tagalog"]


def _load(data_dir, **options):
    return omniglot.Omniglot(DatasetOptions(str(data_dir), 28, 0, options)).load()


def test_reads_the_standard_zips_with_explicit_class_sets(omniglot_dir):
    splits = _load(
        omniglot_dir,
        train=["images_background_small1", "-images_background_small1/Latin"],
        val=["images_background_small1/Latin"],
        test=[f"images_background_small2/{a}" for a in SMALL2_ONLY],
    )
    assert splits.test.num_classes == sum(
        1 for n in splits.test.names if n.split("/")[0] in SMALL2_ONLY
    )
    assert {n.split("/")[0] for n in splits.test.names} == set(SMALL2_ONLY)
    assert all(n.startswith("Latin/") for n in splits.val.names)
    assert not any(n.startswith("Latin/") for n in splits.train.names)
    assert splits.train.images_per_class == 20
    assert splits.train.images.shape[2:] == (28, 28, 1)
    # Dark ink on white.
    assert 0.85 < splits.train.images.mean() < 0.97


def test_default_split_is_by_alphabet_and_disjoint(omniglot_dir):
    splits = _load(omniglot_dir)
    alphabets = [{n.split("/")[0] for n in s.names} for _, s in splits.items()]
    assert not (
        alphabets[0] & alphabets[1] or alphabets[0] & alphabets[2] or alphabets[1] & alphabets[2]
    )
    # Greek and Latin appear in both archives but count once.
    total = sum(s.num_classes for _, s in splits.items())
    assert total == len({n for _, s in splits.items() for n in s.names})


def test_overlapping_class_sets_are_refused(omniglot_dir):
    with pytest.raises(UsageError, match="disjoint"):
        _load(
            omniglot_dir, train=["images_background_small1"], val=["images_background_small2/Greek"]
        )


def test_rotations_add_three_classes_per_character(omniglot_dir):
    plain = omniglot.load_characters(str(omniglot_dir), ["images_background_small1/Latin"], 28)
    rotated = omniglot.load_characters(
        str(omniglot_dir), ["images_background_small1/Latin"], 28, rotations=True
    )
    assert rotated.num_classes == 4 * plain.num_classes
    np.testing.assert_allclose(
        rotated.images[plain.num_classes], np.rot90(plain.images[0], 1, axes=(1, 2))
    )


def test_unpacked_folder_reads_the_same_as_the_zip(omniglot_dir, tmp_path):
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        members = [m for m in zf.namelist() if "/Latin/" in m]
        zf.extractall(tmp_path, members)
    from_zip = omniglot.load_characters(str(omniglot_dir), ["images_background_small1/Latin"], 28)
    from_folder = omniglot.load_characters(str(tmp_path), ["images_background_small1/Latin"], 28)
    assert from_zip.names == from_folder.names
    np.testing.assert_array_equal(from_zip.images, from_folder.images)


def test_unknown_alphabet_names_the_flag_and_lists_known(omniglot_dir):
    with pytest.raises(UsageError, match=r"--omniglot_test: no alphabet 'Klingon'.*Sanskrit"):
        _load(omniglot_dir, test=["images_background_small2/Klingon"])


def test_missing_data_dir(tmp_path):
    with pytest.raises(UsageError, match="--data_dir"):
        _load(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="no Omniglot archive"):
        _load(tmp_path)


def test_truncated_zip_is_named(omniglot_dir, tmp_path):
    data = (omniglot_dir / "images_background_small1.zip").read_bytes()
    (tmp_path / "images_background_small1.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="images_background_small1.zip"):
        _load(tmp_path)


def test_non_image_file_among_pngs_is_named(omniglot_dir, tmp_path):
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        zf.extractall(tmp_path, [m for m in zf.namelist() if "/Latin/" in m or "/Greek/" in m])
    folder = tmp_path / "images_background_small1" / "Latin" / "character01"
    bad = folder / "0001_99.png"
    bad.write_text("this is not a picture")
    with pytest.raises(UsageError, match="0001_99.png: not a readable image"):
        omniglot.load_characters(str(tmp_path), ["images_background_small1"], 28)
    shutil.rmtree(tmp_path / "images_background_small1")


def _fake_archive(path, archive, alphabets, characters=3, drawers=4):
    from PIL import Image

    with zipfile.ZipFile(path, "w") as zf:
        for alphabet in alphabets:
            for c in range(1, characters + 1):
                for d in range(1, drawers + 1):
                    image = Image.new("1", (12, 12), 1)
                    image.putpixel((c, d), 0)
                    buffer = __import__("io").BytesIO()
                    image.save(buffer, format="PNG")
                    zf.writestr(
                        f"{archive}/{alphabet}/character{c:02d}/{c:04d}_{d:02d}.png",
                        buffer.getvalue(),
                    )


def test_standard_archives_default_to_evaluation_as_meta_test(tmp_path):
    _fake_archive(
        tmp_path / "images_background.zip", "images_background", ["A", "B", "C", "D", "E", "F", "G"]
    )
    _fake_archive(tmp_path / "images_evaluation.zip", "images_evaluation", ["X", "Y"])
    splits = _load(tmp_path)
    assert {n.split("/")[0] for n in splits.test.names} == {"X", "Y"}
    train = {n.split("/")[0] for n in splits.train.names}
    val = {n.split("/")[0] for n in splits.val.names}
    assert train | val == set("ABCDEFG") and not train & val and val
    assert splits.train.images_per_class == 4
    # Decoded 1-bit PNGs: white 1, ink 0, before resizing to 28.
    assert splits.test.images.max() == 1.0
