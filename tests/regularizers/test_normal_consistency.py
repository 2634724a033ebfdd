"""Normal consistency (METHODS.md §3.2e): depth normals of analytic planes, and the coplanar-vs-tilted test."""

from __future__ import annotations

import math

import torch

from recon.regularizers.normal_consistency import (
    NormalConsistency,
    NormalConsistencyConfig,
    depth_to_points,
    points_to_normals,
    surface_depth,
)

from .helpers import camera, context, params_of, plane_grid

SIZE = 24


def test_depth_normals_of_a_tilted_plane_are_exact():
    """Ray-cast depth of the plane n·X = d: its depth normal is n (facing the camera) on every interior pixel."""
    _, K = camera(SIZE)
    n = torch.tensor([0.0, math.sin(0.5), -math.cos(0.5)], dtype=torch.float64)  # faces the camera (n_z < 0)
    d = -3.0
    v, u = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1).double() @ torch.linalg.inv(K[0]).T
    depth = (d / (rays @ n))[None, ..., None]
    normals = points_to_normals(depth_to_points(depth, K))
    assert torch.allclose(normals[0, 1:-1, 1:-1], n.expand(SIZE - 2, SIZE - 2, 3), atol=1e-9)
    assert normals[0, 0].abs().max() == 0 and normals[0, :, -1].abs().max() == 0  # the border has no normal


def test_surface_depth_blends_expected_and_median():
    exp, alpha, med = (
        torch.full((1, 2, 2, 1), 1.5),
        torch.full((1, 2, 2, 1), 0.5),
        torch.full((1, 2, 2, 1), 4.0),
    )
    assert torch.allclose(surface_depth(exp, alpha, med, 0.0), torch.full_like(exp, 3.0))
    assert torch.allclose(surface_depth(exp, alpha, med, 1.0), med)
    assert torch.allclose(surface_depth(exp, alpha, med, 0.25), torch.full_like(exp, 0.75 * 3.0 + 0.25 * 4.0))


def _loss(tilt_deg: float):
    vm, K = camera(SIZE)
    params = params_of(*plane_grid(z=3.0, half=3.0, spacing=0.15, opacity=0.9, tilt_deg=tilt_deg))
    reg = NormalConsistency(NormalConsistencyConfig(weight=1.0))
    ctx = context(params, vm, K, SIZE, (*reg.needs,))
    return float(reg.loss(ctx)["normal"].detach()), ctx.outputs.alpha.detach()


def test_coplanar_flat_gaussians_are_consistent_and_tilting_them_is_not():
    flat, alpha = _loss(0.0)
    # A consistent pixel scores exactly 1 − alpha² (the rendered normal Σwn has length alpha, surf_normal is
    # scaled by alpha); alpha < 1 because compositing stops once T would fall below 1e-4.
    floor = float((1 - alpha[0, 1:-1, 1:-1, 0] ** 2).mean())
    assert abs(flat - floor) < 1e-4
    assert flat < 5e-3
    tilted, _ = _loss(30.0)
    assert tilted > 10 * flat
    assert abs(tilted - (1 - math.cos(math.radians(30)) * (1 - floor))) < 5e-3


def test_gradient_turns_normals_towards_the_depth_surface():
    vm, K = camera(SIZE)
    params = params_of(*plane_grid(z=3.0, half=3.0, spacing=0.15, opacity=0.9, tilt_deg=20.0))
    reg = NormalConsistency(NormalConsistencyConfig(weight=1.0))
    reg.loss(context(params, vm, K, SIZE, reg.needs))["normal"].backward()
    g = params["quats"].grad  # quaternion (cos h, sin h, 0, 0): descending must shrink the x part
    assert float(g[:, 1].sum()) > 0
