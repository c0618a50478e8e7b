"""The MAML family: `maml`, `fomaml`, `metasgd` and `anil`.

* `maml`: Model-Agnostic Meta-Learning (Finn, Abbeel and Levine, ICML 2017).
  The learner's weights are an initialisation; each task adapts a copy of
  them with a few gradient steps on the support set, and meta-training
  differentiates the query loss through those steps (second order; the
  searchable `maml/first_order` drops the second-order terms).
* `fomaml`: first-order MAML (same paper, section 5.2), always first order.
* `metasgd`: Meta-SGD (Li, Zhou, Chen and Li, 2017): a learned step size per
  coordinate, meta-trained with the initialisation.
* `anil`: Almost No Inner Loop (Raghu, Raghu, Bengio and Vinyals, ICLR 2020):
  only the head adapts; the backbone's features are shared by all steps.

Each is `metasearch.gradient_learner.GradientMetaLearner` with its switches
set; that module documents what they share: the stateless inner loop on any
backbone, the head initialisations (`head_init`), the searchable inner update
rule (`inner_optimizer`: `sgd` or the `learned` LSTM; maml, fomaml and anil)
and batch normalisation inside the inner loop (`batch_norm`: `transductive`
or MAML++'s `per_step`).
"""

from __future__ import annotations

from metasearch.gradient_learner import GradientMetaLearner


class MAML(GradientMetaLearner):
    """MAML: a meta-learned initialisation adapted by gradient descent (second order by default)."""

    NAME = "maml"


class FOMAML(GradientMetaLearner):
    """First-order MAML: inner gradients treated as constants."""

    NAME = "fomaml"
    FIRST_ORDER = True


class MetaSGD(GradientMetaLearner):
    """Meta-SGD: MAML with a meta-learned step size per coordinate."""

    NAME = "metasgd"
    LEARNED_STEP_SIZES = True


class ANIL(GradientMetaLearner):
    """ANIL: MAML whose inner loop adapts only the linear head."""

    NAME = "anil"
    HEAD_ONLY = True
    # Its inner loop adapts the head on features: the backbone's passes dominate
    # (measured level either way; `metasearch.threads`).
    STEP_OPS = "large"
