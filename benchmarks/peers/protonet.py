"""ProtoNet's meta-training step in eager PyTorch, as metasearch's `protonet` plugin runs it.

`metasearch.plugins.protonet.PrototypicalNetworks` with `metric=sqeuclidean`
and `embedding_dim=0` on conv4-64: one backbone pass over the support and
query images together (batch norm in training mode sees the whole episode of
80 images and updates its running averages), prototypes as one-hot class
means of the support embeddings, logits the negative squared Euclidean
distances (by the expansion |q|^2 - 2 q.p + |p|^2, clamped at 0), mean
cross-entropy over the 75 queries, one Adam step. (The query accuracy metasearch
also computes, an argmax over 75x5 logits, is left out: negligible.)
"""

from __future__ import annotations

# common first: without PyTorch it raises the ImportError that says how to install it.
import common
import torch
import torch.nn.functional as F  # noqa: N812


def squared_distances(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    q2 = queries.square().sum(1, keepdim=True)
    p2 = prototypes.square().sum(1)[None, :]
    return (q2 - 2.0 * queries @ prototypes.T + p2).clamp_min(0.0)


def make_step(episodes: common.Episodes, total_steps: int, seed: int = 0):
    """A `step(episode) -> loss` closure over a fresh conv4-64, Adam and its decay."""
    torch.manual_seed(seed)
    model = common.conv4().train()
    optimizer, schedule = common.adam(model, total_steps)

    def step(episode):
        support, support_labels, query, query_labels = episode
        n_support = support.shape[0]
        images = episodes.standardise(torch.cat([support, query]))
        embeddings = model(images)
        prototypes = common.class_means(embeddings[:n_support], support_labels, common.N_WAY)
        logits = -squared_distances(embeddings[n_support:], prototypes)
        loss = F.cross_entropy(logits, query_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return loss.detach()

    return step
