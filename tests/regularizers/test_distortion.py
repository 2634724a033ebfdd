"""Depth distortion (METHODS.md §3.2a/b): closed forms, brute force, gradient sign, and the regularizer wiring."""

from __future__ import annotations

import pytest
import torch

from recon.regularizers.distortion import Distortion, DistortionConfig
from recon.render import RasterSettings
from recon.render.outputs import NDC_FAR, NDC_NEAR
from recon.render.reference import pixel_contributions
from recon.render.settings import Splats

from .helpers import camera, context, params_of, quat_about_x, render

SIZE = 16
C = SIZE // 2  # the pixel whose centre the principal point sits on


def ndc(z: float) -> float:
    return NDC_FAR / (NDC_FAR - NDC_NEAR) * (1.0 - NDC_NEAR / z)


def two_splats(z1: float, z2: float, o1: float, o2: float):
    """Two wide Gaussians on the optical axis: at the centre pixel their alphas are exactly o1 and o2."""
    means = torch.tensor([[0.0, 0.0, z1], [0.0, 0.0, z2]], dtype=torch.float64)
    scales = torch.tensor([[5.0, 5.0, 0.01]] * 2, dtype=torch.float64)
    return params_of(means, quat_about_x(0.0, 2), scales, torch.tensor([o1, o2], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["l1", "ndc2"])
def test_single_opaque_splat_has_zero_distortion(kind):
    vm, K = camera(SIZE)
    params = two_splats(2.0, 3.0, 0.99, 0.5)
    params["means"].data[1, 2] = -5.0  # the second one behind the camera: every ray meets one splat
    reg = Distortion(DistortionConfig(weight=1.0, kind=kind))
    ctx = context(params, vm, K, SIZE, (*reg.needs, "alpha"))
    assert float(ctx.outputs.alpha.detach().min()) > 0.9  # every pixel is covered ...
    assert float(reg.loss(ctx)["dist"].detach()) == 0.0  # ... by exactly one splat


@pytest.mark.parametrize("kind", ["l1", "ndc2"])
def test_two_splats_closed_form(kind):
    z1, z2, o1, o2 = 2.0, 3.5, 0.6, 0.7
    vm, K = camera(SIZE)
    params = two_splats(z1, z2, o1, o2)
    reg = Distortion(DistortionConfig(weight=7.0, kind=kind))
    ctx = context(params, vm, K, SIZE, reg.needs)
    w1, w2 = o1, o2 * (1 - o1)
    expected = 2 * w1 * w2 * (z2 - z1) if kind == "l1" else w1 * w2 * (ndc(z2) - ndc(z1)) ** 2
    dmap = getattr(ctx.outputs, reg.needs[0])
    assert float(dmap[0, C, C, 0].detach()) == pytest.approx(expected, rel=1e-9)
    assert float(reg.loss(ctx)["dist"].detach()) == pytest.approx(
        7.0 * float(dmap.detach().mean()), rel=1e-12
    )


def test_recursion_matches_brute_force():
    """The rendered maps equal the O(K²) double sums over each pixel's composited (w, z), in float64."""
    gen = torch.Generator().manual_seed(3)
    n = 40
    means = torch.cat(
        [(torch.rand(n, 2, generator=gen) - 0.5) * 2.0, 1.0 + 3 * torch.rand(n, 1, generator=gen)], 1
    )
    quats = torch.randn(n, 4, generator=gen)
    scales = 0.1 + 0.4 * torch.rand(n, 3, generator=gen)
    opac = 0.2 + 0.6 * torch.rand(n, generator=gen)
    params = params_of(means.double(), quats.double(), scales.double(), opac.double())
    vm, K = camera(SIZE)
    out, _ = render(params, vm, K, SIZE, ("distort_l1", "distort_ndc2"))
    with torch.no_grad():
        splats = Splats(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"])
        )
        ids, w, z = pixel_contributions(splats, vm, K, RasterSettings(SIZE, SIZE))
    assert (ids >= 0).sum(-1).max() >= 5  # the scene really layers several splats per pixel
    wi, wj = w[..., :, None], w[..., None, :]
    l1 = (wi * wj * (z[..., :, None] - z[..., None, :]).abs()).sum((-1, -2))
    m = torch.where(z >= NDC_NEAR, NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / z.clamp_min(1e-9)), 0.0)
    upper = torch.triu(torch.ones(z.shape[-1], z.shape[-1], dtype=torch.bool), 1)  # pairs j < i
    ndc2 = (wi * wj * (m[..., :, None] - m[..., None, :]) ** 2 * upper).sum((-1, -2))
    assert torch.allclose(out.distort_l1[..., 0], l1, atol=1e-10, rtol=0)
    assert torch.allclose(out.distort_ndc2[..., 0], ndc2, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["l1", "ndc2"])
def test_moving_far_splat_closer_decreases_distortion(kind):
    vm, K = camera(SIZE)
    reg = Distortion(DistortionConfig(weight=1.0, kind=kind))
    values = []
    for z2 in (3.5, 3.4):
        ctx = context(two_splats(2.0, z2, 0.6, 0.7), vm, K, SIZE, reg.needs)
        values.append(float(reg.loss(ctx)["dist"].detach()))
    assert values[1] < values[0]
    params = two_splats(2.0, 3.5, 0.6, 0.7)
    reg.loss(context(params, vm, K, SIZE, reg.needs))["dist"].backward()
    grad = params["means"].grad
    assert grad[1, 2] > 0  # pushing the far splat back raises D
    assert grad[0, 2] < 0  # pushing the near splat back (towards the far one) lowers D
