"""The sparsified Hessian of the Sinkhorn dual: exact diagonal, only the largest plan entries off the diagonal."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch


def mass_threshold(P: torch.Tensor, drop_mass: float) -> float:
    """A value τ such that the entries of P below τ hold at most `drop_mass` of its total mass.

    One pass: the mass per binary exponent (frexp + weighted bincount), then the lowest exponents whose summed
    mass stays within budget are dropped. Resolution is a factor 2 in value, always on the safe side.
    """
    exponent = torch.frexp(P).exponent.reshape(-1).to(torch.int64)  # P = m·2^e with m ∈ [0.5, 1)
    low = int(exponent.min())
    mass = torch.bincount(exponent - low, weights=P.reshape(-1))
    droppable = int((mass.cumsum(0) <= drop_mass * float(mass.sum())).sum())
    return 2.0 ** (low + droppable - 1)  # smallest value with exponent low + droppable


def _csr_rows(mask: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR (row pointers, column indices, values) of the masked entries, in row-major order."""
    idx = mask.nonzero()
    crow = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(idx[:, 0], minlength=mask.shape[0]).cumsum(0)
    return crow, idx[:, 1], values[mask]


@dataclass
class SparseHessian:
    """H̃ = [[diag(P1), P̃], [P̃ᵀ, diag(Pᵀ1)]] + ridge·I, the negated Hessian of the dual in (f/ε, g/ε).

    P̃ keeps the largest entries of P (Tang et al.: at small ε the plan is close to sparse, so few entries carry the
    curvature). H̃ stays positive semidefinite because its diagonal dominates what is left of each row and column.
    Both off-diagonal blocks live in one (n+m)² CSR matrix, so a product is one sparse mat-vec.
    """

    diagonal: torch.Tensor  # [n + m] (P1, Pᵀ1) + ridge
    offdiag: torch.Tensor  # sparse CSR [n + m, n + m] holding P̃ and P̃ᵀ
    kept_mass: float  # share of the plan's mass kept off the diagonal: how faithful the sparsification is

    @classmethod
    def from_plan(
        cls,
        P: torch.Tensor,
        row_sum: torch.Tensor,
        col_sum: torch.Tensor,
        ridge: float,
        rho: float | None = None,
        drop_mass: float = 1e-5,
    ) -> SparseHessian:
        """Keep the ⌈ρ·n·m⌉ largest entries when `rho` is given, else the largest ones holding 1 − drop_mass of the mass."""
        n, m = P.shape
        if rho is not None:
            nnz = min(n * m, max(1, int(rho * n * m + 0.999999)))
            threshold = float(torch.kthvalue(P.reshape(-1), n * m - nnz + 1).values)
        else:
            threshold = mass_threshold(P, drop_mass)
        mask = P >= threshold
        crow, col, val = _csr_rows(mask, P)
        crow_t, col_t, val_t = _csr_rows(mask.t().contiguous(), P.t())
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            offdiag = torch.sparse_csr_tensor(
                torch.cat([crow, crow_t[1:] + crow[-1]]),
                torch.cat([col + n, col_t]),
                torch.cat([val, val_t]),
                (n + m, n + m),
            )
        kept = float(val.sum() / row_sum.sum())
        return cls(torch.cat([row_sum, col_sum]) + ridge, offdiag, kept)

    @property
    def nnz(self) -> int:
        """Kept entries of P (each appears twice in the symmetric CSR)."""
        return self.offdiag.values().numel() // 2

    def matvec(self, z: torch.Tensor) -> torch.Tensor:
        """H̃ z for z = [x (n); y (m)]."""
        return self.diagonal * z + self.offdiag @ z
