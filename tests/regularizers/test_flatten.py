"""Flattening (PGSR's shortest-axis term, in pixels): its known value on hand-placed Gaussians, that its gradient
shrinks only the shortest axis, and that Gaussians the view does not see are left alone."""

from __future__ import annotations

import pytest
import torch

from recon.regularizers import RegularizersConfig, build_regularizers
from recon.regularizers.flatten import Flatten, FlattenConfig, thickness_pixels

from .helpers import camera, context, params_of, quat_about_x


def two_gaussians(behind: bool = False):
    """A thick Gaussian at depth 2 and a thin one at depth 4 (or behind the camera), both on the optical axis."""
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, 0.0, -4.0 if behind else 4.0]], dtype=torch.float64)
    scales = torch.tensor([[0.3, 0.2, 0.1], [0.05, 0.4, 0.3]], dtype=torch.float64)
    return params_of(means, quat_about_x(0.0, 2), scales, torch.full((2,), 0.8, dtype=torch.float64))


def test_thickness_is_the_shortest_axis_in_pixels():
    vm, K = camera(16, f=20.0)
    p = two_gaussians()
    t = thickness_pixels(p["means"], p["scales"], vm[0], K[0])
    assert t.tolist() == pytest.approx([0.1 * 20 / 2, 0.05 * 20 / 4])


def test_known_value_and_gradient_only_on_the_shortest_axis():
    vm, K = camera(16, f=20.0)
    p = two_gaussians()
    reg = Flatten(FlattenConfig(weight=0.5))
    loss = reg.loss(context(p, vm, K, 16, ("alpha",)))["flat"]
    assert float(loss.detach()) == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    loss.backward()
    g = p["scales"].grad
    assert g[0, 2] > 0 and g[1, 0] > 0  # shrinking the shortest axis lowers the loss
    assert g[0, :2].abs().max() == 0 and g[1, 1:].abs().max() == 0


def test_unseen_gaussians_are_left_alone():
    vm, K = camera(16, f=20.0)
    p = two_gaussians(behind=True)
    ctx = context(p, vm, K, 16, ("alpha",))
    assert int((ctx.info["radii"].reshape(1, 2, -1).amax(-1) > 0).sum()) == 1
    loss = Flatten(FlattenConfig(weight=1.0)).loss(ctx)["flat"]
    assert float(loss.detach()) == pytest.approx(0.1 * 20 / 2)
    loss.backward()
    assert p["scales"].grad[1].abs().max() == 0


def test_off_by_default_and_on_with_a_weight():
    assert not any(isinstance(r, Flatten) for r in build_regularizers(RegularizersConfig()))
    cfg = RegularizersConfig()
    cfg.flat.weight = 0.1
    assert any(isinstance(r, Flatten) for r in build_regularizers(cfg))


def test_several_views_average_their_own_visible_sets():
    vm, K = camera(16, f=20.0)
    p = two_gaussians(behind=True)
    flipped = vm.clone()
    flipped[0, :3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))  # looks down -z
    vms, Ks = torch.cat([vm, flipped]), torch.cat([K, K])
    loss = Flatten(FlattenConfig(weight=1.0)).loss(context(p, vms, Ks, 16, ("alpha",)))["flat"]
    # camera 0 sees the thick Gaussian at depth 2, camera 1 the thin one at depth 4 (its shortest axis 0.05)
    assert float(loss.detach()) == pytest.approx((0.1 * 20 / 2 + 0.05 * 20 / 4) / 2)
