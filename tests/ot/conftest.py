"""Small random OT problems shared by the OT tests (float64, fixed seeds)."""

from __future__ import annotations

import pytest
import torch

from recon.ot import squared_euclidean


def random_problem(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-uniform marginals and a squared-Euclidean cost between uniform points in the unit square."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64)
    y = torch.rand(m, 2, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
    return a / a.sum(), b / b.sum(), squared_euclidean(x, y)


@pytest.fixture(scope="module")
def problem_50x60() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return random_problem(50, 60, seed=0)
