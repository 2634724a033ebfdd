"""What an entropic OT solve returns, shared by Sinkhorn and SNS so callers can swap solvers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class OTResult:
    """A plan P = exp((f ⊕ g − C)/ε) with its dual potentials and how the solve went."""

    plan: torch.Tensor  # [..., n, m]
    f: torch.Tensor  # [..., n] dual potential of the rows (units of cost)
    g: torch.Tensor  # [..., m] dual potential of the columns
    iterations: int  # Sinkhorn sweeps + Newton steps
    error: torch.Tensor  # [...] ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ of the returned plan
    converged: bool  # every problem of the batch reached the tolerance
    eps: float
    sinkhorn_iterations: int = 0
    newton_iterations: int = 0
    cg_iterations: int = 0  # total over all Newton steps
    kernel_passes: int = 0  # full passes of exp over the n×m matrix: the dominant cost of either solver
