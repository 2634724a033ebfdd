"""Sinkhorn–Newton–Sparse (Tang et al., ICLR 2024): Sinkhorn gets close cheaply, sparse Newton steps finish fast.

Sinkhorn's linear rate degrades as ε shrinks; Newton on the dual converges in a handful of steps once close, and
each step costs O(n·m) like a Sinkhorn sweep because the Hessian is replaced by a sparse one (see `SparseHessian`).
"""

from __future__ import annotations

import torch

from ._checks import as_problem
from .cg import conjugate_gradient
from .config import SinkhornConfig, SNSConfig
from .result import OTResult
from .sinkhorn import marginal_error, plan_from_scaled, sinkhorn_log
from .sparse_hessian import SparseHessian

# Below this relative change, two values of the dual cannot be told apart in float64.
_ROUNDING = 64 * torch.finfo(torch.float64).eps


def sinkhorn_newton_sparse(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, config: SNSConfig | None = None
) -> OTResult:
    """Same problem and result as `sinkhorn_log` for one n×m problem, in far fewer iterations at small ε.

    Maximises the concave dual Φ(u, v) = ⟨u, a⟩ + ⟨v, b⟩ − Σ_ij exp(K_ij + u_i + v_j) (u = f/ε, v = g/ε, K = −C/ε),
    whose gradient is (a − P1, b − Pᵀ1) and whose negated Hessian is [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]].
    Each Newton step solves H̃Δ = ∇Φ by CG and backtracks until Armijo's sufficient increase holds; if no step is
    accepted it falls back to one Sinkhorn sweep, which always increases Φ.
    """
    cfg = config or SNSConfig()
    a, b, C = as_problem(a, b, C)
    if C.dim() != 2:
        raise ValueError(
            f"sinkhorn_newton_sparse solves one problem: cost must be [n, m], got {tuple(C.shape)}"
        )
    n, m = C.shape
    warm = sinkhorn_log(a, b, C, eps, SinkhornConfig(max_iter=cfg.warmup_iter, tol=cfg.tol))
    if warm.converged:
        return warm
    K = -C / eps
    u, v = warm.f / eps, warm.g / eps
    P = warm.plan
    passes = warm.kernel_passes
    sinkhorn_sweeps, newton_steps, cg_total = warm.iterations, 0, 0
    row, col = P.sum(1), P.sum(0)
    error = float((row - a).abs().sum() + (col - b).abs().sum())
    while error >= cfg.tol and newton_steps < cfg.newton_iter:
        grad_u, grad_v = a - row, b - col
        H = SparseHessian.from_plan(P, row, col, cfg.ridge, cfg.rho, cfg.drop_mass)
        passes += 3  # choosing the threshold and gathering the kept entries read the whole plan
        grad = torch.cat([grad_u, grad_v])
        step, cg_its = conjugate_gradient(H.matvec, grad, H.diagonal, cfg.cg_tol, cfg.cg_max_iter)
        cg_total += cg_its
        du, dv = step[:n], step[n:]
        # H̃ is positive definite, so Δ is an ascent direction (slope > 0) unless CG broke down.
        slope = float(torch.dot(grad, step))
        mass = float(P.sum())
        gain_per_t = float(torch.dot(du, a) + torch.dot(dv, b))
        t, accepted = 1.0, False
        for _ in range(cfg.max_halvings + 1 if slope > 0 else 0):
            P_new = plan_from_scaled(K, u + t * du, v + t * dv)
            passes += 1
            # Φ(new) − Φ(old) from the changes alone, without cancelling the large ⟨u, a⟩ terms
            increase = t * gain_per_t - (float(P_new.sum()) - mass)
            row_new, col_new = P_new.sum(1), P_new.sum(0)
            error_new = float((row_new - a).abs().sum() + (col_new - b).abs().sum())
            expected = cfg.armijo_c1 * t * slope
            # Near the optimum the expected increase drops below rounding; then a smaller marginal error decides.
            below_rounding = expected < _ROUNDING * max(mass, 1.0)
            if increase >= expected or (below_rounding and error_new < error):
                accepted = True
                break
            t *= 0.5
        newton_steps += 1
        if accepted:
            u, v, P, row, col, error = u + t * du, v + t * dv, P_new, row_new, col_new, error_new
            continue
        # No acceptable Newton step (a poor sparse Hessian far from the optimum): take one Sinkhorn sweep instead.
        u = a.log() - torch.logsumexp(K + v.unsqueeze(0), dim=1)
        v = b.log() - torch.logsumexp(K + u.unsqueeze(1), dim=0)
        P = plan_from_scaled(K, u, v)
        passes += 3
        sinkhorn_sweeps += 1
        row, col = P.sum(1), P.sum(0)
        error = float((row - a).abs().sum() + (col - b).abs().sum())
    err_t = marginal_error(P, a, b)
    return OTResult(
        plan=P,
        f=u * eps,
        g=v * eps,
        iterations=sinkhorn_sweeps + newton_steps,
        error=err_t,
        converged=bool(err_t < cfg.tol),
        eps=eps,
        sinkhorn_iterations=sinkhorn_sweeps,
        newton_iterations=newton_steps,
        cg_iterations=cg_total,
        kernel_passes=passes,
    )
