"""Preconditioned conjugate gradient: solves the sparse Newton systems of SNS without forming or factoring them."""

from __future__ import annotations

from collections.abc import Callable

import torch


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    diag: torch.Tensor | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> tuple[torch.Tensor, int]:
    """x ≈ A⁻¹ rhs for a symmetric positive (semi)definite A given by `matvec`; Jacobi-preconditioned by `diag`.

    Stops when ‖r‖ ≤ tol·‖rhs‖ or after `max_iter` iterations; returns (x, iterations used).
    A positive-semidefinite A is fine when rhs lies in its range (CG then stays there).
    """
    inv_diag = None if diag is None else 1.0 / diag
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r if inv_diag is None else inv_diag * r
    p = z.clone()
    rz = torch.dot(r, z)
    stop = tol * float(torch.linalg.vector_norm(rhs))
    it = 0
    while it < max_iter and float(torch.linalg.vector_norm(r)) > stop:
        Ap = matvec(p)
        pAp = torch.dot(p, Ap)
        if not float(pAp) > 0:  # no curvature left along p (numerically singular direction)
            break
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        z = r if inv_diag is None else inv_diag * r
        rz_new = torch.dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
        it += 1
    return x, it
