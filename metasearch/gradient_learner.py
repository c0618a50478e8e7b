"""The base of gradient-based meta-learners: the MAML family and its relatives.

`GradientMetaLearner` is Model-Agnostic Meta-Learning (Finn, Abbeel and
Levine, ICML 2017) written once, with switches and hooks; the built-in
plugins `maml`, `fomaml`, `metasgd`, `anil`, `meta_critic` and
`learned_optimizer` subclass it, and so may a third-party plugin. The
learner's weights are an initialisation; each task adapts a copy of them with
a few gradient steps on the support set, and meta-training differentiates
the query loss through those steps (second order unless `first_order`).

It works on any search space's backbone: the inner loop runs the backbone
statelessly on explicit fast weights (`metasearch.inner_loop`), so no layer
is ever rewritten, and the same code runs in meta-training, evaluation, XLA
and the exported SavedModel (whose `few_shot` adapts in-graph).

The head is a linear layer on the backbone's features, made of explicit
tensors so that a task may have any number of classes. `head_init` chooses
how each task's head starts:
* `learned`: MAML's meta-learned `[d, N]` head (a task may use up to the
  N classes it was meta-trained with; the first C columns serve C classes);
* `zero`: zeros for every task, any number of classes (the "zeroing trick");
* `proto`: Proto-MAML's prototype head (Triantafillou et al., ICLR 2020):
  row k is 2 p_k and the bias -|p_k|^2 for class mean features p_k, so the
  adaptation starts from a Prototypical Network. Regression treats `proto`
  as `zero`.

The inner-loop update rule (`metasearch.inner_optimizers`) is a searchable
choice, `inner_optimizer`, unless a subclass fixes it (`INNER_OPTIMIZER`, or
Meta-SGD's `LEARNED_STEP_SIZES`): `sgd`, plain gradient descent at
`inner_learning_rate`, or `learned`, the coordinate-wise LSTM optimizer of
Andrychowicz et al. 2016 (`LSTMOptimizer`), whose weights are meta-trained
by the outer loop together with the initialisation; its update is scaled by
`output_scale` (default: the inner learning rate) and its width is
`optimizer_hidden_units` (default: `LSTMOptimizer`'s). Meta-SGD's
per-coordinate step sizes are its own learned rule, so it refuses
`learned`. A subclass that fixes the rule declares the rule's own
hyperparameters in `sample_update_rule`.

Batch normalisation inside the inner loop is a searchable choice,
`batch_norm`:
* `transductive` (the MAML paper's): batch statistics everywhere, in
  meta-training and when adapting to a new task, so support and query sets
  are each normalised with their own statistics; running averages are never
  used.
* `per_step` (MAML++, Antoniou, Edwards and Storkey, ICLR 2019): each inner
  step s (and the final query pass) has its own batch-norm scale and bias,
  meta-learned and not adapted, and its own running statistics, used when
  adapting to a new task. A head-only learner's backbone is not in the inner
  loop, so for it `per_step` is ordinary batch norm.

A relative that changes what the inner loop descends (e.g. `meta_critic`)
overrides `task_context` (computed once per `adapt` from the support set)
and `inner_objective` (the scalar each step descends).
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner
import tensorflow as tf

from metasearch import inner_loop
from metasearch.api import (
    CLASSIFICATION,
    REGRESSION,
    Config,
    MetaLearner,
    TaskSpec,
    class_means,
    feature_dim,
    task_loss,
)
from metasearch.inner_optimizers import (
    DEFAULT_HIDDEN_UNITS,
    SGD,
    InnerOptimizer,
    LSTMOptimizer,
    PerParameterSGD,
)

BATCH_NORM_MODES = ("transductive", "per_step")
HEAD_INITS = ("learned", "zero", "proto")
INNER_STEPS = (1, 3, 5)
EVAL_INNER_STEPS = (1, 3, 5, 10)
INNER_LEARNING_RATES = (0.01, 0.03, 0.1, 0.4)
INNER_OPTIMIZERS = ("sgd", "learned")


class GradientMetaLearner(MetaLearner):
    """The shared MAML-family learner; subclasses set the class attributes below.

    `NAME` (required) prefixes the hyperparameters, e.g. `maml/inner_steps`.
    `FIRST_ORDER` is True or False to fix the order, None to search it.
    `LEARNED_STEP_SIZES` learns a step size per coordinate (Meta-SGD).
    `HEAD_ONLY` adapts the head alone (ANIL). `DEFAULT_HEAD_INIT` is the
    default of the searched head initialisation. `INNER_OPTIMIZER` is "sgd" or
    "learned" to fix the inner update rule, None to search it (Meta-SGD's step
    sizes are its own rule: never searched); `sample_update_rule` declares the
    chosen rule's own hyperparameters.

    Every searched setting is read from `self.config`, which
    `MetaLearner.__init__` completes with `default_config()`: a default is
    written once, in `sample_config`.
    """

    NAME = ""
    FIRST_ORDER: bool | None = None
    LEARNED_STEP_SIZES = False
    HEAD_ONLY = False
    DEFAULT_HEAD_INIT = "learned"
    INNER_OPTIMIZER: str | None = None
    TASK_KINDS = (CLASSIFICATION, REGRESSION)
    # The inner loop: a chain of small ops on the support set (`metasearch.threads`).
    STEP_OPS = "small"

    @classmethod
    def sample_config(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        if not cls.NAME:
            raise TypeError(f"{cls.__name__}: set NAME, the prefix of its hyperparameters")
        name = cls.NAME
        config = {
            # Defaults follow Finn et al.'s Omniglot and sinusoid setups: one
            # step in meta-training, a few more when adapting to a new task.
            "inner_steps": hp.Choice(f"{name}/inner_steps", list(INNER_STEPS), default=1),
            "eval_inner_steps": hp.Choice(
                f"{name}/eval_inner_steps", list(EVAL_INNER_STEPS), default=3
            ),
            **cls.sample_update_rule(hp),
            "batch_norm": hp.Choice(
                f"{name}/batch_norm", list(BATCH_NORM_MODES), default="transductive"
            ),
            "head_init": hp.Choice(
                f"{name}/head_init", list(HEAD_INITS), default=cls.DEFAULT_HEAD_INIT
            ),
        }
        if cls.FIRST_ORDER is None:
            config["first_order"] = hp.Boolean(f"{name}/first_order", default=False)
        if cls.INNER_OPTIMIZER is None and not cls.LEARNED_STEP_SIZES:
            config["inner_optimizer"] = hp.Choice(
                f"{name}/inner_optimizer", list(INNER_OPTIMIZERS), default="sgd"
            )
        return config

    @classmethod
    def sample_update_rule(cls, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The inner update rule's hyperparameters: the step size of gradient descent."""
        return {
            "inner_learning_rate": hp.Choice(
                f"{cls.NAME}/inner_learning_rate", list(INNER_LEARNING_RATES), default=0.01
            )
        }

    def __init__(self, backbone: keras.layers.Layer, config: Config, task: TaskSpec, **kwargs):
        super().__init__(backbone, config, task, **kwargs)
        config = self.config
        self.inner_steps = int(config["inner_steps"])
        self.eval_inner_steps = int(config["eval_inner_steps"])
        # A rule without a step size (the learned optimiser's plugin) declares none.
        self.inner_learning_rate = (
            float(config["inner_learning_rate"]) if "inner_learning_rate" in config else None
        )
        self.batch_norm = config["batch_norm"]
        self.head_init = config["head_init"]
        if self.FIRST_ORDER is None:
            self.first_order = bool(config["first_order"])
        else:
            self.first_order = self.FIRST_ORDER
        for key, value, known in (
            ("batch_norm", self.batch_norm, BATCH_NORM_MODES),
            ("head_init", self.head_init, HEAD_INITS),
        ):
            if value not in known:
                raise ValueError(f"{self.NAME}: unknown {key} {value!r}; known: {known}")
        if self.inner_steps < 1 or self.eval_inner_steps < 0:
            raise ValueError(f"{self.NAME}: inner steps must be >= 1 (evaluation: >= 0)")
        # Declared only where it is searched; a fixed rule is the class's own.
        self.inner_optimizer = config.get("inner_optimizer", self.INNER_OPTIMIZER or "sgd")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"{self.NAME}: unknown inner_optimizer {self.inner_optimizer!r}; "
                f"known: {INNER_OPTIMIZERS}"
            )
        if self.INNER_OPTIMIZER not in (None, self.inner_optimizer):
            raise ValueError(
                f"{self.NAME}: the inner optimiser is always {self.INNER_OPTIMIZER!r}, "
                f"got inner_optimizer={self.inner_optimizer!r}"
            )
        if self.inner_optimizer == "learned":
            if self.LEARNED_STEP_SIZES:
                raise ValueError(
                    f"{self.NAME}: its per-coordinate step sizes are its inner optimiser; "
                    "inner_optimizer='learned' does not apply"
                )
            # Learners that search the rule declare neither setting: the LSTM's
            # output scale then plays the step size's part.
            output_scale = config.get("output_scale", self.inner_learning_rate)
            if output_scale is None:
                raise ValueError(f"{self.NAME}: the learned inner optimiser needs output_scale")
            self.learned_optimizer = LSTMOptimizer(
                hidden_units=int(config.get("optimizer_hidden_units", DEFAULT_HIDDEN_UNITS)),
                output_scale=float(output_scale),
                name="learned_optimizer",
            )
        elif self.inner_learning_rate is None:
            raise ValueError(
                f"{self.NAME}: the {self.inner_optimizer!r} rule needs inner_learning_rate"
            )
        if task.is_regression and self.head_init == "proto":
            self.head_init = "zero"
        self.outputs = task.target_dim if task.is_regression else task.n_way
        self.feature_dim = feature_dim(backbone, task)

        # Second-order meta-gradients through batch norm need exact moments.
        inner_loop.use_exact_moments(backbone)
        self.network = inner_loop.FunctionalNetwork(backbone)
        self.per_step_bn = self.batch_norm == "per_step" and not self.HEAD_ONLY
        self._setup_batch_norm()
        # Backbone weights the inner loop adapts (none for ANIL).
        if self.HEAD_ONLY:
            self.adapted_positions: list[int] = []
        else:
            frozen = set(self.bn_param_positions) if self.per_step_bn else set()
            self.adapted_positions = [
                i for i in range(len(self.network.trainable)) if i not in frozen
            ]
        if self.head_init == "learned":
            self.head_kernel = self.add_weight(
                name="head_kernel",
                shape=(self.feature_dim, self.outputs),
                initializer="glorot_uniform",
            )
            self.head_bias = self.add_weight(
                name="head_bias", shape=(self.outputs,), initializer="zeros"
            )
        if self.LEARNED_STEP_SIZES:
            self._setup_step_sizes()

    # --- construction -----------------------------------------------------

    def _setup_batch_norm(self) -> None:
        """Per-step batch-norm scales, biases and statistics (MAML++), when chosen.

        Pass 0 (the first support step) uses the backbone's own batch-norm
        weights; passes 1..inner_steps-1 and the query pass (`inner_steps`)
        use copies created here.
        """
        self.bn_param_positions: list[int] = []
        self.bn_stat_positions: list[int] = []
        self.step_bn_params: list[list[Any]] = []
        self.step_bn_stats: list[list[Any]] = []
        if not self.per_step_bn:
            return
        trainable = {id(v): i for i, v in enumerate(self.network.trainable)}
        non_trainable = {id(v): i for i, v in enumerate(self.network.non_trainable)}
        params, stats = [], []
        for layer in inner_loop.batch_norm_layers(self.backbone):
            for variable, init in ((layer.gamma, "ones"), (layer.beta, "zeros")):
                if variable is not None and id(variable) in trainable:
                    params.append((trainable[id(variable)], init))
            for variable, init in ((layer.moving_mean, "zeros"), (layer.moving_variance, "ones")):
                if id(variable) in non_trainable:
                    stats.append((non_trainable[id(variable)], init))
        self.bn_param_positions = [p for p, _ in params]
        self.bn_stat_positions = [p for p, _ in stats]
        for index in range(1, self.inner_steps + 1):
            self.step_bn_params.append(
                [
                    self.add_weight(
                        name=f"bn_step{index}_param{j}",
                        shape=self.network.trainable[p].shape,
                        initializer=init,
                    )
                    for j, (p, init) in enumerate(params)
                ]
            )
            self.step_bn_stats.append(
                [
                    self.add_weight(
                        name=f"bn_step{index}_stat{j}",
                        shape=self.network.non_trainable[p].shape,
                        initializer=init,
                        trainable=False,
                    )
                    for j, (p, init) in enumerate(stats)
                ]
            )

    def _setup_step_sizes(self) -> None:
        """Meta-SGD's step sizes: one per coordinate of every adapted weight.

        A per-task head (`zero`, `proto`) has no fixed width, so its step sizes
        are per feature row `[d, 1]` and one for the bias, broadcast over classes.
        """
        value = keras.initializers.Constant(self.inner_learning_rate)
        self.backbone_step_sizes = [
            self.add_weight(
                name=f"step_size{i}", shape=self.network.trainable[i].shape, initializer=value
            )
            for i in self.adapted_positions
        ]
        columns = self.outputs if self.head_init == "learned" else 1
        self.head_step_sizes = [
            self.add_weight(
                name="head_kernel_step_size", shape=(self.feature_dim, columns), initializer=value
            ),
            self.add_weight(name="head_bias_step_size", shape=(columns,), initializer=value),
        ]

    # --- the functional network ---------------------------------------------

    def _bn_training(self, training: bool) -> bool:
        # Transductive batch norm normalises with batch statistics everywhere.
        return True if self.batch_norm == "transductive" else bool(training)

    def _read_backbone(self) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """The backbone's trainable and non-trainable values, read once per adapt or predict."""
        return self.network.values(), self.network.non_trainable_values()

    def _features(self, base, backbone_fast, images, pass_index: int, training: bool, new_stats):
        """Backbone features at fast weights, with pass `pass_index`'s batch norm.

        `base` is `_read_backbone()`: the values of everything not passed in.
        """
        values, non_trainable = list(base[0]), list(base[1])
        for position, value in zip(self.adapted_positions, backbone_fast):
            values[position] = value
        if self.per_step_bn and pass_index > 0:
            copy = min(pass_index, self.inner_steps) - 1
            for position, variable in zip(self.bn_param_positions, self.step_bn_params[copy]):
                values[position] = tf.convert_to_tensor(variable)
            for position, variable in zip(self.bn_stat_positions, self.step_bn_stats[copy]):
                non_trainable[position] = tf.convert_to_tensor(variable)
        features, updated = self.network(
            values, images, training=self._bn_training(training), non_trainable_values=non_trainable
        )
        if self.per_step_bn and training:
            new_stats[min(pass_index, self.inner_steps)] = [
                updated[p] for p in self.bn_stat_positions
            ]
        return features

    def _assign_stats(self, new_stats: dict[int, list[tf.Tensor]]) -> None:
        """Stores the running statistics the training passes computed (per-step mode)."""
        for pass_index, values in new_stats.items():
            if pass_index == 0:
                targets = [self.network.non_trainable[p] for p in self.bn_stat_positions]
            else:
                targets = self.step_bn_stats[pass_index - 1]
            for variable, value in zip(targets, values):
                variable.assign(value)

    @staticmethod
    def _linear(features, head):
        kernel, bias = head
        return tf.matmul(features, kernel) + bias

    def _initial_head(self, support_features, support_labels, num_classes):
        if self.head_init == "learned":
            if self.task.is_regression:
                return [
                    tf.convert_to_tensor(self.head_kernel),
                    tf.convert_to_tensor(self.head_bias),
                ]
            if isinstance(num_classes, tf.Tensor):
                tf.debugging.assert_less_equal(
                    num_classes,
                    self.outputs,
                    message=f"{self.NAME} with a learned head serves at most {self.outputs} classes",
                )
            return [self.head_kernel[:, :num_classes], self.head_bias[:num_classes]]
        columns = self.outputs if self.task.is_regression else num_classes
        if self.head_init == "zero":
            return [tf.zeros([self.feature_dim, columns]), tf.zeros([columns])]
        prototypes = class_means(support_features, support_labels, num_classes)
        return [2.0 * tf.transpose(prototypes), -tf.reduce_sum(tf.square(prototypes), axis=1)]

    def _optimizer(self, num_classes) -> InnerOptimizer:
        if self.inner_optimizer == "learned":
            return self.learned_optimizer
        if not self.LEARNED_STEP_SIZES:
            return SGD(self.inner_learning_rate)
        head = list(self.head_step_sizes)
        if self.head_init == "learned" and not self.task.is_regression:
            head = [head[0][:, :num_classes], head[1][:num_classes]]
        backbone = [] if self.HEAD_ONLY else list(self.backbone_step_sizes)
        return PerParameterSGD(backbone + head)

    # --- hooks for relatives that change the inner objective (e.g. meta_critic) ---

    def task_context(self, support_images, support_labels, num_classes, training) -> Any:
        """What `inner_objective` needs about the task beyond one step's outputs.

        Computed once per `adapt`, before the inner loop, from the support set
        at the initial weights. The default is None.
        """
        return None

    def inner_objective(self, outputs, labels, features, context, step: int) -> tf.Tensor:
        """The scalar the inner loop descends at step `step` (default: the support task loss).

        `outputs` are the head's outputs on the support set at the current fast
        weights, `features` the backbone's features they came from and
        `context` what `task_context` returned.
        """
        return task_loss(self.task, outputs, labels)[0]

    # --- the MetaLearner contract --------------------------------------------

    def embed(self, images, training=False):
        return self.backbone(images, training=self._bn_training(training))

    def adapt(self, support_images, support_labels, num_classes, training=False):
        steps = self.inner_steps if training else self.eval_inner_steps
        new_stats: dict[int, list[tf.Tensor]] = {}
        if self.task.is_regression:
            num_classes = self.outputs
        context = self.task_context(support_images, support_labels, num_classes, training)
        if self.HEAD_ONLY:
            features = self.embed(support_images, training=training)
            head = self._initial_head(features, support_labels, num_classes)

            def support_loss(params, step):
                outputs = self._linear(features, params)
                return self.inner_objective(outputs, support_labels, features, context, step)

            fast = inner_loop.gradient_descent(
                support_loss, head, steps, self._optimizer(num_classes), self.first_order
            )
            return {"backbone": [], "head": fast}

        base = self._read_backbone()
        backbone_fast = [base[0][p] for p in self.adapted_positions]
        head = self._initial_head(
            self._features(base, backbone_fast, support_images, 0, training, {})
            if self.head_init == "proto"
            else None,
            support_labels,
            num_classes,
        )
        count = len(backbone_fast)

        def support_loss(params, step):
            # Extra evaluation steps reuse the last support step's batch norm.
            pass_index = min(step, self.inner_steps - 1)
            features = self._features(
                base, params[:count], support_images, pass_index, training, new_stats
            )
            outputs = self._linear(features, params[count:])
            return self.inner_objective(outputs, support_labels, features, context, step)

        fast = inner_loop.gradient_descent(
            support_loss,
            backbone_fast + head,
            steps,
            self._optimizer(num_classes),
            self.first_order,
        )
        if new_stats:
            self._assign_stats(new_stats)
        return {"backbone": fast[:count], "head": fast[count:]}

    def predict(self, task_state, query_images, training=False):
        features = self.query_features(task_state, query_images, training)
        return self._linear(features, task_state["head"])

    def query_features(self, task_state, images, training=False):
        """The backbone's features of query `images` at the task's adapted weights."""
        if self.HEAD_ONLY:
            return self.embed(images, training=training)
        new_stats: dict[int, list[tf.Tensor]] = {}
        features = self._features(
            self._read_backbone(),
            task_state["backbone"],
            images,
            self.inner_steps,
            training,
            new_stats,
        )
        if new_stats:
            self._assign_stats(new_stats)
        return features
