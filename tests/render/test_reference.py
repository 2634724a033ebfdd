"""The pure-torch reference rasterizer against hand-computed values, brute force, and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recon.render.reference as reference
from recon.render import OUTPUT_NAMES, rasterize
from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, NDC_FAR, NDC_NEAR, T_EPS
from recon.render.projection import bin_tiles, project_gaussians
from recon.render.reference import pixel_contributions
from recon.render.sh import SH_C0, SH_C1, SH_C2, SH_C3, colors_from_sh, eval_sh

F64 = torch.float64


def render(scene: dict, outputs=OUTPUT_NAMES, **overrides):
    args = {**scene, **overrides}
    return rasterize(**args, outputs=outputs, backend="reference")


def camera(f: float, cx: float, cy: float, dtype=F64):
    """Identity pose (camera at the origin looking down +z) and a pinhole K."""
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K[None]


def gaussians(means, scales, opacities, colors, quats=None, dtype=F64) -> dict:
    means = torch.tensor(means, dtype=dtype)
    n = means.shape[0]
    return dict(
        means=means,
        quats=torch.tensor(quats, dtype=dtype)
        if quats is not None
        else torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype),
        scales=torch.tensor(scales, dtype=dtype),
        opacities=torch.tensor(opacities, dtype=dtype),
        colors=torch.tensor(colors, dtype=dtype),
    )


# ----------------------------------------------------------------------------------------------- closed forms


def test_single_isotropic_gaussian_matches_closed_form():
    W, H, f, cx, cy = 16, 16, 20.0, 8.3, 7.9
    viewmats, Ks = camera(f, cx, cy)
    X, Y, Z, s, o = 0.1, -0.05, 2.0, 0.15, 0.8
    color, bg = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.05])
    scene = gaussians([[X, Y, Z]], [[s, s, s]], [o], [color.tolist()], quats=[[2.0, 0, 0, 0]])
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H, backgrounds=torch.from_numpy(bg)[None])
    out, info = render(scene, outputs=("rgb", "alpha", "depth_exp"))

    # By hand: Σc = s² I, J = [[f/Z, 0, -f X/Z²], [0, f/Z, -f Y/Z²]] (no clamp this close to the axis).
    J = np.array([[f / Z, 0, -f * X / Z**2], [0, f / Z, -f * Y / Z**2]])
    cov2d = s**2 * J @ J.T + 0.3 * np.eye(2)
    conic = np.linalg.inv(cov2d)
    mu = np.array([f * X / Z + cx, f * Y / Z + cy])
    jj, ii = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    d = np.stack([mu[0] - (ii + 0.5), mu[1] - (jj + 0.5)], axis=-1)
    sigma = 0.5 * np.einsum("hwi,ij,hwj->hw", d, conic, d)
    alpha = np.minimum(ALPHA_MAX, o * np.exp(-sigma))
    alpha = np.where(alpha < ALPHA_MIN, 0.0, alpha)
    rgb = alpha[..., None] * color + (1 - alpha[..., None]) * bg

    np.testing.assert_allclose(out.rgb[0].numpy(), rgb, atol=1e-12)
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(out.depth_exp[0, ..., 0].numpy(), alpha * Z, atol=1e-12)
    assert (alpha == 0).any() and (alpha > 0.5).any()  # the image shows both the core and the cut-off tail
    np.testing.assert_allclose(info["means2d"][0, 0].detach().numpy(), mu, atol=1e-12)
    # λmax as 3DGS bounds it: mid + sqrt(max(0.1, mid² − det)), slightly above the true eigenvalue
    mid, det = 0.5 * np.trace(cov2d), np.linalg.det(cov2d)
    lam = mid + math.sqrt(max(0.1, mid**2 - det))
    assert lam >= np.linalg.eigvalsh(cov2d).max()
    assert info["radii"][0, 0].tolist() == [math.ceil(3 * math.sqrt(lam))] * 2
    assert info["depths"][0, 0].item() == pytest.approx(Z)


def _on_axis_pair(o_near: float, o_far: float, z_near: float, z_far: float) -> dict:
    """Two tiny Gaussians on the ray through the centre of pixel (8, 8); the far one is listed first."""
    viewmats, Ks = camera(20.0, 8.5, 8.5)
    scene = gaussians(
        [[0.0, 0.0, z_far], [0.0, 0.0, z_near]],
        [[0.05, 0.05, 0.01]] * 2,  # shortest axis along z: normal (0, 0, -1) towards the camera
        [o_far, o_near],
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
    )
    scene.update(viewmats=viewmats, Ks=Ks, width=16, height=16)
    return scene


def _ndc(z: float) -> float:
    return NDC_FAR / (NDC_FAR - NDC_NEAR) * (1.0 - NDC_NEAR / z)


@pytest.mark.parametrize("o_near, median_is_near", [(0.3, False), (0.6, True)])
def test_two_gaussians_on_one_ray_hand_values(o_near, median_is_near):
    z1, z2, o2 = 1.5, 3.0, 0.5
    out, _ = render(_on_axis_pair(o_near, o2, z1, z2))
    w1, w2 = o_near, o2 * (1 - o_near)  # σ = 0 at the pixel centre, so α = opacity
    px = (0, 8, 8)
    assert out.alpha[px].item() == pytest.approx(w1 + w2, abs=1e-12)
    assert out.rgb[px].tolist() == pytest.approx([w1, 0.0, w2], abs=1e-12)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, abs=1e-12)
    assert out.depth_median[px].item() == pytest.approx(z1 if median_is_near else z2, abs=1e-12)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * (z2 - z1), abs=1e-12)
    assert out.distort_ndc2[px].item() == pytest.approx(w1 * w2 * (_ndc(z2) - _ndc(z1)) ** 2, abs=1e-12)
    assert out.normal[px].tolist() == pytest.approx([0.0, 0.0, -(w1 + w2)], abs=1e-12)


def test_ndc_distortion_leaves_out_primitives_nearer_than_ndc_near():
    z1, z2 = 0.5 * NDC_NEAR, 3.0
    out, _ = render(_on_axis_pair(0.3, 0.5, z1, z2))
    w1, w2 = 0.3, 0.35
    px = (0, 8, 8)
    assert out.distort_ndc2[px].item() == pytest.approx(0.0, abs=1e-15)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * (z2 - z1), abs=1e-12)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, abs=1e-12)


def test_stop_is_exclusive_and_low_alpha_is_skipped():
    """α = 0.9, 0.99 composite; then next T = 0.001·0.05 <= T_EPS stops the pixel before the third one."""
    viewmats, Ks = camera(20.0, 8.5, 8.5)
    cols = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]
    scene = gaussians(
        [[0, 0, 1.0], [0, 0, 1.5], [0, 0, 2.0], [0, 0, 0.5]],
        [[0.05] * 3] * 4,
        [0.9, 0.999, 0.95, 0.003],
        cols,
    )
    bg = torch.tensor([[0.25, 0.5, 0.75]], dtype=F64)
    scene.update(viewmats=viewmats, Ks=Ks, width=16, height=16, backgrounds=bg)
    out, _ = render(scene)
    px = (0, 8, 8)
    assert 0.1 * (1 - ALPHA_MAX) * (1 - 0.95) <= T_EPS < 0.1 * (1 - ALPHA_MAX)
    t_final = 0.1 * (1 - ALPHA_MAX)  # the α=0.999 one is clamped to ALPHA_MAX
    expected = np.array([0.9, 0.1 * ALPHA_MAX, 0.0]) + t_final * bg[0].numpy()
    np.testing.assert_allclose(out.rgb[px].numpy(), expected, atol=1e-12)
    assert out.alpha[px].item() == pytest.approx(1 - t_final, abs=1e-12)
    assert out.depth_exp[px].item() == pytest.approx(0.9 * 1.0 + 0.1 * ALPHA_MAX * 1.5, abs=1e-12)


# ------------------------------------------------------------------------------------- brute-force oracles


def _sequential_render(scene: dict, tile_size: int) -> dict:
    """Step 8 of the semantics as a literal per-pixel loop (numpy), reusing only projection and binning."""
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], scene["width"],
        scene["height"], tile_size=tile_size, with_normals=True,
    )  # fmt: skip
    C, N = proj.depths.shape
    H, W = scene["height"], scene["width"]
    m2d, con, z = proj.means2d.detach().numpy(), proj.conics.detach().numpy(), proj.depths.detach().numpy()
    nrm = proj.normals.detach().numpy()
    tmin, tmax, vis = proj.tile_min.numpy(), proj.tile_max.numpy(), proj.visible.numpy()
    op, col = scene["opacities"].numpy(), scene["colors"].numpy()
    bg = scene["backgrounds"].numpy()
    out = {k: np.zeros((C, H, W, d)) for k, d in [("rgb", 3), ("alpha", 1), ("depth_exp", 1), ("normal", 3)]}
    out.update({k: np.zeros((C, H, W, 1)) for k in ("depth_median", "distort_l1")})
    for c in range(C):
        for j in range(H):
            for i in range(W):
                tx, ty = i // tile_size, j // tile_size
                ids = [
                    n
                    for n in range(N)
                    if vis[c, n]
                    and tmin[c, n, 0] <= tx < tmax[c, n, 0]
                    and tmin[c, n, 1] <= ty < tmax[c, n, 1]
                ]
                ids.sort(key=lambda n: (z[c, n], n))
                T, ws, zs = 1.0, [], []
                for n in ids:
                    dx, dy = m2d[c, n, 0] - (i + 0.5), m2d[c, n, 1] - (j + 0.5)
                    s = 0.5 * (con[c, n, 0] * dx * dx + con[c, n, 2] * dy * dy) + con[c, n, 1] * dx * dy
                    if s < 0:
                        continue
                    a = min(ALPHA_MAX, op[n] * math.exp(-s))
                    if a < ALPHA_MIN:
                        continue
                    if T * (1 - a) <= T_EPS:
                        break
                    w = a * T
                    if T > 0.5:
                        out["depth_median"][c, j, i, 0] = z[c, n]
                    out["rgb"][c, j, i] += w * col[n]
                    out["depth_exp"][c, j, i, 0] += w * z[c, n]
                    out["normal"][c, j, i] += w * nrm[c, n]
                    ws.append(w)
                    zs.append(z[c, n])
                    T *= 1 - a
                out["alpha"][c, j, i, 0] = 1 - T
                out["rgb"][c, j, i] += T * bg[c]
                out["distort_l1"][c, j, i, 0] = sum(
                    wa * wb * abs(za - zb) for wa, za in zip(ws, zs) for wb, zb in zip(ws, zs)
                )
    return out


def test_vectorised_compositing_equals_sequential_loop(random_scene):
    scene = random_scene(40, 2, 18, 22, seed=3, dtype=F64)
    expected = _sequential_render(scene, tile_size=8)
    names = tuple(expected)
    out, _ = render(scene, outputs=names, tile_size=8)
    for name in names:
        np.testing.assert_allclose(
            getattr(out, name).detach().numpy(), expected[name], atol=1e-10, err_msg=name
        )
    assert (expected["alpha"] > 0.5).mean() > 0.2  # the scene is not trivially empty


def test_distortion_maps_equal_brute_force_double_sums(random_scene):
    scene = random_scene(60, 2, 20, 26, seed=5, dtype=F64)
    out, _ = render(scene, outputs=("alpha", "depth_exp", "distort_l1", "distort_ndc2"), tile_size=8)
    ids, w, z = pixel_contributions(
        **{
            k: scene[k]
            for k in ("means", "quats", "scales", "opacities", "viewmats", "Ks", "width", "height")
        },
        tile_size=8,
    )
    w, z = w.numpy(), z.numpy()
    l1 = np.abs(z[..., :, None] - z[..., None, :]) * w[..., :, None] * w[..., None, :]
    inc = z >= NDC_NEAR
    m = np.where(inc, NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / np.where(inc, z, 1.0)), 0.0)
    wi = w * inc
    ndc = np.tril((m[..., :, None] - m[..., None, :]) ** 2 * wi[..., :, None] * wi[..., None, :], k=-1)
    assert (ids >= 0).sum(-1).max() >= 3  # some pixels see several Gaussians
    np.testing.assert_allclose(out.distort_l1[..., 0].numpy(), l1.sum((-1, -2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.distort_ndc2[..., 0].numpy(), ndc.sum((-1, -2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.alpha[..., 0].numpy(), w.sum(-1), atol=1e-12)
    np.testing.assert_allclose(out.depth_exp[..., 0].numpy(), (w * z).sum(-1), atol=1e-12)
    assert out.distort_l1.max() > 0.01


def test_projection_matches_gsplat_torch_implementation(random_scene):
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = random_scene(80, 2, 24, 30, seed=11, dtype=F64)
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 30, 24
    )  # fmt: skip
    covars, _ = ti._quat_scale_to_covar_preci(
        scene["quats"], scene["scales"], compute_preci=False, triu=False
    )
    _, means2d, depths, conics, _ = ti._fully_fused_projection(
        scene["means"], covars, scene["viewmats"], scene["Ks"], 30, 24, eps2d=0.3
    )
    vis = proj.visible
    assert vis.sum() > 20 and (~vis).sum() > 0
    torch.testing.assert_close(proj.means2d[vis], means2d[vis], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(proj.conics[vis], conics[vis], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(proj.depths, depths, rtol=1e-12, atol=1e-12)


def test_multi_camera_batch_equals_single_cameras_and_per_camera_colors(random_scene):
    scene = random_scene(50, 3, 20, 24, seed=2, dtype=F64)
    out, info = render(scene)
    for c in range(3):
        single = {**scene, "viewmats": scene["viewmats"][c : c + 1], "Ks": scene["Ks"][c : c + 1]}
        single["backgrounds"] = scene["backgrounds"][c : c + 1]
        o1, i1 = render(single)
        for name in OUTPUT_NAMES:
            torch.testing.assert_close(getattr(out, name)[c : c + 1], getattr(o1, name), rtol=0, atol=1e-12)
        assert torch.equal(info["radii"][c : c + 1], i1["radii"])
    per_cam = scene["colors"].unsqueeze(0).repeat(3, 1, 1)
    per_cam[1] = 1.0 - per_cam[1]
    out2, _ = render(scene, outputs=("rgb",), colors=per_cam)
    torch.testing.assert_close(out2.rgb[0], out.rgb[0])
    assert (out2.rgb[1] - out.rgb[1]).abs().max() > 0.05


def test_result_does_not_depend_on_chunking(random_scene, monkeypatch):
    scene = random_scene(120, 2, 30, 40, seed=4, dtype=F64)
    out, _ = render(scene, tile_size=8)
    monkeypatch.setattr(reference, "_CHUNK_PAIRS", 64)  # one tile per chunk
    out_small, _ = render(scene, tile_size=8)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(getattr(out_small, name), getattr(out, name), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------------ gradients


def _gradcheck_scene(sh_degree: int | None = None) -> dict:
    viewmats, Ks = camera(10.0, 4.0, 4.0)
    scene = gaussians(
        [[0.1, 0.05, 2.0], [-0.2, 0.1, 2.6], [0.15, -0.25, 3.1]],
        [[0.5, 0.4, 0.16], [0.6, 0.24, 0.7], [0.8, 0.6, 0.4]],
        [0.55, 0.7, 0.6],
        [[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]],
        quats=[[0.9, 0.3, -0.2, 0.1], [1.2, -0.1, 0.4, 0.3], [0.7, 0.2, 0.2, -0.5]],
    )
    if sh_degree is not None:
        gen = torch.Generator().manual_seed(0)
        scene["colors"] = torch.randn(3, (sh_degree + 1) ** 2, 3, generator=gen, dtype=F64) * 0.3
    scene.update(
        viewmats=viewmats, Ks=Ks, width=8, height=8, backgrounds=torch.tensor([[0.3, 0.2, 0.1]], dtype=F64)
    )
    return scene


def _assert_no_threshold_nearby(scene: dict) -> None:
    """gradcheck is only valid if no α, T or median decision sits within finite-difference reach of a switch."""
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 8, 8
    )  # fmt: skip
    assert proj.visible.all()
    jj, ii = torch.meshgrid(torch.arange(8, dtype=F64) + 0.5, torch.arange(8, dtype=F64) + 0.5, indexing="ij")
    order = torch.argsort(proj.depths[0])
    T = torch.ones(8, 8, dtype=F64)
    for n in order.tolist():
        dx, dy = proj.means2d[0, n, 0] - ii, proj.means2d[0, n, 1] - jj
        a, b, c = proj.conics[0, n]
        raw = scene["opacities"][n] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        assert ((raw - ALPHA_MIN).abs() > 1e-4).all() and ((raw - ALPHA_MAX).abs() > 1e-4).all()
        assert ((T - 0.5).abs() > 1e-4).all()
        T = T * (1 - torch.where(raw >= ALPHA_MIN, raw, torch.zeros_like(raw)))
        assert (T > 10 * T_EPS).all()


@pytest.mark.parametrize("sh_degree", [None, 2])
def test_gradcheck_all_outputs(sh_degree):
    scene = _gradcheck_scene(sh_degree)
    _assert_no_threshold_nearby(scene)
    names = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
    inputs = tuple(scene[k].clone().requires_grad_(True) for k in names)
    fixed = {k: v for k, v in scene.items() if k not in names}

    def f(*xs):
        out, _ = rasterize(
            **fixed, **dict(zip(names, xs)), sh_degree=sh_degree, outputs=OUTPUT_NAMES, backend="reference"
        )
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)

    values = f(*inputs)
    assert all(v.abs().sum() > 0 for v in values)  # every map is non-trivial here
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_means2d_grad_and_absgrad_equal_per_pixel_brute_force():
    scene = _gradcheck_scene()
    scene["means"] = scene["means"].clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(1)
    weights = torch.randn(1, 8, 8, 3, generator=gen, dtype=F64)

    out, info = render(scene, outputs=("rgb",), absgrad=True)
    (out.rgb * weights).sum().backward()
    grad, absgrad = info["means2d"].grad.clone(), info["means2d"].absgrad.clone()

    expected_abs = torch.zeros_like(absgrad)
    for j in range(8):
        for i in range(8):
            out_p, info_p = render(scene, outputs=("rgb",))
            (out_p.rgb[0, j, i] * weights[0, j, i]).sum().backward()
            expected_abs += info_p["means2d"].grad.abs()
    torch.testing.assert_close(absgrad, expected_abs, rtol=1e-10, atol=1e-14)
    assert (absgrad > grad.abs() + 1e-6).any()  # signs cancel in grad, not in absgrad
    assert grad.abs().sum() > 0


def test_strategy_keys_in_info(random_scene):
    scene = random_scene(40, 2, 20, 24, seed=0)
    scene["means"].requires_grad_(True)
    out, info = render(scene, outputs=("rgb",))
    assert info["means2d"].shape == (2, 40, 2) and info["radii"].shape == (2, 40, 2)
    assert info["radii"].dtype == torch.int32
    assert (info["width"], info["height"], info["n_cameras"], info["tile_size"]) == (24, 20, 2, 16)
    assert (info["tile_width"], info["tile_height"]) == (2, 2)
    assert "gaussian_ids" in info and info["gaussian_ids"] is None
    out.rgb.sum().backward()
    culled = info["radii"][..., 0] == 0
    assert culled.any() and (info["means2d"].grad[culled] == 0).all()
    assert info["means2d"].grad[~culled].abs().sum() > 0
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 24, 20
    )  # fmt: skip
    assert info["n_isects"] == int(bin_tiles(proj).tile_counts.sum()) > 0


# ------------------------------------------------------------------------------------------------------- SH


def test_eval_sh_matches_gsplat_torch_or_hand_values():
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(50, 3, generator=gen, dtype=F64) * 3.0
    coeffs = torch.randn(50, 16, 3, generator=gen, dtype=F64)
    try:
        from gsplat.cuda._torch_impl import _spherical_harmonics
    except Exception:
        _spherical_harmonics = None
    if _spherical_harmonics is not None:
        for deg in range(4):
            torch.testing.assert_close(eval_sh(deg, coeffs, dirs), _spherical_harmonics(deg, dirs, coeffs))
    # Hand values at dir = +z (unnormalised on purpose): Y = C0, C1 z, C2[2]·2, C3[3]·2 survive.
    one = torch.zeros(16, 3, dtype=F64)
    for k in range(16):
        one.zero_()
        one[k] = 1.0
        value = eval_sh(3, one, torch.tensor([0.0, 0.0, 5.0], dtype=F64))[0].item()
        hand = {0: SH_C0, 2: SH_C1, 6: 2 * SH_C2[2], 12: 2 * SH_C3[3]}.get(k, 0.0)
        assert value == pytest.approx(hand, abs=1e-15), k
    # and at dir = (1, 1, 0)/√2 for the xy terms: basis 4 = C2[0]·½, 8 = 0, 9 = C3[0]·(3·½ − ½)/√2
    d = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    vals = [
        eval_sh(3, torch.eye(16, dtype=F64)[:, k : k + 1].expand(16, 3), d)[0].item()
        for k in (1, 3, 4, 9, 15)
    ]
    r = 1 / math.sqrt(2)
    assert vals == pytest.approx(
        [-SH_C1 * r, -SH_C1 * r, SH_C2[0] * 0.5, SH_C3[0] * r * (1.5 - 0.5), SH_C3[6] * r * (0.5 - 1.5)],
        abs=1e-15,
    )


def test_eval_sh_gradcheck_wrt_dirs_and_coeffs():
    gen = torch.Generator().manual_seed(2)
    dirs = torch.randn(6, 3, generator=gen, dtype=F64).requires_grad_(True)
    coeffs = torch.randn(6, 16, 3, generator=gen, dtype=F64).requires_grad_(True)
    for deg in range(4):
        assert torch.autograd.gradcheck(lambda d, c, deg=deg: eval_sh(deg, c, d), (dirs, coeffs))
    g = torch.autograd.grad(eval_sh(3, coeffs, dirs).sum(), dirs)[0]
    # the direction is normalised inside, so the gradient has no radial component
    assert (g * dirs).sum(-1).abs().max() < 1e-12 and g.abs().max() > 1e-3


def test_colors_from_sh_offsets_and_clamps():
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=F64)
    viewmats = torch.eye(4, dtype=F64)[None]
    coeffs = torch.zeros(2, 4, 3, dtype=F64)
    coeffs[0, 0] = torch.tensor([0.3, -0.3, -5.0]) / SH_C0
    coeffs[1, 2, 0] = 1.0 / SH_C1  # basis 2 is C1·z and the direction is +z
    rgb = colors_from_sh(1, coeffs, means, viewmats)
    assert rgb.shape == (1, 2, 3)
    assert rgb[0, 0].tolist() == pytest.approx([0.8, 0.2, 0.0])
    assert rgb[0, 1].tolist() == pytest.approx([1.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="needs K >= 9"):
        colors_from_sh(2, coeffs, means, viewmats)


# ------------------------------------------------------------------------------------ culling, empty, normals


@pytest.mark.parametrize("where", ["behind", "beyond_far", "before_near"])
def test_culled_gaussian_has_zero_radius_and_changes_nothing(random_scene, where):
    scene = random_scene(30, 1, 20, 24, seed=7, dtype=F64)
    scene["far_plane"], scene["near_plane"] = 20.0, 0.5
    R, t = scene["viewmats"][0, :3, :3], scene["viewmats"][0, :3, 3]
    z = {"behind": -2.0, "beyond_far": 25.0, "before_near": 0.3}[where]
    extra = R.T @ (torch.tensor([0.05, -0.02, z], dtype=F64) - t)
    bigger = dict(scene)
    bigger["means"] = torch.cat([scene["means"], extra[None]])
    bigger["quats"] = torch.cat([scene["quats"], torch.tensor([[1.0, 0, 0, 0]], dtype=F64)])
    bigger["scales"] = torch.cat([scene["scales"], torch.full((1, 3), 1.0, dtype=F64)])
    bigger["opacities"] = torch.cat([scene["opacities"], torch.tensor([0.9], dtype=F64)])
    bigger["colors"] = torch.cat([scene["colors"], torch.tensor([[1.0, 0.0, 1.0]], dtype=F64)])
    out, _ = render(scene)
    out2, info2 = render(bigger)
    assert info2["radii"][0, -1].tolist() == [0, 0]
    for name in OUTPUT_NAMES:
        assert torch.equal(getattr(out, name), getattr(out2, name)), name
    # the same Gaussian in front of the camera does show up
    bigger["means"][-1] = R.T @ (torch.tensor([0.05, -0.02, 3.0], dtype=F64) - t)
    out3, info3 = render(bigger)
    assert info3["radii"][0, -1, 0] > 0 and (out3.rgb - out.rgb).abs().max() > 0.1


@pytest.mark.parametrize("n", [0, 25])
def test_empty_view_renders_background_and_zero_alpha(empty_view, n):
    scene = empty_view(n, 2, 18, 20, seed=1)
    out, info = render(scene)
    assert (info["radii"] == 0).all() and info["n_isects"] == 0
    assert torch.equal(out.rgb, scene["backgrounds"][:, None, None, :].expand(2, 18, 20, 3))
    for name in OUTPUT_NAMES[1:]:
        assert (getattr(out, name) == 0).all(), name
    assert out.rgb.shape == (2, 18, 20, 3) and out.normal.shape == (2, 18, 20, 3)


def _flat_gaussian_scene(quat, viewmat) -> dict:
    _, Ks = camera(20.0, 8.0, 8.0)
    scene = gaussians([[0.0, 0.0, 0.0]], [[0.3, 0.25, 1e-4]], [0.9], [[1.0, 1.0, 1.0]], quats=[quat])
    scene.update(viewmats=viewmat[None], Ks=Ks, width=16, height=16)
    return scene


@pytest.mark.parametrize("quat", [[1.0, 0, 0, 0], [0.0, 1.0, 0, 0]])  # disc normal along +z or -z
@pytest.mark.parametrize("side", [1.0, -1.0])  # camera at z = -3 looking +z, or at z = +3 looking -z
def test_flat_gaussian_normal_faces_the_camera(quat, side):
    viewmat = torch.eye(4, dtype=F64)
    if side < 0:
        viewmat[:3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=F64))  # 180° about y
    viewmat[2, 3] = 3.0
    out, _ = render(_flat_gaussian_scene(quat, viewmat), outputs=("alpha", "normal"))
    alpha = out.alpha[0, ..., 0]
    assert alpha.max() > 0.5
    expected = torch.stack([torch.zeros_like(alpha), torch.zeros_like(alpha), -alpha], dim=-1)
    torch.testing.assert_close(out.normal[0], expected, rtol=0, atol=1e-12)
