"""The run folder's file primitives: atomic writes, JSON, weights and checkpoints by name.

Everything metasearch writes goes through `write_atomic` (a flushed
temporary file and a rename), so a kill or a full disk never leaves half a
file; a failed write raises `StorageError` naming the path and the free
space. Weights are saved and loaded by variable name (`save_weights`,
`load_weights`), a trainer's whole state as one checkpoint file
(`save_checkpoint`). `metasearch.rundir` builds the run folder on these; the
trainer uses the checkpoint functions directly, below the run folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from metasearch.errors import DamagedFileError, StorageError, UsageError


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def json_text(value: Any) -> str:
    """`value` as the run folder's JSON: indented, sorted keys, numpy scalars as numbers."""
    return json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n"


# The prefix of the temporary files and folders of writes in progress (debris once killed).
TEMPORARY_MARK = ".tmp-"
# Files get the permissions `open` would give them (mkstemp's are owner-only).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def free_space(path: str) -> str:
    """The free space of the file system holding `path` (or its nearest existing parent), in words."""
    folder = os.path.abspath(path)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1024
    return ""  # pragma: no cover


def storage_error(path: str, error: OSError) -> StorageError:
    """The one-line `StorageError` of a failed write to `path`: the reason and the free space."""
    reason = error.strerror or str(error) or type(error).__name__
    return StorageError(
        f"cannot write {path}: {reason} ({free_space(path)} on its file system); nothing was "
        "half-written: free space (or fix the device) and rerun the same command to resume",
        error.errno,
    )


def _write_bytes(stream, data: bytes) -> None:
    # The one place bytes reach a file of the run (tests patch it to fake a full disk).
    stream.write(data)
    stream.flush()
    os.fsync(stream.fileno())


def write_atomic(path: str, data: str | bytes) -> str:
    """Writes `data` to `path` through a flushed temporary file and a rename; returns `path`.

    A failed write (ENOSPC, EIO, ...) removes its temporary file, leaves any
    old `path` as it was and raises `StorageError` naming `path` and the free space.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}{TEMPORARY_MARK}", dir=directory
        )
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~_UMASK)
            _write_bytes(stream, data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None and os.path.exists(temporary):
            with contextlib.suppress(OSError):
                os.remove(temporary)  # first, so the free space said is what is left
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            raise storage_error(path, error) from None
        raise
    return path


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def damage(error: BaseException) -> str:
    """Why a file could not be read back, in one short line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:160] if text else type(error).__name__


def read_json_file(path: str, advice: str = "") -> Any:
    """`read_json`, a file that cannot be parsed raising `DamagedFileError` naming it.

    A missing file raises `FileNotFoundError` as usual.
    """
    try:
        return read_json(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise DamagedFileError(path, damage(error), advice) from None


# --------------------------------------------------------------------------- weights


def _weight_keys(names: list[str]) -> list[str]:
    """Each variable's name, with `#k` after the k-th repeat (Keras may reuse a path)."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        keys.append(name if count == 0 else f"{name}#{count}")
    return keys


def save_weights(variables, path: str) -> None:
    """Saves variables by name (`variable.path`) into one `.npz`, atomically."""
    arrays = {f"w{index:04d}": np.asarray(v.numpy()) for index, v in enumerate(variables)}
    names = np.array([v.path for v in variables])
    buffer = io.BytesIO()
    np.savez(buffer, __names__=names, **arrays)
    write_atomic(path, buffer.getvalue())


def load_weights(variables, path: str) -> None:
    """Assigns the weights saved by `save_weights`, matched by name and shape.

    A name Keras gives twice is matched by its order among those of that
    name. Fails naming the file when a variable is missing from it, is extra
    in it, or has another shape: a learner built differently from the one saved.
    A file that cannot be read (truncated, corrupt) raises `DamagedFileError`.
    """
    try:
        _assign_weights(variables, path)
    except (UsageError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - numpy and zipfile raise many kinds
        raise DamagedFileError(path, damage(error)) from None


def _assign_weights(variables, path: str) -> None:
    with np.load(path) as stored:
        _assign_stored(stored, variables, path)


def _assign_stored(stored, variables, path: str, prefix: str = "") -> None:
    """Assigns `variables` from the arrays of an open `.npz` that were saved under `prefix`."""
    stored_keys = _weight_keys([str(name) for name in stored[f"{prefix}__names__"]])
    by_key = {key: f"{prefix}w{index:04d}" for index, key in enumerate(stored_keys)}
    variables = list(variables)
    wanted = _weight_keys([v.path for v in variables])
    missing = [key for key in wanted if key not in by_key]
    extra = sorted(set(stored_keys) - set(wanted))
    if missing or extra:
        raise UsageError(
            f"{path}: its weights do not match the learner (missing: "
            f"{', '.join(missing[:3]) or 'none'}; unexpected: {', '.join(extra[:3]) or 'none'})"
        )
    for key, variable in zip(wanted, variables):
        value = stored[by_key[key]]
        if tuple(value.shape) != tuple(variable.shape):
            raise UsageError(
                f"{path}: weight {key} has shape {tuple(value.shape)}, the learner's "
                f"{tuple(variable.shape)}"
            )
        variable.assign(value)


def save_checkpoint(
    path: str,
    groups: dict[str, Any],
    state: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Saves groups of variables by name, a JSON `state` and `arrays` into one `.npz`, atomically.

    One file holds everything (e.g. a trainer's learner and optimizer
    variables, the step reached, the loss of each step), so a kill during the
    write leaves the previous checkpoint whole, never half of a new one.
    """
    contents: dict[str, Any] = {"__state__": np.array(json.dumps(state, default=_json_default))}
    for group, variables in groups.items():
        variables = list(variables)
        contents[f"{group}.__names__"] = np.array([v.path for v in variables])
        for index, variable in enumerate(variables):
            contents[f"{group}.w{index:04d}"] = np.asarray(variable.numpy())
    for name, value in (arrays or {}).items():
        contents[f"array.{name}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    write_atomic(path, buffer.getvalue())


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The `state` and `arrays` of a checkpoint (not its variables; see `load_checkpoint`).

    A missing file raises `FileNotFoundError`; one that cannot be read, `DamagedFileError`.
    """
    try:
        with np.load(path) as stored:
            state = json.loads(str(stored["__state__"].item()))
            arrays = {
                key[len("array.") :]: stored[key]
                for key in stored.files
                if key.startswith("array.")
            }
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - numpy, zipfile and json raise many kinds
        raise DamagedFileError(path, damage(error)) from None
    if not isinstance(state, dict):
        raise DamagedFileError(path, "no state in it")
    return state, arrays


def load_checkpoint(path: str, groups: dict[str, Any]) -> None:
    """Assigns each group of variables saved by `save_checkpoint`, matched by name and shape.

    Variables that do not match raise `UsageError`; a file that cannot be read,
    `DamagedFileError` (as `load_weights`).
    """
    try:
        with np.load(path) as stored:
            for group, variables in groups.items():
                _assign_stored(stored, variables, path, prefix=f"{group}.")
    except (UsageError, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - numpy and zipfile raise many kinds
        raise DamagedFileError(path, damage(error)) from None


def remove_file(path: str) -> None:
    """Removes `path` if it is there (e.g. a finished trial's checkpoint), best effort."""
    with contextlib.suppress(OSError):
        os.remove(path)
