"""MAML's meta-training step (second or first order) in eager PyTorch, as metasearch runs it.

`metasearch.plugins.maml.MAML` / `FOMAML` with throughput.py's `MAML_CONFIG`
on conv4-64: 5 inner steps of plain gradient descent at step size 0.4 on the
5 support images, adapting every weight (convolution kernels and biases,
batch-norm scales and offsets, and the meta-learned linear head, glorot
`[64, 5]` and zero bias); transductive batch norm (batch statistics on every
pass, support and query normalised separately, no running averages); then
the mean cross-entropy of the 75 queries at the adapted weights, and one
Adam step on it (meta-batch of one task).

The network runs statelessly on explicit fast weights with
`torch.func.functional_call`; second order keeps the inner gradients'
graphs (`create_graph=True`) so the outer backward differentiates through
every inner step; first order (FOMAML) takes them as constants
(`create_graph=False`: the fast weights reach the initial ones through the
identity path only). `check_orders` verifies both against finite
differences in float64.
"""

from __future__ import annotations

# common first: without PyTorch it raises the ImportError that says how to install it.
import common
import torch
import torch.nn.functional as F  # noqa: N812
from torch.func import functional_call

INNER_STEPS = 5
INNER_LEARNING_RATE = 0.4


def meta_loss(model, params, episode, standardise, first_order: bool):
    """The query loss after `INNER_STEPS` inner steps from `params` on the support set."""
    support, support_labels, query, query_labels = episode
    support, query = standardise(support), standardise(query)
    fast = params
    for _ in range(INNER_STEPS):
        loss = F.cross_entropy(functional_call(model, fast, (support,)), support_labels)
        grads = torch.autograd.grad(loss, tuple(fast.values()), create_graph=not first_order)
        fast = {
            name: value - INNER_LEARNING_RATE * grad
            for (name, value), grad in zip(fast.items(), grads)
        }
    return F.cross_entropy(functional_call(model, fast, (query,)), query_labels)


def make_step(episodes: common.Episodes, total_steps: int, first_order: bool, seed: int = 0):
    """A `step(episode) -> loss` closure over a fresh conv4-64 with a head, Adam and its decay."""
    torch.manual_seed(seed)
    model = common.conv4(track_running_stats=False, head=common.N_WAY).train()
    optimizer, schedule = common.adam(model, total_steps)

    def step(episode):
        params = dict(model.named_parameters())
        loss = meta_loss(model, params, episode, episodes.standardise, first_order)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.detach()

    return step


def check_orders(episodes: common.Episodes, seed: int = 0, epsilon: float = 1e-7) -> dict:
    """Directional derivatives of the meta-loss, second and first order, against finite differences.

    In float64 on the first episode at a fresh initialisation: second order
    must match the central difference along a random direction (it
    differentiates through the inner steps); first order must not. ReLU and
    max pooling make the meta-loss piecewise smooth, so the step is small
    (1e-7; at 1e-5 a kink is already crossed on some episodes) and the
    difference is taken at two steps, which must agree.
    """
    torch.manual_seed(seed)
    model = common.conv4(track_running_stats=False, head=common.N_WAY).double().train()
    episode = tuple(t.double() if t.is_floating_point() else t for t in episodes.episodes[0])
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    direction = {name: torch.randn_like(p) for name, p in base.items()}
    norm = torch.sqrt(sum(d.square().sum() for d in direction.values()))
    direction = {name: d / norm for name, d in direction.items()}

    def loss_at(shift: float, first_order: bool):
        params = {name: (p + shift * direction[name]).requires_grad_() for name, p in base.items()}
        return meta_loss(model, params, episode, episodes.standardise, first_order), params

    def gradient(first_order: bool) -> dict:
        loss, params = loss_at(0.0, first_order)
        return dict(zip(params, torch.autograd.grad(loss, tuple(params.values()))))

    def along(grads: dict) -> float:
        return float(sum((grads[name] * direction[name]).sum() for name in grads))

    def central(step: float) -> float:
        # The value does not depend on the order; first order builds the smaller graph.
        ahead, behind = (loss_at(s, True)[0].detach().item() for s in (step, -step))
        return (ahead - behind) / (2 * step)

    second, first = gradient(False), gradient(True)
    finite, finite_half = central(epsilon), central(epsilon / 2)
    second_along, first_along = along(second), along(first)
    difference = torch.sqrt(sum((second[n] - first[n]).square().sum() for n in second))
    second_norm = torch.sqrt(sum(g.square().sum() for g in second.values()))
    result = {
        "dtype": "float64",
        "finite_difference_step": epsilon,
        "finite_difference": finite,
        "finite_difference_half_step": finite_half,
        "second_order": second_along,
        "first_order": first_along,
        "second_order_relative_error": abs(second_along - finite) / abs(finite),
        "first_order_relative_error": abs(first_along - finite) / abs(finite),
        "first_vs_second_order_gradient_relative_difference": float(difference / second_norm),
    }
    result["passes"] = (
        abs(finite - finite_half) < 1e-4 * abs(finite)
        and result["second_order_relative_error"] < 1e-4
        and result["first_order_relative_error"] > 1e-2
        and result["first_vs_second_order_gradient_relative_difference"] > 1e-2
    )
    return result
