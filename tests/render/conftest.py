"""Shared scene generators for the rasterizer tests (reference, cpu, gsplat backends).

Fixtures return factories, so a test picks its own size and seed:

- ``random_scene(n, C, H, W, seed, sh_degree=None, dtype=torch.float32)`` -> dict of ``rasterize`` keyword
  arguments (means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds, sh_degree).
  Cameras look at the origin from a ring (OpenCV axes, principal point off-centre). The Gaussians deliberately
  include the awkward cases every backend must agree on: some behind camera 0, some centred on the image border
  of camera 0, very large and very small scales, unnormalised quaternions, and zero opacity. With ``sh_degree``
  set, ``colors`` holds SH coefficients [N,(d+1)²,3]; otherwise RGB [N,3] in [0,1]. ``backgrounds`` is [C,3].
- ``empty_view(n, C, H, W, seed)`` -> the same kind of dict (plus ``far_plane``) where no Gaussian is visible:
  each is behind a camera, beyond ``far_plane`` or far off-image; with n = 0 there are no Gaussians at all.
- ``surfel_scene(n, C, H, W, seed, sh_degree=None, dtype=torch.float32)`` -> ``random_scene``'s dict plus
  ``primitive="surfel2d"``, with the awkward cases of 2D surfels added for camera 0: discs whose 3σ extent
  crosses the camera plane (culled) or nearly does (huge, visible), and discs seen exactly edge-on (their plane
  through the camera centre). It keeps random_scene's cases: behind the camera, across the image border, very
  large and very small, zero opacity. Needs n >= 140 to hold them all.

- ``primitive_scene(n, C, H, W, seed, sh_degree=None, dtype=torch.float32)`` -> the scene above that belongs to
  the ``primitive`` under test (``SCENES``: random_scene for 3D Gaussians, surfel_scene for 2D surfels), with
  ``primitive`` set. A test that asks for it (or for ``primitive``) runs once per entry of
  ``recon.render.PRIMITIVES``; ``@pytest.mark.parametrize("primitive", [...])`` narrows that.

All are plain functions too (``make_random_scene``, ``make_empty_view``, ``make_surfel_scene``,
``make_primitive_scene``) for use outside fixtures, and ``quat_of_frame`` turns rotation matrices into the wxyz
quaternions the rasterizer takes.

For finite differences (float64): ``make_gradcheck_scene(primitive, C, sh_degree)`` gives three overlapping,
rotated, anisotropic primitives in front of C 8×8 cameras, and ``assert_no_switch_within_reach(scene)`` checks
that no skip / stop / clamp / median / NDC-near (and, for surfels, min-branch) decision is within reach of a
finite-difference step at any pixel.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from recon.render import PRIMITIVES, RasterSettings
from recon.render.primitives import get_primitive

F64 = torch.float64


def look_at(campos: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera [4,4] for a camera at ``campos`` looking at ``target`` (OpenCV: x right, y down, z fwd)."""
    up = torch.tensor([0.0, 0.0, 1.0], dtype=campos.dtype) if up is None else up
    fwd = target - campos
    fwd = fwd / fwd.norm()
    right = torch.linalg.cross(fwd, up)
    right = right / right.norm()
    down = torch.linalg.cross(fwd, right)
    R = torch.stack([right, down, fwd])  # rows: camera axes in world coordinates
    M = torch.eye(4, dtype=campos.dtype)
    M[:3, :3] = R
    M[:3, 3] = -R @ campos
    return M


def _cameras(C: int, H: int, W: int, gen: torch.Generator, dtype: torch.dtype):
    viewmats, Ks = [], []
    for c in range(C):
        ang = 2 * math.pi * c / max(C, 1) + 0.3
        campos = torch.tensor([4.0 * math.cos(ang), 4.0 * math.sin(ang), 0.8 + 0.3 * c], dtype=torch.float64)
        jitter = (torch.rand(3, generator=gen, dtype=torch.float64) - 0.5) * 0.2
        viewmats.append(look_at(campos, jitter))
        f = 0.9 * max(W, H) * (1.0 + 0.1 * float(torch.rand((), generator=gen)))
        cx = W / 2 + (float(torch.rand((), generator=gen)) - 0.5) * 0.1 * W
        cy = H / 2 + (float(torch.rand((), generator=gen)) - 0.5) * 0.1 * H
        Ks.append(torch.tensor([[f, 0.0, cx], [0.0, f * 1.02, cy], [0.0, 0.0, 1.0]], dtype=torch.float64))
    return torch.stack(viewmats).to(dtype), torch.stack(Ks).to(dtype)


def make_random_scene(
    n: int,
    C: int,
    H: int,
    W: int,
    seed: int,
    sh_degree: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """A random scene with the awkward cases listed in the module docstring (needs n >= 20 to hold them all)."""
    gen = torch.Generator().manual_seed(seed)
    viewmats, Ks = _cameras(C, H, W, gen, torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    means = (rand(n, 3) - 0.5) * 2.4
    log_s = math.log(0.03) + rand(n, 3) * (math.log(0.25) - math.log(0.03))
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64) * (0.5 + 2.5 * rand(n, 1))
    opacities = 0.05 + 0.9 * rand(n)

    k = max(n // 20, 1) if n >= 20 else 0
    if k:
        R0, t0 = viewmats[0, :3, :3], viewmats[0, :3, 3]
        campos0 = -R0.T @ t0
        # behind camera 0: 0.5..1.5 units behind it, spread sideways
        off = (rand(k, 3) - 0.5) * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
        off[:, 2] = -(0.5 + rand(k))
        means[:k] = campos0 + off @ R0
        # centred on the image border of camera 0, at depth 2..5
        u = rand(k) * W
        v = rand(k) * H
        side = torch.arange(k) % 4
        u = torch.where(side == 0, torch.zeros_like(u), torch.where(side == 1, torch.full_like(u, W), u))
        v = torch.where(side == 2, torch.zeros_like(v), torch.where(side == 3, torch.full_like(v, H), v))
        depth = 2.0 + 3.0 * rand(k)
        K0 = Ks[0]
        xc = torch.stack(
            [(u - K0[0, 2]) / K0[0, 0] * depth, (v - K0[1, 2]) / K0[1, 1] * depth, depth], dim=-1
        )
        means[k : 2 * k] = (xc - t0) @ R0  # R0ᵀ (xc - t0), row-vector form
        log_s[2 * k : 3 * k] = math.log(1.0) + rand(k, 3) * math.log(3.0)  # very large: 1..3
        log_s[3 * k : 4 * k] = math.log(1e-4) + rand(k, 3) * math.log(10.0)  # very small: 1e-4..1e-3
        opacities[4 * k : 5 * k] = 0.0

    if sh_degree is None:
        colors = rand(n, 3)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen, dtype=torch.float64) * 0.2
        colors[:, 0] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.6
    backgrounds = rand(C, 3)
    cast = dict(dtype=dtype)
    return dict(
        means=means.to(**cast),
        quats=quats.to(**cast),
        scales=log_s.exp().to(**cast),
        opacities=opacities.to(**cast),
        colors=colors.to(**cast),
        viewmats=viewmats.to(**cast),
        Ks=Ks.to(**cast),
        width=W,
        height=H,
        backgrounds=backgrounds.to(**cast),
        sh_degree=sh_degree,
    )


def make_empty_view(n: int, C: int, H: int, W: int, seed: int, dtype: torch.dtype = torch.float32) -> dict:
    """A scene in which no camera sees anything: ``far_plane`` = 50 and every centre 1000 units from the origin.

    Each centre is then behind a camera (z < 0), beyond its far plane (z > 50), or so far off-axis that its box
    misses the image. With n = 0 there are no Gaussians at all.
    """
    scene = make_random_scene(n, C, H, W, seed, dtype=dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    dirs = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    scene["means"] = (1000.0 * dirs / dirs.norm(dim=-1, keepdim=True)).to(dtype)
    scene["far_plane"] = 50.0
    return scene


def quat_of_frame(rot: torch.Tensor) -> torch.Tensor:
    """wxyz unit quaternions [...,4] of proper rotation matrices [...,3,3] (columns: the local axes in world)."""
    from scipy.spatial.transform import Rotation

    xyzw = Rotation.from_matrix(rot.reshape(-1, 3, 3).double().numpy()).as_quat()
    q = torch.from_numpy(xyzw[:, [3, 0, 1, 2]]).to(rot.dtype)
    return q.reshape(*rot.shape[:-2], 4)


def frame_with_normal(normal: torch.Tensor, first_axis: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [...,3,3] whose third column is ``normal`` and first column ``first_axis`` made
    orthogonal to it (both [...,3], normalised here)."""
    n = normal / normal.norm(dim=-1, keepdim=True)
    u = first_axis - (first_axis * n).sum(-1, keepdim=True) * n
    u = u / u.norm(dim=-1, keepdim=True)
    return torch.stack([u, torch.linalg.cross(n, u), n], dim=-1)


def make_surfel_scene(
    n: int,
    C: int,
    H: int,
    W: int,
    seed: int,
    sh_degree: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """random_scene's surfels plus the cases of 2D surfels listed in the module docstring (n >= 140)."""
    scene = make_random_scene(n, C, H, W, seed, sh_degree=sh_degree, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1000)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    means, quats, log_s = scene["means"], scene["quats"], scene["scales"].log()
    log_s[:, 2] = math.log(1e-3) + 3.0 * rand(n)  # ignored by the surfel kernel: any value
    k = n // 20 if n >= 140 else 0
    if k:
        R0, t0, K0 = scene["viewmats"][0, :3, :3], scene["viewmats"][0, :3, 3], scene["Ks"][0]
        campos0 = -R0.T @ t0

        def camera0_point(u, v, depth):  # world point seen by camera 0 at pixel (u, v), depth
            xc = torch.stack(
                [(u - K0[0, 2]) / K0[0, 0] * depth, (v - K0[1, 2]) / K0[1, 1] * depth, depth], -1
            )
            return (xc - t0) @ R0

        # crossing (or nearly crossing) camera 0's plane: near, large, tilted 50-70° away from the view ray
        i = slice(5 * k, 6 * k)
        depth = 0.4 + 0.8 * rand(k)
        means[i] = camera0_point(W * (0.2 + 0.6 * rand(k)), H * (0.2 + 0.6 * rand(k)), depth)
        view = means[i] - campos0
        tilt = torch.deg2rad(50.0 + 20.0 * rand(k))
        side = torch.linalg.cross(view, torch.randn(k, 3, generator=gen, dtype=torch.float64))
        side = side / side.norm(dim=-1, keepdim=True)
        normal = (
            torch.cos(tilt)[:, None] * view / view.norm(dim=-1, keepdim=True)
            + torch.sin(tilt)[:, None] * side
        )
        quats[i] = quat_of_frame(frame_with_normal(normal, side))
        log_s[i, :2] = torch.log(depth[:, None] * (0.08 + 0.5 * rand(k, 2)))
        # edge-on in camera 0: the disc's plane contains the camera centre (normal ⟂ view ray)
        i = slice(6 * k, 7 * k)
        means[i] = camera0_point(W * (0.1 + 0.8 * rand(k)), H * (0.1 + 0.8 * rand(k)), 1.5 + 2.5 * rand(k))
        view = means[i] - campos0
        normal = torch.linalg.cross(view, torch.randn(k, 3, generator=gen, dtype=torch.float64))
        quats[i] = quat_of_frame(frame_with_normal(normal, view))
        log_s[i, :2] = math.log(0.05) + rand(k, 2) * math.log(6.0)
    scene.update(means=means, quats=quats, scales=log_s.exp(), primitive="surfel2d")
    return {k: v.to(dtype) if torch.is_tensor(v) else v for k, v in scene.items()}


# The random scene of each primitive type: every entry of recon.render.PRIMITIVES needs one.
SCENES = {"gaussian3d": make_random_scene, "surfel2d": make_surfel_scene}
# Whether the depth maps read each pixel's own depth of the primitive (a surfel's ray-plane hit) rather than its
# centre depth (a Gaussian's): only then can the depths composited at a pixel run against the compositing order.
PER_PIXEL_DEPTH = {"gaussian3d": False, "surfel2d": True}


def make_primitive_scene(
    primitive: str,
    n: int,
    C: int,
    H: int,
    W: int,
    seed: int,
    sh_degree: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """``SCENES[primitive]``'s scene with ``primitive`` set (surfels need n >= 140 for all their cases)."""
    if primitive not in SCENES:
        raise KeyError(f"no random scene for primitive {primitive!r}: add one to SCENES in {__file__}")
    scene = SCENES[primitive](n, C, H, W, seed, sh_degree=sh_degree, dtype=dtype)
    return {**scene, "primitive": primitive}


# The primitives shaped by means, quats and scales, which the scenes above describe; convexes (shaped by their
# points) have their own scenes and tests (test_convex.py) on the same compositor.
AXES_PRIMITIVES = tuple(p for p in PRIMITIVES if get_primitive(p).shaped_by_axes)


@pytest.fixture(params=AXES_PRIMITIVES)
def primitive(request) -> str:
    """Each primitive type shaped by quats and scales in turn."""
    return request.param


@pytest.fixture
def primitive_scene(primitive):
    return functools.partial(make_primitive_scene, primitive)


@pytest.fixture
def random_scene():
    return make_random_scene


@pytest.fixture
def surfel_scene():
    return make_surfel_scene


@pytest.fixture
def empty_view():
    return make_empty_view


# ------------------------------------------------------------------------------------------ finite differences

# Three overlapping, rotated, anisotropic primitives (unnormalised quaternions); a surfel's third scale is unused.
GRADCHECK_PRIMITIVES = {
    "gaussian3d": dict(
        means=[[0.12, 0.04, 2.1], [-0.18, 0.1, 2.7], [0.1, -0.22, 3.3]],
        quats=[[1.1, 0.3, -0.2, 0.1], [0.8, -0.1, 0.45, 0.3], [0.6, 0.2, 0.25, -0.5]],
        scales=[[0.45, 0.35, 0.12], [0.55, 0.2, 0.65], [0.7, 0.5, 0.3]],
        opacities=[0.6, 0.72, 0.55],
    ),
    "surfel2d": dict(
        means=[[0.1, 0.05, 2.0], [-0.2, 0.1, 2.6], [0.15, -0.25, 3.1]],
        quats=[[0.9, 0.3, -0.2, 0.1], [1.2, -0.1, 0.4, 0.3], [0.7, 0.2, 0.2, -0.5]],
        scales=[[0.5, 0.35, 0.05], [0.6, 0.45, 0.7], [0.8, 0.6, 0.2]],
        opacities=[0.55, 0.7, 0.6],
    ),
}


def make_gradcheck_scene(primitive: str, C: int = 1, sh_degree: int | None = None) -> dict:
    """``GRADCHECK_PRIMITIVES[primitive]`` in front of C 8×8 cameras (the second one slightly to the side), float64."""
    viewmats = torch.eye(4, dtype=F64).repeat(C, 1, 1)
    if C > 1:
        viewmats[1, 0, 3], viewmats[1, 1, 3] = 0.06, -0.05
    Ks = torch.tensor([[11.0, 0.0, 4.2], [0.0, 10.5, 3.9], [0.0, 0.0, 1.0]], dtype=F64).repeat(C, 1, 1)
    colors = torch.tensor([[0.8, 0.1, 0.3], [0.2, 0.7, 0.2], [0.1, 0.3, 0.9]], dtype=F64)
    if sh_degree is not None:
        gen = torch.Generator().manual_seed(3)
        colors = torch.randn(3, (sh_degree + 1) ** 2, 3, generator=gen, dtype=F64) * 0.3
        colors[:, 0] += 1.0  # keeps the SH colours clear of the clamp at 0
    scene = {k: torch.tensor(v, dtype=F64) for k, v in GRADCHECK_PRIMITIVES[primitive].items()}
    scene.update(
        colors=colors, viewmats=viewmats, Ks=Ks, width=8, height=8, sh_degree=sh_degree, primitive=primitive,
        backgrounds=torch.tensor([[0.3, 0.2, 0.1]] * C, dtype=F64),
    )  # fmt: skip
    return scene


def _gaussian_footprints(scene: dict, px: torch.Tensor, py: torch.Tensor):
    """Per camera: (n, kernel value [H,W], depth) of each Gaussian in compositing order."""
    from recon.render.projection import project_gaussians

    W, H = scene["width"], scene["height"]
    proj = project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], RasterSettings(W, H)
    )
    assert proj.visible.all()
    for c in range(proj.depths.shape[0]):
        footprints = []
        for n in torch.argsort(proj.depths[c]).tolist():
            dx, dy = proj.means2d[c, n, 0] - px, proj.means2d[c, n, 1] - py
            a, b, cc = proj.conics[c, n]
            footprints.append(
                (n, torch.exp(-(0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy)), proj.depths[c, n])
            )
        yield footprints


def _surfel_footprints(scene: dict, px: torch.Tensor, py: torch.Tensor):
    """Per camera: (n, kernel value [H,W], per-pixel depth [H,W]) of each surfel in compositing order, after
    checking that ρ3d and ρ2d (the semantics' two terms, the smaller one wins) are nowhere about to swap."""
    from recon.render.surfels import project_surfels, surfel_kernel

    W, H = scene["width"], scene["height"]
    proj = project_surfels(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], RasterSettings(W, H)
    )
    assert proj.visible.all()
    for c in range(proj.depths.shape[0]):
        footprints = []
        for n in torch.argsort(proj.depths[c]).tolist():
            m2d, payload, z = proj.means2d[c, n], proj.payload[c, n], proj.depths[c, n]
            kux, kuy, kuz, kvx, kvy, kvz = payload.tolist()
            hu = torch.stack([px * kuz - kux, px * kvz - kvx, (px - m2d[0]) * z], -1)
            hv = torch.stack([py * kuz - kuy, py * kvz - kvy, (py - m2d[1]) * z], -1)
            s = torch.linalg.cross(hu, hv, dim=-1)
            rho3 = (s[..., 0] ** 2 + s[..., 1] ** 2) / s[..., 2] ** 2
            rho2 = 2 * ((px - m2d[0]) ** 2 + (py - m2d[1]) ** 2)
            assert ((rho3 - rho2).abs() > 1e-4).all()
            g, zp, _ = surfel_kernel(m2d, payload, z, px, py)
            footprints.append((n, g, zp))
        yield footprints


FOOTPRINTS = {"gaussian3d": _gaussian_footprints, "surfel2d": _surfel_footprints}


def assert_no_switch_within_reach(scene: dict) -> None:
    """Finite differences only hold away from the α, T, median and NDC-near switches (and the surfel's min-branch),
    at every pixel of every camera; every primitive must be visible in every camera."""
    from recon.render.outputs import ALPHA_MAX, ALPHA_MIN, NDC_NEAR, T_EPS

    W, H = scene["width"], scene["height"]
    py, px = torch.meshgrid(torch.arange(H, dtype=F64) + 0.5, torch.arange(W, dtype=F64) + 0.5, indexing="ij")
    for footprints in FOOTPRINTS[scene.get("primitive", "gaussian3d")](scene, px, py):
        T = torch.ones(H, W, dtype=F64)
        for n, g, z in footprints:
            raw = scene["opacities"][n] * g
            assert ((raw - ALPHA_MIN).abs() > 1e-4).all() and ((raw - ALPHA_MAX).abs() > 1e-4).all()
            assert ((torch.as_tensor(z) - NDC_NEAR).abs() > 1e-4).all() and ((T - 0.5).abs() > 1e-4).all()
            T = T * (1 - torch.where(raw >= ALPHA_MIN, raw, torch.zeros_like(raw)))
            assert (T > 10 * T_EPS).all()
