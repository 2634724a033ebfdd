"""Finite-difference checks (float64) of the two differentiable CPU backends, for every primitive type: the cpu
backend's hand-written backward and the reference's autograd, every map at once.

Scenes and the switch check come from ``tests/render/conftest.py`` (``make_gradcheck_scene``,
``assert_no_switch_within_reach``).
"""

from __future__ import annotations

import pytest
import torch

from recon.render import OUTPUT_NAMES, rasterize
from tests.render.conftest import assert_no_switch_within_reach, make_gradcheck_scene

F64 = torch.float64
PARAMS = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
BACKENDS = ("cpu", "reference")


def maps_of(scene: dict, backend: str):
    """The function of PARAMS that gradcheck differentiates: every output map of ``scene``."""
    fixed = {k: v for k, v in scene.items() if k not in PARAMS}

    def f(*xs):
        out, _ = rasterize(**fixed, **dict(zip(PARAMS, xs)), outputs=OUTPUT_NAMES, backend=backend)
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)

    return f


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("C", "sh_degree"), [(1, None), (2, 3)])
def test_gradcheck_every_map(primitive, backend, C, sh_degree):
    scene = make_gradcheck_scene(primitive, C, sh_degree)
    assert_no_switch_within_reach(scene)
    inputs = tuple(scene[k].clone().requires_grad_(True) for k in PARAMS)
    f = maps_of(scene, backend)
    values = f(*inputs)
    assert all(v.dtype == F64 and v.abs().sum() > 0 for v in values)  # every map is non-trivial here
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_surfel_third_scale_gets_no_gradient(backend):
    """A surfel ignores scales[:, 2]: it gets exactly no gradient, the in-plane scales do."""
    scene = make_gradcheck_scene("surfel2d")
    inputs = tuple(scene[k].clone().requires_grad_(True) for k in PARAMS)
    sum(v.sum() for v in maps_of(scene, backend)(*inputs)).backward()
    scales = inputs[PARAMS.index("scales")]
    assert (scales.grad[:, 2] == 0).all() and (scales.grad[:, :2] != 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_means2d_grad_is_the_screen_space_gradient(primitive, backend):
    """dL/dmeans2d retained on info["means2d"] equals the finite difference of the loss w.r.t. the 2D centres.

    Shifting a camera's principal point by (du, dv) shifts every projected centre by exactly (du, dv) and, for
    primitives rotated about the optical axis only (a surfel's payload is then free of cx, cy), changes nothing
    else: summing info["means2d"].grad over the primitives must give d loss / d(cx, cy).
    """
    scene = make_gradcheck_scene(primitive)
    h = torch.tensor([0.3, -0.7, 1.1], dtype=F64)  # rotations about the optical axis only
    scene["quats"] = torch.stack([torch.cos(h), 0 * h, 0 * h, torch.sin(h)], -1)
    assert_no_switch_within_reach(scene)
    weights = torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    outputs = ("rgb", "depth_exp")

    def loss(Ks):
        out, _ = rasterize(**{**scene, "Ks": Ks}, outputs=outputs, backend=backend)
        return (out.rgb * weights).sum() + out.depth_exp.sum()

    means = scene["means"].clone().requires_grad_(True)
    out, info = rasterize(**{**scene, "means": means}, outputs=outputs, absgrad=True, backend=backend)
    ((out.rgb * weights).sum() + out.depth_exp.sum()).backward()
    grad = info["means2d"].grad.sum(1)[0]
    eps = 1e-6
    for axis, (r, col) in enumerate([(0, 2), (1, 2)]):
        Kp, Km = scene["Ks"].clone(), scene["Ks"].clone()
        Kp[0, r, col] += eps
        Km[0, r, col] -= eps
        fd = (loss(Kp) - loss(Km)) / (2 * eps)
        assert abs(fd.item() - grad[axis].item()) <= 1e-6 * max(1.0, abs(fd.item())), axis
    assert grad.abs().sum() > 0
    assert (info["means2d"].absgrad >= info["means2d"].grad.abs() - 1e-12).all()
