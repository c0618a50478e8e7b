"""Writers of small image data sets in the layouts users have them, for tests.

Each writer puts real image files (JPEG and PNG, written with PIL) and the
index files of one layout under `root`, with uneven class sizes, mixed image
sizes and some grey images among colour ones, and returns a `Fixture`:
`root` (what `--data_dir` gets), `classes` (each class's name as the loader
names it -> its image paths, in the loader's order) and `splits` (the class
names each class set should get, by the layout's split rule). Images of a
class share a colour and a bar position, so a few-shot learner can tell
classes apart.

    write_mini_imagenet(root, classes=(4, 2, 2), images_per_class=(6, 8, 7))
    write_cub(root, num_classes=8, nested=False, bounding_boxes=True)
    write_meta_album(root, num_classes=10, info=True, image_column="FILE_NAME", ...)
    write_image(path, size, colour, grey=False, seed=0)

`images_per_class` is an int or a sequence cycled over the classes;
`sizes` a sequence of `(width, height)` cycled over the images; every
`grey_every`-th image is grey and every `png_every`-th a PNG (0: never).
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((84, 84), (100, 75), (64, 96), (120, 120))
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}


@dataclasses.dataclass
class Fixture:
    root: Path
    classes: dict[str, list[Path]]
    splits: dict[str, list[str]]
    # `write_cub`: each image's bounding box `(x, y, width, height)` as written.
    boxes: dict[Path, tuple[float, float, float, float]] = dataclasses.field(default_factory=dict)

    def counts(self, split: str) -> list[int]:
        """Images of each class of a class set, in the split's order."""
        return [len(self.classes[name]) for name in self.splits[split]]


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class."""
    hue = (index * 0.618034) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def write_image(
    path: str | Path,
    size: tuple[int, int],
    colour: tuple[int, int, int],
    grey: bool = False,
    seed: int = 0,
    bar: float = 0.5,
) -> Path:
    """A real image file: `colour` with a dark bar at `bar` (0-1 down the image) and noise.

    The format follows the suffix (`.jpg`, `.png`, `.bmp`, `.webp`); `grey`
    writes a one-channel image.
    """
    path = Path(path)
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), np.float32)
    pixels[:] = colour
    top = int(bar * height * 0.8)
    pixels[top : top + max(1, height // 6)] *= 0.3
    pixels += rng.normal(0.0, 12.0, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if grey:
        image = image.convert("L")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, _FORMATS[path.suffix.lower()])
    return path


def _count(images_per_class: int | Sequence[int], index: int) -> int:
    if isinstance(images_per_class, int):
        return images_per_class
    return images_per_class[index % len(images_per_class)]


class _Writer:
    """Cycles sizes, grey and PNG images over every image written."""

    def __init__(self, sizes: Sequence[tuple[int, int]], grey_every: int, png_every: int):
        self.sizes, self.grey_every, self.png_every = sizes, grey_every, png_every
        self.written = 0

    def suffix(self) -> str:
        png = self.png_every and (self.written + 1) % self.png_every == 0
        return ".png" if png else ".jpg"

    def write(self, path: Path, class_index: int) -> Path:
        count = self.written
        self.written += 1
        grey = bool(self.grey_every) and (count + 1) % self.grey_every == 0
        bar = (class_index * 0.37) % 1.0
        return write_image(
            path, self.sizes[count % len(self.sizes)], class_colour(class_index), grey, count, bar
        )


def _evaluation_counts(count: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    # Meta-validation and meta-test: their share rounded half up, one at least; train: the rest.
    total = sum(fractions)
    val, test = (max(1, math.floor(count * f / total + 0.5)) for f in fractions[1:])
    return count - val - test, val, test


def _cut(names: list[str], counts: Sequence[int]) -> dict[str, list[str]]:
    train, val, _ = counts
    return {"train": names[:train], "val": names[train : train + val], "test": names[train + val :]}


def write_mini_imagenet(
    root: str | Path,
    classes: Sequence[int] = (4, 2, 2),
    images_per_class: int | Sequence[int] = (6, 8, 7),
    sizes: Sequence[tuple[int, int]] = SIZES,
    grey_every: int = 5,
    png_every: int = 4,
) -> Fixture:
    """mini-ImageNet as distributed: `train.csv`, `val.csv`, `test.csv` and `images/`.

    `classes` gives the number of classes of each CSV; labels look like
    synsets (`n01000000`), files like `n0100000000000001.jpg`.
    """
    root = Path(root)
    writer = _Writer(sizes, grey_every, png_every)
    fixture = Fixture(root, {}, {})
    index = 0
    for split, count in zip(("train", "val", "test"), classes):
        rows = []
        fixture.splits[split] = []
        for _ in range(count):
            label = f"n{1000000 + 17 * index:08d}"
            paths = []
            for j in range(_count(images_per_class, index)):
                name = f"{label}{j + 1:08d}{writer.suffix()}"
                paths.append(writer.write(root / "images" / name, index))
                rows.append((name, label))
            fixture.classes[label] = paths
            fixture.splits[split].append(label)
            index += 1
        fixture.splits[split].sort()
        with open(root / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("filename", "label"), *rows])
    return fixture


def _box(size: tuple[int, int], image_id: int) -> tuple[float, float, float, float]:
    """A CUB box: inside the image, past its right and bottom edges, or before its top-left."""
    width, height = size
    kind = image_id % 3
    if kind == 0:
        return (2.0, 3.0, width - 6.0, height - 8.0)
    if kind == 1:
        return (round(width * 0.3) + 0.5, round(height * 0.2) + 0.0, float(width), height * 0.9)
    return (-3.0, -2.5, round(width * 0.6) + 0.0, round(height * 0.7) + 0.0)


def write_cub(
    root: str | Path,
    num_classes: int = 8,
    images_per_class: int | Sequence[int] = (6, 8, 7),
    nested: bool = False,
    bounding_boxes: bool = True,
    sizes: Sequence[tuple[int, int]] = SIZES,
    grey_every: int = 5,
    png_every: int = 4,
) -> Fixture:
    """CUB_200_2011 as unpacked: `classes.txt`, `images.txt`, `image_class_labels.txt`, `images/`.

    With `nested` the files go to `root/CUB_200_2011/` (as the archive
    unpacks); `bounding_boxes` adds `bounding_boxes.txt` (boxes in the
    fixture's `boxes`: some inside the image, some running past its edges,
    some with half-pixel coordinates). Class ids run 1..num_classes; images
    are listed class after class.
    """
    root = Path(root)
    folder = root / "CUB_200_2011" if nested else root
    writer = _Writer(sizes, grey_every, png_every)
    fixture = Fixture(root, {}, {})
    classes, images, labels, boxes = [], [], [], []
    image_id = 0
    for class_id in range(1, num_classes + 1):
        name = f"{class_id:03d}.Bird_number_{class_id}"
        classes.append(f"{class_id} {name}")
        paths = []
        for j in range(_count(images_per_class, class_id - 1)):
            image_id += 1
            relative = f"{name}/Bird_Number_{class_id}_{j:04d}_{image_id}{writer.suffix()}"
            size = writer.sizes[writer.written % len(writer.sizes)]
            paths.append(writer.write(folder / "images" / relative, class_id - 1))
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {class_id}")
            box = tuple(round(value, 1) for value in _box(size, image_id))
            fixture.boxes[paths[-1]] = box
            boxes.append(f"{image_id} " + " ".join(f"{value:.1f}" for value in box))
        fixture.classes[name] = paths
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    if bounding_boxes:
        (folder / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    names = list(fixture.classes)
    fixture.splits = _cut(names, _evaluation_counts(len(names), (0.5, 0.25, 0.25)))
    return fixture


def write_meta_album(
    root: str | Path,
    num_classes: int = 10,
    images_per_class: int | Sequence[int] = (6, 8, 7),
    info: bool = True,
    dataset_name: str = "TOY",
    image_column: str = "FILE_NAME",
    category_column: str = "CATEGORY",
    split: Sequence[float] = (0.6, 0.2, 0.2),
    sizes: Sequence[tuple[int, int]] = SIZES,
    grey_every: int = 5,
    png_every: int = 4,
) -> Fixture:
    """A Meta-Album data set folder: `labels.csv`, `images/` and (with `info`) `info.json`.

    `labels.csv` has the columns `SUPER_CATEGORY`, `category_column`,
    `image_column` (in that order) with its rows shuffled, so CSV order is
    not the sorted order. Class names are `<dataset_name>/<category>`
    (without `info.json`, the folder's name stands for `dataset_name`).
    `split` gives the ratios the expected `splits` follow.
    """
    root = Path(root)
    writer = _Writer(sizes, grey_every, png_every)
    fixture = Fixture(root, {}, {})
    rows = []
    prefix = dataset_name if info else root.name
    for index in range(num_classes):
        # Names whose sorted order is not their index order.
        category = f"Species {(index * 7) % num_classes:02d} {index}"
        paths = []
        for j in range(_count(images_per_class, index)):
            name = f"{index:03d}_{j:03d}{writer.suffix()}"
            paths.append(writer.write(root / "images" / name, index))
            rows.append((f"Group {index % 3}", category, name))
        fixture.classes[f"{prefix}/{category}"] = paths
    order = np.random.default_rng(3).permutation(len(rows))
    with open(root / "labels.csv", "w", newline="") as handle:
        writer_csv = csv.writer(handle)
        writer_csv.writerow(("SUPER_CATEGORY", category_column, image_column))
        writer_csv.writerows(rows[i] for i in order)
    # Within a class the loader keeps labels.csv order.
    position = {row[2]: i for i, row in enumerate(rows[i] for i in order)}
    for paths in fixture.classes.values():
        paths.sort(key=lambda p: position[p.name])
    if info:
        (root / "info.json").write_text(
            json.dumps(
                {
                    "dataset_name": dataset_name,
                    "dataset_description": "a toy Meta-Album data set",
                    "total_categories": num_classes,
                    "has_super_categories": True,
                    "image_column_name": image_column,
                    "category_column_name": category_column,
                    "super_category_column_name": "SUPER_CATEGORY",
                },
                indent=4,
            )
        )
    names = sorted(fixture.classes)
    fixture.splits = _cut(names, _evaluation_counts(len(names), split))
    return fixture
