"""SavedModel export of a trained few-shot learner.

The SavedModel needs nothing but TensorFlow to load. Signatures of a
classification learner:

* `few_shot(support_images, support_labels, query_images) -> {"logits": [q, c]}`
* `embed(images) -> {"embeddings": [n, d]}`
* generative learners only (e.g. `neural_statistician`):
  `sample(images, num_samples, seed) -> {"images": [num_samples, h, w, c]}`,
  new images of the class the K `images` show, in [0, 1] at the model's image
  size; `seed` is int32 `[2]` (equal seeds give equal images)

and of a regression learner (e.g. on `sinusoid`):

* `adapt_and_predict(support_x, support_y, query_x) -> {"predictions": [q, t]}`
  with inputs `[n, *input_shape]` and targets `[n, t]`, float32
* `embed(x) -> {"embeddings": [n, d]}`

Adaptation runs inside the graph: for gradient-based learners (the MAML
family) the signature runs the inner loop itself.

Images are float32 `[n, h, w, channels]` in [0, 1] exactly as decoded from
the data set's files, of any height and width; resizing and normalisation
happen in the graph. Labels are int32 in `0..C-1`; C is `max(label) + 1`.
The metadata (architecture, plugin, data set, image size, metrics, versions)
is the asset `assets/metasearch.json`, also returned by the `metadata`
function as a JSON string.

Exports are written to a temporary folder beside the target and renamed
into place, so a crash never leaves half an export behind.

`export_trial`/`export_kinds` rebuild a finished trial from its run folder
(`metasearch.rundir.FinishedRun`) and write its learner or its cells.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import tensorflow as tf

from metasearch import graphs, plots
from metasearch.api import REGRESSION, MetaLearner, SearchSpace
from metasearch.data.preprocess import normalize, resize
from metasearch.errors import StorageError, UsageError
from metasearch.report import versions
from metasearch.rundir import (
    DAMAGED,
    OLD_EXPORT_MARK,
    TEMPORARY_MARK,
    FinishedRun,
    RunLock,
    export_identity,
    storage_error,
)
from metasearch.tasks import kind_of

METADATA_FILE = "metasearch.json"
# Every export's files with their SHA-256 (`sha256sum -c metasearch.sha256` checks them).
MANIFEST_FILE = "metasearch.sha256"
# 2: the main signature checks its inputs; exports carry MANIFEST_FILE.
EXPORT_FORMAT = 2


class FewShotModule(tf.Module):
    """The exported learner: preprocessing, adaptation and prediction in one graph."""

    def __init__(
        self,
        learner: MetaLearner,
        image_size: int,
        channels: int,
        normalization: tuple[float, float],
        metadata_path: str,
        check_inputs: bool = True,
    ):
        super().__init__(name="metasearch_learner")
        self.learner = learner
        # The main signature checks its inputs in the graph (see `_checked_images`);
        # False only to measure what the checks cost (benchmarks/adaptation_latency.py).
        self.check_inputs = bool(check_inputs)
        self.channels = channels  # None for a regression learner
        # Listing the variables makes the SavedModel track every one of them,
        # whatever the Keras version does with nested layers.
        self.learner_variables = list(learner.variables)
        self.image_size = int(image_size)
        self.mean, self.std = (float(v) for v in normalization)
        self.metadata_asset = tf.saved_model.Asset(metadata_path)
        with open(metadata_path, encoding="utf-8") as handle:
            self._metadata_json = handle.read()
        self.metadata = graphs.function(self._metadata, input_signature=[])
        kind = kind_of(learner.task)
        self.main_signature = kind.main_signature
        self.regression = kind.name == REGRESSION
        # Generative learners make images (see `sample`); no regression learner does.
        self.generative = bool(learner.GENERATIVE) and not self.regression
        # With the checks the signature takes any shape, so that a wrong rank or channel
        # count reaches them (and fails naming the input) instead of TensorFlow's matcher.
        checked = self.check_inputs
        if self.regression:
            shape = list(learner.task.image_shape)
            targets = learner.task.target_dim
            self.input_shape, self.target_dim = shape, int(targets)
            self.adapt_and_predict = graphs.function(
                self._adapt_and_predict,
                input_signature=[
                    tf.TensorSpec(
                        None if checked else [None, *shape], tf.float32, name="support_x"
                    ),
                    tf.TensorSpec(
                        None if checked else [None, targets], tf.float32, name="support_y"
                    ),
                    tf.TensorSpec(None if checked else [None, *shape], tf.float32, name="query_x"),
                ],
            )
            self.embed = graphs.function(
                self._embed_inputs, input_signature=[tf.TensorSpec([None, *shape], tf.float32)]
            )
            return
        image_spec = tf.TensorSpec([None, None, None, channels], tf.float32)
        images = None if checked else [None, None, None, channels]
        self.few_shot = graphs.function(
            self._few_shot,
            input_signature=[
                tf.TensorSpec(images, tf.float32, name="support_images"),
                tf.TensorSpec(None if checked else [None], tf.int32, name="support_labels"),
                tf.TensorSpec(images, tf.float32, name="query_images"),
            ],
        )
        self.embed = graphs.function(self._embed, input_signature=[image_spec])
        if self.generative:
            self.sample = graphs.function(
                self._sample,
                input_signature=[
                    tf.TensorSpec([None, None, None, channels], tf.float32, name="images"),
                    tf.TensorSpec([], tf.int32, name="num_samples"),
                    tf.TensorSpec([2], tf.int32, name="seed"),
                ],
            )

    def _preprocess(self, images):
        return normalize(resize(images, self.image_size), self.mean, self.std)

    def _few_shot(self, support_images, support_labels, query_images):
        if self.check_inputs:
            support_images, support_labels, query_images = self._checked_few_shot(
                support_images, support_labels, query_images
            )
        num_classes = tf.reduce_max(support_labels) + 1
        state = self.learner.adapt(
            self._preprocess(support_images), support_labels, num_classes, training=False
        )
        return {
            "logits": self.learner.predict(state, self._preprocess(query_images), training=False)
        }

    def _sample(self, images, num_samples, seed):
        generated = self.learner.generate(self._preprocess(images), num_samples, seed)
        return {"images": tf.clip_by_value(generated * self.std + self.mean, 0.0, 1.0)}

    def _embed(self, images):
        return {"embeddings": self.learner.embed(self._preprocess(images), training=False)}

    def _checked_few_shot(self, support_images, support_labels, query_images):
        """The inputs of `few_shot`, checked; a fault raises `InvalidArgumentError` naming the input."""
        c = self.channels
        images = (
            f"images [n, height, width, {c}] float32 ({c} channel(s), as the model was trained on)"
        )
        labels = tf.reshape(support_labels, [-1])
        return _checked_inputs(
            [
                (tf.equal(tf.rank(support_images), 4), f"support_images must be {images}"),
                (_last_dim_is(support_images, c), f"support_images must be {images}"),
                (tf.equal(tf.rank(query_images), 4), f"query_images must be {images}"),
                (_last_dim_is(query_images, c), f"query_images must be {images}"),
                (
                    tf.equal(tf.rank(support_labels), 1),
                    "support_labels must be a vector [n] of int32 class indices",
                ),
                (
                    tf.size(support_labels) > 0,
                    "support_labels is empty: the support set needs at least one image",
                ),
                (
                    tf.equal(_length(support_images), _length(support_labels)),
                    "support_images and support_labels must have the same length (one label per "
                    "support image)",
                ),
                (
                    tf.reduce_all(labels >= 0),
                    "support_labels must be in 0..C-1; got a negative label",
                ),
                (
                    tf.equal(tf.size(tf.unique(labels).y), tf.reduce_max(labels) + 1),
                    "support_labels must be in 0..C-1 for the C classes of the support set, each "
                    "with at least one image (a label above C-1 leaves classes without images)",
                ),
                (
                    _all_finite(support_images),
                    "support_images holds non-finite values (NaN or infinity)",
                ),
                (
                    _all_finite(query_images),
                    "query_images holds non-finite values (NaN or infinity)",
                ),
            ],
            {
                "support_images": (support_images, [None, None, None, c]),
                "support_labels": (labels, [None], support_labels),
                "query_images": (query_images, [None, None, None, c]),
            },
        )

    def _checked_adapt_and_predict(self, support_x, support_y, query_x):
        """The inputs of `adapt_and_predict`, checked as `_checked_few_shot` checks images."""
        shape, targets = list(self.input_shape), self.target_dim
        inputs = f"inputs [n, {', '.join(map(str, shape))}] float32"
        outputs = f"targets [n, {targets}] float32"
        return _checked_inputs(
            [
                (_dims_are(support_x, shape), f"support_x must be {inputs}"),
                (_dims_are(query_x, shape), f"query_x must be {inputs}"),
                (_dims_are(support_y, [targets]), f"support_y must be {outputs}"),
                (
                    _length(support_x) > 0,
                    "support_x is empty: the support set needs at least one point",
                ),
                (
                    tf.equal(_length(support_x), _length(support_y)),
                    "support_x and support_y must have the same length (one target per support "
                    "input)",
                ),
                (_all_finite(support_x), "support_x holds non-finite values (NaN or infinity)"),
                (_all_finite(support_y), "support_y holds non-finite values (NaN or infinity)"),
                (_all_finite(query_x), "query_x holds non-finite values (NaN or infinity)"),
            ],
            {
                "support_x": (support_x, [None, *shape]),
                "support_y": (support_y, [None, targets]),
                "query_x": (query_x, [None, *shape]),
            },
        )

    def _adapt_and_predict(self, support_x, support_y, query_x):
        if self.check_inputs:
            support_x, support_y, query_x = self._checked_adapt_and_predict(
                support_x, support_y, query_x
            )
        state = self.learner.adapt(support_x, support_y, 1, training=False)
        return {"predictions": self.learner.predict(state, query_x, training=False)}

    def _embed_inputs(self, x):
        return {"embeddings": self.learner.embed(x, training=False)}

    def _metadata(self):
        return tf.constant(self._metadata_json)


def _checked_inputs(conditions, inputs):
    """`inputs` (name -> (tensor, static shape[, tensor shown])) once every condition holds.

    One assert raises `InvalidArgumentError` with the message of the first
    condition that fails (in the order given) and the shapes of the inputs.
    Every condition is written so that computing it cannot fail, whatever
    the inputs' shapes. Downstream ops get the inputs through a `tf.cond` on
    the checks (zeros of the right shape otherwise), so no op can fail on a
    bad input before the assert says what is wrong, however TensorFlow
    orders the graph.
    """
    holds = tf.stack([condition for condition, _ in conditions])
    ok = tf.reduce_all(holds)
    first_failing = tf.argmax(tf.cast(tf.logical_not(holds), tf.int32))
    message = tf.gather(tf.constant([message for _, message in conditions]), first_failing)
    shapes = []
    for name, entry in inputs.items():
        shapes += [f"{name} shape:", tf.shape(entry[-1] if len(entry) > 2 else entry[0])]
    check = tf.debugging.Assert(ok, [message, *shapes], summarize=8)
    tensors = [tensor for tensor, *_ in inputs.values()]
    with tf.control_dependencies([check]):
        checked = tf.cond(
            ok,
            lambda: [tf.identity(tensor) for tensor in tensors],
            lambda: [
                tf.zeros([1 if d is None else d for d in shape], tensor.dtype)
                for tensor, shape, *_ in inputs.values()
            ],
        )
    for tensor, (_, shape, *_) in zip(checked, inputs.values()):
        tensor.set_shape(shape)
    return tuple(checked)


def _length(tensor):
    """The first dimension (1 for a scalar): defined for any rank."""
    return tf.reduce_prod(tf.shape(tensor)[:1])


def _last_dim_is(tensor, size: int):
    return tf.reduce_all(tf.equal(tf.shape(tensor)[-1:], size))


def _dims_are(tensor, dims):
    """Whether `tensor` is `[n, *dims]` for some n."""
    trailing = tf.shape(tensor)[1:]
    return tf.logical_and(
        tf.equal(tf.rank(tensor), 1 + len(dims)),
        tf.reduce_all(
            tf.equal(tf.concat([trailing, tf.constant(dims, tf.int32)], 0)[: len(dims)], dims)
        ),
    )


def _all_finite(tensor):
    return tf.reduce_all(tf.math.is_finite(tf.reshape(tensor, [-1])))


def replace_directory(source: str, target: str) -> None:
    """Moves the finished `source` folder to `target`, replacing any old one."""
    old = None
    if os.path.exists(target):
        old = f"{target}{OLD_EXPORT_MARK}{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(source, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_export(export_dir: str):
    """Yields a folder to write an export into; on success it is renamed to `export_dir`.

    The folder sits beside the target, so the rename is atomic and a crash
    never leaves half an export behind.
    """
    parent = os.path.dirname(export_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(
            prefix=f".{os.path.basename(export_dir)}{TEMPORARY_MARK}", dir=parent
        )
    except OSError as error:
        raise storage_error(export_dir, error) from None
    try:
        yield os.path.join(staging, "model")
        write_manifest(os.path.join(staging, "model"))
        replace_directory(os.path.join(staging, "model"), export_dir)
    except StorageError:
        raise
    except OSError as error:
        # A failed write (disk full, I/O error): one line; the old export stays.
        raise storage_error(export_dir, error) from None
    except tf.errors.OpError as error:
        if not _is_io_error(error):
            raise
        raise storage_error(export_dir, OSError(None, error.message.splitlines()[0])) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_io_error(error: tf.errors.OpError) -> bool:
    """Whether TensorFlow failed writing a file (its errors carry no errno)."""
    text = error.message.lower()
    return any(
        words in text
        for words in ("no space left", "input/output error", "disk quota", "read-only file")
    )


def _file_hashes(folder: str) -> dict[str, str]:
    hashes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder)
            if relative == MANIFEST_FILE:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            hashes[relative] = digest.hexdigest()
    return hashes


def write_manifest(folder: str) -> None:
    """Writes `MANIFEST_FILE`: every file of the export and its SHA-256, as `sha256sum` does."""
    lines = [f"{digest}  {name}\n" for name, digest in sorted(_file_hashes(folder).items())]
    with open(os.path.join(folder, MANIFEST_FILE), "w", encoding="utf-8") as handle:
        handle.writelines(lines)


def export_is_current(export_dir: str, trial_id: str) -> bool:
    """Whether `export_dir` holds an intact export of trial `trial_id` by this metasearch.

    Intact: its manifest lists exactly its files, each with its recorded
    SHA-256; current: the same trial, export format and metasearch version.
    """
    manifest = os.path.join(export_dir, MANIFEST_FILE)
    try:
        with open(manifest, encoding="utf-8") as handle:
            recorded = dict(reversed(line.rstrip("\n").split("  ", 1)) for line in handle)
        metadata_path = os.path.join(export_dir, "assets", METADATA_FILE)
        if not os.path.exists(metadata_path):
            metadata_path = os.path.join(export_dir, METADATA_FILE)  # a cell export
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
        return (
            metadata.get("trial_id") == trial_id
            and metadata.get("format") == EXPORT_FORMAT
            and metadata.get("versions", {}).get("metasearch") == versions()["metasearch"]
            and _file_hashes(export_dir) == recorded
        )
    except (OSError, ValueError, AttributeError):
        return False


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write("\n")


def export_learner(
    learner: MetaLearner,
    export_dir: str,
    image_size: int,
    channels: int,
    normalization: tuple[float, float],
    metadata: dict[str, Any],
    check_inputs: bool = True,
) -> str:
    """Writes the learner as a SavedModel at `export_dir` (atomically); returns the path.

    `check_inputs=False` leaves the input checks out of the main signature
    (only to measure what they cost: `benchmarks/adaptation_latency.py`).
    """
    export_dir = os.path.abspath(export_dir)
    with staged_export(export_dir) as saved:
        # The asset file must exist before the module that tracks it is saved.
        metadata_path = os.path.join(os.path.dirname(saved), METADATA_FILE)
        _write_json(metadata_path, metadata)
        module = FewShotModule(
            learner, image_size, channels, normalization, metadata_path, check_inputs
        )
        main = module.main_signature
        signatures = {
            main: getattr(module, main).get_concrete_function(),
            "embed": module.embed.get_concrete_function(),
        }
        if module.generative:
            signatures["sample"] = module.sample.get_concrete_function()
        tf.saved_model.save(module, saved, signatures=signatures)
    return export_dir


class CellModule(tf.Module):
    """The exported cells: one signature per cell, each with the weights it was trained with."""

    def __init__(self, cells: dict[str, Any], genotype_json: str, metadata_json: str):
        super().__init__(name="metasearch_cells")
        self.cells = dict(cells)
        self.cell_variables = [v for cell in cells.values() for v in cell.variables]
        self._genotype_json = genotype_json
        self._metadata_json = metadata_json
        self.functions = {}
        for name, cell in self.cells.items():
            specs = [
                tf.TensorSpec([None, *tensor.shape[1:]], tf.float32, name=input_name)
                for input_name, tensor in zip(cell_input_names(cell), cell.inputs)
            ]
            self.functions[name] = graphs.function(_cell_caller(cell, specs), input_signature=specs)
        self.genotype = graphs.function(
            lambda: tf.constant(self._genotype_json), input_signature=[]
        )
        self.metadata = graphs.function(
            lambda: tf.constant(self._metadata_json), input_signature=[]
        )


def cell_input_names(cell) -> list[str]:
    """Signature argument names of a cell: its Keras input names when usable, else `input_i`."""
    names = []
    for index, tensor in enumerate(cell.inputs):
        name = str(getattr(tensor, "name", "") or "").split(":")[0]
        if not name.isidentifier() or name in names:
            name = f"input_{index}"
        names.append(name)
    return names


def _cell_caller(cell, specs):
    # Positional arguments; the input signature's spec names name them in the SavedModel.
    def call(*tensors):
        inputs = list(tensors) if len(specs) > 1 else tensors[0]
        return {"output": cell(inputs, training=False)}

    return call


def export_cells(
    cells: dict[str, Any],
    export_dir: str,
    genotype: dict[str, Any] | None,
    metadata: dict[str, Any],
    pictures: dict[str, str] | None = None,
) -> str:
    """Writes `cells` as one SavedModel (a signature per cell) at `export_dir`, atomically.

    Beside the SavedModel files: `genotype.json`, `metasearch.json` and any
    `pictures` (name -> path of a PNG to copy in). Returns the path.
    """
    export_dir = os.path.abspath(export_dir)
    with staged_export(export_dir) as saved:
        module = CellModule(
            cells, json.dumps(genotype, sort_keys=True), json.dumps(metadata, sort_keys=True)
        )
        signatures = {
            name: function.get_concrete_function() for name, function in module.functions.items()
        }
        signatures["serving_default"] = next(iter(signatures.values()))
        tf.saved_model.save(module, saved, signatures=signatures)
        _write_json(os.path.join(saved, "genotype.json"), genotype)
        _write_json(os.path.join(saved, METADATA_FILE), metadata)
        for name, picture in (pictures or {}).items():
            shutil.copyfile(picture, os.path.join(saved, name))
    return export_dir


# --------------------------------------------------------------------------- a run's trials

EXPORT_KINDS = ("learner", "cell")


def export_trial(
    output_dir: str,
    trial_id: str = "best",
    export_dir: str | None = None,
    what: str = "learner",
    report=None,
) -> str:
    """Rebuilds a finished trial from its output directory and exports it; returns the path.

    `what="learner"` writes the few-shot learner SavedModel; `what="cell"` the
    search space's cells (one signature each) with the weights they were
    trained with, the genotype JSON and a picture of each cell. `report(line)`
    hears of trials set aside and debris cleared (see `export_kinds`).
    """
    if what not in EXPORT_KINDS:
        raise UsageError(f"--what: unknown {what!r}; known: {', '.join(EXPORT_KINDS)}")
    return export_kinds(output_dir, trial_id, (what,), export_dir, report=report)[what]


def export_kinds(
    output_dir: str,
    trial_id: str,
    kinds: tuple[str, ...],
    export_dir: str | None = None,
    report=None,
) -> dict[str, str]:
    """Exports each of `kinds` of one trial, rebuilding its learner once; returns the paths.

    `export_dir` (for a single kind) replaces the default `RUN/export/{best,trial_ID}_KIND`.
    Writing into the run folder holds its lock (`RunLock`; a search writing it
    refuses the export) and first clears what killed writes left. For `"best"`,
    a trial whose weights cannot be read back is set aside and the next best
    exported; `report(line)` says so (and what was cleared).
    """
    report = report or (lambda line: None)
    run = FinishedRun(output_dir)
    inside = export_dir is None or os.path.realpath(export_dir).startswith(
        os.path.realpath(output_dir) + os.sep
    )
    if not inside:
        return _export_kinds(run, trial_id, kinds, export_dir, report)
    with RunLock(output_dir, "export") as lock:
        if lock.acquired:
            for line in [*lock.notes, *run.dir.clean_debris()]:
                report(line)
        return _export_kinds(run, trial_id, kinds, export_dir, report)


def _export_kinds(run, trial_id, kinds, export_dir, report) -> dict[str, str]:
    config, data, components = run.config, run.data, run.components
    chosen = run.trial(trial_id)
    if "cell" in kinds and not components.space.cell_graphs(chosen["architecture_config"]):
        raise UsageError(
            f"--what=cell: search space {config['search_space']} has no cells; "
            "export the learner (--what=learner)"
        )
    name = "best" if trial_id == "best" else f"trial_{chosen['trial_id']}"
    targets = {what: export_dir or run.dir.export_path(f"{name}_{what}") for what in kinds}
    if all(export_is_current(target, export_identity(chosen)) for target in targets.values()):
        for target in targets.values():
            report(f"{target} already holds trial {chosen['trial_id']}, intact: kept as it is")
        return {what: os.path.abspath(target) for what, target in targets.items()}
    chosen, learner, task = run.rebuild_trial(trial_id, report)
    if name == "best":
        for what, target in targets.items():
            _keep_export_of_set_aside_trial(run, what, target, report)
    metadata = {
        "format": EXPORT_FORMAT,
        "trial_id": export_identity(chosen),
        "source_trial": chosen.get("source_trial", chosen["trial_id"]),
        "plugin": config["plugin"],
        "plugin_config": chosen["plugin_config"],
        "search_space": config["search_space"],
        "space_options": config.get("space_options", {}),
        "architecture": chosen.get("architecture"),
        "architecture_config": chosen["architecture_config"],
        "genotype": components.space.genotype(chosen["architecture_config"]),
        "hyperparameters": chosen["hyperparameters"],
        "dataset": config["dataset"],
        "channels": data["channels"],
        "image_size": config["image_size"],
        "normalization": data["normalization"],
        "meta_training_task": {"n_way": task.n_way, "k_shot": task.k_shot, "n_query": task.n_query},
        "metrics": {
            "val_accuracy": chosen.get("val_accuracy"),
            "val_mse": chosen.get("val_mse"),
            "val_ci95": chosen.get("val_ci95"),
            "eval_n_way": config["n_way"],
            # The final phase's meta-test (classes the search never saw), when there was one.
            "test_accuracy": chosen.get("test_accuracy"),
            "test_mse": chosen.get("test_mse"),
            "test_ci95": chosen.get("test_ci95"),
            "test_episodes": chosen.get("test_episodes"),
            "meta_test": chosen.get("meta_test"),
            "meta_training_episodes": chosen.get("episodes"),
            "eval_k_shot": config["k_shot"],
            "parameters": chosen.get("parameters"),
            "flops": chosen.get("flops"),
        },
        "versions": versions(),
    }
    paths = {}
    for what in kinds:
        target = targets[what]
        if what == "cell":
            paths[what] = _export_trial_cells(
                components.space, chosen["architecture_config"], learner, target, metadata
            )
            continue
        paths[what] = export_learner(
            learner,
            target,
            image_size=config["image_size"],
            channels=data["channels"],
            normalization=tuple(data["normalization"]),
            metadata={**metadata, "signatures": run.kind.signatures(bool(learner.GENERATIVE))},
        )
    return paths


def _keep_export_of_set_aside_trial(run, what: str, target: str, report) -> None:
    """Moves a best export of a trial now set aside (damaged) to `trial_ID_KIND`, not over it.

    The export itself is intact (its files match its manifest); only the
    trial's own files are damaged, so it is kept under its trial's name. A
    final phase's learner counts as its source trial's (a new final phase
    replaces it once that trial is set aside).
    """
    try:
        with open(os.path.join(target, MANIFEST_FILE), encoding="utf-8"):
            pass
        metadata_path = os.path.join(target, "assets", METADATA_FILE)
        if not os.path.exists(metadata_path):
            metadata_path = os.path.join(target, METADATA_FILE)
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
        identity = str(metadata.get("trial_id"))
        held = str(metadata.get("source_trial", identity))
    except (OSError, ValueError, AttributeError):
        return
    set_aside = {r["trial_id"] for r in run.results() if r["status"] == DAMAGED}
    keep = run.dir.export_path(f"trial_{held}_{what}")
    if held in set_aside and export_is_current(target, identity) and not os.path.exists(keep):
        os.rename(target, keep)
        report(f"the best export held trial {held}, which is set aside: kept it as {keep}")


def _export_trial_cells(space: SearchSpace, architecture, learner, export_dir, metadata) -> str:
    cells = space.cells(architecture, learner.backbone)
    graphs = space.cell_graphs(architecture)
    metadata = dict(metadata)
    metadata["signatures"] = {
        name: f"{name}({', '.join(cell_input_names(cell))}) -> {{'output': cell output}}; "
        "float32 feature maps of the shapes the cell was trained on, any batch size"
        for name, cell in cells.items()
    }
    with tempfile.TemporaryDirectory() as scratch:
        pictures = {}
        for graph in graphs:
            picture = os.path.join(scratch, f"{graph.name}.png")
            plots.draw_cell(graph, picture, title=f"{metadata['architecture']}: {graph.name} cell")
            pictures[f"{graph.name}.png"] = picture
        return export_cells(cells, export_dir, metadata["genotype"], metadata, pictures)
