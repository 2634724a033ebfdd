"""One entry point for entropic OT: the solver named by the config, with ε resolved against the cost."""

from __future__ import annotations

import torch

from .config import OTConfig
from .cost import resolve_eps
from .result import OTResult
from .sinkhorn import sinkhorn_log
from .sns import sinkhorn_newton_sparse


def solve(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, eps: float, config: OTConfig) -> OTResult:
    """Entropic OT with the solver `config.solver` names; SNS solves batches one problem at a time."""
    if config.solver == "sinkhorn":
        return sinkhorn_log(a, b, C, eps, config.sinkhorn)
    if config.solver != "sns":
        raise ValueError(f"ot.solver must be 'sinkhorn' or 'sns', got {config.solver!r}")
    if C.dim() == 2:
        return sinkhorn_newton_sparse(a, b, C, eps, config.sns)
    batch = C.shape[:-2]
    a = a.to(torch.float64).expand(*batch, C.shape[-2]).reshape(-1, C.shape[-2])
    b = b.to(torch.float64).expand(*batch, C.shape[-1]).reshape(-1, C.shape[-1])
    parts = [
        sinkhorn_newton_sparse(ai, bi, Ci, eps, config.sns)
        for ai, bi, Ci in zip(a, b, C.reshape(-1, *C.shape[-2:]))
    ]
    return OTResult(
        plan=torch.stack([p.plan for p in parts]).reshape(C.shape),
        f=torch.stack([p.f for p in parts]).reshape(*batch, -1),
        g=torch.stack([p.g for p in parts]).reshape(*batch, -1),
        iterations=max(p.iterations for p in parts),
        error=torch.stack([p.error for p in parts]).reshape(batch),
        converged=all(p.converged for p in parts),
        eps=eps,
        sinkhorn_iterations=sum(p.sinkhorn_iterations for p in parts),
        newton_iterations=sum(p.newton_iterations for p in parts),
        cg_iterations=sum(p.cg_iterations for p in parts),
        kernel_passes=sum(p.kernel_passes for p in parts),
    )


def solve_ot(a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, config: OTConfig | None = None) -> OTResult:
    """Entropic OT as the app configures it (`--set ot.solver=… ot.eps=… ot.eps_relative=…`)."""
    cfg = config or OTConfig()
    return solve(a, b, C, resolve_eps(torch.as_tensor(C), cfg.eps, cfg.eps_relative), cfg)
