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
import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import tensorflow as tf

from metasearch import plots
from metasearch.api import REGRESSION, MetaLearner, SearchSpace
from metasearch.data.preprocess import normalize, resize
from metasearch.errors import UsageError
from metasearch.report import versions
from metasearch.rundir import FinishedRun
from metasearch.tasks import kind_of

METADATA_FILE = "metasearch.json"


class FewShotModule(tf.Module):
    """The exported learner: preprocessing, adaptation and prediction in one graph."""

    def __init__(
        self,
        learner: MetaLearner,
        image_size: int,
        channels: int,
        normalization: tuple[float, float],
        metadata_path: str,
    ):
        super().__init__(name="metasearch_learner")
        self.learner = learner
        # Listing the variables makes the SavedModel track every one of them,
        # whatever the Keras version does with nested layers.
        self.learner_variables = list(learner.variables)
        self.image_size = int(image_size)
        self.mean, self.std = (float(v) for v in normalization)
        self.metadata_asset = tf.saved_model.Asset(metadata_path)
        with open(metadata_path, encoding="utf-8") as handle:
            self._metadata_json = handle.read()
        self.metadata = tf.function(self._metadata, input_signature=[])
        kind = kind_of(learner.task)
        self.main_signature = kind.main_signature
        self.regression = kind.name == REGRESSION
        # Generative learners make images (see `sample`); no regression learner does.
        self.generative = bool(learner.GENERATIVE) and not self.regression
        if self.regression:
            shape = list(learner.task.image_shape)
            targets = learner.task.target_dim
            self.adapt_and_predict = tf.function(
                self._adapt_and_predict,
                input_signature=[
                    tf.TensorSpec([None, *shape], tf.float32, name="support_x"),
                    tf.TensorSpec([None, targets], tf.float32, name="support_y"),
                    tf.TensorSpec([None, *shape], tf.float32, name="query_x"),
                ],
            )
            self.embed = tf.function(
                self._embed_inputs, input_signature=[tf.TensorSpec([None, *shape], tf.float32)]
            )
            return
        image_spec = tf.TensorSpec([None, None, None, channels], tf.float32)
        self.few_shot = tf.function(
            self._few_shot,
            input_signature=[
                tf.TensorSpec([None, None, None, channels], tf.float32, name="support_images"),
                tf.TensorSpec([None], tf.int32, name="support_labels"),
                tf.TensorSpec([None, None, None, channels], tf.float32, name="query_images"),
            ],
        )
        self.embed = tf.function(self._embed, input_signature=[image_spec])
        if self.generative:
            self.sample = tf.function(
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

    def _adapt_and_predict(self, support_x, support_y, query_x):
        state = self.learner.adapt(support_x, support_y, 1, training=False)
        return {"predictions": self.learner.predict(state, query_x, training=False)}

    def _embed_inputs(self, x):
        return {"embeddings": self.learner.embed(x, training=False)}

    def _metadata(self):
        return tf.constant(self._metadata_json)


def replace_directory(source: str, target: str) -> None:
    """Moves the finished `source` folder to `target`, replacing any old one."""
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{uuid.uuid4().hex[:8]}"
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
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        yield os.path.join(staging, "model")
        replace_directory(os.path.join(staging, "model"), export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
) -> str:
    """Writes the learner as a SavedModel at `export_dir` (atomically); returns the path."""
    export_dir = os.path.abspath(export_dir)
    with staged_export(export_dir) as saved:
        # The asset file must exist before the module that tracks it is saved.
        metadata_path = os.path.join(os.path.dirname(saved), METADATA_FILE)
        _write_json(metadata_path, metadata)
        module = FewShotModule(learner, image_size, channels, normalization, metadata_path)
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
            self.functions[name] = tf.function(_cell_caller(cell, specs), input_signature=specs)
        self.genotype = tf.function(lambda: tf.constant(self._genotype_json), input_signature=[])
        self.metadata = tf.function(lambda: tf.constant(self._metadata_json), input_signature=[])


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
) -> str:
    """Rebuilds a finished trial from its output directory and exports it; returns the path.

    `what="learner"` writes the few-shot learner SavedModel; `what="cell"` the
    search space's cells (one signature each) with the weights they were
    trained with, the genotype JSON and a picture of each cell.
    """
    if what not in EXPORT_KINDS:
        raise UsageError(f"--what: unknown {what!r}; known: {', '.join(EXPORT_KINDS)}")
    return export_kinds(output_dir, trial_id, (what,), export_dir)[what]


def export_kinds(
    output_dir: str,
    trial_id: str,
    kinds: tuple[str, ...],
    export_dir: str | None = None,
) -> dict[str, str]:
    """Exports each of `kinds` of one trial, rebuilding its learner once; returns the paths.

    `export_dir` (for a single kind) replaces the default `RUN/export/{best,trial_ID}_KIND`.
    """
    run = FinishedRun(output_dir)
    config, data, components = run.config, run.data, run.components
    chosen = run.trial(trial_id)
    if "cell" in kinds and not components.space.cell_graphs(chosen["architecture_config"]):
        raise UsageError(
            f"--what=cell: search space {config['search_space']} has no cells; "
            "export the learner (--what=learner)"
        )
    learner, task = run.rebuild(chosen)
    metadata = {
        "format": 1,
        "trial_id": chosen["trial_id"],
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
            "eval_k_shot": config["k_shot"],
            "parameters": chosen.get("parameters"),
            "flops": chosen.get("flops"),
        },
        "versions": versions(),
    }
    name = "best" if trial_id == "best" else f"trial_{chosen['trial_id']}"
    paths = {}
    for what in kinds:
        target = export_dir or run.dir.export_path(f"{name}_{what}")
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
