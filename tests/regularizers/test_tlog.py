"""LE3D TLog (METHODS.md §3.3b): zero at full coverage, and its gradient raises the opacity where coverage lacks."""

from __future__ import annotations

import pytest
import torch

from recon.regularizers.tlog import TLog, TLogConfig, tlog

from .helpers import camera, context, params_of, plane_grid


def test_zero_at_full_coverage_and_known_value():
    assert float(tlog(torch.ones(1, 4, 4, 1))) == 0.0
    a = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 3, 1)
    expected = -(torch.log(torch.tensor(1e-3)) + torch.log(torch.tensor(0.501))) / 3
    assert float(tlog(a)) == pytest.approx(float(expected), rel=1e-6)


def test_gradient_wrt_opacity_is_negative_when_alpha_below_one():
    vm, K = camera(16)
    params = params_of(*plane_grid(z=3.0, half=3.0, spacing=0.3, opacity=0.3))
    reg = TLog(TLogConfig(weight=0.01))
    ctx = context(params, vm, K, 16, reg.needs)
    assert float(ctx.outputs.alpha.detach().max()) < 1.0
    loss = reg.loss(ctx)["tlog"]
    assert float(loss.detach()) > 0
    loss.backward()
    g = params["opacities"].grad
    assert (g <= 0).all() and (g < 0).any()
