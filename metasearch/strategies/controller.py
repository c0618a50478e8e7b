"""`controller`: NASNet's recurrent controller trained with REINFORCE, a plain-numpy LSTM."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from keras_tuner.engine import hyperparameters as hp_module

from metasearch.options import Option
from metasearch.strategies.base import (
    RUNNING,
    StrategyOracle,
    rng_from_state,
    rng_state,
)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class ControllerOracle(StrategyOracle):
    """NASNet's search method: a recurrent controller trained by policy gradient.

    An LSTM emits one token per hyperparameter, in declaration order; each
    step's input is the embedding of the previous token (a learned start
    vector for the first). Tokens: a Choice's values, a Boolean's two values,
    an Int's or Float's values at `grid_points` evenly spaced quantiles of
    keras-tuner's own sampling (log scale included), duplicates dropped.
    Fixed hyperparameters emit nothing. Logits pass through
    `tanh_constant * tanh(logits / temperature)` (ENAS's sharpening control).

    Training is REINFORCE with a moving-average baseline: reward = the trial's
    score (negated for objectives to minimise), advantage = reward - baseline,
    clipped to `advantage_clip` times its moving mean magnitude (so one broken
    candidate scoring near zero cannot drag the baseline down) and divided by
    that magnitude (so the learning rate does not depend on the score's
    units), plus `entropy_weight` times the policy's entropy. One Adam step
    per scored sample. A sample equal to a completed trial is scored from that
    trial without spending one (up to `max_resamples` times per proposal);
    then the policy is sampled restricted to untried token sequences (masking
    tokens whose every continuation was tried), so late proposals still follow
    the policy. A sample the constraint rejects is learned from with the
    lowest score seen so far (0 before any). The network is plain numpy with
    a hand-written backward pass (checked against finite differences in the
    tests): under a millisecond per step. Defaults were tuned on
    NAS-Bench-201 (seeds other than the benchmark's).
    """

    OPTIONS = (
        Option("learning_rate", float, 0.02, "Adam learning rate of the policy.", lower_bound=0),
        Option("hidden_size", int, 16, "units of the LSTM.", lower_bound=1),
        Option("embedding_size", int, 16, "size of the token embeddings.", lower_bound=1),
        Option(
            "baseline_decay",
            float,
            0.9,
            "decay of the reward baseline's and scale's moving averages.",
            lower_bound=0,
            upper_bound=1,
        ),
        Option(
            "entropy_weight", float, 0.0, "weight of the policy's entropy bonus.", lower_bound=0
        ),
        Option("temperature", float, 1.0, "logits are divided by it (above 0).", lower_bound=0),
        Option(
            "tanh_constant",
            float,
            2.5,
            "logits become tanh_constant * tanh(logits / temperature); None: no tanh.",
            lower_bound=0,
        ),
        Option(
            "grid_points",
            int,
            8,
            "tokens of an Int or Float hyperparameter (evenly spaced quantiles).",
            lower_bound=1,
        ),
        Option(
            "max_resamples",
            int,
            10,
            "samples per proposal that may repeat a tried candidate before novelty is forced.",
            lower_bound=0,
        ),
        Option("clip_norm", float, 5.0, "gradient norm clipping.", lower_bound=0),
        Option(
            "advantage_clip",
            float,
            2.0,
            "advantages are clipped to this many moving mean magnitudes; None: no clipping.",
            lower_bound=0,
        ),
    )

    def __init__(
        self,
        objective=None,
        max_trials=None,
        hyperparameters=None,
        seed=None,
        hidden_size: int = 16,
        embedding_size: int = 16,
        learning_rate: float = 0.02,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.0,
        temperature: float = 1.0,
        tanh_constant: float | None = 2.5,
        grid_points: int = 8,
        max_resamples: int = 10,
        clip_norm: float = 5.0,
        advantage_clip: float | None = 2.0,
        **kwargs,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            seed=seed,
            **kwargs,
        )
        self.settings = {
            "hidden_size": int(hidden_size),
            "embedding_size": int(embedding_size),
            "learning_rate": float(learning_rate),
            "baseline_decay": float(baseline_decay),
            "entropy_weight": float(entropy_weight),
            "temperature": float(temperature),
            "tanh_constant": None if tanh_constant is None else float(tanh_constant),
            "grid_points": int(grid_points),
            "max_resamples": int(max_resamples),
            "clip_norm": float(clip_norm),
            "advantage_clip": None if advantage_clip is None else float(advantage_clip),
        }
        self._rng = np.random.default_rng(self.seed)
        # All parameters (and Adam's moments, and the gradient) live in flat
        # vectors; `_params` and `_grads` hold named views. One Adam step is
        # then a handful of numpy calls instead of a few per parameter.
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._allocate({}, {}, {})
        self._adam_t = 0
        self._baseline: float | None = None
        self._scale: float | None = None
        self.updates = 0
        self._init_shared()

    # -- the policy network

    def _allocate(self, params, adam_m, adam_v) -> None:
        """Lays out the flat vectors for `self._shapes`, filled from the named arrays given."""
        sizes = [int(np.prod(shape)) for shape in self._shapes.values()]
        total = sum(sizes)
        self._flat, self._grad_flat = np.zeros(total), np.zeros(total)
        self._m_flat, self._v_flat = np.zeros(total), np.zeros(total)
        self._params, self._grads = {}, {}
        offset = 0
        for (name, shape), size in zip(self._shapes.items(), sizes):
            part = slice(offset, offset + size)
            offset += size
            self._params[name] = self._flat[part].reshape(shape)
            self._grads[name] = self._grad_flat[part].reshape(shape)
            for flat, source in (
                (self._flat, params),
                (self._m_flat, adam_m),
                (self._v_flat, adam_v),
            ):
                if name in source:
                    flat[part] = np.asarray(source[name], dtype=float).ravel()

    def _named(self, flat: np.ndarray) -> dict[str, list]:
        return {name: view.tolist() for name, view in self._named_views(flat).items()}

    def _new_param(self, name: str, shape: tuple[int, ...]) -> None:
        params = {**self._params, name: self._rng.uniform(-0.1, 0.1, size=shape)}
        adam_m, adam_v = self._named_views(self._m_flat), self._named_views(self._v_flat)
        self._shapes[name] = tuple(shape)
        self._allocate(params, adam_m, adam_v)  # copies out of the old vectors

    def _named_views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        views, offset = {}, 0
        for name, shape in self._shapes.items():
            size = int(np.prod(shape))
            views[name] = flat[offset : offset + size].reshape(shape)
            offset += size
        return views

    def _init_shared(self) -> None:
        hidden, embed = self.settings["hidden_size"], self.settings["embedding_size"]
        self._new_param("lstm/kernel", (embed + hidden, 4 * hidden))
        self._new_param("lstm/bias", (4 * hidden,))
        self._new_param("start", (embed,))

    def tokens(self, hp: hp_module.HyperParameter) -> list[Any]:
        """The values the controller can emit for `hp` (empty for Fixed)."""
        if isinstance(hp, hp_module.Fixed):
            return []
        if isinstance(hp, (hp_module.Choice, hp_module.Boolean)):
            return list(hp.values)
        points = self.settings["grid_points"]
        grid: list[Any] = []
        for i in range(points):
            value = hp.prob_to_value((i + 0.5) / points)
            if value not in grid:
                grid.append(value)
        return grid

    def _steps(self) -> list[tuple[hp_module.HyperParameter, list[Any]]]:
        steps = []
        embed, hidden = self.settings["embedding_size"], self.settings["hidden_size"]
        for hp in self.hyperparameters.space:
            vocabulary = self.tokens(hp)
            if not vocabulary:
                continue
            if f"out/{hp.name}/kernel" not in self._params:  # a hyperparameter seen first now
                size = len(vocabulary)
                self._new_param(f"embed/{hp.name}", (size, embed))
                self._new_param(f"out/{hp.name}/kernel", (hidden, size))
                self._new_param(f"out/{hp.name}/bias", (size,))
            steps.append((hp, vocabulary))
        return steps

    def _forward(self, steps, chosen: list[int] | None = None, allowed=None):
        """Runs the LSTM; samples tokens unless `chosen` gives them. Returns tokens and a cache.

        `allowed(t, prefix)`, if given, returns a 0/1 mask of the tokens step
        `t` may emit after `prefix`: sampling is restricted to them (the cache
        keeps the unrestricted probabilities, which the gradient needs).
        """
        p = self._params
        hidden = self.settings["hidden_size"]
        temperature, tanh_c = self.settings["temperature"], self.settings["tanh_constant"]
        kernel, bias = p["lstm/kernel"], p["lstm/bias"]
        h, c = np.zeros(hidden), np.zeros(hidden)
        x = p["start"]
        tokens, cache = [], []
        for t, (hp, vocabulary) in enumerate(steps):
            xh = np.concatenate([x, h])
            z = xh @ kernel + bias
            gates = _sigmoid(z[: 3 * hidden])
            i, f, o = gates[:hidden], gates[hidden : 2 * hidden], gates[2 * hidden :]
            g = np.tanh(z[3 * hidden :])
            c_new = f * c + i * g
            tanh_cell = np.tanh(c_new)
            h_new = o * tanh_cell
            scaled = (h_new @ p[f"out/{hp.name}/kernel"] + p[f"out/{hp.name}/bias"]) / temperature
            squashed = np.tanh(scaled) if tanh_c is not None else None
            activation = tanh_c * squashed if tanh_c is not None else scaled
            probs = np.exp(activation - activation.max())
            probs /= probs.sum()
            if chosen is None:
                weights = probs if allowed is None else probs * allowed(t, tuple(tokens))
                # Inverse CDF: much cheaper than Generator.choice for one draw.
                cumulative = np.cumsum(weights)
                token = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1]))
                token = min(token, len(vocabulary) - 1)
            else:
                token = chosen[t]
            tokens.append(token)
            cache.append((hp.name, xh, c, i, f, o, g, tanh_cell, h_new, squashed, probs))
            h, c = h_new, c_new
            x = p[f"embed/{hp.name}"][token]
        return tokens, cache

    def _gradients(self, tokens: list[int], cache, advantage: float) -> np.ndarray:
        """d(loss)/d(params), loss = -advantage * log p(tokens) - entropy_weight * entropy."""
        p = self._params
        hidden = self.settings["hidden_size"]
        embed = self.settings["embedding_size"]
        temperature, tanh_c = self.settings["temperature"], self.settings["tanh_constant"]
        entropy_weight = self.settings["entropy_weight"]
        kernel = p["lstm/kernel"]
        self._grad_flat.fill(0.0)
        grads = self._grads
        d_kernel, d_bias = grads["lstm/kernel"], grads["lstm/bias"]
        dh_next, dc_next = np.zeros(hidden), np.zeros(hidden)
        for t in reversed(range(len(tokens))):
            name, xh, c_prev, i, f, o, g, tanh_cell, h, squashed, probs = cache[t]
            d_activation = advantage * probs
            d_activation[tokens[t]] -= advantage
            if entropy_weight:
                log_probs = np.log(probs + 1e-12)
                entropy = -(probs * log_probs).sum()
                d_activation += entropy_weight * probs * (log_probs + entropy)
            if tanh_c is not None:
                d_activation = d_activation * tanh_c * (1.0 - squashed**2)
            d_logits = d_activation / temperature
            grads[f"out/{name}/kernel"][...] = np.outer(h, d_logits)
            grads[f"out/{name}/bias"][...] = d_logits
            dh = p[f"out/{name}/kernel"] @ d_logits + dh_next
            do = dh * tanh_cell
            dc = dh * o * (1.0 - tanh_cell**2) + dc_next
            dz = np.concatenate(
                [
                    dc * g * i * (1 - i),
                    dc * c_prev * f * (1 - f),
                    do * o * (1 - o),
                    dc * i * (1 - g**2),
                ]
            )
            d_kernel += np.outer(xh, dz)
            d_bias += dz
            dxh = kernel @ dz
            dx, dh_next = dxh[:embed], dxh[embed:]
            dc_next = dc * f
            if t == 0:
                grads["start"][...] = dx
            else:
                grads[f"embed/{cache[t - 1][0]}"][tokens[t - 1]] += dx
        return self._grad_flat

    def _adam_step(self, grad: np.ndarray) -> None:
        norm = math.sqrt(float(np.dot(grad, grad)))
        clip = self.settings["clip_norm"]
        if norm > clip:
            grad = grad * (clip / norm)
        self._adam_t += 1
        lr, beta1, beta2 = self.settings["learning_rate"], 0.9, 0.999
        step = lr * math.sqrt(1 - beta2**self._adam_t) / (1 - beta1**self._adam_t)
        m, v = self._m_flat, self._v_flat
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        self._flat -= step * m / (np.sqrt(v) + 1e-8)

    def _tokens_of(self, steps, values: Mapping[str, Any]) -> list[int]:
        tokens = []
        for hp, vocabulary in steps:
            value = values.get(hp.name, hp.default)
            if value in vocabulary:
                tokens.append(vocabulary.index(value))
            else:  # a value off the grid (e.g. a random fallback): its nearest token
                target = hp.value_to_prob(value)
                tokens.append(
                    int(np.argmin([abs(hp.value_to_prob(v) - target) for v in vocabulary]))
                )
        return tokens

    def learn(self, values: Mapping[str, Any], reward: float, _sampled=None) -> None:
        """One REINFORCE step towards (reward above baseline) or away from `values`."""
        if _sampled is None:
            steps = self._steps()
            tokens, cache = self._forward(steps, self._tokens_of(steps, values))
        else:  # drawn with the current parameters: its forward pass is still valid
            tokens, cache = _sampled
        decay, clip = self.settings["baseline_decay"], self.settings["advantage_clip"]
        if self._baseline is None:
            self._baseline = reward
        advantage = reward - self._baseline
        if self._scale and clip:
            # Robust statistics: an outlier (a broken architecture scoring near
            # zero) moves the baseline and the scale by at most `clip` scales.
            advantage = max(-clip * self._scale, min(clip * self._scale, advantage))
        self._baseline += (1 - decay) * advantage
        if self._scale is None:
            self._scale = abs(advantage) if advantage != 0 else None
        else:
            self._scale = decay * self._scale + (1 - decay) * abs(advantage)
        normalised = advantage / self._scale if self._scale else 0.0
        self._adam_step(self._gradients(tokens, cache, normalised))
        self.updates += 1

    def _sample(self, novel: bool = False):
        steps = self._steps()
        if novel and not steps:
            return None, None  # nothing to search: every proposal is the same
        allowed = self._novelty_mask(steps) if novel else None
        if allowed is not None and not allowed(0, ()).any():
            return None, None  # every token sequence was tried
        tokens, cache = self._forward(steps, allowed=allowed)
        emitted = {hp.name: vocabulary[k] for (hp, vocabulary), k in zip(steps, tokens)}
        return self.complete_values(emitted, self._rng), (tokens, cache)

    def sample(self) -> dict[str, Any]:
        """A configuration drawn from the policy (no trial is created)."""
        return self._sample()[0]

    def _novelty_mask(self, steps):
        """`allowed(t, prefix)` masking tokens whose every continuation was tried or rejected.

        Sampling with it draws from the policy conditioned on novelty (the
        token-by-token version of sampling without replacement).
        """
        tried = {
            tuple(self._tokens_of(steps, t.hyperparameters.values)) for t in self.trials.values()
        }
        tried.update(tuple(self._tokens_of(steps, r["values"])) for r in self.rejected)
        counts: dict[tuple, int] = {}
        for sequence in tried:
            for length in range(1, len(sequence) + 1):
                counts[sequence[:length]] = counts.get(sequence[:length], 0) + 1
        sizes = [len(vocabulary) for _, vocabulary in steps]
        completions = [math.prod(sizes[t + 1 :]) for t in range(len(sizes))]

        def allowed(t, prefix):
            return np.array(
                [counts.get((*prefix, k), 0) < completions[t] for k in range(sizes[t])], dtype=float
            )

        return allowed

    # -- the oracle

    def _known_scores(self) -> dict[str, float]:
        return {
            self.trial_hash(t.trial_id): self.goodness(t.score) for t in self.completed_in_order()
        }

    def _penalty(self) -> float:
        scores = [self.goodness(t.score) for t in self.completed_in_order()]
        return min(scores) if scores else 0.0

    def propose(self, trial_id):
        known = None
        for _ in range(self.settings["max_resamples"]):
            values, sampled = self._sample()
            if not self.is_duplicate(values):
                return {"status": RUNNING, "values": values}
            key = self.values_hash(values)
            if key in self._rejected_reasons:
                self.learn(values, self._penalty(), sampled)
                continue
            known = self._known_scores() if known is None else known
            if key in known:  # a completed trial: its score teaches without a new trial
                self.learn(values, known[key], sampled)
        # Retries spent: draw from the policy restricted to untried candidates.
        values, _ = self._sample(novel=True)
        if values is not None and not self.is_duplicate(values):
            return {"status": RUNNING, "values": values}
        return self.random_response()

    def on_candidate_rejected(self, values, reason):
        self.learn(values, self._penalty())

    def score_trial(self, trial):
        super().score_trial(trial)
        if trial.score is not None and np.isfinite(trial.score):
            self.learn(trial.hyperparameters.values, self.goodness(trial.score))

    def get_state(self):
        state = super().get_state()
        state["controller"] = {
            "settings": self.settings,
            "params": self._named(self._flat),
            "adam_m": self._named(self._m_flat),
            "adam_v": self._named(self._v_flat),
            "adam_t": self._adam_t,
            "baseline": self._baseline,
            "scale": self._scale,
            "updates": self.updates,
            "rng": rng_state(self._rng),
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state["controller"]
        self.settings = dict(saved["settings"])
        self._shapes = {k: np.shape(v) for k, v in saved["params"].items()}
        self._allocate(saved["params"], saved["adam_m"], saved["adam_v"])
        self._adam_t = saved["adam_t"]
        self._baseline = saved["baseline"]
        self._scale = saved["scale"]
        self.updates = saved["updates"]
        self._rng = rng_from_state(saved["rng"])
