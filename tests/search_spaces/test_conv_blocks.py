import keras
import keras_tuner
import numpy as np

from metasearch.layers import FusedBatchNormalization
from metasearch.search_spaces.conv_blocks import ConvBlocks


def _convs(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_sampled_blocks_have_no_conv_bias_and_the_fused_batch_norm():
    space = ConvBlocks()
    config = space.sample_config(keras_tuner.HyperParameters())
    assert config == {"depth": 4, "filters": 64, "growth": 1.0, "conv_bias": False}
    model = space.build(config, (28, 28, 1))
    assert [conv.use_bias for conv in _convs(model)] == [False] * 4
    norms = [layer for layer in model.layers if "bn" in layer.name]
    assert len(norms) == 4 and all(isinstance(n, FusedBatchNormalization) for n in norms)
    # conv4-64 at 28x28: 3x3 kernels, batch norm's four vectors per block.
    kernels = 9 * 1 * 64 + 3 * 9 * 64 * 64
    assert model.count_params() == kernels + 4 * 4 * 64
    assert space.describe(config) == "conv4-64"


def test_a_trial_config_of_an_earlier_version_keeps_its_conv_bias_so_its_weights_load():
    space = ConvBlocks()
    earlier = {"depth": 4, "filters": 64, "growth": 1.0}  # no "conv_bias": recorded before it
    old = space.build(earlier, (28, 28, 1))
    assert [conv.use_bias for conv in _convs(old)] == [True] * 4
    new = space.build({**earlier, "conv_bias": False}, (28, 28, 1))
    assert old.count_params() - new.count_params() == 4 * 64
    weights = [np.full(w.shape, 0.5, np.float32) for w in old.weights]
    again = space.build(earlier, (28, 28, 1))
    again.set_weights(weights)
    assert all(np.all(w.numpy() == 0.5) for w in again.weights)
