"""Cross-view losses over a batch of matching (ground_i, aerial_i) descriptor pairs.

* ``soft_margin_triplet``: SeqGeo / GeoDTR weighted soft-margin triplet over ALL in-batch
  negatives, both directions: mean log(1 + exp(gamma * (d(g_i, a_i) - d(g_i, a_j)))) with
  d = squared L2 distance of unit vectors (2 - 2 cos).
* ``info_nce``: symmetric cross-entropy over cosine similarities / temperature.
* ``counterfactual``: GeoDTR's counterfactual loss: the matching "effect" of the real
  layouts (real distance matrix minus the one obtained with random layouts) goes through the
  same triplet loss, so the layouts must explain the match.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _dist(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 2.0 - 2.0 * g @ a.T


def triplet_from_distances(d: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """Soft-margin triplet on a [B, B] distance matrix whose diagonal holds the positives."""
    B = d.shape[0]
    if B < 2:
        raise ValueError("the in-batch losses need at least 2 pairs")
    pos = d.diag()
    off = ~torch.eye(B, dtype=torch.bool, device=d.device)
    g2a = F.softplus(gamma * (pos[:, None] - d))[off]  # ground anchor vs other aerials
    a2g = F.softplus(gamma * (pos[None, :] - d))[off]  # aerial anchor vs other grounds
    return 0.5 * (g2a.mean() + a2g.mean())


def soft_margin_triplet(g: torch.Tensor, a: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    return triplet_from_distances(_dist(g, a), gamma)


def info_nce(g: torch.Tensor, a: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    logits = g @ a.T / temperature
    target = torch.arange(g.shape[0], device=g.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def counterfactual(g: torch.Tensor, a: torch.Tensor, g_cf: torch.Tensor, a_cf: torch.Tensor,
                   gamma: float = 10.0) -> torch.Tensor:
    """Triplet on the effect of the real layouts: d(real) - d(counterfactual)."""
    return triplet_from_distances(_dist(g, a) - _dist(g_cf, a_cf), gamma)


LOSSES = {"triplet": soft_margin_triplet, "infonce": info_nce}
