"""The ``cpu`` path of smooth convexes (C++ projection ``csrc/project_convexes.cpp`` and ``ConvexKernel`` in
``csrc/kernels.h``) against their pure-torch twin (``recon/render/convex.py``, rendered by the ``reference``
backend): projection outputs, every map, every gradient, finite differences.

Scenes (``make_convex_scene``) hold a few hundred random convexes seen by several cameras, with the awkward cases
every path must agree on, all for camera 0: convexes behind the camera, straddling its near plane (centre in
front, a point behind: culled), centred on the image border, near-degenerate hulls (slivers 1e-3 of their length
wide, seen face on) and repeated points (only the lowest index is a hull vertex), very sharp (large δ·σ) and very
smooth (small δ·σ: huge reach, some beyond the radius cull) kernels, and zero opacity. Hull decisions at the
rounding level (exactly collinear images) are left out: the two paths round differently, so either answer is right.

Tolerances: float64 maps to 1e-5 and gradients with cosine >= 0.9999 and a relative difference <= 1e-6; float32
maps to 1e-4 of their scale and gradients with cosine >= 0.999 and a relative difference <= 1e-3 (distort_ndc2
against the float64 twin, as in test_cpu_parity.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from recon.render import OUTPUT_NAMES, contributors, rasterize
from recon.render.convex import PAYLOAD_SIZE, convex_kernel, project_convexes
from recon.render.cpu_projection import ProjectConvexes
from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, NDC_NEAR, T_EPS
from recon.render.settings import RasterSettings
from tests.render.conftest import make_random_scene

F64 = torch.float64
MAPS = tuple(name for name in OUTPUT_NAMES if name != "normal")  # a convex renders no normal map
PARAMS = ("points", "delta", "sigma", "opacities", "colors")


def _log_uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.exp(math.log(lo) + torch.rand(n, generator=gen, dtype=F64) * (math.log(hi) - math.log(lo)))


def make_convex_scene(n: int, C: int, H: int, W: int, seed: int, K: int = 6, dtype=F64) -> dict:
    """``rasterize`` keyword arguments for n convexes of K points with the cases of the module docstring
    (n >= 80 holds them all); cameras as conftest's random scenes."""
    cams = make_random_scene(0, C, H, W, seed)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=F64)

    centres = (rand(n, 3) - 0.5) * 2.0
    axes = 0.3 + rand(n, 1, 3)  # anisotropic
    dirs = torch.randn(n, K, 3, generator=gen, dtype=F64)
    points = centres[:, None] + (0.08 + 0.27 * rand(n, 1, 1)) * dirs * axes
    delta = _log_uniform(0.2, 5.0, n, gen)
    sigma = _log_uniform(1e-3, 1e-1, n, gen) / delta  # δ·σ from smooth to sharp
    opacities = 0.05 + 0.9 * rand(n)

    k = n // 10
    R0, t0, K0 = (
        cams["viewmats"][0, :3, :3].double(),
        cams["viewmats"][0, :3, 3].double(),
        cams["Ks"][0].double(),
    )
    campos0 = -R0.T @ t0

    def camera0_point(u, v, depth):  # world point seen by camera 0 at pixel (u, v) and depth
        xc = torch.stack([(u - K0[0, 2]) / K0[0, 0] * depth, (v - K0[1, 2]) / K0[1, 1] * depth, depth], -1)
        return (xc - t0) @ R0

    def camera0_offsets(m, scale):  # offsets in camera 0's image plane (x, y) and along its axis (z)
        return (torch.randn(m, K, 3, generator=gen, dtype=F64) * scale) @ R0

    if k:
        # behind camera 0
        points[:k] = campos0 + camera0_offsets(k, 0.2) - 1.0 * R0[2]
        # straddling camera 0's near plane: centre 0.3 in front, one point 0.05 behind it
        i = slice(k, 2 * k)
        c = camera0_point(W * rand(k), H * rand(k), torch.full((k,), 0.3, dtype=F64))
        points[i] = c[:, None] + camera0_offsets(k, 0.05)
        points[i, 0] = campos0 + (c - campos0) * (-0.05 / 0.3)
        # centred on camera 0's image border
        i = slice(2 * k, 3 * k)
        u, v, side = W * rand(k), H * rand(k), torch.arange(k) % 4
        u = torch.where(side == 0, 0.0, torch.where(side == 1, float(W), u))
        v = torch.where(side == 2, 0.0, torch.where(side == 3, float(H), v))
        points[i] = camera0_point(u, v, 2.0 + 3.0 * rand(k))[:, None] + camera0_offsets(k, 0.15)
        # near-degenerate: slivers in camera 0's image plane, 1e-3 or 1e-2 of their length wide, seen face on;
        # sharp, else the reach at their tips (moved lines meeting at angles of 1e-3) exceeds the radius cull
        i = slice(3 * k, 4 * k)
        c = camera0_point(W * (0.2 + 0.6 * rand(k)), H * (0.2 + 0.6 * rand(k)), 2.0 + 2.0 * rand(k))
        along = torch.linspace(-0.3, 0.3, K, dtype=F64)[None, :, None] * (R0[0] + 0.5 * R0[1])
        width = torch.where(torch.arange(k) % 2 == 0, 1e-3, 1e-2)[:, None, None]
        jitter = width * 0.6 * (rand(k, K, 1) - 0.5) * (R0[1] - 0.5 * R0[0])
        points[i] = c[:, None] + along + jitter + width * (rand(k, K, 1) - 0.5) * R0[2]
        sigma[i] = _log_uniform(0.3, 3.0, k, gen) / delta[i]
        # repeated points: the second (and third) copies of the first
        points[4 * k : 5 * k, 1] = points[4 * k : 5 * k, 0]
        points[4 * k : 5 * k : 2, 2] = points[4 * k : 5 * k : 2, 0]
        # very sharp and very smooth
        i = slice(5 * k, 6 * k)
        sigma[i] = _log_uniform(1.0, 20.0, k, gen) / delta[i]
        i = slice(6 * k, 6 * k + k // 2)
        sigma[i] = _log_uniform(3e-6, 1e-4, k // 2, gen) / delta[i]
        opacities[6 * k : 6 * k + k // 2] *= 0.3  # so they do not cover every other convex
        # zero opacity
        opacities[7 * k : 8 * k] = 0.0
    cast = dict(dtype=dtype)
    return dict(
        means=points.mean(1).to(**cast),
        quats=None,
        scales=None,
        opacities=opacities.to(**cast),
        colors=rand(n, 3).to(**cast),
        viewmats=cams["viewmats"].to(**cast),
        Ks=cams["Ks"].to(**cast),
        width=W,
        height=H,
        backgrounds=rand(C, 3).to(**cast),
        primitive="convex",
        shape=tuple(t.to(**cast) for t in (points, delta, sigma)),
    )


def render(scene: dict, backend: str, outputs=MAPS, loss_seed: int = 0, **overrides):
    """Render with fresh leaves (means = the points' mean, so SH-free colours need no centre gradient) and
    backprop a random linear combination of all maps; returns (maps, info, gradients)."""
    args = {**scene, **overrides}
    points, delta, sigma = (t.detach().clone().requires_grad_(True) for t in args["shape"])
    leaves = dict(points=points, delta=delta, sigma=sigma)
    for name in ("opacities", "colors"):
        leaves[name] = args[name].detach().clone().requires_grad_(True)
    args.update(shape=(points, delta, sigma), means=points.mean(1), opacities=leaves["opacities"])
    args["colors"] = leaves["colors"]
    out, info = rasterize(**args, outputs=outputs, backend=backend)
    maps = out.asdict()
    gen = torch.Generator().manual_seed(loss_seed)
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum() for v in maps.values())
    loss.backward()
    return maps, info, {k: v.grad for k, v in leaves.items()}


def assert_grads_close(g_cpu: dict, g_ref: dict, min_cos: float, rtol: float) -> None:
    for k in PARAMS:
        a, b = g_cpu[k], g_ref[k]
        assert a is not None and b is not None and a.shape == b.shape, k
        assert torch.isfinite(a).all(), k
        cos = (a * b).sum() / (a.norm() * b.norm())
        assert cos >= min_cos, (k, cos.item())
        assert (a - b).norm() <= rtol * b.norm(), (k, ((a - b).norm() / b.norm()).item())


def as_dtype(scene: dict, dtype) -> dict:
    def cast(v):
        if torch.is_tensor(v):
            return v.to(dtype)
        if isinstance(v, tuple):
            return tuple(t.to(dtype) for t in v)
        return v

    return {k: cast(v) for k, v in scene.items()}


# ------------------------------------------------------------------------------------------------ projection


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("K", [3, 6, 8])
def test_projection_matches_twin(K, dtype):
    scene = make_convex_scene(300, 3, 40, 56, seed=K, K=K, dtype=dtype)
    points, delta, sigma = scene["shape"]
    settings = RasterSettings(scene["width"], scene["height"])
    ref = project_convexes(points, delta, sigma, scene["viewmats"], scene["Ks"], settings)
    means2d, payload, depths, normals, radii = ProjectConvexes.apply(
        points, delta, sigma, scene["viewmats"], scene["Ks"], settings.projection_tuple(), False
    )
    assert payload.shape == (3, 300, PAYLOAD_SIZE) and normals.numel() == 0
    # float32 image points differ in the last bit (the twin projects with einsum), which the corners of nearly
    # parallel consecutive edges amplify: radii of thousands of pixels may differ by a few, and by up to 10% at the
    # tips of the thinnest slivers (rows 3k..4k of the scene), whose extents float32 does not determine
    conditioned = torch.ones(300, dtype=torch.bool)
    if dtype != F64:
        conditioned[90:120] = False
    if dtype == F64:
        assert torch.equal(radii, ref.radii)
    else:
        assert ((radii - ref.radii).abs()[:, conditioned] <= 1 + 5e-3 * ref.radii[:, conditioned]).all()
        assert ((radii > 0) == (ref.radii > 0)).all() and (radii == ref.radii).float().mean() > 0.97
    visible = ref.visible & (radii > 0)
    assert 0.3 < visible.float().mean() < 0.95  # a real scene, with culled convexes
    counts = payload[..., -3][visible]
    assert counts.min() >= 3 and (counts == K).any()
    assert K == 3 or (counts < K).any()
    rtol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(depths, ref.depths, rtol=rtol, atol=0.0)
    torch.testing.assert_close(means2d[visible], ref.means2d[visible], rtol=rtol, atol=rtol * 100)
    # lines, a, s and count in the twin's layout and order, relative to the convex's largest entry
    lines, lines_ref = payload[..., :-2][visible], ref.payload[..., :-2][visible]
    scale = lines_ref.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(lines / scale, lines_ref / scale, rtol=0, atol=rtol * 10)
    # the extents, ill-conditioned where consecutive edges are nearly parallel
    ext_rtol = 1e-9 if dtype == F64 else 1e-2
    visible = visible & conditioned
    torch.testing.assert_close(
        payload[..., -2:][visible], ref.payload[..., -2:][visible], rtol=ext_rtol, atol=0
    )


def test_sliver_and_repeated_points_are_convexes_in_camera_0():
    """The awkward cases are what they claim: camera 0 sees the slivers as thin hulls with up to K edges, and a
    convex with repeated points has fewer edges than points."""
    scene = make_convex_scene(300, 1, 40, 56, seed=1)
    points, delta, sigma = scene["shape"]
    proj = project_convexes(points, delta, sigma, scene["viewmats"], scene["Ks"], RasterSettings(56, 40))
    k = 30
    assert not proj.visible[0, :k].any() and not proj.visible[0, k : 2 * k].any()  # behind, straddling
    slivers = proj.hull_count[0, 3 * k : 4 * k]
    assert (slivers >= 3).float().mean() > 0.8
    assert (proj.hull_count[0, 4 * k : 5 * k][proj.visible[0, 4 * k : 5 * k]] <= 5).all()
    assert (proj.radii[0, 6 * k : 6 * k + k // 2] == 0).any() and (
        proj.radii[0, 6 * k : 6 * k + k // 2] > 50
    ).any()


# ------------------------------------------------------------------------------------------ maps and gradients


@pytest.mark.parametrize("K,C", [(3, 2), (6, 3), (8, 1)])
def test_maps_and_gradients_match_twin_float64(K, C):
    scene = make_convex_scene(240, C, 36, 52, seed=10 + K, K=K)
    m_c, i_c, g_c = render(scene, "cpu")
    m_r, i_r, g_r = render(scene, "reference")
    for name in MAPS:
        assert (m_c[name] - m_r[name]).abs().max() <= 1e-5, name
    assert_grads_close(g_c, g_r, min_cos=0.9999, rtol=1e-6)
    assert torch.equal(i_c["radii"], i_r["radii"])
    assert i_r["n_isects"] >= i_c["n_isects"] > 200  # cpu bins by the reach at each opacity (bins_by_kernel)
    torch.testing.assert_close(i_c["means2d"], i_r["means2d"])
    assert m_c["alpha"].max() > 0.9


def test_maps_and_gradients_match_twin_float32():
    scene = make_convex_scene(240, 2, 36, 52, seed=7, K=6, dtype=torch.float32)
    m_c, i_c, g_c = render(scene, "cpu")
    m_r, _, g_r = render(scene, "reference")
    m_64, _, _ = render(as_dtype(scene, F64), "reference", outputs=("distort_ndc2",))
    for name in MAPS:
        ref = m_64[name].float() if name == "distort_ndc2" else m_r[name]
        scale = ref.abs().max().item()
        assert (m_c[name] - ref).abs().max() <= 1e-4 * max(scale, 1.0), name
    assert_grads_close(g_c, g_r, min_cos=0.999, rtol=1e-3)


@pytest.mark.parametrize(
    "settings", [dict(radius_clip=3.0, near_plane=0.5, far_plane=5.0), dict(tile_size=12)]
)
def test_other_settings(settings):
    scene = make_convex_scene(120, 1, 30, 41, seed=5)
    scene["backgrounds"] = None
    m_c, i_c, g_c = render(scene, "cpu", **settings)
    m_r, i_r, g_r = render(scene, "reference", **settings)
    for name in MAPS:
        assert (m_c[name] - m_r[name]).abs().max() <= 1e-5, name
    assert_grads_close(g_c, g_r, min_cos=0.9999, rtol=1e-6)
    assert torch.equal(i_c["radii"], i_r["radii"])


def test_3dcs_initial_convexes_bin_by_their_reach_at_each_opacity():
    """3DCS's initial convexes (Fibonacci-sphere points, δ = 0.1/√dist², σ = 0.00095, opacity 0.1) are smooth:
    the twin's radius (opacity 1, consecutive corners) overshoots, and the cpu backend bins by the exact polygon
    the kernel reaches at each opacity instead: same maps and gradients, fewer tile pairs. (Their reach in pixels,
    about 6e4 / (z f), does not depend on their size: a long focal length keeps it inside the image.)"""
    from recon.models.convex import fibonacci_sphere

    gen = torch.Generator().manual_seed(8)
    centres = (torch.rand(150, 3, generator=gen, dtype=F64) - 0.5) * 0.4
    dist2 = torch.cdist(centres, centres).topk(4, largest=False).values[:, 1:].square().mean(1)
    sphere = torch.from_numpy(fibonacci_sphere(6))
    points = centres[:, None] + 1.2 * dist2.sqrt()[:, None, None] * sphere[None]
    scene = make_convex_scene(150, 1, 48, 64, seed=8)
    scene["Ks"][:, :2, :2] *= 10
    scene.update(
        shape=(points, 0.1 / dist2.sqrt(), torch.full((150,), 0.00095, dtype=F64)),
        opacities=torch.full((150,), 0.1, dtype=F64),
    )
    m_c, i_c, g_c = render(scene, "cpu")
    m_r, i_r, g_r = render(scene, "reference")
    for name in MAPS:
        assert (m_c[name] - m_r[name]).abs().max() <= 1e-5, name
    assert_grads_close(g_c, g_r, min_cos=0.9999, rtol=1e-6)
    assert torch.equal(i_c["radii"], i_r["radii"]) and i_c["n_isects"] < 0.8 * i_r["n_isects"]
    assert m_c["alpha"].max() > 0.5


def test_contributors_match_twin():
    scene = make_convex_scene(120, 2, 30, 41, seed=6)
    args = {
        k: scene[k] for k in ("means", "quats", "scales", "opacities", "viewmats", "Ks", "width", "height")
    }
    first_c, last_c = contributors(**args, k=3, backend="cpu", primitive="convex", shape=scene["shape"])
    first_r, last_r = contributors(**args, k=3, backend="reference", primitive="convex", shape=scene["shape"])
    assert torch.equal(first_c, first_r) and torch.equal(last_c, last_r) and (first_c >= 0).any()


# ------------------------------------------------------------------------------------------ finite differences

GRADCHECK_CONVEXES = [  # (points [6,3], δ, σ, opacity) in front of an 8×8 camera at the origin
    ([[0.45, 0.1, 2.0], [-0.3, 0.42, 2.1], [-0.4, -0.3, 1.9], [0.2, -0.45, 2.2], [0.05, 0.0, 2.5], [0.1, 0.2, 1.7]],
     0.6, 0.05, 0.7),
    ([[0.2, 0.3, 2.8], [-0.6, 0.1, 2.6], [-0.1, -0.5, 3.0], [0.5, -0.2, 2.9], [0.0, 0.5, 3.2], [-0.3, 0.4, 2.7]],
     0.4, 0.06, 0.6),
    ([[0.6, 0.5, 3.5], [0.0, 0.7, 3.4], [-0.5, 0.1, 3.6], [0.3, -0.4, 3.3], [0.7, -0.1, 3.8], [0.1, 0.1, 3.1]],
     0.3, 0.07, 0.65),
]  # fmt: skip


def gradcheck_scene(n: int) -> dict:
    chosen = GRADCHECK_CONVEXES[:n]
    points = torch.tensor([c[0] for c in chosen], dtype=F64)
    return dict(
        points=points,
        delta=torch.tensor([c[1] for c in chosen], dtype=F64),
        sigma=torch.tensor([c[2] for c in chosen], dtype=F64),
        opacities=torch.tensor([c[3] for c in chosen], dtype=F64),
        colors=torch.tensor([[0.8, 0.1, 0.3], [0.2, 0.7, 0.2], [0.1, 0.3, 0.9]][:n], dtype=F64),
        viewmats=torch.eye(4, dtype=F64)[None],
        Ks=torch.tensor([[[11.0, 0.0, 4.2], [0.0, 10.5, 3.9], [0.0, 0.0, 1.0]]], dtype=F64),
    )


def assert_no_switch_within_reach(s: dict) -> None:
    """Finite differences only hold away from the α, T, median and NDC-near switches at every pixel."""
    proj = project_convexes(s["points"], s["delta"], s["sigma"], s["viewmats"], s["Ks"], RasterSettings(8, 8))
    assert proj.visible.all()
    py, px = torch.meshgrid(torch.arange(8, dtype=F64) + 0.5, torch.arange(8, dtype=F64) + 0.5, indexing="ij")
    T = torch.ones(8, 8, dtype=F64)
    for n in torch.argsort(proj.depths[0]).tolist():
        raw = s["opacities"][n] * convex_kernel(proj.payload[0, n], px, py)
        assert ((raw - ALPHA_MIN).abs() > 1e-4).all() and ((raw - ALPHA_MAX).abs() > 1e-4).all()
        assert (proj.depths[0, n] - NDC_NEAR).abs() > 1e-4 and ((T - 0.5).abs() > 1e-4).all()
        T = T * (1 - torch.where(raw >= ALPHA_MIN, raw, torch.zeros_like(raw)))
        assert (T > 10 * T_EPS).all()


@pytest.mark.parametrize("n", [1, 3])
def test_gradcheck_cpu(n):
    s = gradcheck_scene(n)
    assert_no_switch_within_reach(s)
    background = torch.tensor([[0.3, 0.2, 0.1]], dtype=F64)

    def fn(points, delta, sigma, opacities, colors):
        out, _ = rasterize(
            points.mean(1), None, None, opacities, colors, s["viewmats"], s["Ks"], 8, 8,
            backgrounds=background, outputs=MAPS, backend="cpu", primitive="convex", shape=(points, delta, sigma),
        )  # fmt: skip
        return tuple(out.asdict()[name] for name in MAPS)

    inputs = tuple(
        s[k].clone().requires_grad_(True) for k in ("points", "delta", "sigma", "opacities", "colors")
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
