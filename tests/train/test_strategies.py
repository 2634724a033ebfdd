"""Densification: pure-torch MCMC relocation, the Gaussian cap, and the opacity reset."""

import math

import torch
from gsplat.strategy import DefaultStrategy

from recon.train.schedule import Clock, PeriodicStep, exp_decay, sh_degree_at
from recon.train.strategies import (
    TorchMCMCStrategy,
    binomial_table,
    enforce_cap,
    relocation_torch,
    reset_opacities_if_due,
)


def _params(n: int, seed: int = 0) -> tuple[torch.nn.ParameterDict, dict]:
    g = torch.Generator().manual_seed(seed)
    params = torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(torch.randn(n, 3, generator=g)),
            "scales": torch.nn.Parameter(torch.full((n, 3), -2.0)),
            "quats": torch.nn.Parameter(torch.randn(n, 4, generator=g)),
            "opacities": torch.nn.Parameter(torch.linspace(-6, 3, n)),
            "sh0": torch.nn.Parameter(torch.randn(n, 1, 3, generator=g)),
        }
    )
    return params, {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}


def test_relocation_keeps_the_rendered_opacity():
    binoms = binomial_table(51)
    o = torch.tensor([0.3, 0.8, 0.05])
    s = torch.rand(3, 3) + 0.1
    new_o, new_s = relocation_torch(o, s, torch.ones(3, dtype=torch.long), binoms)
    assert torch.allclose(new_o, o) and torch.allclose(new_s, s)  # one copy: unchanged
    for n in (2, 3, 7):
        new_o, new_s = relocation_torch(o, s, torch.full((3,), n), binoms)
        assert torch.allclose(
            1 - (1 - new_o) ** n, o, atol=1e-6
        )  # n stacked copies are as opaque as the original
        assert torch.all(new_s < s)


def test_mcmc_grows_by_5_percent_and_relocates_dead_gaussians():
    torch.manual_seed(0)
    params, opt = _params(200)
    strategy = TorchMCMCStrategy(cap_max=1000, refine_start_iter=0, refine_every=10, min_opacity=0.005)
    state = strategy.initialize_state()
    dead_before = int((torch.sigmoid(params["opacities"]) <= 0.005).sum())
    assert dead_before > 0
    means_before = params["means"].detach().clone()
    strategy.step_post_backward(params, opt, state, step=10, info={}, lr=1e-3)
    assert len(params["means"]) == 210
    assert int((torch.sigmoid(params["opacities"][:200]) <= 0.005).sum()) == 0
    assert all(len(o.param_groups[0]["params"][0]) == 210 for o in opt.values())
    strategy.step_post_backward(
        params, opt, state, step=11, info={}, lr=1e-3
    )  # not a refine step: noise only
    assert len(params["means"]) == 210
    assert not torch.equal(params["means"][:200].detach(), means_before)


def test_cap_removes_the_least_opaque():
    params, opt = _params(50)
    assert enforce_cap(params, opt, {}, 40) == 10
    assert len(params["means"]) == 40
    assert float(params["opacities"].detach().min()) > -6 + 9 * 9 / 49 - 1e-4


def test_schedules_follow_steps_or_time():
    clock = Clock(1000)
    assert clock.progress(250, 99.0) == 0.25 and clock.nominal_step(250, 99.0) == 250
    budget = Clock(30000, time_budget=60.0)
    assert budget.progress(5, 30.0) == 0.5 and budget.nominal_step(5, 30.0) == 15000
    assert budget.done(5, 60.0) and not budget.done(10**6, 59.0)
    assert math.isclose(exp_decay(1e-2, 1e-4, 0.5), 1e-3)
    assert [sh_degree_at(p, 3, 0.1) for p in (0.0, 0.15, 0.25, 0.9)] == [0, 1, 2, 3]


def test_periodic_step_fires_once_per_crossed_period():
    steps = PeriodicStep(100)
    assert [steps(s) for s in range(98, 103)] == [98, 99, 100, 101, 102]  # identity for unit steps
    jumpy = PeriodicStep(100)
    handed = [jumpy(s) for s in (0, 40, 95, 230, 230, 260, 300, 300)]
    fired = [h for h in handed if h % 100 == 0 and h > 0]
    assert fired == [200, 300]  # 230 crossed 100 and 200 (the last fires), 300 fires once


def test_opacity_reset_fires_on_its_period_only():
    import torch

    strategy = DefaultStrategy(reset_every=100, refine_stop_iter=1000, prune_opa=0.005)
    params = torch.nn.ParameterDict({"opacities": torch.nn.Parameter(torch.full((4,), 3.0))})
    optimizers = {"opacities": torch.optim.Adam([params["opacities"]], lr=0.1)}
    assert not reset_opacities_if_due(strategy, params, optimizers, {}, 150)
    assert torch.all(params["opacities"] == 3.0)
    assert reset_opacities_if_due(strategy, params, optimizers, {}, 200)
    assert torch.allclose(torch.sigmoid(params["opacities"]), torch.full((4,), 0.01))
    assert not reset_opacities_if_due(strategy, params, optimizers, {}, 1000)  # densification has ended


def test_mcmc_keeps_parameters_trainable():
    params, opt = _params(100)
    strategy = TorchMCMCStrategy(cap_max=1000, refine_start_iter=0, refine_every=10)
    strategy.step_post_backward(params, opt, strategy.initialize_state(), step=10, info={}, lr=1e-3)
    assert len(params["means"]) == 105
    assert all(p.requires_grad for p in params.values())
