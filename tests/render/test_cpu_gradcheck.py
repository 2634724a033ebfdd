"""Finite-difference checks (float64) of the cpu backend's hand-written backward, every map at once."""

from __future__ import annotations

import pytest
import torch

from recon.render import OUTPUT_NAMES, rasterize
from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, T_EPS
from recon.render.projection import project_gaussians

F64 = torch.float64
PARAMS = ("means", "quats", "scales", "opacities", "colors", "backgrounds")


def three_gaussians(C: int, sh_degree: int | None) -> dict:
    """Three overlapping, rotated, anisotropic Gaussians in front of C 8×8 cameras (unnormalised quaternions)."""
    viewmats = torch.eye(4, dtype=F64).repeat(C, 1, 1)
    if C > 1:
        viewmats[1, 0, 3] = 0.06  # second camera slightly to the side
        viewmats[1, 1, 3] = -0.05
    Ks = torch.tensor([[11.0, 0.0, 4.2], [0.0, 10.5, 3.9], [0.0, 0.0, 1.0]], dtype=F64).repeat(C, 1, 1)
    gen = torch.Generator().manual_seed(3)
    colors = torch.tensor([[0.8, 0.1, 0.3], [0.2, 0.7, 0.2], [0.1, 0.3, 0.9]], dtype=F64)
    if sh_degree is not None:
        colors = torch.randn(3, (sh_degree + 1) ** 2, 3, generator=gen, dtype=F64) * 0.3
        colors[:, 0] += 1.0
    return dict(
        means=torch.tensor([[0.12, 0.04, 2.1], [-0.18, 0.1, 2.7], [0.1, -0.22, 3.3]], dtype=F64),
        quats=torch.tensor(
            [[1.1, 0.3, -0.2, 0.1], [0.8, -0.1, 0.45, 0.3], [0.6, 0.2, 0.25, -0.5]], dtype=F64
        ),
        scales=torch.tensor([[0.45, 0.35, 0.12], [0.55, 0.2, 0.65], [0.7, 0.5, 0.3]], dtype=F64),
        opacities=torch.tensor([0.6, 0.72, 0.55], dtype=F64),
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=8,
        height=8,
        backgrounds=torch.tensor([[0.3, 0.2, 0.1]] * C, dtype=F64),
        sh_degree=sh_degree,
    )


def assert_no_switch_within_reach(scene: dict) -> None:
    """Finite differences are only meaningful if no skip / stop / clamp / median decision is about to flip."""
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 8, 8
    )  # fmt: skip
    assert proj.visible.all()
    jj, ii = torch.meshgrid(torch.arange(8, dtype=F64) + 0.5, torch.arange(8, dtype=F64) + 0.5, indexing="ij")
    for c in range(proj.depths.shape[0]):
        T = torch.ones(8, 8, dtype=F64)
        for n in torch.argsort(proj.depths[c]).tolist():
            dx, dy = proj.means2d[c, n, 0] - ii, proj.means2d[c, n, 1] - jj
            a, b, cc = proj.conics[c, n]
            raw = scene["opacities"][n] * torch.exp(-(0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy))
            assert ((raw - ALPHA_MIN).abs() > 1e-4).all() and ((raw - ALPHA_MAX).abs() > 1e-4).all()
            assert ((T - 0.5).abs() > 1e-4).all()
            T = T * (1 - torch.where(raw >= ALPHA_MIN, raw, torch.zeros_like(raw)))
            assert (T > 10 * T_EPS).all()


@pytest.mark.parametrize(("C", "sh_degree"), [(1, None), (2, 3)])
def test_gradcheck_every_map(C, sh_degree):
    scene = three_gaussians(C, sh_degree)
    assert_no_switch_within_reach(scene)
    inputs = tuple(scene[k].clone().requires_grad_(True) for k in PARAMS)
    fixed = {k: v for k, v in scene.items() if k not in PARAMS}

    def f(*xs):
        out, _ = rasterize(**fixed, **dict(zip(PARAMS, xs)), outputs=OUTPUT_NAMES, backend="cpu")
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)

    values = f(*inputs)
    assert all(v.dtype == F64 and v.abs().sum() > 0 for v in values)  # every map is non-trivial here
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_means2d_intermediate():
    """dL/dmeans2d retained on info["means2d"] equals the finite difference of the loss w.r.t. the 2D centres.

    Shifting a camera's principal point by (du, dv) shifts every projected centre by exactly (du, dv) and changes
    nothing else, so summing info["means2d"].grad over the Gaussians must give d loss / d(cx, cy).
    """
    scene = three_gaussians(1, None)
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(1, 8, 8, 3, generator=gen, dtype=F64)

    def loss(Ks):
        out, info = rasterize(**{**scene, "Ks": Ks}, outputs=("rgb",), backend="cpu")
        return (out.rgb * weights).sum(), info

    means = scene["means"].clone().requires_grad_(True)
    out, info = rasterize(**{**scene, "means": means}, outputs=("rgb",), absgrad=True, backend="cpu")
    (out.rgb * weights).sum().backward()
    grad = info["means2d"].grad.sum(1)[0]
    eps = 1e-6
    for axis, (r, col) in enumerate([(0, 2), (1, 2)]):
        Kp, Km = scene["Ks"].clone(), scene["Ks"].clone()
        Kp[0, r, col] += eps
        Km[0, r, col] -= eps
        fd = (loss(Kp)[0] - loss(Km)[0]) / (2 * eps)
        assert abs(fd.item() - grad[axis].item()) <= 1e-6 * max(1.0, abs(fd.item())), axis
    assert (info["means2d"].absgrad >= info["means2d"].grad.abs() - 1e-12).all()
