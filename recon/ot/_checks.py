"""Argument checks shared by the solvers: float64 tensors with matching shapes and valid marginals."""

from __future__ import annotations

import torch


def as_problem(
    a: torch.Tensor, b: torch.Tensor, C: torch.Tensor, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cast to `dtype` (float64: exp of (f+g−C)/ε at small ε loses everything in float32) and check shapes."""
    a, b, C = (torch.as_tensor(t).to(dtype) for t in (a, b, C))
    if C.dim() < 2:
        raise ValueError(f"cost must be [..., n, m], got shape {tuple(C.shape)}")
    n, m = C.shape[-2:]
    if a.shape[-1] != n or b.shape[-1] != m:
        raise ValueError(f"marginals of sizes {a.shape[-1]}, {b.shape[-1]} do not fit a {n}×{m} cost")
    if bool((a < 0).any()) or bool((b < 0).any()):
        raise ValueError("marginals must be non-negative")
    return a, b, C
