import torch

from recon.ot import SinkhornConfig, SNSConfig, sinkhorn_log, sinkhorn_newton_sparse
from recon.ot.cg import conjugate_gradient
from recon.ot.sparse_hessian import SparseHessian

from .conftest import random_problem


def test_sns_plan_equals_sinkhorn_plan_and_needs_far_fewer_iterations(problem_50x60):
    """METHODS.md §4.1: same plan (‖ΔP‖₁ < 1e-8) and ≤ ¼ of Sinkhorn's iterations at ε = 0.01·mean(C)."""
    a, b, C = problem_50x60
    eps = 0.01 * float(C.mean())
    sk = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-11, max_iter=50_000))
    sns = sinkhorn_newton_sparse(a, b, C, eps, SNSConfig(tol=1e-11))
    assert sk.converged and sns.converged
    assert float((sns.plan - sk.plan).abs().sum()) < 1e-8
    assert sns.newton_iterations > 0  # Newton did the finishing, not the warm-up alone
    assert sns.iterations <= sk.iterations / 4, f"SNS {sns.iterations} vs Sinkhorn {sk.iterations} iterations"


def test_sns_with_the_papers_fixed_share_of_entries():
    a, b, C = random_problem(40, 30, seed=5)
    eps = 0.01 * float(C.mean())
    sk = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-11, max_iter=50_000))
    sns = sinkhorn_newton_sparse(a, b, C, eps, SNSConfig(tol=1e-11, rho=0.3))
    assert sns.converged
    assert float((sns.plan - sk.plan).abs().sum()) < 1e-8


def test_sns_at_large_eps_stops_in_the_warm_up(problem_50x60):
    a, b, C = problem_50x60
    sns = sinkhorn_newton_sparse(a, b, C, 1.0 * float(C.mean()), SNSConfig(tol=1e-9))
    assert sns.converged and sns.newton_iterations == 0 and sns.iterations <= 20


def _dense(H: SparseHessian) -> torch.Tensor:
    return torch.diag(H.diagonal) + H.offdiag.to_dense()


def test_sparse_hessian_keeps_the_diagonal_and_the_heaviest_entries():
    g = torch.Generator().manual_seed(0)
    P = torch.rand(6, 4, generator=g, dtype=torch.float64) ** 4
    row, col = P.sum(1), P.sum(0)
    H = SparseHessian.from_plan(P, row, col, ridge=0.0, rho=0.25)  # ⌈0.25·24⌉ = 6 entries
    dense = _dense(H)
    torch.testing.assert_close(torch.diagonal(dense), torch.cat([row, col]))
    block = dense[:6, 6:]
    assert int((block > 0).sum()) == 6
    assert float(block[block > 0].min()) >= float(P.flatten().sort(descending=True).values[5])
    torch.testing.assert_close(block, dense[6:, :6].T)
    z = torch.randn(10, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H.matvec(z), dense @ z)
    assert float(torch.linalg.eigvalsh(dense).min()) > -1e-12  # positive semidefinite


def test_sparse_hessian_without_dropping_is_the_exact_hessian():
    P = torch.rand(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    H = SparseHessian.from_plan(P, P.sum(1), P.sum(0), ridge=0.0, drop_mass=0.0)
    exact = torch.cat([torch.cat([torch.diag(P.sum(1)), P], 1), torch.cat([P.T, torch.diag(P.sum(0))], 1)], 0)
    torch.testing.assert_close(_dense(H), exact)
    assert H.kept_mass == 1.0
    ones = torch.cat([torch.ones(5), -torch.ones(7)]).to(torch.float64)
    assert float((exact @ ones).abs().max()) < 1e-12  # the null direction the ridge guards against


def test_mass_budget_bounds_what_the_hessian_drops():
    P = torch.rand(60, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64) ** 8
    H = SparseHessian.from_plan(P, P.sum(1), P.sum(0), ridge=0.0, drop_mass=1e-3)
    assert 1 - 1e-3 <= H.kept_mass < 1
    assert H.nnz < P.numel()


def test_conjugate_gradient_solves_an_spd_system():
    g = torch.Generator().manual_seed(3)
    M = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = M @ M.T + 30 * torch.eye(30, dtype=torch.float64)
    rhs = torch.randn(30, generator=g, dtype=torch.float64)
    x, its = conjugate_gradient(lambda v: A @ v, rhs, torch.diagonal(A), tol=1e-12, max_iter=100)
    torch.testing.assert_close(x, torch.linalg.solve(A, rhs), rtol=1e-10, atol=1e-12)
    assert 0 < its <= 30
