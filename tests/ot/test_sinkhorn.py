import numpy as np
import ot
import torch

from recon.ot import SinkhornConfig, sinkhorn_log

from .conftest import random_problem


def test_sinkhorn_matches_pot_sinkhorn_log(problem_50x60):
    a, b, C = problem_50x60
    eps = 0.1 * float(C.mean())
    res = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-11))
    ref = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), C.numpy(), eps, numItermax=20_000, stopThr=1e-13)
    assert res.converged
    assert float(np.abs(res.plan.numpy() - ref).sum()) < 1e-9


def test_marginals_and_reported_error(problem_50x60):
    a, b, C = problem_50x60
    res = sinkhorn_log(a, b, C, 0.05 * float(C.mean()), SinkhornConfig(tol=1e-9))
    error = float((res.plan.sum(1) - a).abs().sum() + (res.plan.sum(0) - b).abs().sum())
    assert error < 1e-9
    assert abs(float(res.error) - error) < 1e-15
    assert res.iterations > 1
    # the potentials give the plan: P = exp((f ⊕ g − C)/ε)
    torch.testing.assert_close(res.plan, torch.exp((res.f[:, None] + res.g[None, :] - C) / res.eps))


def test_an_iteration_cap_is_reported_as_not_converged(problem_50x60):
    a, b, C = problem_50x60
    res = sinkhorn_log(a, b, C, 0.01 * float(C.mean()), SinkhornConfig(max_iter=5))
    assert res.iterations == 5
    assert not res.converged
    assert float(res.error) > 1e-6


def test_batched_problems_equal_separate_solves():
    problems = [random_problem(20, 30, seed) for seed in (1, 2, 3)]
    a, b, C = (torch.stack(t) for t in zip(*problems))
    cfg = SinkhornConfig(tol=1e-12)
    batched = sinkhorn_log(a, b, C, 0.02, cfg)
    for i, (ai, bi, Ci) in enumerate(problems):
        single = sinkhorn_log(ai, bi, Ci, 0.02, cfg)
        assert float((batched.plan[i] - single.plan).abs().sum()) < 1e-11
    assert batched.error.shape == (3,)
    assert bool((batched.error < 1e-12).all())


def test_a_warm_start_from_the_solution_stops_after_one_sweep(problem_50x60):
    a, b, C = problem_50x60
    eps = 0.02 * float(C.mean())
    cold = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-10))
    warm = sinkhorn_log(a, b, C, eps, SinkhornConfig(tol=1e-10), init=(cold.f, cold.g))
    assert cold.iterations > 10
    assert warm.iterations == 1 and warm.converged
