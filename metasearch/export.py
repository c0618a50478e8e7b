"""SavedModel export of a trained few-shot learner.

The SavedModel needs nothing but TensorFlow to load. Signatures:

* `few_shot(support_images, support_labels, query_images) -> {"logits": [q, c]}`
* `embed(images) -> {"embeddings": [n, d]}`

Images are float32 `[n, h, w, channels]` in [0, 1] exactly as decoded from
the data set's files, of any height and width; resizing and normalisation
happen in the graph. Labels are int32 in `0..C-1`; C is `max(label) + 1`.
The metadata (architecture, plugin, data set, image size, metrics, versions)
is the asset `assets/metasearch.json`, also returned by the `metadata`
function as a JSON string.

Exports are written to a temporary folder beside the target and renamed
into place, so a crash never leaves half an export behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import tensorflow as tf

from metasearch.api import MetaLearner
from metasearch.data.preprocess import normalize, resize

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
        self.metadata = tf.function(self._metadata, input_signature=[])

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

    def _embed(self, images):
        return {"embeddings": self.learner.embed(self._preprocess(images), training=False)}

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
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        metadata_path = os.path.join(staging, METADATA_FILE)
        with open(metadata_path, "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
        module = FewShotModule(learner, image_size, channels, normalization, metadata_path)
        saved = os.path.join(staging, "model")
        tf.saved_model.save(
            module,
            saved,
            signatures={
                "few_shot": module.few_shot.get_concrete_function(),
                "embed": module.embed.get_concrete_function(),
            },
        )
        replace_directory(saved, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir
