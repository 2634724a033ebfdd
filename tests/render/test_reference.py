"""The pure-torch reference rasterizer, for every primitive type in ``recon.render.PRIMITIVES``, against
hand-computed values, brute force and finite differences (float64).

Tests that hold for every primitive take ``primitive`` (conftest.py) and run once per type: a small primitive
facing the camera on a pixel's ray has α = opacity there, whatever its kernel, so the hand values on one ray, the
stop and skip rules, culling, empty views and the facing normal are shared, and so are the brute-force oracles.
Each type also keeps its own closed forms: 3D Gaussians (semantics in ``reference.py``) their EWA splat; 2D
Gaussian surfels (``surfels.py``) the ray-plane geometry, edge-on and tilted discs, the binning radius and the
camera-plane cull. The finite-difference checks of every map are in ``test_gradcheck.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import recon.render.reference as reference
from recon.render import OUTPUT_NAMES, PRIMITIVES, RasterSettings, rasterize, resolve_backend
from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, NDC_FAR, NDC_NEAR, T_EPS
from recon.render.primitives import get_primitive
from recon.render.projection import bin_tiles, project_gaussians
from recon.render.reference import pixel_contributions
from recon.render.settings import Splats
from recon.render.sh import SH_C0, SH_C1, SH_C2, SH_C3, colors_from_sh, eval_sh
from recon.render.surfels import project_surfels, surfel_kernel
from tests.render.conftest import (
    PER_PIXEL_DEPTH,
    frame_with_normal,
    make_gradcheck_scene,
    make_surfel_scene,
    quat_of_frame,
)

F64 = torch.float64
# The pure-torch projection of each primitive type: (means, quats, scales, viewmats, Ks, W, H, **settings).


def _project(scene: dict, settings: RasterSettings, with_normals: bool = False):
    """The scene's primitive projected by its descriptor's pure-torch projection."""
    keys = ("means", "quats", "scales", "viewmats", "Ks")
    return get_primitive(scene["primitive"]).project_reference(
        *(scene[k] for k in keys), settings, with_normals
    )


def render(scene: dict, outputs=OUTPUT_NAMES, **overrides):
    return rasterize(**{**scene, **overrides}, outputs=outputs, backend="reference")


def camera(f: float, cx: float, cy: float):
    """Identity pose (camera at the origin looking down +z) and a pinhole K."""
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)
    return torch.eye(4, dtype=F64)[None], K[None]


def primitives(primitive: str, means, scales, opacities, colors, quats=None) -> dict:
    """float64 parameters of ``primitive``s; quats default to the identity (a surfel then faces the camera)."""
    means = torch.as_tensor(means, dtype=F64)
    quats = [[1.0, 0.0, 0.0, 0.0]] * len(means) if quats is None else quats
    return dict(
        means=means,
        quats=torch.as_tensor(quats, dtype=F64),
        scales=torch.as_tensor(scales, dtype=F64),
        opacities=torch.as_tensor(opacities, dtype=F64),
        colors=torch.as_tensor(colors, dtype=F64),
        primitive=primitive,
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


def _tilted_frame(tilt_x: float, tilt_y: float) -> np.ndarray:
    """A disc frame turned away from fronto-parallel; its normal points towards the camera (n_z < 0)."""
    rot = Rotation.from_euler("xy", [tilt_x, tilt_y], degrees=True).as_matrix()
    return rot @ np.diag([1.0, -1.0, -1.0])  # proper rotation: normal = −(third column of rot)


def _ndc(z: float) -> float:
    return NDC_FAR / (NDC_FAR - NDC_NEAR) * (1.0 - NDC_NEAR / z)


# -------------------------------------------------------------------------------------- closed forms, every type


def _on_axis_pair(primitive: str, o_near: float, o_far: float, z_near: float, z_far: float) -> dict:
    """Two small primitives on the ray through the centre of pixel (8, 8); the far one is listed first."""
    viewmats, Ks = camera(20.0, 8.5, 8.5)
    scene = primitives(
        primitive,
        [[0.0, 0.0, z_far], [0.0, 0.0, z_near]],
        [[0.05, 0.05, 0.01]]
        * 2,  # shortest axis (a surfel's normal) along z: normal (0, 0, -1) to the camera
        [o_far, o_near],
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]],
    )
    scene.update(viewmats=viewmats, Ks=Ks, width=16, height=16)
    return scene


@pytest.mark.parametrize("o_near, median_is_near", [(0.3, False), (0.6, True)])
def test_two_primitives_on_one_ray_hand_values(primitive, o_near, median_is_near):
    z1, z2, o2 = 1.5, 3.0, 0.5
    out, _ = render(_on_axis_pair(primitive, o_near, o2, z1, z2))
    w1, w2 = o_near, o2 * (1 - o_near)  # the kernel is 1 at the centre, so α = opacity
    px = (0, 8, 8)
    assert out.alpha[px].item() == pytest.approx(w1 + w2, abs=1e-12)
    assert out.rgb[px].tolist() == pytest.approx([w1, 0.0, w2], abs=1e-12)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, abs=1e-12)
    assert out.depth_median[px].item() == pytest.approx(z1 if median_is_near else z2, abs=1e-12)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * (z2 - z1), abs=1e-12)
    assert out.distort_ndc2[px].item() == pytest.approx(w1 * w2 * (_ndc(z2) - _ndc(z1)) ** 2, abs=1e-12)
    assert out.normal[px].tolist() == pytest.approx([0.0, 0.0, -(w1 + w2)], abs=1e-12)


def test_ndc_distortion_leaves_out_primitives_nearer_than_ndc_near(primitive):
    z1, z2 = 0.5 * NDC_NEAR, 3.0
    out, _ = render(_on_axis_pair(primitive, 0.3, 0.5, z1, z2))
    w1, w2 = 0.3, 0.35
    px = (0, 8, 8)
    assert out.distort_ndc2[px].item() == pytest.approx(0.0, abs=1e-15)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * (z2 - z1), abs=1e-12)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, abs=1e-12)


def test_stop_is_exclusive_and_low_alpha_is_skipped(primitive):
    """α = 0.9, 0.99 composite; then next T = 0.001·0.05 <= T_EPS stops the pixel before the third one."""
    viewmats, Ks = camera(20.0, 8.5, 8.5)
    cols = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]
    scene = primitives(
        primitive,
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


# --------------------------------------------------------------------------------------- closed forms, 3D Gaussians


def test_single_isotropic_gaussian_matches_closed_form():
    W, H, f, cx, cy = 16, 16, 20.0, 8.3, 7.9
    viewmats, Ks = camera(f, cx, cy)
    X, Y, Z, s, o = 0.1, -0.05, 2.0, 0.15, 0.8
    color, bg = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.05])
    scene = primitives("gaussian3d", [[X, Y, Z]], [[s, s, s]], [o], [color.tolist()], [[2.0, 0, 0, 0]])
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


# ----------------------------------------------------------------------------------------- closed forms, 2D surfels


@pytest.mark.parametrize("s", [0.2, 0.02])
def test_surfel_facing_the_camera_matches_closed_form(s):
    """A fronto-parallel disc at depth Z is a Gaussian of screen σ = f·s/Z; below σ = 1/√2 px the low-pass
    2|d|² takes over (both grow as |d|², so one term wins on the whole image)."""
    W, H, f, cx, cy = 24, 24, 30.0, 11.7, 12.2
    X, Y, Z, o = 0.08, -0.05, 2.5, 0.8
    color, bg = np.array([0.2, 0.5, 0.9]), np.array([0.1, 0.3, 0.05])
    viewmats, Ks = camera(f, cx, cy)
    scene = primitives(
        "surfel2d", [[X, Y, Z]], [[s, s, 0.7]], [o], [color.tolist()], [[1.7, 0.0, 0.0, 0.0]]
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
    scene = primitives("surfel2d", [mu.tolist()], [[0.3, 0.4, 0.01]], [o], [[1.0, 0.5, 0.0]], quat[None])
    scene.update(viewmats=viewmats, Ks=Ks, width=W, height=H)
    out, info = render(scene)
    mx, my = f * 0.1 / 2.0 + 9.6, f * -0.05 / 2.0 + 10.3
    px, py = pixel_grid(W, H)
    alpha = alpha_of(o, np.exp(-((px - mx) ** 2 + (py - my) ** 2)))
    np.testing.assert_allclose(out.alpha[0, ..., 0].numpy(), alpha, atol=1e-12)
    np.testing.assert_allclose(out.depth_exp[0, ..., 0].numpy(), alpha * 2.0, atol=1e-12)
    np.testing.assert_allclose(out.depth_median[0, ..., 0].numpy(), np.where(alpha > 0, 2.0, 0.0), atol=1e-12)
    assert (alpha > 0).sum() >= 9 and info["radii"][0, 0, 0] > 0


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
    scene = primitives("surfel2d", [mu.tolist()], [[s[0], s[1], 5.0]], [o], [[0.3, 0.3, 0.3]], quat[None])
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
    scene = primitives(
        "surfel2d",
        mus,
        [[0.6, 0.6, 0.1]] * 2,
        ops,
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        quat[None].repeat(2, 1),
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

    px = (0, 8, 8)
    assert out.depth_exp[px].item() == pytest.approx(w1 * z1 + w2 * z2, rel=1e-10)
    assert abs(a1 - 0.5) > 0.05
    assert out.depth_median[px].item() == pytest.approx(z2 if a1 < 0.5 else z1, rel=1e-10)
    assert out.distort_l1[px].item() == pytest.approx(2 * w1 * w2 * abs(z2 - z1), rel=1e-10)
    assert out.distort_ndc2[px].item() == pytest.approx(w1 * w2 * (_ndc(z2) - _ndc(z1)) ** 2, rel=1e-10)
    assert out.rgb[px].tolist() == pytest.approx([w1, 0.0, w2], rel=1e-10)


# ---------------------------------------------------------------------------------------------- brute-force oracles


def _gaussian_hits(scene: dict, proj, c: int):
    """For camera c: (n, px, py) -> (σ, depth, camera-space normal) of Gaussian n at that pixel centre, or None
    where it is skipped (σ < 0). The normals come from the projection; the depth is the centre's."""
    con, z, nrm = proj.conics.detach().numpy(), proj.depths.detach().numpy(), proj.normals.detach().numpy()
    m2d = proj.means2d.detach().numpy()

    def hit(n, px, py):
        dx, dy = m2d[c, n, 0] - px, m2d[c, n, 1] - py
        s = 0.5 * (con[c, n, 0] * dx * dx + con[c, n, 2] * dy * dy) + con[c, n, 1] * dx * dy
        return None if s < 0 else (s, z[c, n], nrm[c, n])

    return hit


def _surfel_hits(scene: dict, proj, c: int):
    """For camera c: (n, px, py) -> (σ, depth, normal) of surfel n at that pixel centre, each ray-plane
    intersection by a 3×3 linear solve; σ = ½·min(ρ3d, ρ2d) and the depth is the hit's when ρ3d wins."""
    m2d, z = proj.means2d.detach().numpy(), proj.depths.detach().numpy()
    rq = Rotation.from_quat(scene["quats"].numpy()[:, [1, 2, 3, 0]]).as_matrix()  # scipy normalises
    sc = scene["scales"].numpy()
    R, t = scene["viewmats"][c, :3, :3].numpy(), scene["viewmats"][c, :3, 3].numpy()
    K = scene["Ks"][c].numpy()
    p = scene["means"].numpy() @ R.T + t
    a_u = (R @ rq[:, :, 0].T).T * sc[:, :1]
    a_v = (R @ rq[:, :, 1].T).T * sc[:, 1:2]
    nrm = (R @ rq[:, :, 2].T).T
    away = (nrm * p).sum(-1, keepdims=True) > 1e-6 * np.linalg.norm(p, axis=-1, keepdims=True)
    nrm = np.where(away, -nrm, nrm)

    def hit(n, px, py):
        d = np.array([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], 1.0])
        try:  # p + u a_u + v a_v = λ d
            u, v, lam = np.linalg.solve(np.stack([a_u[n], a_v[n], -d], 1), -p[n])
            rho3 = u * u + v * v
        except np.linalg.LinAlgError:
            rho3 = lam = math.inf
        rho2 = 2 * ((px - m2d[c, n, 0]) ** 2 + (py - m2d[c, n, 1]) ** 2)
        return 0.5 * min(rho3, rho2), lam if rho3 <= rho2 else z[c, n], nrm[n]  # λ·d.z with d.z = 1

    return hit


HITS = {"gaussian3d": _gaussian_hits, "surfel2d": _surfel_hits}


def _sequential_render(scene: dict, tile_size: int) -> dict:
    """The compositing of the semantics as a literal per-pixel loop (numpy), every map; it reuses only the
    projection's culling, tile ranges, centres and depths (and, for Gaussians, conics and normals)."""
    primitive = scene["primitive"]
    settings = RasterSettings(scene["width"], scene["height"], tile_size=tile_size)
    proj = _project(scene, settings, with_normals=True)
    C, N = proj.depths.shape
    H, W = scene["height"], scene["width"]
    z = proj.depths.detach().numpy()
    tmin, tmax, vis = proj.tile_min.numpy(), proj.tile_max.numpy(), proj.visible.numpy()
    op, col = scene["opacities"].numpy(), scene["colors"].numpy()
    bg = scene["backgrounds"].numpy()
    names = [("rgb", 3), ("alpha", 1), ("depth_exp", 1), ("depth_median", 1), ("normal", 3)]
    out = {k: np.zeros((C, H, W, d)) for k, d in names + [("distort_l1", 1), ("distort_ndc2", 1)]}
    for c in range(C):
        hit = HITS[primitive](scene, proj, c)
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
                    found = hit(n, i + 0.5, j + 0.5)
                    if found is None:
                        continue
                    sigma, zp, normal = found
                    a = min(ALPHA_MAX, op[n] * math.exp(-sigma))
                    if a < ALPHA_MIN:
                        continue
                    if T * (1 - a) <= T_EPS:
                        break
                    w = a * T
                    if T > 0.5:
                        out["depth_median"][c, j, i, 0] = zp
                    out["rgb"][c, j, i] += w * col[n]
                    out["depth_exp"][c, j, i, 0] += w * zp
                    out["normal"][c, j, i] += w * normal
                    ws.append(w)
                    zs.append(zp)
                    T *= 1 - a
                out["alpha"][c, j, i, 0] = 1 - T
                out["rgb"][c, j, i] += T * bg[c]
                # signed: a surfel's per-pixel depths need not follow the compositing order (centre depths)
                out["distort_l1"][c, j, i, 0] = 2 * sum(
                    ws[a] * ws[b] * (zs[a] - zs[b]) for a in range(len(ws)) for b in range(a)
                )
                m = [_ndc(zz) if zz >= NDC_NEAR else None for zz in zs]
                out["distort_ndc2"][c, j, i, 0] = sum(
                    ws[a] * ws[b] * (m[a] - m[b]) ** 2
                    for a in range(len(ws))
                    for b in range(a)
                    if m[a] is not None and m[b] is not None
                )
    return out


def test_vectorised_compositing_equals_sequential_loop(primitive_scene, primitive):
    scene = primitive_scene(140, 2, 18, 22, seed=3, dtype=F64)
    expected = _sequential_render(scene, tile_size=8)
    out, info = render(scene, tile_size=8)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(
            getattr(out, name).numpy(), expected[name], atol=1e-10, rtol=1e-9, err_msg=name
        )
    # the scene is not trivially empty, it has culled primitives and pixels where several overlap
    assert (expected["alpha"] > 0.5).mean() > 0.2 and expected["distort_l1"].max() > 0.01
    assert (info["radii"] == 0).any()
    if PER_PIXEL_DEPTH[primitive]:  # some pixel's per-pixel depths run against the centre order
        assert (expected["distort_l1"] < 0).any()
    else:
        assert (expected["distort_l1"] >= 0).all()


def test_distortion_maps_equal_brute_force_double_sums(primitive_scene, primitive):
    scene = primitive_scene(140, 2, 20, 26, seed=5, dtype=F64)
    out, _ = render(scene, outputs=("alpha", "depth_exp", "distort_l1", "distort_ndc2"), tile_size=8)
    splats = Splats(*(scene[k] for k in ("means", "quats", "scales", "opacities")))
    settings = RasterSettings(scene["width"], scene["height"], tile_size=8)
    ids, w, z = pixel_contributions(splats, scene["viewmats"], scene["Ks"], settings, primitive)
    w, z = w.numpy(), z.numpy()
    # 2 Σ_{i>j} w_i w_j (z_i − z_j) in compositing order: Σ w_i w_j |z_i − z_j| where the depths follow that order
    l1 = 2 * (z[..., :, None] - z[..., None, :]) * w[..., :, None] * w[..., None, :]
    inc = z >= NDC_NEAR
    m = np.where(inc, NDC_FAR / (NDC_FAR - NDC_NEAR) * (1 - NDC_NEAR / np.where(inc, z, 1.0)), 0.0)
    wi = w * inc
    ndc = np.tril((m[..., :, None] - m[..., None, :]) ** 2 * wi[..., :, None] * wi[..., None, :], k=-1)
    assert (ids >= 0).sum(-1).max() >= 3  # some pixels see several primitives
    if not PER_PIXEL_DEPTH[primitive]:
        assert (np.diff(z, axis=-1)[ids[..., 1:] >= 0] >= 0).all()  # centre depths, in compositing order
    np.testing.assert_allclose(
        out.distort_l1[..., 0].numpy(), np.tril(l1, k=-1).sum((-1, -2)), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(out.distort_ndc2[..., 0].numpy(), ndc.sum((-1, -2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.alpha[..., 0].numpy(), w.sum(-1), atol=1e-12)
    np.testing.assert_allclose(out.depth_exp[..., 0].numpy(), (w * z).sum(-1), atol=1e-12)
    assert out.distort_l1.max() > 0.01


def test_multi_camera_batch_equals_single_cameras_and_per_camera_colors(primitive_scene):
    scene = primitive_scene(140, 3, 20, 24, seed=2, dtype=F64)
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


def test_result_does_not_depend_on_chunking(primitive_scene, monkeypatch):
    scene = primitive_scene(140, 2, 30, 40, seed=4, dtype=F64)
    out, _ = render(scene, tile_size=8)
    monkeypatch.setattr(reference, "_CHUNK_PAIRS", 64)  # one tile per chunk
    out_small, _ = render(scene, tile_size=8)
    for name in OUTPUT_NAMES:
        torch.testing.assert_close(getattr(out_small, name), getattr(out, name), rtol=0, atol=1e-13)


def test_ndc_distortion_skips_per_pixel_depths_nearer_than_ndc_near():
    """A disc tilted through z = NDC_NEAR: the pixels where its hit is nearer drop it from distort_ndc2 only."""
    W = H = 16
    viewmats, Ks = camera(12.0, 8.0, 8.0)
    frame = _tilted_frame(60.0, 0.0)
    quat = quat_of_frame(torch.from_numpy(frame))[None]
    scene = primitives(
        "surfel2d", [[0.0, 0.0, NDC_NEAR], [0.0, 0.0, 1.0]], [[0.06, 0.06, 0.1], [1.0, 1.0, 1.0]], [0.5, 0.6],
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


def test_projection_matches_gsplat_torch_implementation(random_scene):
    ti = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = random_scene(80, 2, 24, 30, seed=11, dtype=F64)
    proj = project_gaussians(
        scene["means"],
        scene["quats"],
        scene["scales"],
        scene["viewmats"],
        scene["Ks"],
        RasterSettings(30, 24),
    )
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


# ------------------------------------------------------------------------------------------------- surfel footprint


def test_surfel_radius_covers_the_kernel():
    """Every pixel where ρ = min(ρ3d, ρ2d) <= 9 lies in the square box of half-size r around the centre."""
    scene = make_surfel_scene(160, 3, 40, 56, seed=8, dtype=F64)
    W, H = scene["width"], scene["height"]
    proj = project_surfels(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], RasterSettings(W, H)
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
    scene = primitives(
        "surfel2d", [[0.0, 0.0, z]] * 2, [[0.1, s_cross, 1.0], [0.1, s_keep, 1.0]], [0.8, 0.8], [[1.0, 1.0, 1.0]] * 2, quat
    )  # fmt: skip
    scene.update(viewmats=viewmats, Ks=Ks, width=16, height=16)
    _, info = render(scene, outputs=("alpha",))
    assert info["radii"][0, 0].tolist() == [0, 0]
    assert info["radii"][0, 1, 0] > 100  # nearly crossing: bounded, but huge


# -------------------------------------------------------------------------------------------------------- gradients


def test_means2d_grad_and_absgrad_equal_per_pixel_brute_force(primitive):
    scene = make_gradcheck_scene(primitive)
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


def test_strategy_keys_in_info(primitive_scene, primitive):
    scene = primitive_scene(40, 2, 20, 24, seed=0)
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
    proj = _project(scene, RasterSettings(24, 20))
    assert info["n_isects"] == int(bin_tiles(proj).tile_counts.sum()) > 0


# --------------------------------------------------------------------------------------------------------------- SH


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


# ------------------------------------------------------------------------------------------ culling, empty, normals


@pytest.mark.parametrize("where", ["behind", "beyond_far", "before_near"])
def test_culled_primitive_has_zero_radius_and_changes_nothing(primitive_scene, where):
    scene = primitive_scene(30, 1, 20, 24, seed=7, dtype=F64)
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
    # the same primitive in front of the camera does show up
    bigger["means"][-1] = R.T @ (torch.tensor([0.05, -0.02, 3.0], dtype=F64) - t)
    out3, info3 = render(bigger)
    assert info3["radii"][0, -1, 0] > 0 and (out3.rgb - out.rgb).abs().max() > 0.1


@pytest.mark.parametrize("n", [0, 25])
def test_empty_view_renders_background_and_zero_alpha(empty_view, primitive, n):
    scene = {**empty_view(n, 2, 18, 20, seed=1), "primitive": primitive}
    out, info = render(scene)
    assert (info["radii"] == 0).all() and info["n_isects"] == 0
    assert torch.equal(out.rgb, scene["backgrounds"][:, None, None, :].expand(2, 18, 20, 3))
    for name in OUTPUT_NAMES[1:]:
        assert (getattr(out, name) == 0).all(), name
    assert out.rgb.shape == (2, 18, 20, 3) and out.normal.shape == (2, 18, 20, 3)


@pytest.mark.parametrize("quat", [[1.0, 0, 0, 0], [0.0, 1.0, 0, 0]])  # disc normal along +z or -z
@pytest.mark.parametrize("side", [1.0, -1.0])  # camera at z = -3 looking +z, or at z = +3 looking -z
def test_flat_primitive_normal_faces_the_camera(primitive, quat, side):
    viewmat = torch.eye(4, dtype=F64)
    if side < 0:
        viewmat[:3, :3] = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=F64))  # 180° about y
    viewmat[2, 3] = 3.0
    _, Ks = camera(20.0, 8.0, 8.0)
    scene = primitives(primitive, [[0.0, 0.0, 0.0]], [[0.3, 0.25, 1e-4]], [0.9], [[1.0, 1.0, 1.0]], [quat])
    scene.update(viewmats=viewmat[None], Ks=Ks, width=16, height=16)
    out, _ = render(scene, outputs=("alpha", "normal"))
    alpha = out.alpha[0, ..., 0]
    assert alpha.max() > 0.5
    expected = torch.stack([torch.zeros_like(alpha), torch.zeros_like(alpha), -alpha], dim=-1)
    torch.testing.assert_close(out.normal[0], expected, rtol=0, atol=1e-12)


# -------------------------------------------------------------------------------------------------------------- API


def test_primitive_and_backend_choices():
    scene = make_gradcheck_scene("surfel2d")
    with pytest.raises(ValueError, match=".*".join(PRIMITIVES)):
        render(scene, primitive="not_a_primitive")
    with pytest.raises(ValueError, match="cpu.*reference"):
        rasterize(**scene, backend="gsplat")
    assert resolve_backend("auto", torch.device("cuda"), "surfel2d") == "cpu"  # even where gsplat would run
    assert resolve_backend("reference", torch.device("cpu"), "surfel2d") == "reference"
    out_s, info = render(scene, outputs=("alpha",))
    out_g, _ = render(scene, outputs=("alpha",), primitive="gaussian3d")
    assert info["radii"].shape == (1, 3, 2) and info["radii"].dtype == torch.int32
    assert (out_s.alpha - out_g.alpha).abs().max() > 0.05  # the argument reaches the rasterizer


# ----------------------------------------------------------------------------------------- regularizer known answer


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
        scene = primitives("surfel2d", means, scales, opacities, torch.zeros(len(means), 3), quats)
        scene.update(viewmats=vm, Ks=K, width=size, height=size)
        out, info = render(scene, outputs=reg.needs)
        ctx = RegContext(out, info, None, 0, vm, K, size, size, backend="reference", primitive="surfel2d")
        alpha = out.alpha[0, 1:-1, 1:-1, 0]
        return float(reg.loss(ctx)["normal"]), float((1 - alpha**2).mean())

    flat, floor = loss(0.0)
    assert abs(flat - floor) < 1e-9 and flat < 1e-3
    tilted, _ = loss(30.0)
    assert tilted > 10 * flat and tilted > 0.1
