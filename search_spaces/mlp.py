"""`mlp`: fully connected backbones, for regression tasks such as `sinusoid`.

Inputs of any shape are flattened, then pass through `depth` dense layers of
`units` units each with the same activation; the features are the last
hidden layer. The default (two hidden layers of 40 ReLUs) is the body of the
sinusoid regression network of MAML (Finn et al. 2017), whose learner adds
the output layer. No batch norm: MAML's regression networks have none.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner

from metasearch.api import Config, SearchSpace

DEPTHS = (1, 2, 3)
UNITS = (40, 64, 128)
ACTIVATIONS = ("relu", "tanh")


class MLP(SearchSpace):
    """Stacks of fully connected layers (depth, width, activation)."""

    def sample_config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        return {
            "depth": hp.Choice("mlp/depth", list(DEPTHS), default=2),
            "units": hp.Choice("mlp/units", list(UNITS), default=40),
            "activation": hp.Choice("mlp/activation", list(ACTIVATIONS), default="relu"),
        }

    def build(self, config: Config, input_shape: tuple[int, ...]) -> keras.Model:
        inputs = keras.Input(tuple(input_shape))
        # Flatten is the identity on `(d,)` inputs and lets image inputs through too.
        x = keras.layers.Flatten(name="flatten")(inputs)
        for index in range(config["depth"]):
            x = keras.layers.Dense(
                config["units"], activation=config["activation"], name=f"dense{index}"
            )(x)
        return keras.Model(inputs, x, name="mlp")

    def describe(self, config: Config) -> str:
        return f"mlp{config['depth']}x{config['units']}-{config['activation']}"
