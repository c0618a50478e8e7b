"""`cub`: Caltech-UCSD Birds-200-2011 (CUB_200_2011) as unpacked from its archive.

`--data_dir` is the `CUB_200_2011` folder (or the folder holding it), with:

* `classes.txt`: `class_id class_name` (`1 001.Black_footed_Albatross`);
* `images.txt`: `image_id relative/path.jpg`, relative to `images/`;
* `image_class_labels.txt`: `image_id class_id`;
* `images/`: the JPEG files (a few are grey: the core converts them);
* `bounding_boxes.txt` (`image_id x y width height`, pixels from the image's
  top-left corner): read only with the option `crop` (`--cub_crop`), which
  crops every image to its box (clipped to the image; edges rounded as PIL's
  `Image.crop` rounds them) before the core resizes it.

Class split, contiguous by class id: with the full 200 classes, ids 1-100
are meta-train, 101-150 meta-validation and 151-200 meta-test. In general
the class ids present are sorted and split 50/25/25 in that order
(meta-validation and meta-test a quarter each, rounded half up and at least
one class; meta-train the rest), which is exactly the split above for 200
classes. Every class keeps all its images, in `images.txt` order.

Refused, each naming the file and line: a missing index file or `images/`
folder, a malformed line, a repeated id, a label naming an unknown image or
class, an image without a label, a missing or empty image, a class with no
images and fewer than three classes. With `crop`: a missing
`bounding_boxes.txt`, a box line that is malformed (four numbers, width and
height above zero), names an unknown image or repeats one, an image without
a box, and (from the pipeline) a box holding none of its image.
"""

from __future__ import annotations

import math
import os

from metasearch.api import Box, ClassSet, ClassSplits, Dataset
from metasearch.data import image_folders
from metasearch.errors import UsageError
from metasearch.options import Option

FOLDER = "CUB_200_2011"
SPLIT_FRACTIONS = (0.5, 0.25, 0.25)
_HOLDS = "CUB_200_2011 holding classes.txt, images.txt, image_class_labels.txt and images/"


def find_root(data_dir: str | None) -> str:
    """The folder holding `classes.txt`: `--data_dir` itself or its `CUB_200_2011/`."""
    folder = image_folders.data_dir(data_dir, "cub", _HOLDS)
    nested = os.path.join(folder, FOLDER)
    if not os.path.isfile(os.path.join(folder, "classes.txt")) and os.path.isdir(nested):
        return nested
    return folder


def _ids(path: str, what: str) -> dict[int, tuple[int, str]]:
    """`id -> (line, rest of the line)` of a two-field index file; ids must be unique integers."""
    entries: dict[int, tuple[int, str]] = {}
    for line, (key, value) in image_folders.text_rows(path, 2):
        try:
            number = int(key)
        except ValueError:
            raise UsageError(f"{path} line {line}: {what} id {key!r} is not an integer") from None
        if number in entries:
            raise UsageError(
                f"{path} line {line}: {what} id {number} repeats line {entries[number][0]}"
            )
        entries[number] = (line, value.strip())
    if not entries:
        raise UsageError(f"{path}: empty file")
    return entries


def read_boxes(path: str, images_path: str, image_ids) -> dict[int, Box]:
    """`image_id -> (x, y, width, height)` from `bounding_boxes.txt`, one box per image."""
    boxes: dict[int, Box] = {}
    lines: dict[int, int] = {}
    for line, fields in image_folders.text_rows(path, 5):
        try:
            image_id = int(fields[0])
            box = tuple(float(value) for value in fields[1:])
        except ValueError:
            raise UsageError(
                f"{path} line {line}: expected 'image_id x y width height' (an integer and "
                f"four numbers), found {' '.join(fields)!r}"
            ) from None
        if image_id in lines:
            raise UsageError(
                f"{path} line {line}: image id {image_id} repeats line {lines[image_id]}"
            )
        if image_id not in image_ids:
            raise UsageError(f"{path} line {line}: image {image_id} is not in {images_path}")
        if not all(map(math.isfinite, box)) or box[2] <= 0 or box[3] <= 0:
            raise UsageError(
                f"{path} line {line}: the box of image {image_id} needs a width and height "
                f"above zero, found {' '.join(fields[1:])!r}"
            )
        boxes[image_id], lines[image_id] = box, line
    return boxes


def split_class_ids(ids: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The class ids of meta-train, meta-validation and meta-test (see the module docstring)."""
    ordered = sorted(ids)
    train, val, _ = image_folders.split_counts(len(ordered), SPLIT_FRACTIONS, "cub")
    return ordered[:train], ordered[train : train + val], ordered[train + val :]


class CUB(Dataset):
    """CUB-200-2011 from `--data_dir`; class split 1-100 / 101-150 / 151-200 by class id.

    Option `crop`: crop every image to its box of `bounding_boxes.txt`.
    Colour (3 channels).
    """

    channels = 3
    OPTIONS = (
        Option(
            "crop",
            bool,
            False,
            "crop each image to its bounding box (bounding_boxes.txt) before resizing",
        ),
    )

    def load(self) -> ClassSplits:
        root = find_root(self.options.data_dir)
        classes_path = image_folders.required_file(root, "classes.txt", "cub")
        images_path = image_folders.required_file(root, "images.txt", "cub")
        labels_path = image_folders.required_file(root, "image_class_labels.txt", "cub")
        images = image_folders.required_folder(root, "images", "cub")
        classes = _ids(classes_path, "class")
        image_rows = _ids(images_path, "image")
        labels = _ids(labels_path, "image")
        boxes_path = None
        if self.options.options.get("crop", False):
            boxes_path = os.path.join(root, "bounding_boxes.txt")
            if not os.path.isfile(boxes_path):
                raise UsageError(
                    f"--cub_crop: {boxes_path} not found (cropping to the bounding boxes needs it)"
                )
            boxes = read_boxes(boxes_path, images_path, image_rows)
        files: dict[int, list[str]] = {class_id: [] for class_id in classes}
        class_boxes: dict[int, list[Box]] = {class_id: [] for class_id in classes}
        for image_id, (line, relative) in image_rows.items():
            if image_id not in labels:
                raise UsageError(
                    f"{images_path} line {line}: image {image_id} has no class in {labels_path}"
                )
            label_line, class_text = labels[image_id]
            try:
                class_id = int(class_text)
            except ValueError:
                class_id = None
            if class_id not in classes:
                raise UsageError(
                    f"{labels_path} line {label_line}: class {class_text!r} is not in {classes_path}"
                )
            where = f"{images_path} line {line}"
            files[class_id].append(image_folders.image_file(os.path.join(images, relative), where))
            if boxes_path is not None:
                if image_id not in boxes:
                    raise UsageError(f"{where}: image {image_id} has no box in {boxes_path}")
                class_boxes[class_id].append(boxes[image_id])
        for image_id, (line, _) in labels.items():
            if image_id not in image_rows:
                raise UsageError(
                    f"{labels_path} line {line}: image {image_id} is not in {images_path}"
                )
        for class_id, (line, name) in classes.items():
            if not files[class_id]:
                raise UsageError(
                    f"{classes_path} line {line}: class {class_id} ({name}) has no images in "
                    f"{labels_path}"
                )
        names = {class_id: name for class_id, (_, name) in classes.items()}
        sets = {}
        for split, ids in zip(("train", "val", "test"), split_class_ids(list(classes))):
            sets[split] = ClassSet(
                None,
                [names[i] for i in ids],
                files=[files[i] for i in ids],
                boxes=None if boxes_path is None else [class_boxes[i] for i in ids],
            )
        return ClassSplits(**sets)
