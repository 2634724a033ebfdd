"""The ``cpu`` backend (C++/OpenMP projections and kernels) against the pure-torch ``reference``, for every
primitive type in ``recon.render.PRIMITIVES``: every map, every gradient.

Scenes come from ``tests/render/conftest.py`` (``primitive_scene``). Every primitive type gets some behind the
camera, across the image border, with very large and very small scales, unnormalised quaternions and zero opacity;
2D surfels also get discs whose 3σ extent crosses the camera plane (culled) or nearly does (huge), and discs seen
exactly edge-on. Tolerances (float32): rgb max abs difference <= 1e-5; every other map max abs difference <= 1e-4
of the map's largest value; every gradient within 1e-4 of the reference gradient's norm, with the loss a random
linear combination of all outputs.

``distort_ndc2`` is the exception that proves the rule: its NDC depths are all close to 1, so the float32 sum
m²A + M2 − 2 m M1 cancels about three digits, and the float32 reference is itself only good to ~5e-4. The C++
kernel accumulates shifted depths (m − f/(f−n)) and is checked against the float64 reference instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.render import OUTPUT_NAMES, RasterSettings, contributors, rasterize
from recon.render.outputs import NDC_FAR, NDC_NEAR
from recon.render.reference import pixel_contributions
from recon.render.settings import Splats
from tests.paths import shared_data
from tests.render.conftest import PER_PIXEL_DEPTH

PARAMS = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
RGB_ATOL = 1e-5
MAP_RTOL = 1e-4
GRAD_RTOL = 1e-4
F64 = torch.float64
# (map, parameter) whose true gradient is zero but whose float32 gradient is rounding noise on both backends:
# a surfel's ray-plane depth does not depend on its in-plane scales.
NOISE_ONLY_GRADS = {"surfel2d": {("depth_median", "scales")}}


def render(
    scene: dict, backend: str, outputs=OUTPUT_NAMES, loss_seed: int = 0, absgrad: bool = True, **overrides
):
    """Render with fresh leaf copies of the parameters and backprop a random linear combination of all outputs."""
    args = {**scene, **overrides}
    leaves = {k: args[k].detach().clone().requires_grad_(True) for k in PARAMS if args.get(k) is not None}
    args.update(leaves)
    out, info = rasterize(**args, outputs=outputs, absgrad=absgrad, backend=backend)
    gen = torch.Generator().manual_seed(loss_seed)
    maps = out.asdict()
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum() for v in maps.values())
    loss.backward()
    return out, info, {k: v.grad for k, v in leaves.items()}


def assert_maps_close(cpu, ref, names, ref64=None) -> None:
    for name in names:
        a, b = getattr(cpu, name), getattr(ref, name)
        assert a is not None and a.shape == b.shape and a.dtype == b.dtype, name
        if name == "rgb":
            assert (a - b).abs().max() <= RGB_ATOL, name
            continue
        if name == "distort_ndc2" and ref64 is not None:
            b = ref64.distort_ndc2.to(a.dtype)
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= MAP_RTOL * scale + 1e-12, (
            name,
            (a - b).abs().max().item(),
            scale,
        )


def assert_grads_close(g_cpu: dict, g_ref: dict) -> None:
    assert g_cpu.keys() == g_ref.keys()
    for k in g_ref:
        a, b = g_cpu[k], g_ref[k]
        assert a is not None and b is not None and a.shape == b.shape, k
        assert (a - b).norm() <= GRAD_RTOL * b.norm() + 1e-12, (k, ((a - b).norm() / b.norm()).item())


def assert_info_close(i_cpu: dict, i_ref: dict) -> None:
    assert torch.equal(i_cpu["radii"], i_ref["radii"]) and i_cpu["radii"].dtype == torch.int32
    for key in ("width", "height", "n_cameras", "tile_size", "tile_width", "tile_height", "n_isects"):
        assert i_cpu[key] == i_ref[key], key
    torch.testing.assert_close(i_cpu["means2d"], i_ref["means2d"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(i_cpu["depths"], i_ref["depths"], rtol=1e-6, atol=1e-6)
    m_cpu, m_ref = i_cpu["means2d"], i_ref["means2d"]
    for attr in ("grad", "absgrad") if hasattr(m_ref, "absgrad") else ("grad",):
        a, b = getattr(m_cpu, attr), getattr(m_ref, attr)
        assert (a - b).norm() <= GRAD_RTOL * b.norm() + 1e-12, attr


def with_colors(scene: dict, mode: str, C: int, seed: int) -> dict:
    """Swap the scene's colours for one of the colour layouts the rasterizer accepts."""
    gen = torch.Generator().manual_seed(seed)
    n = scene["means"].shape[0]
    scene = dict(scene)
    if mode == "rgb" or mode.startswith("sh"):  # random_scene already made RGB or SH colours
        return scene
    if mode == "features5":  # D != 3 plain features, shared by the cameras
        scene["colors"] = torch.rand(n, 5, generator=gen)
        scene["backgrounds"] = torch.rand(C, 5, generator=gen)
    elif mode == "per_camera2":  # [C,N,D] per-camera features with D = 2
        scene["colors"] = torch.rand(C, n, 2, generator=gen)
        scene["backgrounds"] = torch.rand(C, 2, generator=gen)
    elif mode == "per_camera_sh1":  # [C,N,K,3] per-camera SH coefficients
        scene["colors"] = torch.randn(C, n, 4, 3, generator=gen) * 0.3
        scene["sh_degree"] = 1
    else:
        raise ValueError(mode)
    return scene


def ref64(scene: dict, **overrides):
    """distort_ndc2 from the float64 reference (see the module docstring)."""
    scene64 = {k: v.to(F64) if torch.is_tensor(v) else v for k, v in {**scene, **overrides}.items()}
    out, _ = rasterize(**scene64, outputs=("distort_ndc2",), backend="reference")
    return out


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize(
    "colors", ["rgb", "sh0", "sh1", "sh2", "sh3", "features5", "per_camera2", "per_camera_sh1"]
)
def test_all_maps_and_gradients_match_reference(primitive_scene, colors, C):
    seed = 10 * C + len(colors)
    sh = int(colors[2]) if colors.startswith("sh") else None
    scene = with_colors(primitive_scene(160, C, 36, 52, seed=seed, sh_degree=sh), colors, C, seed)
    out_c, info_c, g_c = render(scene, "cpu")
    out_r, info_r, g_r = render(scene, "reference")
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=ref64(scene))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)
    assert info_c["n_isects"] > 50 and (info_c["radii"] == 0).any()  # a real scene, with culled primitives
    assert out_c.alpha.max() > 0.5


def test_without_backgrounds_and_with_other_settings(primitive_scene):
    scene = primitive_scene(150, 2, 34, 45, seed=3, sh_degree=3)
    scene["backgrounds"] = None
    settings = dict(eps2d=0.1, radius_clip=1.5, near_plane=0.5, far_plane=6.0)  # surfels have no eps2d
    out_c, info_c, g_c = render(scene, "cpu", **settings)
    out_r, info_r, g_r = render(scene, "reference", **settings)
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=ref64(scene, **settings))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)


@pytest.mark.parametrize("tile_size", [8, 12])
def test_other_tile_sizes(primitive_scene, tile_size):
    # 12 is not a multiple of the SIMD width: rows of the tile buffers are padded.
    scene = primitive_scene(140, 1, 30, 41, seed=tile_size)
    out_c, info_c, g_c = render(scene, "cpu", tile_size=tile_size)
    out_r, info_r, g_r = render(scene, "reference", tile_size=tile_size)
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=ref64(scene, tile_size=tile_size))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_each_map_alone(primitive_scene, primitive, name):
    """Only the requested map is computed; it equals the reference on its own too."""
    scene = primitive_scene(140, 2, 24, 30, seed=21)
    out_c, _, g_c = render(scene, "cpu", outputs=(name,))
    out_r, _, g_r = render(scene, "reference", outputs=(name,))
    assert set(out_c.asdict()) == {name}
    assert_maps_close(out_c, out_r, [name], ref64=ref64(scene))
    for k, b in g_r.items():
        a = g_c[k]
        if b is None:  # the reference's graph does not reach this input for this map: cpu gives zeros
            assert a is None or (a == 0).all(), (name, k)
        elif (name, k) in NOISE_ONLY_GRADS.get(primitive, ()):  # both are float32 rounding noise
            floor = GRAD_RTOL * g_r["means"].norm()
            assert a.norm() <= floor and b.norm() <= floor, (name, k)
        elif name == "distort_ndc2":  # compared loosely: the float32 reference loses ~3 digits (module doc)
            assert (a - b).norm() <= 1e-2 * b.norm() + 1e-12, (name, k)
        else:
            assert (a - b).norm() <= GRAD_RTOL * b.norm() + 1e-12, (name, k)


def test_float64_matches_reference_tightly(primitive_scene):
    """The float64 instantiation (the one gradcheck uses) agrees with the reference to float64 rounding."""
    scene = primitive_scene(140, 2, 28, 36, seed=8, sh_degree=2, dtype=F64)
    out_c, info_c, g_c = render(scene, "cpu")
    out_r, info_r, g_r = render(scene, "reference")
    for name in OUTPUT_NAMES:
        a, b = getattr(out_c, name), getattr(out_r, name)
        assert a.dtype == F64
        assert (a - b).abs().max() <= 1e-10 * max(b.abs().max().item(), 1.0), name
    for k in g_r:
        assert (g_c[k] - g_r[k]).norm() <= 1e-9 * g_r[k].norm(), k
    assert torch.equal(info_c["radii"], info_r["radii"])


@pytest.mark.parametrize("n", [0, 30])
def test_empty_view(empty_view, primitive, n):
    scene = {**empty_view(n, 2, 18, 20, seed=4), "primitive": primitive}
    out_c, info_c, g_c = render(scene, "cpu")
    out_r, _, g_r = render(scene, "reference")
    assert (info_c["radii"] == 0).all() and info_c["n_isects"] == 0
    assert torch.equal(out_c.rgb, scene["backgrounds"][:, None, None, :].expand(2, 18, 20, 3))
    for name in OUTPUT_NAMES[1:]:
        assert (getattr(out_c, name) == 0).all(), name
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert (g_c[k] == 0).all(), k
    torch.testing.assert_close(g_c["backgrounds"], g_r["backgrounds"])
    assert g_c["backgrounds"].abs().sum() > 0


def test_distortion_maps_equal_brute_force_double_sums(primitive_scene, primitive):
    scene = primitive_scene(140, 2, 20, 26, seed=5, dtype=F64)
    out, _, _ = render(
        scene, "cpu", outputs=("alpha", "depth_exp", "distort_l1", "distort_ndc2"), tile_size=8
    )
    splats = Splats(*(scene[k] for k in ("means", "quats", "scales", "opacities")))
    settings = RasterSettings(scene["width"], scene["height"], tile_size=8)
    ids, w, z = pixel_contributions(splats, scene["viewmats"], scene["Ks"], settings, primitive)
    w, z = w.numpy(), z.numpy()
    # Σ_{i>j} 2 w_i w_j (z_i − z_j) over each pixel's list in compositing order: signed, since a surfel's per-pixel
    # depth need not follow the order of the centre depths; a Gaussian's does, so for it this is Σ w_i w_j |z_i − z_j|
    pair = w[..., :, None] * w[..., None, :]
    l1 = 2 * np.tril((z[..., :, None] - z[..., None, :]) * pair, k=-1).sum((-1, -2))
    inc = z >= NDC_NEAR
    m = np.where(inc, NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / np.where(inc, z, 1.0)), 0.0)
    wi = w * inc
    ndc = np.tril((m[..., :, None] - m[..., None, :]) ** 2 * wi[..., :, None] * wi[..., None, :], k=-1).sum(
        (-1, -2)
    )
    assert (ids >= 0).sum(-1).max() >= 3 and l1.max() > 0.01 and ndc.max() > 1e-5
    if not PER_PIXEL_DEPTH[primitive]:
        assert (np.diff(z, axis=-1)[ids[..., 1:] >= 0] >= 0).all()  # centre depths, in compositing order
    np.testing.assert_allclose(out.distort_l1[..., 0].detach().numpy(), l1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out.distort_ndc2[..., 0].detach().numpy(), ndc, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(out.alpha[..., 0].detach().numpy(), w.sum(-1), atol=1e-12)


def test_repeated_runs_are_bit_identical(primitive_scene):
    """Gradients are reduced per primitive in a fixed order, whatever the thread schedule."""
    scene = primitive_scene(200, 2, 40, 50, seed=9, sh_degree=1)
    out1, info1, g1 = render(scene, "cpu")
    out2, info2, g2 = render(scene, "cpu")
    for name in OUTPUT_NAMES:
        assert torch.equal(getattr(out1, name), getattr(out2, name)), name
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    assert torch.equal(info1["means2d"].absgrad, info2["means2d"].absgrad)


def test_contributor_ids_match_reference(primitive_scene, primitive):
    scene = primitive_scene(160, 2, 30, 40, seed=5, dtype=F64)
    keys = ("means", "quats", "scales", "opacities", "viewmats", "Ks", "width", "height")
    args = {k: scene[k] for k in keys}
    first_c, last_c = contributors(**args, k=3, backend="cpu", primitive=primitive)
    first_r, last_r = contributors(**args, k=3, backend="reference", primitive=primitive)
    assert torch.equal(first_c, first_r) and torch.equal(last_c, last_r)
    assert (first_c[..., 2] >= 0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_projection_equals_the_torch_contract(primitive_scene, primitive, seed):
    """The primitive's C++ projection (and its backward) against its pure-torch twin (autograd), float64."""
    from recon.render.primitives import get_primitive

    prim = get_primitive(primitive)
    scene = primitive_scene(160, 2, 40, 56, seed, dtype=F64)
    settings = RasterSettings(scene["width"], scene["height"])
    vm, Ks = scene["viewmats"], scene["Ks"]
    leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales")}
    args = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
    m2d, pay, dep, nrm, rad = prim.project_cpu(*args.values(), vm, Ks, settings.projection_tuple(), True)
    ref = prim.project_reference(*leaves.values(), vm, Ks, settings, True)
    ref_pay = ref.payload
    vis = rad > 0
    assert torch.equal(rad, ref.radii) and vis.any() and (~vis).any()
    got, want = (m2d, pay, dep, nrm), (ref.means2d, ref_pay, ref.depths, ref.normals)
    for a, b in zip(got, want):  # what a culled primitive's entries hold is not part of the contract
        torch.testing.assert_close(a[vis], b.detach()[vis], rtol=1e-10, atol=1e-10)
    gen = torch.Generator().manual_seed(seed)
    # cotangents on visible entries only: the compositor never sends a gradient to a culled primitive
    g = [torch.randn(t.shape, generator=gen, dtype=F64) for t in got]
    g = [x * (vis if x.dim() == 2 else vis[..., None]) for x in g]
    sum((a * b).sum() for a, b in zip(got, g)).backward()
    sum((a * b).sum() for a, b in zip(want, g)).backward()
    for name, want_leaf in leaves.items():
        a, b = args[name].grad, want_leaf.grad
        assert (a - b).abs().max() <= 1e-9 * (1 + b.norm()), name


def test_gsplat_default_strategy_reads_info(primitive_scene):
    strategy_mod = pytest.importorskip("gsplat.strategy")
    scene = primitive_scene(140, 2, 24, 30, seed=12)
    params = torch.nn.ParameterDict(
        {k: torch.nn.Parameter(scene[k].clone()) for k in ("means", "quats", "scales", "opacities", "colors")}
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = strategy_mod.DefaultStrategy(absgrad=True, refine_start_iter=10**6)
    state = strategy.initialize_state()
    args = {**scene, **dict(params.items())}
    out, info = rasterize(**args, outputs=("rgb",), absgrad=True, backend="cpu")
    strategy.step_pre_backward(params, optimizers, state, 0, info)
    out.rgb.sum().backward()
    strategy.step_post_backward(params, optimizers, state, 0, info, packed=False)
    assert state["grad2d"].shape == (140,) and state["grad2d"].sum() > 0
    assert torch.equal(state["count"] > 0, (info["radii"] > 0).all(-1).any(0))


def test_garden_subset_matches_reference():
    """Real point-cloud statistics (3DGS-style initialisation of the garden scene) at a quarter resolution."""
    path = shared_data("garden", "test_garden.npz")
    from scipy.spatial import cKDTree

    data = np.load(path)
    gen = np.random.default_rng(0)
    pts = data["means3d"][gen.choice(len(data["means3d"]), 3000, replace=False)].astype(np.float32)
    dist, _ = cKDTree(pts).query(pts, k=4)
    n = len(pts)
    Ks = torch.from_numpy(data["Ks"][:1].copy())
    Ks[:, :2] *= 0.25
    scene = dict(
        means=torch.from_numpy(pts),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        scales=torch.from_numpy(dist[:, 1:].mean(1, keepdims=True).repeat(3, 1).astype(np.float32)),
        opacities=torch.full((n,), 0.6),
        colors=torch.rand(n, 3, generator=torch.Generator().manual_seed(0)),
        viewmats=torch.from_numpy(data["viewmats"][:1].copy()),
        Ks=Ks,
        width=int(data["width"]) // 4,
        height=int(data["height"]) // 4,
        backgrounds=torch.ones(1, 3),
    )
    names = ("rgb", "alpha", "depth_exp", "distort_l1")
    out_c, info_c, g_c = render(scene, "cpu", outputs=names, absgrad=False)
    out_r, info_r, g_r = render(scene, "reference", outputs=names, absgrad=False)
    assert info_c["n_isects"] > 1000
    assert_maps_close(out_c, out_r, names)
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)
