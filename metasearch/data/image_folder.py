"""`image_folder`: a folder of class folders of images, as users keep their own data.

Two layouts under `--data_dir`:

* `ROOT/CLASS/IMAGE` (one folder per class): the class sets are chosen by
  class-name list files (`--image_folder_train_classes` etc., one class name a
  line, `#` comments), or else split deterministically by
  `--image_folder_split` ratios (default 0.6,0.2,0.2) of the sorted class
  names shuffled with a fixed seed, so the split never depends on `--seed`;
* `ROOT/train/CLASS/IMAGE`, `ROOT/val/...`, `ROOT/test/...`: the folders are
  the class sets.

Images: `.png`, `.jpg`, `.jpeg`, `.bmp`, `.gif`, `.webp` (any case), any size,
grey or colour (converted to `--image_folder_channels`), any number per class.
Hidden files and other extensions are ignored. A class folder with no image
is refused naming it; a file that is empty or does not decode is named by the
loader or the pipeline.
"""

from __future__ import annotations

import os

import numpy as np

from metasearch.api import ClassSet, ClassSplits, Dataset
from metasearch.data.image_folders import class_sets, data_dir, image_file, split_counts
from metasearch.data.pipeline import IMAGE_EXTENSIONS
from metasearch.errors import UsageError
from metasearch.options import Option

SPLITS = ("train", "val", "test")
# The fixed seed of the ratio split: the same folder always splits the same way.
SPLIT_SEED = 20240611


def _listing(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def _class_folders(root: str) -> dict[str, str]:
    """Class name -> folder, for every subfolder of `root`."""
    return {
        name: os.path.join(root, name)
        for name in _listing(root)
        if os.path.isdir(os.path.join(root, name))
    }


def _images(folder: str) -> list[str]:
    """The image files of one class folder; none is refused naming the folder."""
    files = [
        image_file(os.path.join(folder, name), f"class folder {folder}")
        for name in _listing(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name))
    ]
    if not files:
        raise UsageError(
            f"{folder}: an empty class folder (no {', '.join(IMAGE_EXTENSIONS)} image in it)"
        )
    return files


def _class_list(path: str, flag: str, known: dict[str, str]) -> list[str]:
    """The class names a list file gives, each checked to be a class folder."""
    if not os.path.isfile(path):
        raise UsageError(f"{flag}: no such file {path}")
    names = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if name not in known:
                raise UsageError(
                    f"{path} line {number}: unknown class {name!r} (no folder of that name in "
                    f"--data_dir)"
                )
            names.append(name)
    if not names:
        raise UsageError(f"{flag}: {path} names no class")
    return names


class ImageFolder(Dataset):
    """Classes of images from folders (see the module docstring for the layouts)."""

    channels = 3
    OPTIONS = (
        Option("channels", int, 3, "channels images are converted to (1 grey, 3 colour)"),
        Option(
            "split",
            list,
            [0.6, 0.2, 0.2],
            "ratios of classes for meta-train, meta-validation and meta-test (one-folder layout)",
            item_type=float,
            lower_bound=0.0,
        ),
        Option("train_classes", str, None, "file listing the meta-train class names"),
        Option("val_classes", str, None, "file listing the meta-validation class names"),
        Option("test_classes", str, None, "file listing the meta-test class names"),
    )

    def __init__(self, options):
        super().__init__(options)
        self.channels = self.options.options["channels"]
        if self.channels not in (1, 3):
            raise UsageError(f"--image_folder_channels={self.channels}: must be 1 or 3")

    def load(self) -> ClassSplits:
        root = data_dir(self.options.data_dir, "image_folder", "of class folders")
        settings = self.options.options
        folders = _class_folders(root)
        if all(split in folders for split in SPLITS):
            sets = []
            for split in SPLITS:
                classes = _class_folders(folders[split])
                if not classes:
                    raise UsageError(f"{folders[split]}: no class folder in it")
                names = list(classes)
                sets.append(ClassSet(None, names, files=[_images(classes[n]) for n in names]))
            return ClassSplits(*sets)
        if not folders:
            raise UsageError(f"--data_dir: {root} holds no class folder")
        lists = {split: settings[f"{split}_classes"] for split in SPLITS}
        if any(lists.values()):
            return self._from_lists(folders, lists)
        names = sorted(folders)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(names))
        names = [names[i] for i in order]
        if len(settings["split"]) != 3 or sum(settings["split"]) <= 0:
            raise UsageError("--image_folder_split: needs three ratios, e.g. 0.6,0.2,0.2")
        counts = split_counts(len(names), settings["split"], f"--data_dir={root}")
        files = [_images(folders[name]) for name in names]
        return ClassSplits(*class_sets(names, files, counts))

    def _from_lists(self, folders: dict[str, str], lists: dict[str, str | None]) -> ClassSplits:
        missing = [split for split, path in lists.items() if not path]
        if missing:
            raise UsageError(
                f"--image_folder_{missing[0]}_classes: needed with the other class lists"
            )
        chosen = {
            split: _class_list(path, f"--image_folder_{split}_classes", folders)
            for split, path in lists.items()
        }
        seen: dict[str, str] = {}
        for split, names in chosen.items():
            for name in names:
                if seen.setdefault(name, split) != split:
                    raise UsageError(
                        f"--image_folder_{split}_classes: class {name!r} is also in the "
                        f"meta-{seen[name]} list; class sets must be disjoint"
                    )
        return ClassSplits(
            *(
                ClassSet(None, names, files=[_images(folders[n]) for n in names])
                for names in chosen.values()
            )
        )
