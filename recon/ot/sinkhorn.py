"""Log-domain Sinkhorn: the stable baseline at any ε, batched over leading dimensions, and SNS's warm start."""

from __future__ import annotations

import torch

from ._checks import as_problem
from .config import SinkhornConfig
from .result import OTResult


def plan_from_scaled(K: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """P_ij = exp(K_ij + u_i + v_j) with K = −C/ε and the potentials divided by ε."""
    return torch.exp(K + u.unsqueeze(-1) + v.unsqueeze(-2))


def marginal_error(P: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ per problem: the stopping rule shared by every solver here."""
    return (P.sum(-1) - a).abs().sum(-1) + (P.sum(-2) - b).abs().sum(-1)


def sinkhorn_log(
    a: torch.Tensor,
    b: torch.Tensor,
    C: torch.Tensor,
    eps: float,
    config: SinkhornConfig | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> OTResult:
    """Solve min ⟨C,P⟩ − εH(P) s.t. P1 = a, Pᵀ1 = b by alternating exact maximisation of the dual.

    a [..., n], b [..., m], C [..., n, m]; leading dimensions are independent problems solved together.
    Works on u = f/ε, v = g/ε:  u ← log a − LSE_j(K_ij + v_j),  v ← log b − LSE_i(K_ij + u_i),  K = −C/ε.
    After a v-update the columns are exact, and the LSE of the next u-update gives the row sums for free,
    so the stopping test costs no extra pass over the matrix. `init` = (f, g) warm-starts the potentials.
    """
    cfg = config or SinkhornConfig()
    a, b, C = as_problem(a, b, C)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    n, m = C.shape[-2:]
    a = a.expand(*batch, n)
    b = b.expand(*batch, m)
    K = -C / eps
    log_a, log_b = a.log(), b.log()
    if init is None:
        u = torch.zeros_like(a)
        v = torch.zeros_like(b)
    else:
        u = (init[0].to(a) / eps).expand_as(a).clone()
        v = (init[1].to(b) / eps).expand_as(b).clone()
    sweeps = 0
    while True:
        lse_row = torch.logsumexp(K + v.unsqueeze(-2), dim=-1)
        if sweeps > 0:
            row_error = (torch.exp(u + lse_row) - a).abs().sum(-1)
            if bool((row_error < cfg.tol).all()) or sweeps >= cfg.max_iter:
                break
        elif cfg.max_iter <= 0:
            break
        u = log_a - lse_row
        v = log_b - torch.logsumexp(K + u.unsqueeze(-1), dim=-2)
        sweeps += 1
    P = plan_from_scaled(K, u, v)
    error = marginal_error(P, a, b)
    return OTResult(
        plan=P,
        f=u * eps,
        g=v * eps,
        iterations=sweeps,
        error=error,
        converged=bool((error < cfg.tol).all()),
        eps=eps,
        sinkhorn_iterations=sweeps,
        kernel_passes=2 * sweeps + 2,
    )
