"""`conv_blocks`: the baseline backbone space of stacked conv blocks.

Each block is 3x3 conv (without a bias: batch norm follows), batch norm, ReLU
and 2x2 max pooling (pooling stops once the feature map is 1x1); features are
flattened. The pooling runs before the ReLU: the two commute (ReLU is
monotonic), so outputs and gradients are the same, and the ReLU and its
gradient then run on a quarter of the values. On CPU that made a conv4-64
training step 5-8% faster in bfloat16 (where TensorFlow's ReLU gradient has
no oneDNN kernel) and up to 5% in float32. With depth 4 and 64
filters throughout this is the classic "conv4-64" of Prototypical and
Matching networks and MAML. The search samples the depth, the first block's
width and how widths grow from block to block.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner

from metasearch.api import Config, SearchSpace
from metasearch.layers import FusedBatchNormalization, MaxPooling2D

DEPTHS = (3, 4, 5)
FILTERS = (32, 64, 96, 128)
GROWTHS = (1.0, 1.5, 2.0)
MAX_FILTERS = 256


def block_widths(config: Config) -> list[int]:
    """Filters of each block."""
    return [
        min(MAX_FILTERS, int(round(config["filters"] * config["growth"] ** i)))
        for i in range(config["depth"])
    ]


class ConvBlocks(SearchSpace):
    """Stacks of conv-BN-ReLU-pool blocks (depth, widths; pooled before the ReLU)."""

    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        return {
            "depth": hp.Choice("conv_blocks/depth", list(DEPTHS), default=4),
            "filters": hp.Choice("conv_blocks/filters", list(FILTERS), default=64),
            "growth": hp.Choice("conv_blocks/growth", list(GROWTHS), default=1.0),
            # Not searched. Batch norm cancels a bias before it, and TensorFlow's bias
            # gradient cost a sixth of a ProtoNet step on CPU. Configs without the key
            # (trials of earlier versions) keep the bias, so their weights still load.
            "conv_bias": False,
        }

    def build(self, config: Config, input_shape: tuple[int, int, int]) -> keras.Model:
        inputs = keras.Input(input_shape)
        x = inputs
        size = min(input_shape[0], input_shape[1])
        bias = bool(config.get("conv_bias", True))
        for index, width in enumerate(block_widths(config)):
            x = keras.layers.Conv2D(
                width, 3, padding="same", use_bias=bias, name=f"block{index}_conv"
            )(x)
            # Momentum 0.9: a trial sees only hundreds of episodes, and the
            # running statistics must have settled by evaluation.
            x = FusedBatchNormalization(momentum=0.9, name=f"block{index}_bn")(x)
            if size >= 2:
                x = MaxPooling2D(2, name=f"block{index}_pool")(x)
                size //= 2
            x = keras.layers.ReLU(name=f"block{index}_relu")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        return keras.Model(inputs, x, name="conv_blocks")

    def describe(self, config: Config) -> str:
        widths = block_widths(config)
        if len(set(widths)) == 1:
            return f"conv{config['depth']}-{widths[0]}"
        return f"conv{config['depth']}-" + "/".join(str(w) for w in widths)
