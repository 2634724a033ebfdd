"""Projection of 3D Gaussians to the screen, and tile binning, in plain torch (autograd-friendly).

This is steps 1-7 of the rasterization semantics stated in ``reference.py``: camera-space centres, EWA covariance
projection with gsplat's clamped Jacobian, conics, radii, culling, tile ranges, camera-space normals, and the
depth-sorted Gaussian-tile intersection list. Values are differentiable w.r.t. means, quats and scales; every
discrete decision (culling, radii, tiles, sort order, normal axis and sign) is taken on detached values. viewmats
and Ks are treated as constants: no camera-pose or intrinsics gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .outputs import ALPHA_MAX, ALPHA_MIN
from .settings import RasterSettings

__all__ = [
    "Footprint",
    "Projection",
    "TileBins",
    "quat_to_rotmat",
    "project_gaussians",
    "bin_tiles",
    "tile_ranges",
    "camera_space",
    "screen_footprint",
    "gaussian_alpha",
]


@dataclass(kw_only=True)
class Footprint:
    """What every primitive's projection gives: the screen centre, depth, radius and tiles of each primitive, and
    what tile binning and compositing read. Subclasses (``Projection`` here, ``surfels.SurfelProjection``) add
    their kernel's ``payload``."""

    means2d: Tensor  # [C,N,2] pixel coordinates of the centres (0 where culled)
    depths: Tensor  # [C,N] camera-space z of the centres (the sort key within a tile)
    radii: Tensor  # [C,N] int32 screen radius in pixels, 0 = culled
    visible: Tensor  # [C,N] bool, radii > 0
    tile_min: Tensor  # [C,N,2] int64 first tile (x, y) covered, inclusive
    tile_max: Tensor  # [C,N,2] int64 last tile (x, y) covered, exclusive
    tile_width: int
    tile_height: int
    normals: Tensor | None = None  # [C,N,3] camera-space unit normals facing the camera, if asked for
    # and, in each subclass, ``payload`` [C,N,P]: what the primitive's kernel reads


@dataclass(kw_only=True)
class Projection(Footprint):
    """Screen-space footprint of N 3D Gaussians in C cameras."""

    conics: Tensor  # [C,N,3] (a, b, c) of the inverse 2-D covariance [[a, b], [b, c]]

    @property
    def payload(self) -> Tensor:
        """What the Gaussian kernel reads per primitive: the conic."""
        return self.conics


@dataclass
class TileBins:
    """Gaussian-tile intersections, sorted by tile, then depth, then Gaussian index."""

    tile_ids: Tensor  # [M] int64 global tile index c*TH*TW + ty*TW + tx
    flat_ids: Tensor  # [M] int64 camera-flattened Gaussian index c*N + n
    tile_counts: Tensor  # [C*TH*TW] int64 number of intersections per tile
    tile_offsets: Tensor  # [C*TH*TW] int64 first position of each tile in the sorted list


@torch.no_grad()
def tile_ranges(
    mx: Tensor, my: Tensor, r: Tensor, visible: Tensor, width: int, height: int, tile_size: int
) -> tuple[Tensor, Tensor, int, int]:
    """(tile_min, tile_max [C,N,2] int64, tile_width, tile_height): the tiles the square box of radius r around
    (mx, my) covers, [min, max) per axis and clamped to the grid; empty (max = min) where not visible. Shared by
    every primitive's projection, so all of them bin alike."""
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    mxd, myd = mx.detach(), my.detach()
    x0 = torch.floor((mxd - r) / tile_size).clamp(0, tw)
    x1 = torch.ceil((mxd + r) / tile_size).clamp(0, tw)
    y0 = torch.floor((myd - r) / tile_size).clamp(0, th)
    y1 = torch.ceil((myd + r) / tile_size).clamp(0, th)
    tile_min = torch.stack([x0, y0], dim=-1).to(torch.int64)
    tile_max = torch.stack([x1, y1], dim=-1).to(torch.int64)
    return tile_min, torch.where(visible[..., None], tile_max, tile_min), tw, th


def screen_footprint(
    mx: Tensor, my: Tensor, r: Tensor, ok: Tensor, settings: RasterSettings
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int, int]:
    """The last step of every projection: a primitive with centre (mx, my) and screen radius r is visible where
    ``ok``, r > radius_clip and its box touches the image; returns (means2d [C,N,2] zeroed where culled, radii
    [C,N] int32, visible, tile_min, tile_max, tile_width, tile_height). Decisions on detached values."""
    with torch.no_grad():
        w, h = settings.width, settings.height
        on_image = (mx + r > 0) & (mx - r < w) & (my + r > 0) & (my - r < h)
        visible = ok & (r > settings.radius_clip) & on_image
        r = torch.where(visible, r, torch.zeros_like(r))
        tile_min, tile_max, tw, th = tile_ranges(mx, my, r, visible, w, h, settings.tile_size)
    means2d = torch.stack([mx, my], dim=-1)
    means2d = torch.where(visible[..., None], means2d, torch.zeros_like(means2d))
    return means2d, r.to(torch.int32), visible, tile_min, tile_max, tw, th


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [...,3,3] from quaternions [...,4] (w,x,y,z), normalised here."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


class CameraSpace(NamedTuple):
    R: Tensor  # [C,3,3] world-to-camera rotation (detached)
    fx: Tensor  # [C,1]
    fy: Tensor
    cx: Tensor
    cy: Tensor
    p: Tensor  # [C,N,3] camera-space centres
    z: Tensor  # [C,N] their depth
    in_range: Tensor  # [C,N] bool: near_plane <= z <= far_plane (and z != 0)
    z_safe: Tensor  # [C,N] z where in range, else 1 (so divisions stay finite)


def camera_space(means: Tensor, viewmats: Tensor, Ks: Tensor, settings: RasterSettings) -> CameraSpace:
    """Step 1 of every primitive's projection: camera-space centres and depth culling; viewmats and Ks are
    constants (detached), in the dtype of ``means``."""
    dtype = means.dtype
    R = viewmats[:, :3, :3].detach().to(dtype)
    t = viewmats[:, :3, 3].detach().to(dtype)
    Ks = Ks.detach().to(dtype)
    p = torch.matmul(means, R.transpose(1, 2)) + t[:, None, :]
    z = p[..., 2]
    in_range = (z >= settings.near_plane) & (z <= settings.far_plane) & (z != 0)
    z_safe = torch.where(in_range, z, torch.ones_like(z))
    return CameraSpace(
        R, Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None], p, z, in_range, z_safe
    )


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    with_normals: bool = False,
) -> Projection:
    """Project N Gaussians (means [N,3], quats [N,4] wxyz, scales [N,3]) into C pinhole cameras.

    A Gaussian is culled (radius 0) when its centre depth is outside [near_plane, far_plane], its 2-D covariance
    is degenerate, its radius is <= radius_clip, or its 3-sigma box misses the image. Culled entries carry finite
    (zero-gradient) values, so masking them never produces NaN gradients.
    """
    width, height, eps2d = settings.width, settings.height, settings.eps2d
    # 1. camera-space centres; depth culling.
    R, fx, fy, cx, cy, p, z, in_range, z_safe = camera_space(means, viewmats, Ks, settings)

    # 2. world and camera covariances: Σ = (Rq S)(Rq S)ᵀ, Σc = R Σ Rᵀ.
    Rq = quat_to_rotmat(quats)  # [N,3,3]
    M = Rq * scales[:, None, :]
    cov = M @ M.transpose(-1, -2)  # [N,3,3]
    Rb = R[:, None]  # [C,1,3,3]
    cov_c = Rb @ cov.unsqueeze(0) @ Rb.transpose(-1, -2)  # [C,N,3,3]

    # 3. Jacobian of the perspective map with gsplat's clamp of the off-axis angle.
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z_safe * torch.clamp(p[..., 0] / z_safe, min=-lim_x_neg, max=lim_x_pos)
    ty = z_safe * torch.clamp(p[..., 1] / z_safe, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(z_safe)
    J0 = torch.stack([fx / z_safe, zero, -fx * tx / (z_safe * z_safe)], dim=-1)  # [C,N,3]
    J1 = torch.stack([zero, fy / z_safe, -fy * ty / (z_safe * z_safe)], dim=-1)

    # 4. Σ2D = J Σc Jᵀ + eps2d I; conic = Σ2D⁻¹.
    cJ0 = (cov_c @ J0.unsqueeze(-1)).squeeze(-1)
    cJ1 = (cov_c @ J1.unsqueeze(-1)).squeeze(-1)
    a = (J0 * cJ0).sum(-1) + eps2d
    b = (J0 * cJ1).sum(-1)
    c = (J1 * cJ1).sum(-1) + eps2d
    det = a * c - b * b
    ok_det = det > 0
    det_safe = torch.where(ok_det, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    # 5. projected centres (unclamped).
    mx = fx * p[..., 0] / z_safe + cx
    my = fy * p[..., 1] / z_safe + cy

    # 6. radius from the larger eigenvalue of Σ2D; culling decisions on detached values.
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        r = torch.ceil(3.0 * torch.sqrt(lam))
    # 7. culling and tile ranges [min, max) per axis.
    means2d, radii, visible, tile_min, tile_max, tw, th = screen_footprint(
        mx, my, r, in_range & ok_det, settings
    )

    normals = None
    if with_normals:
        normals = _camera_normals(Rq, scales, R, p)
    return Projection(
        means2d=means2d,
        conics=conics,
        depths=z,
        radii=radii,
        visible=visible,
        tile_min=tile_min,
        tile_max=tile_max,
        tile_width=tw,
        tile_height=th,
        normals=normals,
    )


def _camera_normals(Rq: Tensor, scales: Tensor, R: Tensor, p: Tensor) -> Tensor:
    """Column of Rc·Rq for the smallest scale (first on ties), flipped so that n·p <= 0 (faces the camera)."""
    axis = torch.argmin(scales.detach(), dim=-1)  # [N]
    n_world = torch.gather(Rq, 2, axis[:, None, None].expand(-1, 3, 1)).squeeze(-1)  # [N,3]
    n_cam = torch.matmul(n_world, R.transpose(1, 2))  # [C,N,3]
    with torch.no_grad():
        sign = torch.where((n_cam * p).sum(-1, keepdim=True) > 0, -1.0, 1.0).to(n_cam.dtype)
    return n_cam * sign


@torch.no_grad()
def bin_tiles(proj: Footprint) -> TileBins:
    """Expand every visible primitive to the tiles of its box and sort by (tile, depth, index)."""
    C, N = proj.depths.shape
    tw, th = proj.tile_width, proj.tile_height
    device = proj.depths.device
    span = (proj.tile_max - proj.tile_min).clamp_min(0)  # [C,N,2]
    nx = span[..., 0].reshape(-1)
    counts = (span[..., 0] * span[..., 1]).reshape(-1)  # [C*N]
    src = torch.repeat_interleave(torch.arange(C * N, device=device), counts)  # [M]
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(src.numel(), device=device) - first[src]
    tx = proj.tile_min[..., 0].reshape(-1)[src] + local % nx[src].clamp_min(1)
    ty = proj.tile_min[..., 1].reshape(-1)[src] + local // nx[src].clamp_min(1)
    cam = src // N
    tile_ids = cam * (th * tw) + ty * tw + tx
    # src is ascending in (c, n); two stable sorts give the order (tile, depth, n).
    order = torch.sort(proj.depths.detach().reshape(-1)[src], stable=True).indices
    tile_ids, src = tile_ids[order], src[order]
    order = torch.sort(tile_ids, stable=True).indices
    tile_ids, src = tile_ids[order], src[order]
    tile_counts = torch.bincount(tile_ids, minlength=C * th * tw)
    tile_offsets = torch.cumsum(tile_counts, 0) - tile_counts
    return TileBins(tile_ids=tile_ids, flat_ids=src, tile_counts=tile_counts, tile_offsets=tile_offsets)


def gaussian_alpha(
    m2d: Tensor, conic: Tensor, opac: Tensor, entry_ok: Tensor, px: Tensor, py: Tensor
) -> Tensor:
    """α [t,P,K] of K Gaussians at P pixel centres, 0 where skipped (σ < 0, α < ALPHA_MIN, padding).

    ``m2d`` is [t,K,2], or [t,P,K,2] when the caller needs per-pixel gradients of the centres.
    """
    if m2d.dim() == 3:
        m2d = m2d.unsqueeze(1)
    dx = m2d[..., 0] - px.unsqueeze(-1)  # [t,P,K]
    dy = m2d[..., 1] - py.unsqueeze(-1)
    ca, cb, cc = (conic[..., i].unsqueeze(1) for i in range(3))
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    alpha = torch.clamp(opac.unsqueeze(1) * torch.exp(-sigma), max=ALPHA_MAX)
    ok = (sigma >= 0) & (alpha >= ALPHA_MIN) & entry_ok.unsqueeze(1)
    return torch.where(ok, alpha, torch.zeros_like(alpha))
