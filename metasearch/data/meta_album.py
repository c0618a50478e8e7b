"""`meta_album`: one Meta-Album data set folder (Ullah et al. 2022), as downloaded and unpacked.

`--data_dir` holds:

* `labels.csv`: a row per image, with (at least) the image's file name and
  its category; other columns (`SUPER_CATEGORY`, ...) are ignored;
* `images/`: the files `labels.csv` names;
* `info.json` (optional): its `dataset_name` names the classes
  (`<dataset_name>/<category>`; the folder's name without it), and its
  `image_column_name` and `category_column_name` name the columns of
  `labels.csv` (`FILE_NAME` and `CATEGORY` without them).

Class split: the categories in sorted order (Python string order, whatever
the seed) are cut into meta-train, meta-validation and meta-test by the
ratios of `--meta_album_split` (default 60/20/20; ratios are normalised):
meta-validation and meta-test get their share rounded half up, at least one
class each, meta-train the rest. Every class keeps all its images, in
`labels.csv` order.

Refused, each naming the file (and line): a missing `labels.csv` or
`images/`, an unreadable `info.json`, a missing column, a row with an empty
file name or category, a row naming a missing or empty image, an image listed
twice, a bad `--meta_album_split` and fewer than three categories.
"""

from __future__ import annotations

import json
import os

from metasearch.api import ClassSplits, Dataset
from metasearch.data import image_folders
from metasearch.errors import UsageError
from metasearch.options import Option

DEFAULT_SPLIT = [0.6, 0.2, 0.2]
IMAGE_COLUMN = "FILE_NAME"
CATEGORY_COLUMN = "CATEGORY"
_HOLDS = "holding labels.csv, images/ and info.json"


def read_info(folder: str) -> tuple[str, str, str]:
    """The data set's name and its image and category columns, from `info.json` if present."""
    name = os.path.basename(os.path.normpath(os.path.abspath(folder)))
    path = os.path.join(folder, "info.json")
    if not os.path.exists(path):
        return name, IMAGE_COLUMN, CATEGORY_COLUMN
    try:
        with open(path, encoding="utf-8-sig") as handle:
            info = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(info, dict):
        raise UsageError(f"{path}: expected a JSON object, found {type(info).__name__}")
    values = []
    for key, default in (
        ("dataset_name", name),
        ("image_column_name", IMAGE_COLUMN),
        ("category_column_name", CATEGORY_COLUMN),
    ):
        value = info.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{path}: {key} must be a non-empty string, found {value!r}")
        values.append(value.strip())
    return values[0], values[1], values[2]


def read_labels(path: str, images: str, image_column: str, category_column: str):
    """`labels.csv`: per category, its image paths in CSV order."""
    rows = image_folders.csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise UsageError(f"{path}: empty file (expected a header and a row per image)")
    line, columns = header
    for column in (image_column, category_column):
        if column not in columns:
            raise UsageError(
                f"{path} line {line}: no column {column} (columns: {', '.join(columns)})"
            )
    image_at, category_at = columns.index(image_column), columns.index(category_column)
    classes: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for line, fields in rows:
        if len(fields) != len(columns):
            raise UsageError(
                f"{path} line {line}: {len(fields)} fields for the {len(columns)} columns"
            )
        filename, category = fields[image_at], fields[category_at]
        if not filename or not category:
            empty = image_column if not filename else category_column
            raise UsageError(f"{path} line {line}: empty {empty}")
        where = f"{path} line {line}"
        source = image_folders.image_file(os.path.join(images, filename), where)
        if source in seen:
            raise UsageError(f"{where}: image {source} is already listed on line {seen[source]}")
        seen[source] = line
        classes.setdefault(category, []).append(source)
    if not classes:
        raise UsageError(f"{path}: no images listed")
    return classes


class MetaAlbum(Dataset):
    """A Meta-Album data set from `--data_dir`; categories split 60/20/20 in sorted order.

    Option `split`: the meta-train, meta-validation and meta-test ratios.
    Colour (3 channels).
    """

    channels = 3
    OPTIONS = (
        Option(
            "split",
            list,
            DEFAULT_SPLIT,
            "meta-train,meta-validation,meta-test ratios of the categories, cut in sorted "
            "category order (normalised)",
            item_type=float,
            lower_bound=0.0,
        ),
    )

    def load(self) -> ClassSplits:
        ratios = self.options.options["split"]
        if len(ratios) != 3 or not all(r > 0 for r in ratios):
            raise UsageError(
                f"--meta_album_split: {','.join(f'{r:g}' for r in ratios)} is not three "
                "positive ratios (meta-train,meta-validation,meta-test)"
            )
        folder = image_folders.data_dir(self.options.data_dir, "meta_album", _HOLDS)
        name, image_column, category_column = read_info(folder)
        labels = image_folders.required_file(folder, "labels.csv", "meta_album")
        images = image_folders.required_folder(folder, "images", "meta_album")
        classes = read_labels(labels, images, image_column, category_column)
        categories = sorted(classes)
        counts = image_folders.split_counts(len(categories), ratios, f"{labels}")
        sets = image_folders.class_sets(
            [f"{name}/{category}" for category in categories],
            [classes[category] for category in categories],
            counts,
        )
        return ClassSplits(*sets)
