"""2D Gaussian surfels (2DGS, Huang et al. 2024): projection to the screen and the per-pixel kernel, in plain torch.

A surfel is a flat Gaussian disc: centre μ, rotation q, in-plane scales (s_u, s_v) = scales[n, :2] (scales[n, 2]
is ignored). Its kernel is evaluated where each pixel's ray meets the disc's plane (2DGS's ray-splat
intersection), so depth and normal are exact per pixel instead of the centre's. This module is the contract the
C++ surfel kernel (``csrc/kernels.h``) mirrors; the reference rasterizer (``reference.py``) composites with it.

Exact semantics, per camera c (R, t from viewmats[c]; K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] from Ks[c], skew
ignored as for 3D Gaussians) and surfel n:

1. p = R·μ + t, z = p.z. Culled (radius 0) if z < near_plane or z > far_plane.
2. Rq = rotation of q/|q| (w, x, y, z); camera-space tangent axes a_u = s_u·R·Rq[:,0], a_v = s_v·R·Rq[:,1];
   normal n = R·Rq[:,2], negated where n·p > 1e-6·|p| (so it faces the camera; no gradient through the sign; the
   tolerance makes an edge-on surfel, n·p = 0 up to rounding, keep its sign in every backend).
3. payload [C,N,6] = (K·a_u, K·a_v) = (fx·a_u.x + cx·a_u.z, fy·a_u.y + cy·a_u.z, a_u.z,
   fx·a_v.x + cx·a_v.z, fy·a_v.y + cy·a_v.z, a_v.z). means2d = (mx, my) = (fx·p.x/z + cx, fy·p.y/z + cy),
   0 where culled. The homogeneous image map of the surfel's plane is h(u, v) = M·(u, v, 1) with
   M = [K·a_u | K·a_v | (mx·z, my·z, z)] (columns); its rows are Tu = (K a_u.x, K a_v.x, mx·z),
   Tv = (K a_u.y, K a_v.y, my·z), Tw = (a_u.z, a_v.z, z). The third column is built from means2d and z rather
   than K·p so that ``info["means2d"].grad`` is the true screen-space positional gradient densification reads.
4. Radius (binning only; the kernel never reads it). The 3σ disc u² + v² <= 9 maps to the conic whose dual is
   C* = M·diag(1, 1, −1/9)·Mᵀ. If C*₃₃ >= 0 the image is unbounded (the disc reaches the camera plane z = 0):
   culled. Else its bounding box has centre (ox, oy) = (C*₁₃, C*₂₃)/C*₃₃ and half extents
   hx = sqrt(max(0, ox² − C*₁₁/C*₃₃)), hy = sqrt(max(0, oy² − C*₂₂/C*₃₃)); the radius of the square box around
   means2d is r = ceil(max(|ox − mx| + hx, |oy − my| + hy, 3/√2)) (3/√2: the low-pass disc 2|d|² <= 9), capped at
   RADIUS_MAX = 2²⁴ px so it stays an exact int32 and float. Then, as for 3D Gaussians (``reference.py`` steps
   6-7): culled if r <= radius_clip or the box misses the image; tile ranges from (mx ± r, my ± r); tiles sorted by
   centre depth z, ties by index. info["radii"] = (r, r), info["depths"] = z.
5. Per pixel centre (px, py): hu = (px·Tw.x − Tu.x, px·Tw.y − Tu.y, (px − mx)·z),
   hv = (py·Tw.x − Tv.x, py·Tw.y − Tv.y, (py − my)·z) (that is px·Tw − Tu and py·Tw − Tv, the third entries
   computed in this factored form), s = hu × hv. Where s.z ≠ 0: (u, v) = (s.x, s.y)/s.z, the plane point the
   pixel's ray hits, and ρ3d = u² + v²; else ρ3d = +inf. ρ2d = 2·((px − mx)² + (py − my)²) (2DGS's screen-space
   low-pass, FilterInvSquare = 2). ρ = min(ρ3d, ρ2d) with the plane term chosen on ties (ρ3d <= ρ2d), kernel
   G = exp(−½ρ); α = min(ALPHA_MAX, opacity·G), skipped if α < ALPHA_MIN, and the 3DGS stop rule, exactly as for
   3D Gaussians (``reference.py`` step 8; no σ < 0 skip: ρ >= 0). The gradient of the min follows the chosen term.
6. Per-pixel depth z_p = u·a_u.z + v·a_v.z + z where the plane term is chosen (the ray-plane intersection's
   camera z), else z. z_p replaces z_i in depth_exp, depth_median (the z_p of the median entry), distort_l1 and
   distort_ndc2 (whose test z_p >= NDC_NEAR is per pixel), with the recursions of ``reference.py`` step 9
   unchanged. Entries are composited in centre-depth order, which the z_p of a pixel need not follow, so
   distort_l1 = Σ_{j<i} 2·w_i·w_j·(z_p,i − z_p,j) is then signed (as in gsplat's 2DGS); distort_ndc2 squares its
   differences and stays >= 0. normal = Σ w·n; rgb, alpha, SH colours (evaluated at μ) and backgrounds as for
   3D Gaussians.
7. Gradients reach means, quats, scales[:, :2], opacities, colours / SH coefficients and backgrounds. The kernel
   reads (means2d, z, payload): means reach it through means2d and z, quats and scales through the payload (and
   quats through the normal). eps2d is not used. The C++ compositor runs the surfel kernel by its id (the
   descriptor in ``primitives.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .outputs import ALPHA_MAX, ALPHA_MIN
from .projection import Footprint, camera_space, quat_to_rotmat, screen_footprint
from .settings import RasterSettings

__all__ = ["SurfelProjection", "project_surfels", "surfel_kernel", "RADIUS_MAX"]

RADIUS_MAX = float(1 << 24)  # screen radius cap in pixels: exact in int32 and float32
_BOX_3SIGMA = 9.0  # u² + v² <= 9: the 3σ disc the radius covers
_LOWPASS_RADIUS = 3.0 / math.sqrt(2.0)  # 2|d|² <= 9


@dataclass(kw_only=True)
class SurfelProjection(Footprint):
    """Screen-space footprint of N surfels in C cameras."""

    payload: Tensor  # [C,N,6] (K a_u, K a_v), step 3 of the module docstring


def project_surfels(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    with_normals: bool = False,
) -> SurfelProjection:
    """Project N surfels (means [N,3], quats [N,4] wxyz, scales [N,3], only [:, :2] used) into C pinhole cameras.

    Steps 1-4 of the module docstring. Values are differentiable w.r.t. means, quats and scales; every discrete
    decision (culling, radius, tiles, normal sign) is taken on detached values; viewmats and Ks are constants.
    Culled entries carry finite values, so masking them never produces NaN gradients. ``settings.eps2d`` is unused.
    """
    # 1. camera-space centres; depth culling.
    R, fx, fy, cx, cy, p, z, in_range, z_safe = camera_space(means, viewmats, Ks, settings)

    # 2. camera-space tangent axes (scaled) and the unit normal.
    Rq = quat_to_rotmat(quats)  # [N,3,3], columns are the local axes
    axes = torch.matmul(R[:, None], Rq.unsqueeze(0))  # [C,N,3,3] R·Rq
    a_u = axes[..., 0] * scales[:, 0, None]  # [C,N,3]
    a_v = axes[..., 1] * scales[:, 1, None]

    # 3. payload (K a_u, K a_v) and the projected centre.
    def k_times(a: Tensor) -> Tensor:
        return torch.stack(
            [fx * a[..., 0] + cx * a[..., 2], fy * a[..., 1] + cy * a[..., 2], a[..., 2]], dim=-1
        )

    payload = torch.cat([k_times(a_u), k_times(a_v)], dim=-1)  # [C,N,6]
    mx = fx * p[..., 0] / z_safe + cx
    my = fy * p[..., 1] / z_safe + cy

    # 4. radius of the 3σ disc's image from the dual conic; culling; tile ranges.
    with torch.no_grad():
        r, bounded = _radius(payload.detach(), mx.detach(), my.detach(), z_safe.detach())
    means2d, radii, visible, tile_min, tile_max, tw, th = screen_footprint(
        mx, my, r, in_range & bounded, settings
    )

    normals = None
    if with_normals:
        n = axes[..., 2]
        with torch.no_grad():
            facing_away = (n * p).sum(-1, keepdim=True) > 1e-6 * p.norm(dim=-1, keepdim=True)
            sign = torch.where(facing_away, -1.0, 1.0).to(n.dtype)
        normals = n * sign
    return SurfelProjection(
        means2d=means2d,
        payload=payload,
        depths=z,
        radii=radii,
        visible=visible,
        tile_min=tile_min,
        tile_max=tile_max,
        tile_width=tw,
        tile_height=th,
        normals=normals,
    )


def _radius(payload: Tensor, mx: Tensor, my: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """(r, bounded): the screen radius of step 4 (RADIUS_MAX where unbounded) and whether C*₃₃ < 0."""
    ku, kv = payload[..., 0:3], payload[..., 3:6]
    c = torch.stack([mx * z, my * z, z], dim=-1)  # third column of M

    def dual(i: int, j: int) -> Tensor:
        return ku[..., i] * ku[..., j] + kv[..., i] * kv[..., j] - c[..., i] * c[..., j] / _BOX_3SIGMA

    c33 = dual(2, 2)
    bounded = c33 < 0
    c33_safe = torch.where(bounded, c33, -torch.ones_like(c33))
    ox, oy = dual(0, 2) / c33_safe, dual(1, 2) / c33_safe
    hx = torch.sqrt(torch.clamp(ox * ox - dual(0, 0) / c33_safe, min=0))
    hy = torch.sqrt(torch.clamp(oy * oy - dual(1, 1) / c33_safe, min=0))
    ext = torch.maximum((ox - mx).abs() + hx, (oy - my).abs() + hy)
    ext = torch.clamp(ext, min=_LOWPASS_RADIUS)
    ext = torch.where(torch.isfinite(ext) & bounded, ext, torch.full_like(ext, RADIUS_MAX))
    return torch.clamp(torch.ceil(ext), max=RADIUS_MAX), bounded


def surfel_kernel(
    means2d: Tensor, payload: Tensor, depths: Tensor, px: Tensor, py: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(G, z_p, valid) of surfels at pixel centres: steps 5-6 of the module docstring.

    ``means2d`` [...,2], ``payload`` [...,6] and ``depths`` [...] describe the surfels, ``px``/``py`` the pixel
    centres; all broadcast together. G = exp(−½ min(ρ3d, ρ2d)) is the kernel value, z_p the depth the maps use at
    that pixel, ``valid`` (no gradient) false where the kernel is undefined (non-finite inputs). Each branch of the
    min is evaluated on masked inputs, so the branch not taken contributes an exact zero gradient (never NaN).
    """
    mx, my = means2d[..., 0], means2d[..., 1]
    kux, kuy, kuz, kvx, kvy, kvz = payload.unbind(-1)
    dx, dy = px - mx, py - my
    hux, huy, huz = px * kuz - kux, px * kvz - kvx, dx * depths
    hvx, hvy, hvz = py * kuz - kuy, py * kvz - kvy, dy * depths
    sx = huy * hvz - huz * hvy
    sy = huz * hvx - hux * hvz
    sz = hux * hvy - huy * hvx
    rho2 = 2.0 * (dx * dx + dy * dy)
    with torch.no_grad():
        nz = sz != 0
        sz1 = torch.where(nz, sz, torch.ones_like(sz))
        u0, v0 = sx / sz1, sy / sz1
        use3 = nz & (u0 * u0 + v0 * v0 <= rho2)  # false where ρ3d is inf or NaN
    zero = torch.zeros_like(sx)
    den = torch.where(use3, sz, torch.ones_like(sz))
    u = torch.where(use3, sx, zero) / den
    v = torch.where(use3, sy, zero) / den
    rho = torch.where(use3, u * u + v * v, rho2)
    g = torch.exp(-0.5 * rho)
    zp = torch.where(use3, u * kuz + v * kvz + depths, depths)
    with torch.no_grad():
        valid = torch.isfinite(rho) & torch.isfinite(zp)
    return g, zp, valid


def surfel_alpha(
    m2d: Tensor, payload: Tensor, depths: Tensor, opac: Tensor, entry_ok: Tensor, px: Tensor, py: Tensor
) -> tuple[Tensor, Tensor]:
    """(α, z_p) [t,P,K] of K surfels at P pixel centres (steps 5-6); α is 0 where skipped
    (α < ALPHA_MIN, padding, undefined kernel) and z_p is 0 there too, so zero weights never meet a NaN.

    ``m2d`` is [t,K,2], or [t,P,K,2] when the caller needs per-pixel gradients of the centres.
    """
    if m2d.dim() == 3:
        m2d = m2d.unsqueeze(1)
    g, zp, valid = surfel_kernel(
        m2d, payload.unsqueeze(1), depths.unsqueeze(1), px.unsqueeze(-1), py.unsqueeze(-1)
    )
    alpha = torch.clamp(opac.unsqueeze(1) * g, max=ALPHA_MAX)
    ok = valid & (alpha >= ALPHA_MIN) & entry_ok.unsqueeze(1)
    zero = torch.zeros_like(alpha)
    return torch.where(ok, alpha, zero), torch.where(ok, zp, zero)
