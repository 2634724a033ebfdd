import contextlib
import io
import warnings

import numpy as np
import ot
import pytest
import torch

from recon.ot import SparseOTConfig, sparse_ot_value, sparsity_constrained_ot


@pytest.fixture(scope="module")
def square_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10×10, uniform marginals, cost scaled to max 1: at γ = 0.2 the unconstrained (l2) plan has 4 non-zeros in
    some columns, so k = 3 binds while the marginals stay reachable."""
    rng = np.random.default_rng(0)
    M = ot.dist(rng.normal(size=(10, 2)), rng.normal(size=(10, 2)))
    return ot.unif(10), ot.unif(10), M / M.max()


def _pot(form: str, a, b, M, gamma: float, **kw) -> np.ndarray:
    """POT's smooth-OT solver, quiet (its semi-dual prints array shapes) and run to a tight tolerance."""
    solver = ot.smooth.smooth_ot_dual if form == "dual" else ot.smooth.smooth_ot_semi_dual
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # POT passes options scipy deprecates
        return solver(a, b, M, gamma, stopThr=1e-14, numItermax=10_000, **kw)


@pytest.mark.parametrize("form", ["dual", "semi_dual"])
def test_k_sparse_columns_with_marginals_kept_and_pot_agreeing(square_problem, form):
    a, b, M = square_problem
    k, gamma = 3, 0.2
    free = sparsity_constrained_ot(*map(torch.tensor, (a, b, M)), SparseOTConfig(k=10, gamma=gamma))
    assert int((free.plan > 0).sum(0).max()) > k  # the constraint binds
    res = sparsity_constrained_ot(
        *map(torch.tensor, (a, b, M)), SparseOTConfig(k=k, gamma=gamma, formulation=form)
    )
    assert int((res.plan > 0).sum(0).max()) <= k
    assert res.error < 1e-3
    torch.testing.assert_close(res.plan.sum(1), torch.tensor(a), rtol=0, atol=1e-3)
    torch.testing.assert_close(res.plan.sum(0), torch.tensor(b), rtol=0, atol=1e-3)
    ref = _pot(form, a, b, M, gamma, reg_type="sparsity_constrained", max_nz=k)
    assert float(np.abs(res.plan.numpy() - ref).max()) < 1e-6
    # the optimal dual value is the primal objective of the plan
    primal = float((res.plan * torch.tensor(M)).sum() + gamma / 2 * res.plan.pow(2).sum())
    assert abs(res.value - primal) < 1e-6


@pytest.mark.parametrize("form", ["dual", "semi_dual"])
def test_k_at_least_n_is_quadratically_regularised_ot(square_problem, form):
    a, b, M = square_problem
    res = sparsity_constrained_ot(
        *map(torch.tensor, (a, b, M)), SparseOTConfig(k=10, gamma=0.2, formulation=form)
    )
    ref = _pot(form, a, b, M, 0.2, reg_type="l2")
    assert float(np.abs(res.plan.numpy() - ref).max()) < 1e-6


def test_value_is_differentiable_in_the_cost():
    """gradcheck on 4×5 (METHODS.md §4.2); there k = 3 binds (the l2 plan has 4 non-zeros per column)."""
    C = torch.rand(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = torch.full((4,), 0.25, dtype=torch.float64)
    b = torch.full((5,), 0.2, dtype=torch.float64)
    assert int((sparsity_constrained_ot(a, b, C, SparseOTConfig(k=4, gamma=5.0)).plan > 0).sum(0).max()) == 4
    for form in ("dual", "semi_dual"):
        cfg = SparseOTConfig(k=3, gamma=5.0, formulation=form)
        C_var = C.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda c, cfg=cfg: sparse_ot_value(a, b, c, cfg), (C_var,))


def test_bad_arguments_are_refused():
    a = torch.full((3,), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="formulation"):
        sparsity_constrained_ot(a, a, torch.rand(3, 3), SparseOTConfig(formulation="primal"))
    with pytest.raises(ValueError, match="do not fit"):
        sparsity_constrained_ot(a, a, torch.rand(3, 4))
