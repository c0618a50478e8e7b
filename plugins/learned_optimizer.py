"""`learned_optimizer`: MAML with an LSTM as its inner-loop optimiser.

The paper: Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford
and de Freitas, "Learning to learn by gradient descent by gradient descent"
(NeurIPS 2016): an optimiser is a small coordinate-wise recurrent network
that maps a parameter's gradient to its update, meta-trained by
backpropagating the optimisee's losses through the unrolled optimisation.
The optimiser itself is the core's `metasearch.inner_optimizers.LSTMOptimizer`
(see there for the rule, the gradient preprocessing and the output scale);
`metasearch.learned_optimizers` meta-trains one on its own and exports it as
a `keras.optimizers.Optimizer`.

`LearnedOptimizerLearner` (`learned_optimizer`) is the MAML learner
(`metasearch.gradient_learner.GradientMetaLearner`) with the LSTM always on
as its inner optimiser, meta-trained jointly with the initialisation by the
core's outer loop. Departures from the paper: the optimisee is the few-shot
learner's network on one task's support set, the horizon is the few inner
steps of MAML rather than 100, and the meta-objective is the query loss after
adaptation (MAML's) rather than the sum of the training losses along the
way; the second-order terms follow `first_order`.

Hyperparameters (`learned_optimizer/...`):
* `inner_steps`, `eval_inner_steps`: LSTM steps when meta-training and when
  adapting to a new task (default 1 and 3: the LSTM was meta-trained for
  `inner_steps` steps; more at test time extrapolate its trajectory).
* `optimizer_hidden_units`: the LSTM's width (default 20, the paper's).
* `output_scale`: the factor on the LSTM's output, i.e. the largest update
  per coordinate at initialisation (default 0.01; the paper used 0.1 on
  small MLPs, too large for conv backbones at MAML's initialisation).
* `batch_norm`, `head_init`, `first_order`: as for `maml`.
"""

from __future__ import annotations

from typing import Any

import keras_tuner

from metasearch.gradient_learner import GradientMetaLearner
from metasearch.inner_optimizers import DEFAULT_HIDDEN_UNITS

HIDDEN_UNITS = (10, 20, 40)
OUTPUT_SCALES = (0.003, 0.01, 0.03, 0.1)


class LearnedOptimizerLearner(GradientMetaLearner):
    """MAML whose inner loop is a meta-learned coordinate-wise LSTM optimiser."""

    NAME = "learned_optimizer"
    INNER_OPTIMIZER = "learned"
    # Its LSTM runs on every coordinate of the backbone: large ops, split across the
    # cores (8.4 against 7.2 tasks/s one thread per op; `metasearch.threads`).
    STEP_OPS = "large"

    @classmethod
    def sample_update_rule(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The LSTM's width and output scale, in place of a step size."""
        return {
            "optimizer_hidden_units": hp.Choice(
                f"{cls.NAME}/optimizer_hidden_units",
                list(HIDDEN_UNITS),
                default=DEFAULT_HIDDEN_UNITS,
            ),
            "output_scale": hp.Choice(
                f"{cls.NAME}/output_scale", list(OUTPUT_SCALES), default=0.01
            ),
        }
