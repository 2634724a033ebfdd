import numpy as np
import ot
import pytest
import torch

from recon.ot import (
    OTConfig,
    SinkhornConfig,
    entropic_ot_value,
    sinkhorn_divergence,
    sinkhorn_log,
    squared_euclidean,
)


def _cloud(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


TIGHT = OTConfig(eps=0.05, sinkhorn=SinkhornConfig(tol=1e-12))


def test_divergence_of_a_cloud_with_a_shuffled_copy_is_zero():
    x = _cloud(40, 0)
    y = x[torch.randperm(40, generator=torch.Generator().manual_seed(1))]
    assert abs(float(sinkhorn_divergence(x, y, config=TIGHT))) < 1e-10
    assert float(sinkhorn_divergence(x, _cloud(40, 2), config=TIGHT)) > 1e-3


@pytest.mark.parametrize("solver", ["sinkhorn", "sns"])
def test_divergence_of_a_shift_is_its_squared_length_and_so_is_its_gradient(solver):
    """For the cost ‖x − y‖², S_ε(α, α + t) = ‖t‖² exactly (the cross terms are absorbed by the potentials)."""
    x = _cloud(30, 3)
    t = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    y = (x + t).requires_grad_(True)
    cfg = OTConfig(solver=solver, eps=0.05, sinkhorn=TIGHT.sinkhorn)
    cfg.sns.tol = 1e-12
    s = sinkhorn_divergence(x, y, config=cfg)
    assert abs(s.item() - float(t @ t)) < 1e-9
    s.backward()
    torch.testing.assert_close(
        y.grad.sum(0), 2 * t, rtol=0, atol=1e-8
    )  # moving every point by δ changes S by 2t·δ


def test_unequal_sizes_and_weights_take_the_unbatched_path():
    x, y = _cloud(25, 4), _cloud(35, 5) + 0.5
    a = torch.rand(25, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    a = a / a.sum()
    s = sinkhorn_divergence(x, y, a=a, config=TIGHT)
    # the same number from three explicit solves
    eps = 0.05 * float(squared_euclidean(x, y).mean())
    b = torch.full((35,), 1 / 35, dtype=torch.float64)
    terms = []
    for p, q, C in (
        (a, b, squared_euclidean(x, y)),
        (a, a, squared_euclidean(x, x)),
        (b, b, squared_euclidean(y, y)),
    ):
        terms.append(float(entropic_ot_value(p, q, C, sinkhorn_log(p, q, C, eps, TIGHT.sinkhorn).g, eps)))
    assert abs(float(s) - (terms[0] - 0.5 * terms[1] - 0.5 * terms[2])) < 1e-12
    assert float(s) > 0.5  # the clouds sit ~0.87 apart


def test_entropic_value_matches_pots_plan():
    """OT_ε = ⟨C, P⟩ + ε KL(P ‖ a⊗b), evaluated on POT's plan, equals our dual value."""
    x, y = _cloud(20, 7), _cloud(30, 8)
    C = squared_euclidean(x, y)
    a = torch.full((20,), 1 / 20, dtype=torch.float64)
    b = torch.full((30,), 1 / 30, dtype=torch.float64)
    eps = 0.05
    P = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), C.numpy(), eps, numItermax=20_000, stopThr=1e-13)
    kl = float(np.sum(P * np.log(P / np.outer(a.numpy(), b.numpy()))))
    ref = float(np.sum(P * C.numpy())) + eps * kl
    res = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-12))
    assert abs(float(entropic_ot_value(a, b, C, res.g, eps)) - ref) < 1e-10
