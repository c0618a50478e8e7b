"""The shared kit of data sets read from folders of image files (`mini_imagenet`, `cub`, `meta_album`).

Each of those data sets reads its index files (CSV or text) as users have
them, checks that every image they name exists and is not empty, and
returns `ClassSet(None, names, files=...)`: per class, the image paths, in
any number, size and format. Decoding, conversion to the data set's
channels and resizing are the core's (`metasearch.data.pipeline`), which
also names a file that does not decode.

Every refusal is a `UsageError` of one line naming the flag, the index file
and its line, or the image file.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence

from metasearch.api import ClassSet
from metasearch.errors import UsageError


def data_dir(path: str | None, dataset: str, holds: str) -> str:
    """`--data_dir` checked to be a folder; `holds` says what it should hold."""
    if not path:
        raise UsageError(
            f"--data_dir: the {dataset} data set needs --data_dir (the folder {holds})"
        )
    if not os.path.isdir(path):
        raise UsageError(f"--data_dir: {path} is not a folder (expected the folder {holds})")
    return path


def required_file(folder: str, name: str, dataset: str) -> str:
    """The path of `folder/name`, which must be a file."""
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise UsageError(f"--data_dir: {path} not found (the {dataset} data set needs it)")
    return path


def required_folder(folder: str, name: str, dataset: str) -> str:
    """The path of `folder/name`, which must be a folder."""
    path = os.path.join(folder, name)
    if not os.path.isdir(path):
        raise UsageError(
            f"--data_dir: no folder {path} (the {dataset} data set reads its images there)"
        )
    return path


def image_file(path: str, where: str) -> str:
    """`path` checked to be a non-empty file; `where` names who named it (e.g. `train.csv line 4`)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise UsageError(f"{where}: image {path} not found") from None
    except OSError as error:
        raise UsageError(f"{where}: image {path} cannot be read ({error.strerror})") from None
    if not os.path.isfile(path):
        raise UsageError(f"{where}: image {path} is not a file")
    if size == 0:
        raise UsageError(f"{where}: image {path} is an empty file (0 bytes), not an image")
    return path


def _text(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield from handle
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror})") from None


def csv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """`(line number, fields)` of each non-blank row of a CSV file, the header included."""
    reader = csv.reader(_text(path))
    try:
        for row in reader:
            if any(field.strip() for field in row):
                yield reader.line_num, [field.strip() for field in row]
    except csv.Error as error:
        raise UsageError(f"{path} line {reader.line_num}: not valid CSV ({error})") from None


def text_rows(path: str, fields: int) -> Iterator[tuple[int, list[str]]]:
    """`(line number, fields)` of each non-blank line of a whitespace-separated text file.

    The last field takes the rest of the line (file names may hold spaces); a
    line with fewer than `fields` fields is refused naming the file and line.
    """
    for number, line in enumerate(_text(path), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=fields - 1)
        if len(parts) != fields:
            raise UsageError(
                f"{path} line {number}: expected {fields} fields separated by spaces, "
                f"found {line.strip()!r}"
            )
        yield number, parts


def split_counts(count: int, fractions: Sequence[float], what: str) -> tuple[int, int, int]:
    """How many of `count` classes, in order, go to meta-train, meta-validation and meta-test.

    Meta-validation and meta-test get their fraction of `count` rounded half
    up, at least one class each; meta-train gets the rest, at least one.
    `what` names the classes in the refusal when there are fewer than three.
    """
    total = float(sum(fractions))
    val, test = (max(1, math.floor(count * f / total + 0.5)) for f in fractions[1:])
    train = count - val - test
    if train < 1:
        raise UsageError(
            f"{what}: {count} classes cannot form three class sets (meta-train, "
            "meta-validation, meta-test need one class each at least)"
        )
    return train, val, test


def class_sets(
    names: Sequence[str], files: Sequence[list[str]], counts: Sequence[int]
) -> list[ClassSet]:
    """Consecutive file-based `ClassSet`s of `counts` classes each, in order."""
    sets, start = [], 0
    for count in counts:
        stop = start + count
        sets.append(ClassSet(None, list(names[start:stop]), files=list(files[start:stop])))
        start = stop
    return sets
