"""Entropic OT values and the debiased Sinkhorn divergence between point clouds (mesh samples, splat centres).

OT_ε(a, b) = min_P ⟨C, P⟩ + ε KL(P ‖ a⊗b). Relative to the product of the marginals (not plain entropy), the value
is finite at ε → 0 and S_ε(α, β) = OT_ε(α, β) − ½OT_ε(α, α) − ½OT_ε(β, β) is ≥ 0 and zero only when α = β
(Feydy et al. 2019); unlike Chamfer it compares how much mass sits where.
"""

from __future__ import annotations

import torch

from .config import OTConfig
from .cost import resolve_eps, squared_euclidean
from .solve import solve


def entropic_ot_value(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, g: torch.Tensor, eps: float
) -> torch.Tensor:
    """OT_ε from converged column potentials g, differentiable w.r.t. C (and so w.r.t. the points).

    One more row update f = ε log a − ε LSE_j((g_j − C_ij)/ε) makes the rows exact, and then
    OT_ε = ⟨f − ε log a, a⟩ + ⟨g − ε log b, b⟩. With g held fixed its gradient w.r.t. C is that row-exact plan,
    which is the envelope-theorem gradient at convergence: no backpropagation through the iterations.
    """
    a = a.to(C.dtype)
    b = b.to(C.dtype)
    g = g.detach().to(C.dtype)
    lse = torch.logsumexp((g.unsqueeze(-2) - C) / eps, dim=-1)
    f_shifted = -eps * lse  # f − ε log a
    g_shifted = g - eps * torch.where(b > 0, b.log(), torch.zeros_like(b))
    return (f_shifted * a).sum(-1) + (g_shifted * b).sum(-1)


def _uniform(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=torch.float64, device=like.device)


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    config: OTConfig | None = None,
) -> torch.Tensor:
    """S_ε(α, β) between weighted point clouds x [n, d] and y [m, d] (uniform weights by default), in float64.

    The cost is ‖x − y‖², so S_ε has units of squared distance (S_ε(α, α + t) = ‖t‖² for a shift t).
    One ε serves all three terms, as the debiasing requires. When n = m the three problems run as one batch.
    Differentiable w.r.t. x and y (see `entropic_ot_value`).
    """
    cfg = config or OTConfig()
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    a = _uniform(len(x64), x64) if a is None else a.to(torch.float64)
    b = _uniform(len(y64), y64) if b is None else b.to(torch.float64)
    C_xy = squared_euclidean(x64, y64)
    C_xx = squared_euclidean(x64, x64)
    C_yy = squared_euclidean(y64, y64)
    eps = resolve_eps(C_xy, cfg.eps, cfg.eps_relative)
    if len(x64) == len(y64):
        C = torch.stack([C_xy, C_xx, C_yy])
        A, B = torch.stack([a, a, b]), torch.stack([b, a, b])
        with torch.no_grad():
            res = solve(A, B, C.detach(), eps, cfg)
        values = entropic_ot_value(A, B, C, res.g, eps)
        return values[0] - 0.5 * values[1] - 0.5 * values[2]
    total = C_xy.new_zeros(())
    for weight, (p, q, C) in zip((1.0, -0.5, -0.5), ((a, b, C_xy), (a, a, C_xx), (b, b, C_yy))):
        with torch.no_grad():
            res = solve(p, q, C.detach(), eps, cfg)
        total = total + weight * entropic_ot_value(p, q, C, res.g, eps)
    return total
