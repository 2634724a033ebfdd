"""Cost matrices between point clouds and the ε that follows their scale."""

from __future__ import annotations

import torch


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """C_ij = ‖x_i − y_j‖² for [..., n, d] and [..., m, d], exact differences (no ‖x‖² + ‖y‖² − 2xy cancellation)."""
    return (x.unsqueeze(-2) - y.unsqueeze(-3)).pow(2).sum(-1)


def resolve_eps(C: torch.Tensor, eps: float, relative: bool) -> float:
    """ε itself, or eps · mean(C) so that one setting works whatever the units of the points."""
    if eps <= 0:
        raise ValueError(f"ot.eps must be > 0, got {eps}")
    if not relative:
        return float(eps)
    scale = float(C.detach().mean())
    if not scale > 0:
        raise ValueError("ot.eps_relative needs a cost matrix with a positive mean")
    return float(eps) * scale
