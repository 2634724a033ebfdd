"""Unbalanced (KL-relaxed) log-domain Sinkhorn: transport where only part of either cloud has a counterpart.

    min_P ⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b)        (Chizat, Peyré, Schmitzer, Vialard 2018)

ρ = None keeps that marginal exact (ρ = ∞). With a finite ρ, mass that would have to travel further than about √ρ
is cheaper to create or destroy than to move, so a cropped part of one cloud does not pull the other towards it.
The scaling iterations are Sinkhorn's with the update damped by λ = ρ / (ρ + ε):

    u ← λ_a (log a − LSE_j(K_ij + v_j)),   v ← λ_b (log b − LSE_i(K_ij + u_i)),   K = −C/ε,   P = exp(K + u ⊕ v)

Any float dtype, batched over leading dimensions, a fixed number of sweeps with an optional warm start: made to sit
inside an outer loop (alignment) that re-solves a slowly changing problem many times, not to reach 1e-9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UnbalancedResult:
    plan: torch.Tensor  # [..., n, m]
    u: torch.Tensor  # [..., n] row potential divided by ε (warm start of the next solve)
    v: torch.Tensor  # [..., m]
    eps: float


def _damping(rho: float | None, eps: float) -> float:
    if rho is None:
        return 1.0
    if rho <= 0:
        raise ValueError(f"rho must be > 0 (or None for an exact marginal), got {rho}")
    return rho / (rho + eps)


def sinkhorn_unbalanced(
    a: torch.Tensor,
    b: torch.Tensor,
    C: torch.Tensor,
    eps: float,
    rho_a: float | None = None,
    rho_b: float | None = None,
    iterations: int = 50,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    absorb_at: float | None = None,
) -> UnbalancedResult:
    """`iterations` sweeps of the KL-relaxed Sinkhorn updates on a [..., n], b [..., m], C [..., n, m].

    With both ρ None this is balanced log-domain Sinkhorn (without its stopping test). `init` = (u, v) from a
    previous result warm-starts the potentials (they are in units of ε of that solve; pass the same ε).

    The log-sum-exps are computed as matrix–vector products with a stabilised kernel (Schmitzer 2019):
    K̃ = exp(K + u₀ ⊕ v₀) absorbs the potentials of the last absorption, so LSE_j(K_ij + v_j) =
    log(K̃ exp(v − v₀))_i − u₀_i, exact while exp(v − v₀) is representable. The potentials are absorbed again
    (one exp over the matrix) when they drift more than `absorb_at` from u₀, v₀ (default 40 in float32, 200 in
    float64: far from overflow either way); a sweep costs two mat-vecs instead of two exps over the matrix. The
    first sweep without `init` is in plain log domain.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1, got {iterations}")
    lam_a, lam_b = _damping(rho_a, eps), _damping(rho_b, eps)
    log_a = a.to(C.dtype).log().expand(*C.shape[:-1])
    log_b = b.to(C.dtype).log().expand(*C.shape[:-2], C.shape[-1])
    tiny = torch.finfo(C.dtype).tiny
    if absorb_at is None:
        absorb_at = 200.0 if C.dtype == torch.float64 else 40.0

    def kernel(u0: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:  # exp(K + u₀ ⊕ v₀) in one buffer
        return torch.mul(C, -1.0 / eps).add_(u0.unsqueeze(-1)).add_(v0.unsqueeze(-2)).exp_()

    if init is None:
        K = torch.mul(C, -1.0 / eps)
        u = lam_a * (log_a - torch.logsumexp(K, dim=-1))
        v = lam_b * (log_b - torch.logsumexp(K.add_(u.unsqueeze(-1)), dim=-2))
        del K
        iterations -= 1
    else:
        u, v = init[0].to(C.dtype).expand_as(log_a), init[1].to(C.dtype).expand_as(log_b)
    u0, v0 = u, v
    Kt = kernel(u0, v0)
    for _ in range(iterations):
        row = (Kt @ torch.exp(v - v0).unsqueeze(-1)).squeeze(-1)
        u = lam_a * (log_a + u0 - row.clamp_min(tiny).log())
        col = (torch.exp(u - u0).unsqueeze(-2) @ Kt).squeeze(-2)
        v = lam_b * (log_b + v0 - col.clamp_min(tiny).log())
        if float(torch.maximum((u - u0).abs().amax(), (v - v0).abs().amax())) > absorb_at:
            u0, v0 = u, v
            Kt = kernel(u0, v0)
    plan = Kt.mul_(torch.exp(u - u0).unsqueeze(-1)).mul_(torch.exp(v - v0).unsqueeze(-2))
    return UnbalancedResult(plan=plan, u=u, v=v, eps=eps)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Generalised KL(p ‖ q) = Σ p log(p/q) − p + q over the last dimension (p, q ≥ 0, unnormalised)."""
    ratio = torch.where(p > 0, p / q, torch.ones_like(p))
    return (torch.xlogy(p, ratio) - p + q).sum(-1)


def unbalanced_cost(
    result: UnbalancedResult,
    a: torch.Tensor,
    b: torch.Tensor,
    C: torch.Tensor,
    rho_a: float | None,
    rho_b: float | None,
) -> torch.Tensor:
    """⟨C, P⟩ + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b) of the plan (no entropy term): how well the clouds fit. [...]"""
    P = result.plan
    value = (P * C).sum((-1, -2))
    if rho_a is not None:
        value = value + rho_a * kl_divergence(P.sum(-1), a.to(P.dtype).expand(*P.shape[:-1]))
    if rho_b is not None:
        value = value + rho_b * kl_divergence(P.sum(-2), b.to(P.dtype).expand(*P.shape[:-2], P.shape[-1]))
    return value
