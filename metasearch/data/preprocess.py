"""Image preprocessing shared by training and the exported SavedModel.

Loaders resize decoded images with `resize` once, up front; the exported
model applies the same `resize` in-graph to raw images of any size, then
`normalize`. Keeping one implementation is what makes an exported model's
outputs equal the in-process ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def resize(images: tf.Tensor, image_size: int) -> tf.Tensor:
    """Resizes float images `[n, h, w, c]` in [0, 1] to `[n, size, size, c]`.

    Area interpolation: thin pen strokes survive downsampling as grey rather
    than vanishing between sample points.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape[1] == image_size and images.shape[2] == image_size:
        return images
    resized = tf.image.resize(images, [image_size, image_size], method="area", antialias=True)
    # Antialiased upsampling can overshoot [0, 1] by rounding; keep the range.
    return tf.clip_by_value(resized, 0.0, 1.0)


def resize_numpy(images: np.ndarray, image_size: int, batch: int = 2048) -> np.ndarray:
    """`resize` over a large numpy array in batches."""
    if images.shape[1] == image_size and images.shape[2] == image_size:
        return images.astype(np.float32, copy=False)
    parts = [
        resize(images[i : i + batch], image_size).numpy() for i in range(0, len(images), batch)
    ]
    return np.concatenate(parts, axis=0)


def normalize(images: tf.Tensor, mean: float, std: float) -> tf.Tensor:
    """Standardises pixel values with the meta-training set's statistics."""
    return (images - mean) / std
