"""The knobs of the OT solvers, as dataclasses with their defaults (METHODS.md §4.1–4.2), in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class SinkhornConfig:
    """Log-domain Sinkhorn: the baseline, and the warm start of SNS."""

    max_iter: int = 10_000  # full sweeps (an f-update then a g-update); stops earlier at `tol`
    tol: float = 1e-9  # stop when ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ < tol (POT's default stopThr)


@dataclass
class SNSConfig:
    """Sinkhorn–Newton–Sparse (Tang et al. 2024): Sinkhorn warm-up, then Newton on the dual with a sparse Hessian."""

    warmup_iter: int = 20  # N₁ Sinkhorn sweeps before Newton (METHODS.md default, ours)
    newton_iter: int = 50  # N₂: at most this many Newton steps
    tol: float = 1e-9  # same stopping rule as Sinkhorn: ‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ < tol
    drop_mass: float = (
        1e-5  # the Hessian drops the smallest plan entries holding at most this share of the mass
    )
    rho: float | None = None  # or, when set, keep this share of the n·m entries (the paper's knob) instead
    cg_tol: float = 1e-10  # relative residual of the conjugate-gradient solve
    cg_max_iter: int = 100  # CG iterations per Newton step
    ridge: float = 1e-10  # added to the diagonal: ∇²F is singular along (1, −1)
    armijo_c1: float = 1e-4  # sufficient-increase constant of the backtracking line search
    max_halvings: int = 30  # step halvings before the line search gives up (then one Sinkhorn sweep instead)


@dataclass
class SparseOTConfig:
    """Sparsity-constrained OT (Liu, Puigcerver, Blondel 2023): at most k non-zeros per column of the plan."""

    k: int = 4  # non-zeros allowed per column (`ot.sparse_k`); k ≥ n is plain quadratically-regularised OT
    gamma: float = 0.1  # weight γ of the (γ/2)‖T‖² regulariser (`ot.gamma`)
    formulation: Literal["dual", "semi_dual"] = "dual"  # which smooth dual L-BFGS maximises
    max_iter: int = 1000  # L-BFGS iterations
    tol: float = (
        1e-10  # stop when the largest entry of the dual gradient (a marginal violation) is below this
    )
    history: int = 20  # L-BFGS memory


@dataclass
class OTConfig:
    """What the app exposes as `--set ot.*`: the solver, ε, and the sparse-OT knobs."""

    solver: Literal["sinkhorn", "sns"] = "sinkhorn"  # `ot.solver`
    eps: float = 0.01  # entropic regularisation ε (`ot.eps`)
    eps_relative: bool = True  # ε is eps · mean(C) when true, so it follows the scale of the data
    sinkhorn: SinkhornConfig = field(default_factory=SinkhornConfig)
    sns: SNSConfig = field(default_factory=SNSConfig)
    sparse: SparseOTConfig = field(default_factory=SparseOTConfig)
