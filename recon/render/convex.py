"""Smooth convexes (3D Convex Splatting, Held et al. 2025; METHODS.md §3.1): projection and kernel in plain torch.

A convex is K 3-D points (K <= EDGES_MAX) with smoothness δ > 0 and sharpness σ > 0. Its image is the 2-D convex
hull of the projected points; the per-pixel kernel is a smooth indicator of that polygon. This module is the
contract the C++ convex kernel (``csrc/kernels.h``, ``csrc/project_convexes.cpp``) mirrors, the test oracle, and
the path on machines without our C++ kernels; the reference rasterizer (``reference.py``) composites with it.

Exact semantics, per camera c (R, t from viewmats[c]; K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] from Ks[c]) and
convex n with points P_i, i < K:

1. Centre μ = mean_i P_i; p = R·μ + t, z = p.z. Culled if z < near_plane or z > far_plane. means2d = (fx·p.x/z + cx,
   fy·p.y/z + cy) (0 where culled); the centre depth z is the sort key and the depth every map composites.
2. Every point: q_i = R·P_i + t, culled if any q_i.z < near_plane; image point v_i = (fx·q_i.x/q_i.z + cx,
   fy·q_i.y/q_i.z + cy).
3. Hull (on detached values): the directed edge i→j (v_i ≠ v_j) belongs to the hull iff every other point v_k lies
   strictly to its left, cross(v_j − v_i, v_k − v_i) > 0, or on the segment (cross = 0 and 0 <= t <= 1 for
   v_k = v_i + t (v_j − v_i)); of points with equal images only the lowest index is an endpoint. This is the edge
   set of Andrew's monotone chain that drops collinear points, in counter-clockwise order (the C++ projection
   builds it that way). Fewer than 3 edges: culled.
4. Lines of the edges, in order of the angle of their normal: n = (v_j.y − v_i.y, −(v_j.x − v_i.x)),
   b = −n·v_i, so d(p) = n·p + b is negative inside (checked by a test) and |n| is the edge length in pixels.
5. Payload [C,N,29]: (n.x, n.y, b) of up to 8 edges (zeros past the count), then a = z·δ, s = z·σ, the edge count,
   and the half extents (ext_x, ext_y) of the screen region the kernel can reach at opacity 1 (below).
6. Kernel at pixel centre p: φ = LSE_k(a·d_k(p)) = a·m + log Σ_k exp(a·(d_k(p) − m)), m = max_k d_k(p) (the shift
   carries no gradient; φ is the same function), C(p) = sigmoid(−s·φ); α = min(ALPHA_MAX, opacity·C), skipped if
   α < ALPHA_MIN, then the 3DGS stop rule, as for 3D Gaussians (``reference.py`` step 8).
7. Reach: C >= ALPHA_MIN needs s·φ <= log(1/ALPHA_MIN − 1) and φ >= a·max_k d_k, so every pixel the kernel can
   composite lies in the polygon {d_k <= τ for all k}, τ = log(254)/(a·s): the hull with each edge moved out by
   τ/|n_k| pixels. Its corners are the intersections of consecutive moved lines (in angle order); ext_x, ext_y
   = the largest |corner − means2d| per axis, the radius r = ceil(max(ext_x, ext_y)); culled if r > RADIUS_CULL
   (10⁴ px, as 3DCS) or, as for every primitive, r <= radius_clip or the box misses the image.
8. No normal map (a convex has no single normal); rgb, alpha, depth_exp, depth_median and the distortion maps as for
   3D Gaussians with the centre depth z. SH colours are evaluated at μ.

Gradients reach the points, δ, σ, opacities and colours. means2d carries no kernel gradient (the kernel reads the
lines, not the centre); 3DCS densification reads ∂L/∂σ instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .outputs import ALPHA_MAX, ALPHA_MIN
from .projection import Footprint, camera_space, screen_footprint
from .settings import RasterSettings

__all__ = [
    "EDGES_MAX",
    "PAYLOAD_SIZE",
    "ConvexProjection",
    "project_convexes",
    "convex_kernel",
    "convex_alpha",
    "hull_edges",
]

EDGES_MAX = 8  # hull edges per convex the kernel reads (3DCS MAX_NB_POINTS)
PAYLOAD_SIZE = 3 * EDGES_MAX + 5  # lines, a, s, count, ext_x, ext_y
_A, _S, _COUNT, _EXT_X, _EXT_Y = (
    3 * EDGES_MAX,
    3 * EDGES_MAX + 1,
    3 * EDGES_MAX + 2,
    3 * EDGES_MAX + 3,
    3 * EDGES_MAX + 4,
)
RADIUS_CULL = 1e4  # convexes whose screen radius exceeds this are culled (3DCS)
REACH = math.log(1.0 / ALPHA_MIN - 1.0)  # s·φ at which C = ALPHA_MIN


@dataclass(kw_only=True)
class ConvexProjection(Footprint):
    """Screen-space footprint of N convexes in C cameras."""

    payload: Tensor  # [C,N,PAYLOAD_SIZE], step 5 of the module docstring
    hull_count: Tensor  # [C,N] int64 hull edges (0 where degenerate or culled)


@torch.no_grad()
def hull_edges(v: Tensor) -> Tensor:
    """[..., K, K] bool: whether the directed edge i→j of the points v [..., K, 2] is a hull edge (step 3)."""
    K = v.shape[-2]
    e = v[..., None, :, :] - v[..., :, None, :]  # [...,i,j,2] v_j − v_i
    w = v[..., None, None, :, :] - v[..., :, None, None, :]  # [...,i,1,k,2] v_k − v_i
    cross = e[..., :, :, None, 0] * w[..., 1] - e[..., :, :, None, 1] * w[..., 0]  # [...,i,j,k]
    dot = e[..., :, :, None, 0] * w[..., 0] + e[..., :, :, None, 1] * w[..., 1]
    len2 = (e * e).sum(-1)[..., None]  # [...,i,j,1]
    on_segment = (cross == 0) & (dot >= 0) & (dot <= len2)
    left = (cross > 0) | on_segment
    edge = left.all(-1) & (len2[..., 0] > 0)
    same = (v[..., :, None, :] == v[..., None, :, :]).all(-1)  # [...,i,k]
    lower = torch.ones(K, K, dtype=torch.bool, device=v.device).tril(-1)  # k < i
    duplicate = (same & lower).any(-1)  # an equal point with a lower index exists
    endpoint = ~duplicate
    return edge & endpoint[..., :, None] & endpoint[..., None, :]


def project_convexes(
    points: Tensor,
    delta: Tensor,
    sigma: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    with_normals: bool = False,
) -> ConvexProjection:
    """Project N convexes (points [N,K,3], δ [N], σ [N], activated) into C pinhole cameras: steps 1-5 and 7.

    Values are differentiable w.r.t. points, δ and σ; every discrete decision (hull, culling, radius, tiles) is
    taken on detached values. viewmats and Ks are constants. ``with_normals`` must be False (no normal map).
    """
    if with_normals:
        raise ValueError("convexes render no normal map")
    N, K = points.shape[0], points.shape[1]
    if points.dim() != 3 or points.shape[-1] != 3 or not 3 <= K <= EDGES_MAX:
        raise ValueError(f"points must be [N,K,3] with 3 <= K <= {EDGES_MAX}, got {tuple(points.shape)}")
    # 1. the centre
    mu = points.mean(1)
    R, fx, fy, cx, cy, p, z, in_range, z_safe = camera_space(mu, viewmats, Ks, settings)
    mx = fx * p[..., 0] / z_safe + cx
    my = fy * p[..., 1] / z_safe + cy
    C = R.shape[0]
    # 2. every point
    t = viewmats[:, :3, 3].detach().to(points.dtype)
    q = torch.einsum("cij,nkj->cnki", R, points) + t[:, None, None, :]  # [C,N,K,3]
    qz_ok = (q[..., 2] >= settings.near_plane).all(-1)
    qz = torch.where(qz_ok[..., None], q[..., 2], torch.ones_like(q[..., 2]))
    v = torch.stack(
        [fx[..., None] * q[..., 0] / qz + cx[..., None], fy[..., None] * q[..., 1] / qz + cy[..., None]], -1
    )
    # 3. hull edges, 4. lines in angle order
    with torch.no_grad():
        vd = torch.where((in_range & qz_ok)[..., None, None], v.detach(), torch.zeros_like(v))
        is_edge = hull_edges(vd).reshape(C, N, K * K)
        count = is_edge.sum(-1)
        ii = torch.arange(K, device=points.device).repeat_interleave(K)
        jj = torch.arange(K, device=points.device).repeat(K)
        ed = vd[..., jj, :] - vd[..., ii, :]  # [C,N,K*K,2]
        angle = torch.atan2(-ed[..., 0], ed[..., 1])  # angle of the normal (e.y, −e.x)
        key = torch.where(is_edge, angle, torch.full_like(angle, math.inf))
        order = torch.sort(key, dim=-1, stable=True).indices[..., :EDGES_MAX]  # [C,N,E]
        valid = torch.arange(EDGES_MAX, device=points.device) < count[..., None].clamp(max=EDGES_MAX)
    pi = torch.gather(v, 2, ii[order][..., None].expand(-1, -1, -1, 2))  # [C,N,E,2]
    pj = torch.gather(v, 2, jj[order][..., None].expand(-1, -1, -1, 2))
    nx = pj[..., 1] - pi[..., 1]
    ny = -(pj[..., 0] - pi[..., 0])
    b = -(nx * pi[..., 0] + ny * pi[..., 1])
    zero = torch.zeros_like(nx)
    lines = torch.stack(
        [torch.where(valid, nx, zero), torch.where(valid, ny, zero), torch.where(valid, b, zero)], -1
    )
    a = z * delta[None, :]
    s = z * sigma[None, :]
    # 7. reach of the kernel and the radius
    with torch.no_grad():
        ext_x, ext_y = _reach(lines.detach(), valid, a.detach() * s.detach(), mx.detach(), my.detach())
        ok = (
            in_range
            & qz_ok
            & (count >= 3)
            & (count <= EDGES_MAX)
            & torch.isfinite(ext_x)
            & torch.isfinite(ext_y)
        )
        r = torch.ceil(torch.maximum(ext_x, ext_y))
        ok = ok & (r <= RADIUS_CULL)
        r = torch.where(ok, r, torch.zeros_like(r))
        zn = torch.zeros_like(ext_x)
        ext = torch.stack([torch.where(ok, ext_x, zn), torch.where(ok, ext_y, zn)], -1)
    means2d, radii, visible, tile_min, tile_max, tw, th = screen_footprint(mx, my, r, ok, settings)
    meta = torch.cat([a[..., None], s[..., None], count.clamp(max=EDGES_MAX).to(a.dtype)[..., None], ext], -1)
    payload = torch.cat([lines.reshape(C, N, 3 * EDGES_MAX), meta], -1)
    payload = torch.where(visible[..., None], payload, torch.zeros_like(payload))
    return ConvexProjection(
        means2d=means2d,
        payload=payload,
        depths=z,
        radii=radii,
        visible=visible,
        tile_min=tile_min,
        tile_max=tile_max,
        tile_width=tw,
        tile_height=th,
        hull_count=torch.where(visible, count, torch.zeros_like(count)),
    )


def _reach(lines: Tensor, valid: Tensor, as_: Tensor, mx: Tensor, my: Tensor) -> tuple[Tensor, Tensor]:
    """(ext_x, ext_y): half extents around (mx, my) of the hull moved out by τ = REACH/(a·s) (step 7); +inf where
    two consecutive lines are parallel or τ is not finite. Lines come in angle order; the last valid one pairs with
    the first."""
    nx, ny, b = lines.unbind(-1)
    tau = REACH / as_.clamp_min(1e-30)
    count = valid.sum(-1, keepdim=True).clamp_min(1)
    nxt = (torch.arange(lines.shape[-2], device=lines.device) + 1) % count  # index of the next valid line
    nx2, ny2, b2 = (torch.gather(x, -1, nxt) for x in (nx, ny, b))
    det = nx * ny2 - ny * nx2
    r1 = tau[..., None] - b
    r2 = tau[..., None] - b2
    det_safe = torch.where(det != 0, det, torch.ones_like(det))
    x = (r1 * ny2 - ny * r2) / det_safe
    y = (nx * r2 - r1 * nx2) / det_safe
    bad = (det == 0) & valid
    dx = torch.where(valid, (x - mx[..., None]).abs(), torch.zeros_like(x))
    dy = torch.where(valid, (y - my[..., None]).abs(), torch.zeros_like(y))
    inf = torch.full_like(mx, math.inf)
    ext_x = torch.where(bad.any(-1), inf, dx.amax(-1))
    ext_y = torch.where(bad.any(-1), inf, dy.amax(-1))
    return ext_x, ext_y


def convex_kernel(payload: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """C(p) of convexes at pixel centres (step 6): ``payload`` [..., PAYLOAD_SIZE] broadcast with ``px``/``py``."""
    lines = payload[..., : 3 * EDGES_MAX].unflatten(-1, (EDGES_MAX, 3))
    a, s, count = payload[..., _A], payload[..., _S], payload[..., _COUNT]
    d = lines[..., 0] * px[..., None] + lines[..., 1] * py[..., None] + lines[..., 2]  # [...,E]
    valid = torch.arange(EDGES_MAX, device=payload.device) < count[..., None]
    with torch.no_grad():
        m = torch.where(valid, d, torch.full_like(d, -math.inf)).amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    # invalid lines enter exp with a zero argument, so their (discarded) branch has finite gradients
    shifted = torch.where(valid, d - m, torch.zeros_like(d))
    terms = torch.where(valid, torch.exp(a[..., None] * shifted), torch.zeros_like(d))
    # the clamp only matters for padding entries (no valid line, sum 0); 1e-30 is a normal float32, 1e-300 is 0
    phi = a * m[..., 0] + torch.log(terms.sum(-1).clamp_min(1e-30))
    return torch.sigmoid(-s * phi)


def convex_alpha(
    m2d: Tensor, payload: Tensor, depths: Tensor, opac: Tensor, entry_ok: Tensor, px: Tensor, py: Tensor
) -> tuple[Tensor, None]:
    """(α [t,P,K], None) of K convexes at P pixel centres; 0 where skipped (α < ALPHA_MIN, padding). ``m2d`` and
    ``depths`` are not read: the payload holds the lines and z·δ, z·σ; maps use the centre depth."""
    k = convex_kernel(payload.unsqueeze(1), px[..., None], py[..., None])  # [t,P,K]
    alpha = torch.clamp(opac.unsqueeze(1) * k, max=ALPHA_MAX)
    ok = (alpha >= ALPHA_MIN) & entry_ok.unsqueeze(1) & (payload[..., _COUNT] >= 3).unsqueeze(1)
    return torch.where(ok, alpha, torch.zeros_like(alpha)), None
