"""`mini_imagenet`: mini-ImageNet in the split of Ravi and Larochelle (2017), as distributed.

`--data_dir` holds `train.csv`, `val.csv` and `test.csv` and an `images/`
folder with the files they name. Each CSV has the header `filename,label`
and a row per image, e.g. `n0153282900000005.jpg,n01532829`; the label (the
ImageNet synset) is the class. The three CSVs are the meta-train,
meta-validation and meta-test class sets (64, 16 and 20 classes of 600
images in the standard split); classes are taken in sorted label order and
their images in CSV order, as many as each class has.

Refused, each naming the file and line: a missing CSV or `images/` folder, a
header other than `filename,label`, a row without two fields, a row naming a
missing or empty image, an image listed twice, a class in two CSVs and a CSV
with no rows. Images are decoded by the core (any size, grey ones converted
to colour).
"""

from __future__ import annotations

import os

from metasearch.api import ClassSplits, Dataset
from metasearch.data import image_folders
from metasearch.errors import UsageError

SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
HEADER = ["filename", "label"]
_HOLDS = "holding train.csv, val.csv, test.csv and images/"


def read_split(path: str, images: str) -> dict[str, list[tuple[int, str]]]:
    """One split CSV: per label, `(line, image path)` of its rows, in CSV order."""
    classes: dict[str, list[tuple[int, str]]] = {}
    rows = image_folders.csv_rows(path)
    header = next(rows, None)
    if header is None:
        raise UsageError(
            f"{path}: empty file (expected the header filename,label and a row per image)"
        )
    line, fields = header
    if [field.lower() for field in fields] != HEADER:
        raise UsageError(
            f"{path} line {line}: expected the header filename,label, found {','.join(fields)!r}"
        )
    for line, fields in rows:
        if len(fields) != 2 or not all(fields):
            raise UsageError(
                f"{path} line {line}: expected filename,label, found {','.join(fields)!r}"
            )
        filename, label = fields
        source = image_folders.image_file(os.path.join(images, filename), f"{path} line {line}")
        classes.setdefault(label, []).append((line, source))
    if not classes:
        raise UsageError(f"{path}: no images listed (an empty class set)")
    return classes


class MiniImageNet(Dataset):
    """mini-ImageNet from `--data_dir` (`train.csv`, `val.csv`, `test.csv`, `images/`).

    No options: the CSVs are the class sets. Colour (3 channels).
    """

    channels = 3

    def load(self) -> ClassSplits:
        folder = image_folders.data_dir(self.options.data_dir, "mini_imagenet", _HOLDS)
        paths = {
            split: image_folders.required_file(folder, name, "mini_imagenet")
            for split, name in SPLIT_FILES.items()
        }
        images = image_folders.required_folder(folder, "images", "mini_imagenet")
        splits = {split: read_split(path, images) for split, path in paths.items()}
        seen: dict[str, tuple[str, int]] = {}  # image path -> (CSV, line)
        owner: dict[str, str] = {}  # label -> split
        for split, classes in splits.items():
            for label, rows in classes.items():
                if label in owner:
                    first = paths[owner[label]]
                    raise UsageError(
                        f"{paths[split]} line {rows[0][0]}: class {label} is also in {first}; "
                        "class sets must be disjoint"
                    )
                owner[label] = split
                for line, source in rows:
                    if source in seen:
                        csv_path, first_line = seen[source]
                        raise UsageError(
                            f"{paths[split]} line {line}: image {source} is already listed in "
                            f"{csv_path} line {first_line}"
                        )
                    seen[source] = (paths[split], line)
        sets = {}
        for split, classes in splits.items():
            names = sorted(classes)
            files = [[source for _, source in classes[name]] for name in names]
            (sets[split],) = image_folders.class_sets(names, files, [len(names)])
        return ClassSplits(**sets)
