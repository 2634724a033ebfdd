"""2D Gaussian surfels in the pure-torch reference: closed forms, the ray-plane geometry, a literal per-pixel loop
that solves each ray-plane intersection independently, the binning radius, and gradients (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.render import OUTPUT_NAMES, rasterize, resolve_backend
from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, NDC_FAR, NDC_NEAR, T_EPS
from recon.render.surfels import project_surfels, surfel_kernel
from tests.render.conftest import frame_with_normal, quat_of_frame

F64 = torch.float64


def render(scene: dict, outputs=OUTPUT_NAMES, **overrides):
    return rasterize(**{**scene, **overrides}, outputs=outputs, backend="reference")


def camera(f: float, cx: float, cy: float):
    """Identity pose (camera at the origin looking down +z) and a pinhole K."""
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)
    return torch.eye(4, dtype=F64)[None], K[None]


def surfels(means, scales, opacities, colors, quats) -> dict:
    return dict(
        means=torch.as_tensor(means, dtype=F64),
        quats=torch.as_tensor(quats, dtype=F64),
        scales=torch.as_tensor(scales, dtype=F64),
        opacities=torch.as_tensor(opacities, dtype=F64),
        colors=torch.as_tensor(colors, dtype=F64),
        primitive="surfel2d",
    )


def pixel_grid(W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) [H,W] pixel centres."""
    jj, ii = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    return ii, jj


def ray_plane(mu, frame, s, K, px, py):
    """Independent geometry: where the ray of pixel (px, py) meets the plane μ + u·s_u·e_u + v·s_v·e_v
    (camera at the origin). Returns (camera z of the hit, u, v), arrays shaped like px."""
    mu, frame, K = np.asarray(mu, float), np.asarray(frame, float), np.asarray(K, float)
    d = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones_like(px)], -1)  # z = 1
    n = frame[:, 2]
    t = (n @ mu) / (d @ n)
    off = t[..., None] * d - mu
    return t, off @ frame[:, 0] / s[0], off @ frame[:, 1] / s[1]


def alpha_of(opacity: float, g: np.ndarray) -> np.ndarray:
    a = np.minimum(ALPHA_MAX, opacity * g)
    return np.where(a < ALPHA_MIN, 0.0, a)


# ----------------------------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("s", [0.2, 0.02])
def test_surfel_facing_the_camera_matches_closed_form(s):
    """A fronto-parallel disc at depth Z is a Gaussian of screen σ = f·s/Z; below σ = 1/√2 px the low-pass
    2|d|² takes over (both grow as |d|², so one term wins on the whole image)."""
    W, H, f, cx, cy = 24, 24, 30.0, 11.7, 12.2
    X, Y, Z, o = 0.08, -0.05, 2.5, 0.8
    color, bg = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.05])
    viewmats, Ks = camera(f, cx, cy)
    scene = surfels(
        [[X, Y, Z]], [[s, s, 0.7]], [o], [color.tolist()], [[1.7, 0.0, 0.0, 0.0]]
    )  # scale_2 unused
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H, backgrounds=torch.from_numpy(bg)[None])
    out, info = render(scene)

    sigma = f * s / Z
    mx, my = f * X / Z + cx, f * Y / Z + cy
    px, py = pixel_grid(W, H)
    r2 = (px - mx) ** 2 + (py - my) ** 2
    g = np.exp(-0.5 * r2 / sigma**2) if sigma > 1 / math.sqrt(2) else np.exp(-r2)
    alpha = alpha_of(o, g)
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(
        out.rgb[0].numpy(), alpha[..., None] * color + (1 - alpha[..., None]) * bg, atol=1e-12
    )
    np.testing.assert_allclose(out.depth_exp[0, ..., 0].numpy(), alpha * Z, atol=1e-12)
    np.testing.assert_allclose(out.depth_median[0, ..., 0].numpy(), np.where(alpha > 0, Z, 0.0), atol=1e-12)
    np.testing.assert_allclose(out.normal[0].numpy(), alpha[..., None] * [0.0, 0.0, -1.0], atol=1e-12)
    assert out.distort_l1.abs().max() < 1e-15 and out.distort_ndc2.abs().max() < 1e-15  # one layer
    assert (alpha == 0).any() and (alpha > 0).sum() >= 9  # core and cut-off tail both on the image
    # radius: the 3σ circle (3·f·s/Z) or the low-pass disc 3/√2, rounded up
    assert info["radii"][0, 0].tolist() == [math.ceil(max(3 * sigma, 3 / math.sqrt(2)))] * 2
    assert info["depths"][0, 0].item() == pytest.approx(Z)
    np.testing.assert_allclose(info["means2d"][0, 0].numpy(), [mx, my], atol=1e-12)


def test_edge_on_surfel_renders_only_the_low_pass_at_its_centre_depth():
    """The disc's plane holds the camera centre: the plane term never wins where α >= 1/255, so the image is
    the screen-space low-pass exp(−|d|²) at the centre depth."""
    W, H, f = 20, 20, 25.0
    viewmats, Ks = camera(f, 9.6, 10.3)
    mu = torch.tensor([0.1, -0.05, 2.0], dtype=F64)
    normal = torch.linalg.cross(mu, torch.tensor([0.3, 1.0, 0.2], dtype=F64))  # ⟂ the view ray
    quat = quat_of_frame(frame_with_normal(normal, mu))
    o = 0.9
    scene = surfels([mu.tolist()], [[0.3, 0.4, 0.01]], [o], [[1.0, 0.5, 0.0]], quat[None])
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H)
    out, info = render(scene)
    mx, my = f * 0.1 / 2.0 + 9.6, f * -0.05 / 2.0 + 10.3
    px, py = pixel_grid(W, H)
    alpha = alpha_of(o, np.exp(-((px - mx) ** 2 + (py - my) ** 2)))
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(out.depth_exp[0, ..., 0].numpy(), alpha * 2.0, atol=1e-12)
    np.testing.assert_allclose(out.depth_median[0, ..., 0].numpy(), np.where(alpha > 0, 2.0, 0.0), atol=1e-12)
    assert (alpha > 0).sum() >= 9 and info["radii"][0, 0, 0] > 0


def _tilted_frame(tilt_x: float, tilt_y: float) -> np.ndarray:
    """A disc frame turned away from fronto-parallel; its normal points towards the camera (n_z < 0)."""
    rot = Rotation.from_euler("xy", [tilt_x, tilt_y], degrees=True).as_matrix()
    return rot @ np.diag([1.0, -1.0, -1.0])  # proper rotation: normal = −(third column of rot)


@pytest.mark.parametrize("flipped", [False, True])
def test_tilted_surfel_depth_is_the_ray_plane_intersection(flipped):
    """Per-pixel depth and kernel of a large tilted disc against independent ray-plane geometry. Turning the
    disc over (normal away from the camera) changes nothing: the normal map still faces the camera."""
    W, H, f, cx, cy = 24, 20, 30.0, 12.3, 9.8
    viewmats, Ks = camera(f, cx, cy)
    mu, s, o = np.array([0.05, 0.02, 3.0]), np.array([1.5, 1.0]), 0.7
    frame = _tilted_frame(35.0, -20.0)
    if flipped:  # same disc, axes (e_u, −e_v, −n)
        frame = frame @ np.diag([1.0, -1.0, -1.0])
    quat = quat_of_frame(torch.from_numpy(frame))
    scene = surfels([mu.tolist()], [[s[0], s[1], 5.0]], [o], [[0.3, 0.3, 0.3]], quat[None])
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H)
    out, _ = render(scene)

    px, py = pixel_grid(W, H)
    t, u, v = ray_plane(mu, frame, s, Ks[0].numpy(), px, py)
    alpha = alpha_of(o, np.exp(-0.5 * (u * u + v * v)))
    assert (alpha > 0).all() and t.max() - t.min() > 0.5  # every pixel sees the disc, at varied depths
    got = out.depth_exp[0, ..., 0].numpy() / out.alpha[0, ..., 0].numpy()
    np.testing.assert_allclose(got, t, rtol=1e-4)
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, rtol=1e-4)
    np.testing.assert_allclose(out.depth_median[0, ..., 0].numpy(), t, rtol=1e-4)
    facing = _tilted_frame(35.0, -20.0)[:, 2]
    np.testing.assert_allclose(out.normal[0].numpy(), alpha[..., None] * facing, atol=1e-10)


def test_two_tilted_surfels_on_one_ray_use_their_per_pixel_depths():
    """Median and both distortion forms read each disc's own depth at the pixel, not its centre depth."""
    W = H = 16
    viewmats, Ks = camera(20.0, 8.5, 8.5)
    frame = _tilted_frame(40.0, 0.0)
    quat = quat_of_frame(torch.from_numpy(frame))
    # centres off the ray of pixel (8, 8) (the optical axis): that ray meets each plane away from its centre
    mus = [[0.0, 0.2, 1.5], [0.0, -0.3, 3.0]]
    s, ops = np.array([0.6, 0.6]), [0.8, 0.5]
    scene = surfels(
        mus, [[0.6, 0.6, 0.1]] * 2, ops, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], quat[None].repeat(2, 1)
    )
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H)
    out, _ = render(scene)
    hits = [ray_plane(m, frame, s, Ks[0].numpy(), np.array(8.5), np.array(8.5)) for m in mus]
    (z1, u1, v1), (z2, u2, v2) = hits
    a1, a2 = ops[0] * math.exp(-0.5 * (u1**2 + v1**2)), ops[1] * math.exp(-0.5 * (u2**2 + v2**2))
    w1, w2 = a1, a2 * (1 - a1)
    assert (
        abs(z1 - 1.5) > 0.1 and abs(z2 - 3.0) > 0.1 and min(a1, a2) > 0.1
    )  # depths differ from the centres'

    def ndc(z):
        return NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / z)

    px = (0, 8, 8)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, rel=1e-10)
    assert abs(a1 - 0.5) > 0.05
    assert out.depth_median[px].item() == pytest.approx(z2 if a1 < 0.5 else z1, rel=1e-10)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * abs(z2 - z1), rel=1e-10)
    assert out.distort_ndc2[px].item() == pytest.approx(w1 * w2 * (ndc(z2) - ndc(z1)) ** 2, rel=1e-10)
    assert out.rgb[px].tolist() == pytest.approx([w1, 0.0, w2], rel=1e-10)


# ------------------------------------------------------------------------------------- brute-force oracle


def _sequential_surfels(scene: dict, tile_size: int) -> dict:
    """The compositing of the semantics as a literal per-pixel loop (numpy), each ray-plane intersection by a
    3×3 linear solve; it reuses only the projection's culling, tile ranges, centres and depths."""
    proj = project_surfels(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], scene["width"],
        scene["height"], tile_size=tile_size,
    )  # fmt: skip
    C, N = proj.depths.shape
    H, W = scene["height"], scene["width"]
    m2d, z = proj.means2d.numpy(), proj.depths.numpy()
    tmin, tmax, vis = proj.tile_min.numpy(), proj.tile_max.numpy(), proj.visible.numpy()
    q = scene["quats"].numpy()
    rq = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy normalises
    sc, op, col = scene["scales"].numpy(), scene["opacities"].numpy(), scene["colors"].numpy()
    bg = scene["backgrounds"].numpy()
    names = [("rgb", 3), ("alpha", 1), ("depth_exp", 1), ("depth_median", 1), ("normal", 3)]
    out = {k: np.zeros((C, H, W, d)) for k, d in names + [("distort_l1", 1), ("distort_ndc2", 1)]}
    for c in range(C):
        R, t = scene["viewmats"][c, :3, :3].numpy(), scene["viewmats"][c, :3, 3].numpy()
        K = scene["Ks"][c].numpy()
        p = scene["means"].numpy() @ R.T + t
        a_u = (R @ rq[:, :, 0].T).T * sc[:, :1]
        a_v = (R @ rq[:, :, 1].T).T * sc[:, 1:2]
        nrm = (R @ rq[:, :, 2].T).T
        away = (nrm * p).sum(-1, keepdims=True) > 1e-6 * np.linalg.norm(p, axis=-1, keepdims=True)
        nrm = np.where(away, -nrm, nrm)
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
                pxc, pyc = i + 0.5, j + 0.5
                d = np.array([(pxc - K[0, 2]) / K[0, 0], (pyc - K[1, 2]) / K[1, 1], 1.0])
                T, ws, zs = 1.0, [], []
                for n in ids:
                    try:  # p + u a_u + v a_v = λ d
                        u, v, lam = np.linalg.solve(np.stack([a_u[n], a_v[n], -d], 1), -p[n])
                        rho3 = u * u + v * v
                    except np.linalg.LinAlgError:
                        rho3 = math.inf
                    rho2 = 2 * ((pxc - m2d[c, n, 0]) ** 2 + (pyc - m2d[c, n, 1]) ** 2)
                    plane = rho3 <= rho2
                    a = min(ALPHA_MAX, op[n] * math.exp(-0.5 * min(rho3, rho2)))
                    if a < ALPHA_MIN:
                        continue
                    if T * (1 - a) <= T_EPS:
                        break
                    zp = lam if plane else z[c, n]  # λ·d.z with d.z = 1
                    w = a * T
                    if T > 0.5:
                        out["depth_median"][c, j, i, 0] = zp
                    out["rgb"][c, j, i] += w * col[n]
                    out["depth_exp"][c, j, i, 0] += w * zp
                    out["normal"][c, j, i] += w * nrm[n]
                    ws.append(w)
                    zs.append(zp)
                    T *= 1 - a
                out["alpha"][c, j, i, 0] = 1 - T
                out["rgb"][c, j, i] += T * bg[c]
                # signed: the per-pixel depths need not follow the compositing order (centre depths)
                out["distort_l1"][c, j, i, 0] = 2 * sum(
                    ws[a] * ws[b] * (zs[a] - zs[b]) for a in range(len(ws)) for b in range(a)
                )
                m = [
                    NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / zz) if zz >= NDC_NEAR else None
                    for zz in zs
                ]
                out["distort_ndc2"][c, j, i, 0] = sum(
                    ws[a] * ws[b] * (m[a] - m[b]) ** 2
                    for a in range(len(ws))
                    for b in range(a)
                    if m[a] is not None and m[b] is not None
                )
    return out


def test_vectorised_surfels_equal_sequential_loop(surfel_scene):
    scene = surfel_scene(140, 2, 18, 22, seed=3, dtype=F64)
    expected = _sequential_surfels(scene, tile_size=8)
    out, info = render(scene, tile_size=8)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(
            getattr(out, name).numpy(), expected[name], atol=1e-9, rtol=1e-9, err_msg=name
        )
    assert (expected["alpha"] > 0.5).mean() > 0.2 and expected["distort_l1"].max() > 0.01
    assert (expected["distort_l1"] < 0).any()  # some pixel's per-pixel depths run against the centre order
    assert (info["radii"] == 0).any()


def test_ndc_distortion_skips_per_pixel_depths_nearer_than_ndc_near():
    """A disc tilted through z = NDC_NEAR: the pixels where its hit is nearer drop it from distort_ndc2 only."""
    W = H = 16
    viewmats, Ks = camera(12.0, 8.0, 8.0)
    frame = _tilted_frame(60.0, 0.0)
    quat = quat_of_frame(torch.from_numpy(frame))[None]
    scene = surfels(
        [[0.0, 0.0, NDC_NEAR], [0.0, 0.0, 1.0]], [[0.06, 0.06, 0.1], [1.0, 1.0, 1.0]], [0.5, 0.6],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], torch.cat([quat, torch.tensor([[1.0, 0, 0, 0]], dtype=F64)]),
    )  # fmt: skip
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H)
    out, _ = render(scene)
    px, py = pixel_grid(W, H)
    t, u, v = ray_plane([0.0, 0.0, NDC_NEAR], frame, np.array([0.06, 0.06]), Ks[0].numpy(), px, py)
    near = (t < NDC_NEAR) & (u * u + v * v < 1)  # the front disc is composited at a depth below NDC_NEAR
    far = (t > NDC_NEAR) & (u * u + v * v < 1)
    assert near.sum() >= 5 and far.sum() >= 5
    ndc = out.distort_ndc2[0, ..., 0].numpy()
    l1 = out.distort_l1[0, ..., 0].numpy()
    assert (ndc[near] == 0).all() and (l1[near] > 0).all()
    assert (ndc[far] > 0).all()


# ------------------------------------------------------------------------------------------ footprint


def test_radius_covers_the_kernel(surfel_scene):
    """Every pixel where ρ = min(ρ3d, ρ2d) <= 9 lies in the square box of half-size r around the centre."""
    scene = surfel_scene(160, 3, 40, 56, seed=8, dtype=F64)
    W, H = scene["width"], scene["height"]
    proj = project_surfels(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], W, H
    )
    px, py = (torch.from_numpy(a) for a in pixel_grid(W, H))
    reach = []
    for c in range(3):
        for n in torch.nonzero(proj.visible[c]).squeeze(1).tolist():
            g, _, valid = surfel_kernel(proj.means2d[c, n], proj.payload[c, n], proj.depths[c, n], px, py)
            rho = -2.0 * torch.log(g)
            inside = valid & (rho <= 9.0)
            if not inside.any():
                continue
            mx, my = proj.means2d[c, n].tolist()
            r = int(proj.radii[c, n])
            ext = torch.maximum((px - mx).abs(), (py - my).abs())[inside]
            assert ext.max() <= r, (c, n, ext.max().item(), r)
            reach.append(ext.max().item() / r)
    assert len(reach) > 100 and max(reach) > 0.85  # some footprint reaches close to its box edge


def test_disc_crossing_the_camera_plane_is_culled():
    """3σ disc with a point at or behind z = 0 (C*₃₃ >= 0): culled, whatever its centre's depth."""
    viewmats, Ks = camera(20.0, 8.0, 8.0)
    frame = _tilted_frame(70.0, 0.0)  # |a_v.z| = s·sin 70°
    quat = quat_of_frame(torch.from_numpy(frame))[None].repeat(2, 1)
    z = 1.0
    s_cross, s_keep = 1.02 * z / (3 * math.sin(math.radians(70))), 0.98 * z / (3 * math.sin(math.radians(70)))
    scene = surfels(
        [[0.0, 0.0, z]] * 2, [[0.1, s_cross, 1.0], [0.1, s_keep, 1.0]], [0.8, 0.8], [[1.0, 1.0, 1.0]] * 2, quat
    )  # fmt: skip
    scene.update(viewmats=viewmats, Ks=Ks, width=16, height=16)
    _, info = render(scene, outputs=("alpha",))
    assert info["radii"][0, 0].tolist() == [0, 0]
    assert info["radii"][0, 1, 0] > 100  # nearly crossing: bounded, but huge


# ------------------------------------------------------------------------------------------------ gradients


def _gradcheck_scene(C: int = 1, sh_degree: int | None = None) -> dict:
    viewmats, Ks = camera(10.0, 4.0, 4.0)
    viewmats, Ks = viewmats.repeat(C, 1, 1), Ks.repeat(C, 1, 1)
    if C > 1:
        viewmats[1, 0, 3], viewmats[1, 1, 3] = 0.06, -0.05
    scene = surfels(
        [[0.1, 0.05, 2.0], [-0.2, 0.1, 2.6], [0.15, -0.25, 3.1]],
        [[0.5, 0.35, 0.05], [0.6, 0.45, 0.7], [0.8, 0.6, 0.2]],
        [0.55, 0.7, 0.6],
        [[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9]],
        [[0.9, 0.3, -0.2, 0.1], [1.2, -0.1, 0.4, 0.3], [0.7, 0.2, 0.2, -0.5]],
    )
    if sh_degree is not None:
        gen = torch.Generator().manual_seed(0)
        scene["colors"] = torch.randn(3, (sh_degree + 1) ** 2, 3, generator=gen, dtype=F64) * 0.3
    scene.update(
        viewmats=viewmats, Ks=Ks, width=8, height=8, sh_degree=sh_degree,
        backgrounds=torch.tensor([[0.3, 0.2, 0.1]] * C, dtype=F64),
    )  # fmt: skip
    return scene


def _rho_terms(m2d, payload, z, px, py):
    """(ρ3d, ρ2d) as the semantics define them, for the switch check below."""
    kux, kuy, kuz, kvx, kvy, kvz = payload.tolist()
    hu = torch.stack([px * kuz - kux, px * kvz - kvx, (px - m2d[0]) * z], -1)
    hv = torch.stack([py * kuz - kuy, py * kvz - kvy, (py - m2d[1]) * z], -1)
    s = torch.linalg.cross(hu, hv, dim=-1)
    return (s[..., 0] ** 2 + s[..., 1] ** 2) / s[..., 2] ** 2, 2 * ((px - m2d[0]) ** 2 + (py - m2d[1]) ** 2)


def _assert_no_switch_within_reach(scene: dict) -> None:
    """Finite differences only hold away from the α, T, median, min-branch and NDC-near switches."""
    proj = project_surfels(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 8, 8
    )
    assert proj.visible.all()
    px, py = (torch.from_numpy(a) for a in pixel_grid(8, 8))
    for c in range(proj.depths.shape[0]):
        T = torch.ones(8, 8, dtype=F64)
        for n in torch.argsort(proj.depths[c]).tolist():
            m2d, pay, z = proj.means2d[c, n], proj.payload[c, n], proj.depths[c, n]
            rho3, rho2 = _rho_terms(m2d, pay, z, px, py)
            assert ((rho3 - rho2).abs() > 1e-4).all()
            g, zp, _ = surfel_kernel(m2d, pay, z, px, py)
            raw = scene["opacities"][n] * g
            assert ((raw - ALPHA_MIN).abs() > 1e-4).all() and ((raw - ALPHA_MAX).abs() > 1e-4).all()
            assert ((zp - NDC_NEAR).abs() > 1e-4).all() and ((T - 0.5).abs() > 1e-4).all()
            T = T * (1 - torch.where(raw >= ALPHA_MIN, raw, torch.zeros_like(raw)))
            assert (T > 10 * T_EPS).all()


@pytest.mark.parametrize(("C", "sh_degree"), [(1, None), (2, 2)])
def test_gradcheck_every_map(C, sh_degree):
    scene = _gradcheck_scene(C, sh_degree)
    _assert_no_switch_within_reach(scene)
    names = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
    inputs = tuple(scene[k].clone().requires_grad_(True) for k in names)
    fixed = {k: v for k, v in scene.items() if k not in names}

    def f(*xs):
        out, _ = rasterize(**fixed, **dict(zip(names, xs)), outputs=OUTPUT_NAMES, backend="reference")
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)

    values = f(*inputs)
    assert all(v.abs().sum() > 0 for v in values)  # every map is non-trivial here
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    # the ignored third scale gets exactly no gradient, the in-plane ones do
    sum(v.sum() for v in f(*inputs)).backward()
    assert (inputs[2].grad[:, 2] == 0).all() and (inputs[2].grad[:, :2] != 0).all()


def test_means2d_grad_is_the_screen_space_gradient():
    """For discs parallel to the image (payload free of cx, cy), shifting the principal point by (du, dv)
    translates each surfel's image by exactly (du, dv): Σ info["means2d"].grad is d loss / d(cx, cy)."""
    scene = _gradcheck_scene()
    h = torch.tensor([0.3, -0.7, 1.1], dtype=F64)  # rotations about the optical axis only
    scene["quats"] = torch.stack([torch.cos(h), 0 * h, 0 * h, torch.sin(h)], -1)
    _assert_no_switch_within_reach(scene)
    weights = torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def loss(Ks):
        out, _ = render({**scene, "Ks": Ks}, outputs=("rgb", "depth_exp"))
        return (out.rgb * weights).sum() + out.depth_exp.sum()

    means = scene["means"].clone().requires_grad_(True)
    out, info = render({**scene, "means": means}, outputs=("rgb", "depth_exp"), absgrad=True)
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


# ---------------------------------------------------------------------------------------------------- API


def test_primitive_and_backend_choices():
    scene = _gradcheck_scene()
    with pytest.raises(ValueError, match="gaussian3d.*surfel2d"):
        render(scene, primitive="convex")
    with pytest.raises(ValueError, match="cpu.*reference"):
        rasterize(**scene, backend="gsplat")
    assert resolve_backend("auto", torch.device("cuda"), "surfel2d") == "cpu"  # even where gsplat would run
    assert resolve_backend("reference", torch.device("cpu"), "surfel2d") == "reference"
    out_s, info = render(scene, outputs=("alpha",))
    out_g, _ = render(scene, outputs=("alpha",), primitive="gaussian3d")
    assert info["radii"].shape == (1, 3, 2) and info["radii"].dtype == torch.int32
    assert (out_s.alpha - out_g.alpha).abs().max() > 0.05  # the argument reaches the rasterizer


# ---------------------------------------------------------------------------------- regularizer known answer


@pytest.mark.parametrize("depth_ratio", [0.0, 1.0])
def test_normal_consistency_of_coplanar_and_tilted_surfels(depth_ratio):
    """METHODS.md §3.2e: coplanar discs facing the camera are consistent up to the 1 − α² floor of a pixel
    that is not fully covered; tilting every disc by 30° (centres unchanged) costs at least 10× more."""
    from recon.regularizers.base import RegContext
    from recon.regularizers.normal_consistency import NormalConsistency, NormalConsistencyConfig
    from tests.regularizers.helpers import camera as reg_camera
    from tests.regularizers.helpers import plane_grid

    size = 24
    vm, K = reg_camera(size)
    reg = NormalConsistency(NormalConsistencyConfig(weight=1.0, depth_ratio=depth_ratio))

    def loss(tilt_deg: float) -> tuple[float, float]:
        means, quats, scales, opacities = plane_grid(
            z=3.0, half=3.0, spacing=0.15, opacity=0.9, tilt_deg=tilt_deg
        )
        scene = surfels(means, scales, opacities, torch.zeros(len(means), 3), quats)
        scene.update(viewmats=vm, Ks=K, width=size, height=size)
        out, info = render(scene, outputs=reg.needs)
        ctx = RegContext(out, info, None, 0, vm, K, size, size, backend="reference", primitive="surfel2d")
        alpha = out.alpha[0, 1:-1, 1:-1, 0]
        return float(reg.loss(ctx)["normal"]), float((1 - alpha**2).mean())

    flat, floor = loss(0.0)
    assert abs(flat - floor) < 1e-9 and flat < 1e-3
    tilted, _ = loss(30.0)
    assert tilted > 10 * flat and tilted > 0.1
