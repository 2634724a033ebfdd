"""Sparsity-constrained OT (Liu, Puigcerver, Blondel, ICLR 2023): plans with at most k non-zeros per column.

Primal: min ⟨T, C⟩ + (γ/2)‖T‖²_F over couplings of (a, b) with ‖T_{:,j}‖₀ ≤ k. Its smooth duals are maximised by
L-BFGS; the plan is read off the dual variables column by column, so the k-sparsity holds by construction:
- dual:      max_{α,β} αᵀa + βᵀb − Σ_j δΩ(α + β_j − C_{:,j}),  δΩ(x) = (1/2γ) Σ_{i∈topk(x)} [x_i]₊²,
             T_{:,j} = [x]₊ on topk(x), divided by γ;
- semi-dual: max_α αᵀa − Σ_j b_j maxΩ(α − C_{:,j}),  t* = k-sparse simplex projection of x/(b_j γ),
             maxΩ(x) = ⟨x, t*⟩ − (γ/2) b_j ‖t*‖²,  T_{:,j} = b_j t*  (columns exact, rows at the optimum).
The duals solve a convex relaxation of the (non-convex) primal: when k is too small for the marginals to be met
(say n > k·m, or k = 1 with masses that do not split evenly) the plan read off the optimum misses them, and
`error` says by how much; POT behaves the same. Where they are met the value is differentiable in C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import as_problem
from .config import SparseOTConfig
from .lbfgs import lbfgs_maximize
from .projections import project_ksparse_simplex


@dataclass
class SparseOTResult:
    plan: torch.Tensor  # [n, m], at most k non-zeros per column
    alpha: torch.Tensor  # [n] dual variable of the rows
    beta: torch.Tensor | None  # [m] dual variable of the columns (None for the semi-dual)
    value: float  # optimal dual value = ⟨T, C⟩ + (γ/2)‖T‖² at the optimum
    iterations: int  # L-BFGS iterations
    error: float  # ‖T1 − a‖₁ + ‖Tᵀ1 − b‖₁
    converged: bool  # the dual gradient fell below the tolerance


def _topk_positive(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column, [x]₊ on the k largest entries and zero elsewhere; and Σ of their squares per column."""
    if k >= x.shape[0]:
        pos = x.clamp_min(0)
        return pos, pos.pow(2).sum(0)
    vals, idx = torch.topk(x, k, dim=0)
    pos = vals.clamp_min(0)
    return torch.zeros_like(x).scatter(0, idx, pos), pos.pow(2).sum(0)


def dual_objective(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    C: torch.Tensor,
    k: int,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value, gradient w.r.t. (α, β), plan) of the dual; the gradient is the marginal violation (a − T1, b − Tᵀ1)."""
    pos, sq = _topk_positive(alpha[:, None] + beta[None, :] - C, k)
    T = pos / gamma
    value = alpha @ a + beta @ b - sq.sum() / (2 * gamma)
    return value, torch.cat([a - T.sum(1), b - T.sum(0)]), T


def semi_dual_objective(
    alpha: torch.Tensor, a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, k: int, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(value, gradient w.r.t. α, plan) of the semi-dual; gradient a − T1 (the columns of T sum to b exactly)."""
    x = alpha[:, None] - C
    t = project_ksparse_simplex(x / (b * gamma), k, dim=0)
    max_omega = (x * t).sum(0) - 0.5 * gamma * b * t.pow(2).sum(0)
    T = t * b
    value = alpha @ a - (b * max_omega).sum()
    return value, a - T.sum(1), T


def sparsity_constrained_ot(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, config: SparseOTConfig | None = None
) -> SparseOTResult:
    """Solve one n×m sparsity-constrained OT problem in float64 by L-BFGS on the chosen dual."""
    cfg = config or SparseOTConfig()
    a, b, C = as_problem(a, b, C)
    if C.dim() != 2:
        raise ValueError(f"cost must be [n, m], got {tuple(C.shape)}")
    if cfg.gamma <= 0 or cfg.k < 1:
        raise ValueError(f"need gamma > 0 and k ≥ 1, got gamma={cfg.gamma}, k={cfg.k}")
    if cfg.formulation not in ("dual", "semi_dual"):
        raise ValueError(f"ot.sparse.formulation must be 'dual' or 'semi_dual', got {cfg.formulation!r}")
    n, m = C.shape
    dual = cfg.formulation == "dual"
    z0 = torch.zeros(n + m if dual else n, dtype=C.dtype)

    def evaluate(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if dual:
            return dual_objective(v[:n], v[n:], a, b, C, cfg.k, cfg.gamma)
        return semi_dual_objective(v, a, b, C, cfg.k, cfg.gamma)

    z, iterations = lbfgs_maximize(lambda v: evaluate(v)[:2], z0, cfg.max_iter, cfg.tol, cfg.history)
    with torch.no_grad():
        value, grad, T = evaluate(z)
        alpha = z[:n].clone()
        beta = z[n:].clone() if dual else None
    error = float((T.sum(1) - a).abs().sum() + (T.sum(0) - b).abs().sum())
    return SparseOTResult(
        plan=T,
        alpha=alpha,
        beta=beta,
        value=float(value),
        iterations=iterations,
        error=error,
        converged=float(grad.abs().max()) <= cfg.tol,
    )


class _SparseOTValue(torch.autograd.Function):
    """The optimal value as a function of C; by Danskin's theorem its gradient is the optimal plan T."""

    @staticmethod
    def forward(
        ctx, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, config: SparseOTConfig
    ) -> torch.Tensor:
        res = sparsity_constrained_ot(a.detach(), b.detach(), C.detach(), config)
        ctx.save_for_backward(res.plan.to(C.dtype))
        return torch.tensor(res.value, dtype=C.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (T,) = ctx.saved_tensors
        return grad_out * T, None, None, None


def sparse_ot_value(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, config: SparseOTConfig | None = None
) -> torch.Tensor:
    """min ⟨T, C⟩ + (γ/2)‖T‖² under the k-sparsity constraint, differentiable w.r.t. C (gradient = optimal T)."""
    return _SparseOTValue.apply(C, a, b, config or SparseOTConfig())
