"""`omniglot`: the Omniglot archives exactly as users download them.

Reads `images_background.zip`, `images_evaluation.zip`,
`images_background_small1.zip`, `images_background_small2.zip` (or the
folders they unpack to) from `--data_dir`. Layout inside each:
`<archive>/<Alphabet>/<characterNN>/<imageid>_<drawer>.png`.

A character is identified by `Alphabet/characterNN`; archives overlap (Greek
and Latin are in both small archives), so a character found in several
archives is one class. Which characters form each class set is chosen by
specs (`options['train']`, `['val']`, `['test']`), each a list of items
`ARCHIVE` (all its alphabets) or `ARCHIVE/ALPHABET`; an item starting with
`-` removes those characters again (`images_background,-images_background/Latin`).
With no spec at all and `images_evaluation` present, it is the meta-test set
(the standard protocol) and the rest is split by alphabet. Splits left unspecified
share the characters no spec claimed, split by alphabet.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from metasearch.api import ClassSet, ClassSplits, Dataset
from metasearch.data.preprocess import resize_numpy
from metasearch.errors import UsageError
from metasearch.options import Option

ARCHIVES = (
    "images_background",
    "images_evaluation",
    "images_background_small1",
    "images_background_small2",
)
SPLITS = ("train", "val", "test")
# Share of alphabets for each split left unspecified (renormalised over those).
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
ROTATION_CHOICES = ("none", "train", "all")


@dataclasses.dataclass
class _Character:
    alphabet: str
    character: str
    archive: str
    files: list[tuple[str, str]]  # (container path, member or file path)

    @property
    def key(self) -> str:
        return f"{self.alphabet}/{self.character}"


def _decode_png(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            grey = np.asarray(image.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"{where}: not a readable image ({error})") from None
    return grey


def _is_hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _scan_zip(path: str, archive: str) -> list[_Character]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            # A truncated download keeps its central directory only if cut at
            # the very end; test the members too so corruption is named here.
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UsageError(f"{path}: not a readable zip archive ({error})") from None
    except Exception as error:  # zlib errors and friends from testzip
        raise UsageError(f"{path}: corrupt zip archive ({error})") from None
    if bad is not None:
        raise UsageError(f"{path}: corrupt member {bad!r} (truncated or damaged download?)")
    characters: dict[tuple[str, str], _Character] = {}
    for name in names:
        if name.endswith("/") or _is_hidden(name):
            continue
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != archive:
            continue
        _, alphabet, character, _ = parts
        entry = characters.setdefault(
            (alphabet, character), _Character(alphabet, character, archive, [])
        )
        entry.files.append((path, name))
    return list(characters.values())


def _scan_folder(path: str, archive: str) -> list[_Character]:
    characters = []
    for alphabet in sorted(os.listdir(path)):
        alphabet_dir = os.path.join(path, alphabet)
        if alphabet.startswith(".") or not os.path.isdir(alphabet_dir):
            continue
        for character in sorted(os.listdir(alphabet_dir)):
            character_dir = os.path.join(alphabet_dir, character)
            if character.startswith(".") or not os.path.isdir(character_dir):
                continue
            files = [
                ("", os.path.join(character_dir, f))
                for f in sorted(os.listdir(character_dir))
                if not f.startswith(".")
            ]
            characters.append(_Character(alphabet, character, archive, files))
    return characters


def find_archives(data_dir: str) -> dict[str, list[_Character]]:
    """Scans `data_dir` for the Omniglot archives; returns characters per archive."""
    if not data_dir:
        raise UsageError(
            "--data_dir: the omniglot data set needs --data_dir (the folder with its zips)"
        )
    if not os.path.isdir(data_dir):
        raise UsageError(f"--data_dir: {data_dir} is not a directory")
    found = {}
    for archive in ARCHIVES:
        folder = os.path.join(data_dir, archive)
        # An unpacked zip nests its own folder: <dir>/<archive>/<archive>/...
        if os.path.isdir(os.path.join(folder, archive)):
            folder = os.path.join(folder, archive)
        if os.path.isdir(folder):
            found[archive] = _scan_folder(folder, archive)
        elif os.path.isfile(folder + ".zip"):
            found[archive] = _scan_zip(folder + ".zip", archive)
    if not found:
        raise UsageError(
            f"--data_dir: no Omniglot archive in {data_dir} (expected one of "
            + ", ".join(a + ".zip" for a in ARCHIVES)
            + " or its unpacked folder)"
        )
    return found


def _select(
    archives: dict[str, list[_Character]], spec: Sequence[str], flag: str
) -> list[_Character]:
    chosen: list[_Character] = []
    excluded: set[str] = set()
    for item in spec:
        item = item.strip()
        exclude = item.startswith("-")
        archive, _, alphabet = item.lstrip("-").partition("/")
        if archive not in archives:
            known = ", ".join(sorted(archives))
            raise UsageError(
                f"{flag}: archive {archive!r} not found in --data_dir (found: {known})"
            )
        characters = archives[archive]
        if alphabet:
            characters = [c for c in characters if c.alphabet == alphabet]
            if not characters:
                known = ", ".join(sorted({c.alphabet for c in archives[archive]}))
                raise UsageError(f"{flag}: no alphabet {alphabet!r} in {archive} (has: {known})")
        if exclude:
            excluded.update(c.key for c in characters)
        else:
            chosen.extend(characters)
    return [c for c in chosen if c.key not in excluded]


def _dedupe(characters: Iterable[_Character]) -> list[_Character]:
    seen: dict[str, _Character] = {}
    for character in characters:
        seen.setdefault(character.key, character)
    return [seen[key] for key in sorted(seen)]


def assign_splits(
    archives: dict[str, list[_Character]], specs: dict[str, Sequence[str]], seed: int = 0
) -> dict[str, list[_Character]]:
    """Chooses the characters of each class set from the specs (see module doc)."""
    assigned: dict[str, list[_Character]] = {}
    for split in SPLITS:
        if specs.get(split):
            assigned[split] = _dedupe(_select(archives, specs[split], f"--omniglot_{split}"))
    for a in assigned:
        for b in assigned:
            if a < b:
                shared = {c.key for c in assigned[a]} & {c.key for c in assigned[b]}
                if shared:
                    example = sorted(shared)[0]
                    raise UsageError(
                        f"--omniglot_{a} and --omniglot_{b} share {len(shared)} characters "
                        f"(e.g. {example}); class sets must be disjoint"
                    )
    missing = [s for s in SPLITS if s not in assigned]
    if missing:
        claimed = {c.key for chars in assigned.values() for c in chars}
        pool = _dedupe(c for chars in archives.values() for c in chars if c.key not in claimed)
        alphabets = sorted({c.alphabet for c in pool})
        order = np.random.default_rng(seed).permutation(len(alphabets))
        alphabets = [alphabets[i] for i in order]
        # Evaluation sets get at least one alphabet each; meta-train takes the rest.
        counts = {
            split: max(1, int(round(DEFAULT_FRACTIONS[split] * len(alphabets))))
            for split in missing
            if split != "train"
        }
        if "train" in missing:
            counts["train"] = max(0, len(alphabets) - sum(counts.values()))
        start = 0
        for split in sorted(missing, key=SPLITS.index):
            picked = set(alphabets[start : start + counts[split]])
            assigned[split] = [c for c in pool if c.alphabet in picked]
            start += counts[split]
    for split in SPLITS:
        if not assigned[split]:
            raise UsageError(
                f"--omniglot_{split}: no characters left for the meta-{split} class set; "
                "name its archives or alphabets"
            )
    return assigned


def _load_images(character: _Character, cache: dict[str, zipfile.ZipFile]) -> list[np.ndarray]:
    images = []
    for container, member in character.files:
        if container:
            zf = cache.get(container)
            if zf is None:
                zf = cache[container] = zipfile.ZipFile(container)
            data = zf.read(member)
            where = f"{container}:{member}"
        else:
            with open(member, "rb") as handle:
                data = handle.read()
            where = member
        images.append(_decode_png(data, where))
    return images


def _resize_all(images: list[np.ndarray], image_size: int) -> list[np.ndarray]:
    """Each grey image `[h, w]` resized to `[image_size, image_size, 1]`, whatever its size."""
    resized: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)
    for indices in by_shape.values():
        stacked = np.stack([images[i] for i in indices])[..., None]
        for index, image in zip(indices, resize_numpy(stacked, image_size)):
            resized[index] = image
    return resized


def load_class_set(characters: Sequence[_Character], image_size: int, rotations: bool) -> ClassSet:
    """Decodes and resizes the characters' images; optionally adds rotations.

    Every character keeps all its images (the core leaves out characters with
    too few for an episode, naming them); images of an unusual size are
    resized like the rest. Equal counts give one `[classes, n, h, w, 1]` array.
    """
    cache: dict[str, zipfile.ZipFile] = {}
    try:
        decoded = [_load_images(c, cache) for c in characters]
    finally:
        for zf in cache.values():
            zf.close()
    flat = _resize_all([image for images in decoded for image in images], image_size)
    classes, start = [], 0
    for images in decoded:
        part = flat[start : start + len(images)]
        start += len(images)
        shape = (len(part), image_size, image_size, 1)
        classes.append(np.stack(part).astype(np.float32) if part else np.zeros(shape, np.float32))
    names = [c.key for c in characters]
    if rotations:
        turned = [np.rot90(images, k, axes=(1, 2)) for k in range(1, 4) for images in classes]
        classes = classes + turned
        names = names + [f"{n}@rot{90 * k}" for k in range(1, 4) for n in names]
    if len({len(images) for images in classes}) == 1:
        return ClassSet(np.ascontiguousarray(np.stack(classes), np.float32), names)
    return ClassSet([np.ascontiguousarray(images) for images in classes], names)


def load_characters(
    data_dir: str, spec: Sequence[str], image_size: int, rotations: bool = False
) -> ClassSet:
    """The characters named by one spec (`ARCHIVE[/ALPHABET]` items) as a `ClassSet`."""
    archives = find_archives(data_dir)
    characters = _dedupe(_select(archives, spec, "spec"))
    if not characters:
        raise UsageError(f"spec {list(spec)}: selects no characters")
    return load_class_set(characters, image_size, rotations)


class Omniglot(Dataset):
    """Omniglot from `--data_dir` (zips or unpacked folders).

    Options: `train`, `val`, `test` (lists of `ARCHIVE[/ALPHABET]`) and
    `rotations` (`none`, `train` or `all`: add each character rotated by 90,
    180 and 270 degrees as three more classes of the same class set).
    """

    channels = 1
    TEST_WAYS = (5, 20)
    OPTIONS = (
        Option(
            "train",
            list,
            [],
            "meta-train classes, items ARCHIVE or ARCHIVE/ALPHABET, -ITEM removes. "
            "Unset splits share the unclaimed alphabets.",
        ),
        Option("val", list, [], "meta-validation classes (as --omniglot_train)."),
        Option("test", list, [], "meta-test classes (as --omniglot_train)."),
        Option(
            "rotations",
            str,
            "none",
            "add 90/180/270-degree rotations as new classes, in no, the meta-train, or every "
            "class set.",
            choices=ROTATION_CHOICES,
        ),
    )

    def load(self) -> ClassSplits:
        options = self.options.options
        rotations = options["rotations"]
        if rotations not in ROTATION_CHOICES:
            raise UsageError(
                f"--omniglot_rotations: {rotations!r} is not one of {ROTATION_CHOICES}"
            )
        archives = find_archives(self.options.data_dir)
        specs = {split: list(options.get(split) or []) for split in SPLITS}
        if not any(specs.values()) and "images_evaluation" in archives:
            # The standard protocol: evaluation alphabets are the meta-test set.
            specs["test"] = ["images_evaluation"]
        assigned = assign_splits(archives, specs)
        sets = {}
        for split in SPLITS:
            rotate = rotations == "all" or (rotations == "train" and split == "train")
            sets[split] = load_class_set(assigned[split], self.options.image_size, rotate)
        return ClassSplits(**sets)
