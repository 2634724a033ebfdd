"""The ``cpu`` backend with 2D surfels (C++ projection and surfel kernel) against the pure-torch ``reference``.

Same tolerances as ``test_cpu_parity.py`` (float32): rgb max abs difference <= 1e-5; every other map within 1e-4
of the map's largest value (distort_ndc2 against the float64 reference); every gradient within 1e-4 of the
reference gradient's norm, the loss a random linear combination of all outputs. Scenes (``surfel_scene`` in
conftest.py) hold surfels behind the camera, across the image border, whose 3σ disc crosses the camera plane
(culled) or nearly does (huge), seen exactly edge-on, very large and very small, and with zero opacity.

The C++ compositor dispatches on the payload size (6 for surfels).
"""

from __future__ import annotations

import pytest
import torch

from recon.render import OUTPUT_NAMES, contributors, rasterize
from tests.render.test_cpu_parity import (
    GRAD_RTOL,
    assert_grads_close,
    assert_info_close,
    assert_maps_close,
    render,
    with_colors,
)

F64 = torch.float64


def _ref64(scene: dict, **overrides):
    scene64 = {k: v.to(F64) if torch.is_tensor(v) else v for k, v in {**scene, **overrides}.items()}
    out, _ = rasterize(**scene64, outputs=("distort_ndc2",), backend="reference")
    return out


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize("colors", ["rgb", "sh1", "sh3", "features5", "per_camera2"])
def test_all_maps_and_gradients_match_reference(surfel_scene, colors, C):
    seed = 10 * C + len(colors)
    sh = int(colors[2]) if colors.startswith("sh") else None
    scene = with_colors(surfel_scene(160, C, 36, 52, seed=seed, sh_degree=sh), colors, C, seed)
    out_c, info_c, g_c = render(scene, "cpu")
    out_r, info_r, g_r = render(scene, "reference")
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=_ref64(scene))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)
    assert info_c["n_isects"] > 50 and (info_c["radii"] == 0).any()
    assert out_c.alpha.max() > 0.5


def test_without_backgrounds_and_with_other_settings(surfel_scene):
    scene = surfel_scene(150, 2, 34, 45, seed=3, sh_degree=3)
    scene["backgrounds"] = None
    settings = dict(radius_clip=1.5, near_plane=0.5, far_plane=6.0)
    out_c, info_c, g_c = render(scene, "cpu", **settings)
    out_r, info_r, g_r = render(scene, "reference", **settings)
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=_ref64(scene, **settings))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)


@pytest.mark.parametrize("tile_size", [8, 12])
def test_other_tile_sizes(surfel_scene, tile_size):
    scene = surfel_scene(140, 1, 30, 41, seed=tile_size)
    out_c, info_c, g_c = render(scene, "cpu", tile_size=tile_size)
    out_r, info_r, g_r = render(scene, "reference", tile_size=tile_size)
    assert_maps_close(out_c, out_r, OUTPUT_NAMES, ref64=_ref64(scene, tile_size=tile_size))
    assert_grads_close(g_c, g_r)
    assert_info_close(info_c, info_r)


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_each_map_alone(surfel_scene, name):
    """Only the requested map is computed; it equals the reference on its own too."""
    scene = surfel_scene(140, 2, 24, 30, seed=21)
    out_c, _, g_c = render(scene, "cpu", outputs=(name,))
    out_r, _, g_r = render(scene, "reference", outputs=(name,))
    assert set(out_c.asdict()) == {name}
    assert_maps_close(out_c, out_r, [name], ref64=_ref64(scene))
    for k, b in g_r.items():
        a = g_c[k]
        if b is None:  # the reference's graph does not reach this input for this map: cpu gives zeros
            assert a is None or (a == 0).all(), (name, k)
        elif name == "depth_median" and k == "scales":
            # the ray-plane depth does not depend on the in-plane scales: both are float32 rounding noise
            floor = GRAD_RTOL * g_r["means"].norm()
            assert a.norm() <= floor and b.norm() <= floor, (name, k)
        elif name == "distort_ndc2":  # the float32 reference loses ~3 digits here (test_cpu_parity.py)
            assert (a - b).norm() <= 1e-2 * b.norm() + 1e-12, (name, k)
        else:
            assert (a - b).norm() <= GRAD_RTOL * b.norm() + 1e-12, (name, k)


def test_float64_matches_reference_tightly(surfel_scene):
    scene = surfel_scene(140, 2, 28, 36, seed=8, sh_degree=2, dtype=F64)
    out_c, info_c, g_c = render(scene, "cpu")
    out_r, info_r, g_r = render(scene, "reference")
    for name in OUTPUT_NAMES:
        a, b = getattr(out_c, name), getattr(out_r, name)
        assert a.dtype == F64
        assert (a - b).abs().max() <= 1e-10 * max(b.abs().max().item(), 1.0), name
    for k in g_r:
        assert (g_c[k] - g_r[k]).norm() <= 1e-9 * g_r[k].norm(), k
    assert torch.equal(info_c["radii"], info_r["radii"])


def test_empty_view(empty_view):
    scene = {**empty_view(30, 2, 18, 20, seed=4), "primitive": "surfel2d"}
    out_c, info_c, g_c = render(scene, "cpu")
    assert (info_c["radii"] == 0).all() and info_c["n_isects"] == 0
    assert torch.equal(out_c.rgb, scene["backgrounds"][:, None, None, :].expand(2, 18, 20, 3))
    for k in ("means", "quats", "scales", "opacities", "colors"):
        assert (g_c[k] == 0).all(), k


def test_repeated_runs_are_bit_identical(surfel_scene):
    scene = surfel_scene(200, 2, 40, 50, seed=9, sh_degree=1)
    out1, info1, g1 = render(scene, "cpu")
    out2, info2, g2 = render(scene, "cpu")
    for name in OUTPUT_NAMES:
        assert torch.equal(getattr(out1, name), getattr(out2, name)), name
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    assert torch.equal(info1["means2d"].absgrad, info2["means2d"].absgrad)


def test_contributor_ids_match_reference(surfel_scene):
    scene = surfel_scene(160, 2, 30, 40, seed=5, dtype=F64)
    keys = ("means", "quats", "scales", "opacities", "viewmats", "Ks", "width", "height")
    args = {k: scene[k] for k in keys}
    first_c, last_c = contributors(**args, k=3, backend="cpu", primitive="surfel2d")
    first_r, last_r = contributors(**args, k=3, backend="reference", primitive="surfel2d")
    assert torch.equal(first_c, first_r) and torch.equal(last_c, last_r)
    assert (first_c[..., 2] >= 0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_projection_equals_the_torch_contract(surfel_scene, seed):
    """project_surfels_forward/backward (C++) against surfels.project_surfels (torch autograd), float64."""
    from recon.render._ext import load_ext
    from recon.render.surfels import project_surfels

    scene = surfel_scene(160, 2, 40, 56, seed, dtype=F64)
    leaves = {k: scene[k].to(F64).clone().requires_grad_(True) for k in ("means", "quats", "scales")}
    vm, Ks = scene["viewmats"].to(F64), scene["Ks"].to(F64)
    W, H = scene["width"], scene["height"]
    ref = project_surfels(leaves["means"], leaves["quats"], leaves["scales"], vm, Ks, W, H, with_normals=True)
    m2d, pay, dep, rad, nrm = load_ext().project_surfels_forward(
        *(leaves[k].detach() for k in ("means", "quats", "scales")), vm, Ks, W, H, 0.01, 1e10, 0.0, True
    )
    assert torch.equal(rad, ref.radii)
    for got, want in ((m2d, ref.means2d), (pay, ref.payload), (dep, ref.depths), (nrm, ref.normals)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-10, atol=1e-10)
    g = [torch.randn_like(t) for t in (m2d, pay, dep, nrm)]
    loss = sum((a * b).sum() for a, b in zip((ref.means2d, ref.payload, ref.depths, ref.normals), g))
    loss.backward()
    dm, dq, ds = load_ext().project_surfels_backward(
        *(leaves[k].detach() for k in ("means", "quats", "scales")), vm, Ks, W, H, 0.01, 1e10, 0.0, *g
    )
    for got, name in ((dm, "means"), (dq, "quats"), (ds, "scales")):
        want = leaves[name].grad
        assert (got - want).abs().max() <= 1e-9 * (1 + want.norm()), name
