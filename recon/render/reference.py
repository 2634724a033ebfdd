"""Pure-PyTorch tile rasterizer with autograd: the oracle every other backend is tested against.

Exact semantics (the ``cpu`` C++ backend implements the same, so both agree to float rounding). Per camera c and
Gaussian n:

1. Camera space p = R·mean + t (R, t from viewmats[c]); z = p.z. Culled (radius 0, contributes nothing) if
   z < near_plane or z > far_plane.
2. Rq from the normalised quaternion q/|q| = (w,x,y,z); Σ = Rq·diag(s)²·Rqᵀ; Σc = R·Σ·Rᵀ.
3. Jacobian with gsplat's clamp: tan_fovx = 0.5·W/fx, tan_fovy = 0.5·H/fy; lim_x_pos = (W − cx)/fx + 0.3·tan_fovx,
   lim_x_neg = cx/fx + 0.3·tan_fovx (y likewise with H, cy, fy); tx = z·clamp(p.x/z, −lim_x_neg, lim_x_pos), ty
   likewise; J = [[fx/z, 0, −fx·tx/z²], [0, fy/z, −fy·ty/z²]] (no gradient through the clamp where it clamps).
4. Σ2D = J·Σc·Jᵀ + eps2d·I = [[a, b], [b, c]]; det = a·c − b², culled if det <= 0; conic = (c, −b, a)/det.
5. means2d = (fx·p.x/z + cx, fy·p.y/z + cy), unclamped. Pixel (col i, row j) has centre (i + 0.5, j + 0.5).
6. mid = (a + c)/2, λmax = mid + sqrt(max(0.1, mid² − det)), r = ceil(3·sqrt(λmax)). Culled if r <= radius_clip
   or the box misses the image (mx + r <= 0, mx − r >= W, my + r <= 0 or my − r >= H).
   info["radii"] = (r, r) as int32 [C,N,2], 0 where culled; info["means2d"] is 0 where culled.
7. Tiles of size T, grid TW = ceil(W/T) × TH = ceil(H/T); a Gaussian covers tiles
   x in [clamp(floor((mx − r)/T), 0, TW), clamp(ceil((mx + r)/T), 0, TW)), y likewise with my, TH.
   Within a tile, Gaussians are composited in increasing z, ties by increasing index n.
8. Per pixel, front to back over its tile's list, T = 1: d = means2d − pixel centre;
   σ = ½(conic_a·dx² + conic_c·dy²) + conic_b·dx·dy; skip if σ < 0; α = min(ALPHA_MAX, opacity·exp(−σ));
   skip if α < ALPHA_MIN; next_T = T·(1 − α); if next_T <= T_EPS stop the pixel WITHOUT compositing this
   Gaussian; otherwise w = α·T, accumulate, T = next_T.
9. rgb = Σ w·color + T_final·background (0 if None); alpha = 1 − T_final; depth_exp = Σ w·z;
   depth_median = z of the last composited Gaussian whose T before it was > 0.5 (0 if none; gradient only into
   that z); normal = Σ w·n, n = column of Rc·Rq for the smallest scale (argmin, first on ties, no gradient through
   the choice), negated where n·p > 0 so it faces the camera; distort_l1 = Σ_i 2·w_i·(z_i·A_i − S_i),
   A_i = Σ_{j<i} w_j, S_i = Σ_{j<i} w_j·z_j; distort_ndc2 = Σ_i w_i·(m_i²·A_i + M2_i − 2·m_i·M1_i),
   m = NDC_FAR/(NDC_FAR − NDC_NEAR)·(1 − NDC_NEAR/z), sums over composited Gaussians with z >= NDC_NEAR only
   (the others still composite for every other map).
10. colors [N,D] / [C,N,D] are used as is when sh_degree is None; otherwise they are SH coefficients [N,K,3] /
    [C,N,K,3] and colour = clamp_min(SH(normalise(mean − campos)) + 0.5, 0) (``sh.colors_from_sh``).
11. info: means2d [C,N,2] (grad retained; ``.absgrad`` = Σ over pixels of |per-pixel dL/dmeans2d| when
    absgrad=True), radii int32 [C,N,2], depths [C,N], width, height, n_cameras, tile_size, tile_width,
    tile_height, n_isects, gaussian_ids (None: unpacked layout, as gsplat's strategies expect).

Gradients flow to means, quats, scales, opacities, colors (or SH coefficients) and backgrounds. viewmats and Ks are
constants: camera-pose and intrinsics gradients are not supported.

Other primitives (``primitives.py``; 2D Gaussian surfels, ``surfels.py``) replace steps 1-6 and 8's kernel with
their own projection and kernel (for surfels: radius, ray-splat kernel with the low-pass, per-pixel depth z_p in
every depth map); tiles, sorting, thresholds, compositing and every other map are the steps above, unchanged.

How: per tile, gather the depth-sorted intersecting Gaussians, pad to the chunk's largest list, evaluate all tile
pixels × K entries at once, and take the exclusive cumulative product of (1 − α) with the thresholds applied as
masks, so autograd differentiates exactly the thresholded function. A no-grad pre-pass finds, per chunk of tiles,
how far down the lists any pixel still composites, so saturated tails never enter the autograd graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .outputs import NDC_FAR, NDC_NEAR, T_EPS, RenderOutputs
from .primitives import RasterPrimitive, get_primitive
from .projection import Footprint, TileBins, bin_tiles
from .settings import RasterSettings, RenderRequest, Splats
from .sh import colors_from_sh

__all__ = ["rasterize_reference", "pixel_contributions", "first_and_last"]

# Pixel × list-entry pairs evaluated at once; bounds the transient memory of one chunk of tiles.
_CHUNK_PAIRS = 1 << 22


@dataclass
class _Scene:
    """Everything the compositor needs, flattened over cameras (index c*N + n)."""

    proj: Footprint  # projection.Projection or surfels.SurfelProjection
    bins: TileBins
    primitive: RasterPrimitive
    means2d: Tensor  # [C*N,2]
    payload: Tensor  # [C*N,P]: the conic (P = 3) or the surfel's (K a_u, K a_v) (P = 6)
    opacities: Tensor  # [C*N]
    depths: Tensor  # [C*N]
    colors: Tensor | None  # [C*N,D]
    normals: Tensor | None  # [C*N,3]


def _prepare(
    splats: Splats,
    colors: Tensor | None,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    sh_degree: int | None,
    want_normals: bool,
    primitive: str = "gaussian3d",
) -> _Scene:
    """Project, bin and flatten; ``colors`` None means no colour map is wanted (``splats.colors`` is not read)."""
    means, opacities = splats.means, splats.opacities
    C, N = viewmats.shape[0], means.shape[0]
    if opacities.shape != (N,):
        raise ValueError(f"opacities must be [N] (N={N}), got {tuple(opacities.shape)}")
    prim = get_primitive(primitive)
    if want_normals and not prim.normals:
        raise ValueError(f"primitive {primitive!r} renders no normal map")
    proj = prim.project_reference(*prim.geometry(splats), viewmats, Ks, settings, want_normals)
    payload = proj.payload
    bins = bin_tiles(proj)
    cols = None
    if colors is not None:
        if sh_degree is None:
            if colors.dim() == 2:
                colors = colors.unsqueeze(0).expand(C, *colors.shape)
            if colors.dim() != 3 or colors.shape[:2] != (C, N):
                raise ValueError(f"colors must be [N,D] or [C,N,D] (N={N}, C={C}), got {tuple(colors.shape)}")
        else:
            colors = colors_from_sh(sh_degree, colors, means, viewmats)
        cols = colors.reshape(C * N, colors.shape[-1])
    return _Scene(
        proj=proj,
        bins=bins,
        primitive=prim,
        means2d=proj.means2d.reshape(C * N, 2),
        payload=payload.reshape(C * N, payload.shape[-1]),
        opacities=opacities.unsqueeze(0).expand(C, N).reshape(C * N),
        depths=proj.depths.reshape(C * N),
        colors=cols,
        normals=None if proj.normals is None else proj.normals.reshape(C * N, 3),
    )


def _chunks(counts: Tensor, pixels: int) -> list[Tensor]:
    """Non-empty tiles grouped by similar list length so padding stays small and each chunk fits the budget."""
    tiles = torch.nonzero(counts > 0).squeeze(1)
    tiles = tiles[torch.argsort(counts[tiles], stable=True)]
    lengths = counts[tiles].tolist()
    out, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or (i + 1 - start) * pixels * lengths[i] > _CHUNK_PAIRS:
            out.append(tiles[start:i])
            start = i
    return [t for t in out if t.numel() > 0]


def _excl_cumsum(x: Tensor) -> Tensor:
    """Σ_{j<i} x_j along the last axis, without the cancellation of cumsum(x) − x."""
    return torch.cat([torch.zeros_like(x[..., :1]), torch.cumsum(x, -1)[..., :-1]], dim=-1)


def _composited(alpha: Tensor) -> Tensor:
    """Which entries a pixel composites: non-skipped ones before the first whose next T would reach T_EPS."""
    t_incl = torch.cumprod(1.0 - alpha, dim=-1)
    return (alpha > 0) & (t_incl > T_EPS)


class _Chunk:
    """One group of tiles: their pixel centres and padded, depth-sorted Gaussian lists."""

    def __init__(self, scene: _Scene, tiles: Tensor, tile_size: int):
        proj, bins = scene.proj, scene.bins
        tw, th = proj.tile_width, proj.tile_height
        self.tiles = tiles
        counts = bins.tile_counts[tiles]
        k = int(counts.max())
        pos = torch.arange(k, device=tiles.device)
        self.entry_ok = pos[None, :] < counts[:, None]  # [t,K]
        where = (bins.tile_offsets[tiles][:, None] + pos[None, :]).clamp_max(
            max(bins.flat_ids.numel() - 1, 0)
        )
        self.ids = torch.where(self.entry_ok, bins.flat_ids[where], torch.zeros_like(where))  # [t,K] flat ids
        rem = tiles % (tw * th)
        local = torch.arange(tile_size * tile_size, device=tiles.device)
        dtype = scene.means2d.dtype
        self.px = ((rem % tw)[:, None] * tile_size + local[None, :] % tile_size).to(dtype) + 0.5  # [t,P]
        self.py = ((rem // tw)[:, None] * tile_size + local[None, :] // tile_size).to(dtype) + 0.5

    def truncate(self, scene: _Scene) -> None:
        """Drop list entries past the point where every pixel of the chunk has stopped (no-grad pre-pass)."""
        with torch.no_grad():
            alpha, _ = self.alpha(scene)
            keep = _composited(alpha)
            pos = torch.arange(1, keep.shape[-1] + 1, device=keep.device)
            k = int((keep * pos).amax()) if keep.numel() else 0
        self.ids, self.entry_ok = self.ids[:, :k], self.entry_ok[:, :k]

    def alpha(self, scene: _Scene, means2d: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(α [t,P,K], per-pixel depth z_p [t,P,K] for surfels or None: Gaussians composite their centre z)."""
        m2d = scene.means2d[self.ids] if means2d is None else means2d
        opac = scene.opacities[self.ids]
        return scene.primitive.alpha_reference(
            m2d, scene.payload[self.ids], scene.depths[self.ids], opac, self.entry_ok, self.px, self.py
        )


def _composite_chunk(scene: _Scene, chunk: _Chunk, wanted: Sequence[str], absgrad_buf: Tensor | None) -> dict:
    """Per-pixel maps of one chunk ([t,P,·] each) plus T_final and the per-pair weights; needs K >= 1."""
    m2d = scene.means2d[chunk.ids]  # [t,K,2]
    if absgrad_buf is not None and m2d.requires_grad:
        # A per-pixel copy of each centre, so its gradient is the per-pixel dL/dmeans2d before the sum.
        m2d = m2d.unsqueeze(1).expand(-1, chunk.px.shape[1], -1, -1)
        ids = chunk.ids.reshape(-1)

        def _accumulate_abs(grad: Tensor) -> None:
            absgrad_buf.index_add_(0, ids, grad.abs().sum(1).reshape(-1, 2).to(absgrad_buf.dtype))

        m2d.register_hook(_accumulate_abs)
    alpha, zp = chunk.alpha(scene, m2d)

    keep = _composited(alpha.detach())
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    t_incl = torch.cumprod(1.0 - alpha, dim=-1)
    t_before = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
    w = alpha * t_before  # [t,P,K]
    t_final = t_incl[..., -1:]

    out: dict = {"t_final": t_final, "w": w, "keep": keep, "zp": zp}
    # Depth of each pair: a Gaussian's centre z [t,K] (broadcast over pixels), a surfel's per-pixel z_p [t,P,K].
    z = scene.depths[chunk.ids] if zp is None else None
    if "rgb" in wanted:
        out["rgb"] = torch.bmm(w, scene.colors[chunk.ids])
    if "depth_exp" in wanted:
        out["depth_exp"] = torch.bmm(w, z.unsqueeze(-1)) if zp is None else (w * zp).sum(-1, keepdim=True)
    if "depth_median" in wanted:
        with torch.no_grad():
            cand = keep & (t_before > 0.5)
            pos = torch.arange(1, w.shape[-1] + 1, device=w.device)
            last = (cand * pos).amax(-1, keepdim=True)  # 1-based position of the median entry, 0 = none
        med = torch.gather(z.unsqueeze(1).expand_as(w) if zp is None else zp, -1, (last - 1).clamp_min(0))
        out["depth_median"] = torch.where(last > 0, med, torch.zeros_like(med))
    if "normal" in wanted:
        out["normal"] = torch.bmm(w, scene.normals[chunk.ids])
    if "distort_l1" in wanted:
        zb = z.unsqueeze(1) if zp is None else zp
        acc_w, acc_wz = _excl_cumsum(w), _excl_cumsum(w * zb)
        out["distort_l1"] = (2.0 * w * (zb * acc_w - acc_wz)).sum(-1, keepdim=True)
    if "distort_ndc2" in wanted:
        if zp is None:
            inc, m = _ndc_depth(z)
            inc, m = inc.unsqueeze(1), m.unsqueeze(1)  # [t,1,K]
        else:
            inc, m = _ndc_depth(zp)  # [t,P,K]: the NDC_NEAR test is per pixel
        wi = torch.where(inc, w, torch.zeros_like(w))
        a, m1, m2 = _excl_cumsum(wi), _excl_cumsum(wi * m), _excl_cumsum(wi * m * m)
        out["distort_ndc2"] = (wi * (m * m * a + m2 - 2.0 * m * m1)).sum(-1, keepdim=True)
    return out


def _ndc_depth(z: Tensor) -> tuple[Tensor, Tensor]:
    """(z >= NDC_NEAR, m) with m = NDC_FAR/(NDC_FAR − NDC_NEAR)·(1 − NDC_NEAR/z) there and 0 elsewhere."""
    inc = z >= NDC_NEAR
    z_safe = torch.where(inc, z, torch.ones_like(z))
    m = torch.where(inc, NDC_FAR / (NDC_FAR - NDC_NEAR) * (1.0 - NDC_NEAR / z_safe), torch.zeros_like(z))
    return inc, m


def _to_images(tile_values: Tensor, C: int, th: int, tw: int, T: int, H: int, W: int) -> Tensor:
    """[C*TH*TW, T*T, D] per-tile pixels -> [C,H,W,D] images."""
    D = tile_values.shape[-1]
    img = tile_values.reshape(C, th, tw, T, T, D).permute(0, 1, 3, 2, 4, 5).reshape(C, th * T, tw * T, D)
    return img[:, :H, :W]


def _run(
    scene: _Scene, wanted: tuple[str, ...], tile_size: int, absgrad_buf: Tensor | None, keep_pairs: bool
):
    """Composite every chunk; returns per-tile value tensors [C*TH*TW, P, ·] and, optionally, per-pair data."""
    n_tiles = scene.bins.tile_counts.numel()
    P = tile_size * tile_size
    dtype = scene.means2d.dtype
    device = scene.means2d.device
    pieces: dict[str, list[Tensor]] = {}
    tiles_done: list[Tensor] = []
    pairs = []
    for tiles in _chunks(scene.bins.tile_counts, P):
        chunk = _Chunk(scene, tiles, tile_size)
        chunk.truncate(scene)
        if chunk.ids.shape[1] == 0:
            continue  # no pixel of these tiles composites anything: the defaults (T = 1, maps 0) hold
        if torch.is_grad_enabled() and not keep_pairs:
            # Recompute the chunk in backward instead of storing its per-pair intermediates.
            res = checkpoint(_composite_chunk, scene, chunk, wanted, absgrad_buf, use_reentrant=False)
        else:
            res = _composite_chunk(scene, chunk, wanted, absgrad_buf)
        tiles_done.append(tiles)
        for name in ("t_final", *wanted):
            if name != "alpha":
                pieces.setdefault(name, []).append(res[name])
        if keep_pairs:
            zp = None if res["zp"] is None else res["zp"].detach()
            pairs.append((tiles, chunk.ids, res["w"].detach(), res["keep"], zp))

    idx = torch.cat(tiles_done) if tiles_done else torch.zeros(0, dtype=torch.long, device=device)
    values: dict[str, Tensor] = {}
    for name in ("t_final", *wanted):
        if name == "alpha":
            continue
        d = {"rgb": 0 if scene.colors is None else scene.colors.shape[-1], "normal": 3}.get(name, 1)
        fill = torch.ones if name == "t_final" else torch.zeros
        values[name] = fill((n_tiles, P, d), dtype=dtype, device=device)
        if pieces.get(name):
            values[name] = values[name].index_put((idx,), torch.cat(pieces[name]))
    return values, pairs


def _check_args(viewmats: Tensor, Ks: Tensor, backgrounds) -> None:
    if viewmats.shape[1:] != (4, 4) or Ks.shape[1:] != (3, 3) or viewmats.shape[0] != Ks.shape[0]:
        raise ValueError(
            f"viewmats must be [C,4,4] and Ks [C,3,3], got {tuple(viewmats.shape)}, {tuple(Ks.shape)}"
        )
    if backgrounds is not None and (backgrounds.dim() != 2 or backgrounds.shape[0] != viewmats.shape[0]):
        raise ValueError(f"backgrounds must be [C,D], got {tuple(backgrounds.shape)}")


def rasterize_reference(
    splats: Splats, viewmats: Tensor, Ks: Tensor, settings: RasterSettings, request: RenderRequest
) -> tuple[RenderOutputs, dict]:
    """Render the maps named in ``outputs`` for C cameras; see the module docstring for the exact semantics
    (and ``primitives.py`` for the other primitives).

    Gradients reach means, quats, scales, opacities, colors/SH and backgrounds, not viewmats or Ks.
    """
    means, colors = splats.means, splats.colors
    outputs, sh_degree, backgrounds, absgrad, primitive = request
    _check_args(viewmats, Ks, backgrounds)
    wanted = tuple(outputs)
    C, N, H, W, T = viewmats.shape[0], means.shape[0], settings.height, settings.width, settings.tile_size
    scene = _prepare(
        splats, colors if "rgb" in wanted else None, viewmats, Ks, settings, sh_degree,
        want_normals="normal" in wanted, primitive=primitive,
    )  # fmt: skip
    means2d = scene.proj.means2d
    if means2d.requires_grad:
        means2d.retain_grad()
    absgrad_buf = None
    if absgrad and means2d.requires_grad:
        means2d.absgrad = torch.zeros_like(means2d.detach())
        absgrad_buf = means2d.absgrad.view(C * N, 2)

    values, _ = _run(scene, wanted, T, absgrad_buf, keep_pairs=False)
    th, tw = scene.proj.tile_height, scene.proj.tile_width
    t_final = _to_images(values["t_final"], C, th, tw, T, H, W)
    maps: dict[str, Tensor] = {}
    for name in wanted:
        if name == "alpha":
            maps[name] = 1.0 - t_final
        elif name == "rgb":
            rgb = _to_images(values["rgb"], C, th, tw, T, H, W)
            if backgrounds is not None:
                rgb = rgb + t_final * backgrounds.to(rgb.dtype)[:, None, None, :]
            maps[name] = rgb
        else:
            maps[name] = _to_images(values[name], C, th, tw, T, H, W)

    radii = scene.proj.radii
    info = {
        "means2d": means2d,
        "radii": torch.stack([radii, radii], dim=-1),
        "depths": scene.proj.depths,
        "width": W,
        "height": H,
        "n_cameras": C,
        "tile_size": T,
        "tile_width": tw,
        "tile_height": th,
        "n_isects": int(scene.bins.flat_ids.numel()),
        "gaussian_ids": None,
    }
    return RenderOutputs(**maps), info


@torch.no_grad()
def pixel_contributions(
    splats: Splats,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    primitive: str = "gaussian3d",
) -> tuple[Tensor, Tensor, Tensor]:
    """Debug view of step 8: per pixel, the composited primitives in compositing order.

    Returns (ids [C,H,W,K] int64, −1 past the end; w [C,H,W,K]; z [C,H,W,K]) with K the longest list; entries that
    were skipped or came after the stop are left out, so brute-force sums over w and z reproduce the maps (z is a
    surfel's per-pixel depth z_p, a Gaussian's centre depth).
    """
    means = splats.means
    C, N, H, W, T = viewmats.shape[0], means.shape[0], settings.height, settings.width, settings.tile_size
    scene = _prepare(
        splats,
        None,
        viewmats,
        Ks,
        settings,
        None,
        want_normals=False,
        primitive=primitive,
    )
    _, pairs = _run(scene, (), T, None, keep_pairs=True)
    th, tw = scene.proj.tile_height, scene.proj.tile_width
    P = T * T
    k_max = max((int(keep.sum(-1).max()) for _, _, _, keep, _ in pairs if keep.numel()), default=0)
    n_tiles = scene.bins.tile_counts.numel()
    ids = torch.full((n_tiles, P, k_max), -1, dtype=torch.long, device=means.device)
    w_all = torch.zeros((n_tiles, P, k_max), dtype=means.dtype, device=means.device)
    z_all = torch.zeros_like(w_all)
    depths = scene.depths.detach()
    for tiles, flat, w, keep, zp in pairs:
        slot = torch.cumsum(keep.long(), -1) - 1  # position of each kept entry in its pixel's list
        t_i, p_i, k_i = torch.nonzero(keep, as_tuple=True)
        s_i = slot[t_i, p_i, k_i]
        g = flat[t_i, k_i]
        ids[tiles[t_i], p_i, s_i] = g % max(N, 1)
        w_all[tiles[t_i], p_i, s_i] = w[t_i, p_i, k_i]
        z_all[tiles[t_i], p_i, s_i] = depths[g] if zp is None else zp[t_i, p_i, k_i]
    return tuple(_to_images(x, C, th, tw, T, H, W) for x in (ids, w_all, z_all))


def first_and_last(ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(first, last) [C,H,W,k]: the first and the last k entries of each pixel's list of ``pixel_contributions``
    ids, in compositing order, −1 where a pixel composites fewer (the reference of ``contributors``)."""
    C, H, W, L = ids.shape
    pad = torch.full((C, H, W, k), -1, dtype=torch.long, device=ids.device)
    if L == 0:
        return pad, pad.clone()
    first = torch.cat([ids, pad], -1)[..., :k]
    count = (ids >= 0).sum(-1, keepdim=True)  # composited entries come first, then −1 padding
    pos = count - k + torch.arange(k, device=ids.device)  # the last k positions, oldest first
    last = torch.gather(ids, -1, pos.clamp(0, L - 1))
    return first, torch.where(pos >= 0, last, pad)
