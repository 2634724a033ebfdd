"""Euclidean projections onto the simplex and the k-sparse simplex: the maps behind sparsity-constrained OT."""

from __future__ import annotations

import torch


def project_simplex(x: torch.Tensor, dim: int = -1, z: float = 1.0) -> torch.Tensor:
    """argmin_t ‖t − x‖ s.t. t ≥ 0, Σt = z, along `dim` (sort-based, O(d log d), batched over the other dims).

    With x sorted decreasingly, t = [x − τ]₊ where τ = (Σ_{i≤ρ} x_i − z)/ρ and ρ is the largest j with
    x_j − (Σ_{i≤j} x_i − z)/j > 0 (the condition holds exactly on a prefix, so ρ is a count).
    """
    x = x.movedim(dim, -1)
    s = torch.sort(x, dim=-1, descending=True).values
    excess = s.cumsum(-1) - z
    j = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    count = (s - excess / j > 0).sum(-1, keepdim=True).clamp_min(1)
    tau = excess.gather(-1, count - 1) / count.to(x.dtype)
    return (x - tau).clamp_min(0).movedim(-1, dim)


def project_ksparse_simplex(x: torch.Tensor, k: int, dim: int = -1, z: float = 1.0) -> torch.Tensor:
    """argmin_t ‖t − x‖ s.t. t ≥ 0, Σt = z, ‖t‖₀ ≤ k: keep the k largest entries, project them onto the simplex.

    (Kyrillidis et al. 2013: the best support is the k largest values, because the simplex projection of a set
    of values only shifts them by a common τ.) k ≥ d is the plain simplex projection.
    """
    d = x.shape[dim]
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if k >= d:
        return project_simplex(x, dim, z)
    vals, idx = torch.topk(x, k, dim=dim)
    return torch.zeros_like(x).scatter(dim, idx, project_simplex(vals, dim, z))
