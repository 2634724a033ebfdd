"""The ``cpu`` backend: C++/OpenMP kernels (``csrc/``) with hand-written backward, wrapped as autograd Functions.

Three Functions make the graph, so each kernel's backward stays small and testable:

- the primitive's projection (``cpu_projection.py``, chosen by its ``RasterPrimitive`` descriptor): means, quats,
  scales -> means2d, the kernel's payload, depths, camera-space normals, radii;
- ``_ShColors``: means, SH coefficients -> per-camera colours (degree 0..3);
- ``_Rasterize``: tile compositing of the features (colour, plus depth / normal channels when asked) with the
  3DGS thresholds, and the median-depth and distortion maps accumulated in the same per-pixel loop.

``_Rasterize`` passes the descriptor's kernel id to the C++ compositor, which runs that primitive's kernel policy
on the payload (a Gaussian's conic [C,N,3], a surfel's axes [C,N,6], a convex's hull lines and constants
[C,N,29]). Tiles are binned by the projection's radii, or, for primitives whose descriptor says
``bins_by_kernel`` (convexes), by the box the kernel reaches at each opacity (``rasterize_bin_radii``).

Gradients reach means, quats, scales, opacities, colours / SH coefficients and backgrounds. Camera-pose gradients
are not supported: ``viewmats`` and ``Ks`` are constants (detached). ``info["means2d"]`` is the autograd
intermediate between projection and compositing with ``retain_grad()`` called, so after backward ``.grad`` holds
dL/dmeans2d and, with ``absgrad=True``, ``.absgrad`` the sum over pixels of the per-pixel |dL/dmeans2d| (what
gsplat's densification strategies read).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._ext import load_ext
from .cpu_projection import grad_or_empty
from .outputs import ALPHA_MAX, ALPHA_MIN, NDC_FAR, NDC_NEAR, T_EPS, RenderOutputs
from .primitives import RasterPrimitive, get_primitive
from .settings import RasterSettings, RenderRequest, Splats

__all__ = ["rasterize_cpu", "contributors_cpu"]

_CONSTS = (ALPHA_MAX, ALPHA_MIN, T_EPS, NDC_NEAR, NDC_FAR)


class _ShColors(torch.autograd.Function):
    """clamp_min(SH(normalise(mean - campos)) + 0.5, 0) for every camera: [C,N,3]."""

    @staticmethod
    def forward(ctx, means, coeffs, viewmats, degree):
        ctx.save_for_backward(means, coeffs, viewmats)
        ctx.degree = degree
        return load_ext().sh_forward(degree, means, coeffs, viewmats)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_colors):
        means, coeffs, viewmats = ctx.saved_tensors
        d_means, d_coeffs = load_ext().sh_backward(ctx.degree, means, coeffs, viewmats, g_colors.contiguous())
        return d_means, d_coeffs, None, None


class _Rasterize(torch.autograd.Function):
    """Tile compositing; returns (depth, alpha, median depth, distort_l1, distort_ndc2, *feature groups) maps.

    ``payload`` is the kernel's per-primitive data, ``kernel_id`` the kernel that reads it (the primitive
    descriptor's). ``grid`` = (width, height, tile_size); ``flags`` = (depth, median, l1, ndc2); ``groups`` the
    channel counts the features [C,H,W,F] are split into, each returned contiguous (so a loss on one of them does
    not pay for slicing the others in its backward); ``bins`` the binning tensors; ``holder`` a dict whose
    "means2d" tensor receives ``.absgrad`` in the backward when "absgrad" is true.
    """

    @staticmethod
    def forward(
        ctx,
        means2d,
        payload,
        opacities,
        depths,
        features,
        backgrounds,
        bins,
        grid,
        flags,
        groups,
        holder,
        kernel_id,
    ):
        tile_offsets, ids, slot_pos, gauss_offsets = bins
        records = (means2d, payload, opacities, depths, features, backgrounds, tile_offsets, ids)
        feat, depth, alpha, T_final, last, med_idx, med, l1, ndc2, sums = load_ext().rasterize_forward(
            kernel_id, *records, *grid, *flags, *_CONSTS
        )
        ctx.save_for_backward(*records, slot_pos, gauss_offsets, T_final, last, med_idx, sums)
        ctx.grid = grid
        ctx.holder = holder
        ctx.kernel_id = kernel_id
        parts = feat.split(list(groups), dim=-1) if len(groups) > 1 else (feat,)
        return (depth, alpha, med, l1, ndc2, *(p.contiguous() for p in parts))

    @staticmethod
    @once_differentiable
    def backward(ctx, g_depth, g_alpha, g_med, g_l1, g_ndc2, *g_parts):
        *records, slot_pos, gauss_offsets, T_final, last, med_idx, sums = ctx.saved_tensors
        means2d, payload, _opacities, _depths, features, _backgrounds, _tile_offsets, _ids = records
        F = features.shape[-1]
        # Gradients are materialised (zeros for an unused group), so the groups concatenate back to [C,H,W,F].
        g_feat = (torch.cat(g_parts, dim=-1) if len(g_parts) > 1 else g_parts[0]).contiguous()
        maps = (grad_or_empty(g, features) for g in (g_depth, g_alpha, g_med, g_l1, g_ndc2))
        rows = load_ext().rasterize_backward(
            ctx.kernel_id, *records, slot_pos, gauss_offsets, *ctx.grid, T_final, last, med_idx, sums, g_feat,
            *maps, *_CONSTS,
        )  # fmt: skip
        P = payload.shape[-1]
        d_means2d = rows[..., 0:2]
        d_conics = rows[..., 2 : 2 + P]
        d_opac = rows[..., 2 + P]
        d_depths = rows[..., 3 + P]
        d_feat = rows[..., 4 + P : 4 + P + F]
        if ctx.holder.get("absgrad"):
            ctx.holder["means2d"].absgrad = rows[..., 4 + P + F : 6 + P + F].contiguous()
        # Elementwise, not einsum: einsum lowers to a BLAS bmm whose thread pool is slow to wake on small inputs.
        d_bg = (T_final.unsqueeze(-1) * g_feat).sum((1, 2)) if ctx.needs_input_grad[5] else None
        return d_means2d, d_conics, d_opac, d_depths, d_feat, d_bg, None, None, None, None, None, None


def _colors_per_camera(colors: Tensor, means: Tensor, viewmats: Tensor, sh_degree: int | None) -> Tensor:
    C, N = viewmats.shape[0], means.shape[0]
    if sh_degree is not None:
        if colors.dim() not in (3, 4) or colors.shape[-1] != 3 or colors.shape[-3] != N:
            raise ValueError(
                f"with sh_degree set, colors must be [N,K,3] or [C,N,K,3], got {tuple(colors.shape)}"
            )
        if colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(f"sh_degree {sh_degree} needs K >= {(sh_degree + 1) ** 2} coefficients")
        return _ShColors.apply(means, colors.contiguous(), viewmats, int(sh_degree))
    if colors.dim() == 2 and colors.shape[0] == N:
        return colors.unsqueeze(0).expand(C, N, colors.shape[1])
    if colors.dim() == 3 and colors.shape[:2] == (C, N):
        return colors
    raise ValueError(f"colors must be [N,D] or [C,N,D] when sh_degree is None, got {tuple(colors.shape)}")


def _project(
    prim: RasterPrimitive,
    splats: Splats,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    normals: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(means2d, payload, depths, normals, radii) of the primitive's C++ projection Function."""
    geometry = (t.contiguous() for t in prim.geometry(splats))
    return prim.project_cpu(*geometry, viewmats, Ks, settings.projection_tuple(), normals)


def _bins(
    ext, prim: RasterPrimitive, means2d, payload, opac, depths, radii, settings: RasterSettings
) -> tuple:
    """(tile_offsets, ids, slot_pos, gauss_offsets): the depth-sorted tile lists, by the projection's radii or, for
    primitives that ask (``bins_by_kernel``), by the box their kernel reaches at each opacity."""
    means2d, depths = means2d.detach(), depths.detach()
    if prim.bins_by_kernel:
        radii = ext.rasterize_bin_radii(
            prim.kernel_id, means2d, payload.detach(), opac.detach(), depths, radii, ALPHA_MIN
        )
    return tuple(
        ext.bin_primitives(
            means2d, radii, depths, settings.tile_size, settings.tile_width, settings.tile_height
        )
    )


def rasterize_cpu(
    splats: Splats, viewmats: Tensor, Ks: Tensor, settings: RasterSettings, request: RenderRequest
) -> tuple[RenderOutputs, dict]:
    """Render C views of N primitives on the CPU; same arguments and results as ``recon.render.rasterize``.

    Gradients flow to means, quats, scales, opacities, colors (or SH coefficients) and backgrounds; camera-pose
    gradients are not supported (viewmats and Ks are treated as constants). float32 and float64 both work (float64
    for gradcheck). Only the maps named in ``outputs`` are computed.
    """
    means, opacities, colors = splats.means, splats.opacities, splats.colors
    outputs, sh_degree, backgrounds, absgrad, primitive = request
    dtype = means.dtype
    C, N = viewmats.shape[0], means.shape[0]
    viewmats = viewmats.detach().to(dtype).contiguous()
    Ks = Ks.detach().to(dtype).contiguous()
    wanted = set(outputs)
    prim = get_primitive(primitive)
    width, height, tile_size = settings.width, settings.height, settings.tile_size
    # conics: the kernel payload (a Gaussian's conic [C,N,3], a surfel's (K a_u, K a_v) [C,N,6], a convex's
    # lines and constants [C,N,29]).
    means2d, conics, depths, normals, radii = _project(
        prim, splats, viewmats, Ks, settings, "normal" in wanted
    )
    if means2d.requires_grad:
        means2d.retain_grad()

    # Feature channels composited by the kernel: colours (only when rgb is wanted), then the normal. Depth is
    # composited on its own (the kernel may vary it over the pixel) for depth_exp and the distortion maps.
    parts, groups = [], []
    if "rgb" in wanted:
        parts.append(_colors_per_camera(colors.to(dtype), means, viewmats, sh_degree))
        groups.append(parts[-1].shape[-1])
    D = groups[0] if groups else 0
    if "normal" in wanted:
        parts.append(normals)
        groups.append(3)
    if not parts:
        features, groups = means.new_zeros(C, N, 0), [0]
    else:
        features = (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]).contiguous()
    F = features.shape[-1]

    if backgrounds is None or D == 0:
        bg = torch.zeros(C, F, dtype=dtype)
    else:
        if backgrounds.shape != (C, D):
            raise ValueError(f"backgrounds must be [C,D] = [{C},{D}], got {tuple(backgrounds.shape)}")
        bg = backgrounds.to(dtype)
        if F > D:
            bg = torch.cat([bg, bg.new_zeros(C, F - D)], dim=-1)
        bg = bg.contiguous()

    tile_width, tile_height = settings.tile_width, settings.tile_height
    opacities = opacities.to(dtype)
    opac = opacities.reshape(1, N).expand(C, N) if opacities.dim() == 1 else opacities
    if opac.shape != (C, N):
        raise ValueError(f"opacities must be [N] or [C,N] (C={C}, N={N}), got {tuple(opacities.shape)}")
    opac = opac.contiguous()
    ext = load_ext()
    bins = _bins(ext, prim, means2d, conics, opac, depths, radii, settings)
    holder = {"means2d": means2d, "absgrad": bool(absgrad)}
    flags = (
        "depth_exp" in wanted,
        "depth_median" in wanted,
        "distort_l1" in wanted,
        "distort_ndc2" in wanted,
    )
    depth, alpha, med, l1, ndc2, *feats = _Rasterize.apply(
        means2d,
        conics,
        opac,
        depths,
        features,
        bg,
        bins,
        (int(width), int(height), int(tile_size)),
        flags,
        tuple(groups),
        holder,
        prim.kernel_id,
    )

    out = RenderOutputs()
    if "rgb" in wanted:
        out.rgb = feats[0]
    if "normal" in wanted:
        out.normal = feats[-1]
    if "depth_exp" in wanted:
        out.depth_exp = depth.unsqueeze(-1)
    if "alpha" in wanted:
        out.alpha = alpha.unsqueeze(-1)
    if "depth_median" in wanted:
        out.depth_median = med.unsqueeze(-1)
    if "distort_l1" in wanted:
        out.distort_l1 = l1.unsqueeze(-1)
    if "distort_ndc2" in wanted:
        out.distort_ndc2 = ndc2.unsqueeze(-1)

    info = {
        "means2d": means2d,
        "radii": radii.unsqueeze(-1).expand(C, N, 2).contiguous(),
        "depths": depths,
        "width": int(width),
        "height": int(height),
        "n_cameras": C,
        "tile_size": int(tile_size),
        "tile_width": tile_width,
        "tile_height": tile_height,
        "n_isects": int(bins[1].numel()),
        "gaussian_ids": None,  # unpacked layout, as gsplat's strategies expect
    }
    return out, info


@torch.no_grad()
def contributors_cpu(
    splats: Splats,
    viewmats: Tensor,
    Ks: Tensor,
    settings: RasterSettings,
    k: int,
    primitive: str = "gaussian3d",
) -> tuple[Tensor, Tensor]:
    """(first, last) [C,H,W,k] int64: ids of the first and the last k primitives each pixel composites, in
    compositing order, −1 where fewer; the forward's exact rules, in one extra pass without features or gradient."""
    means, opacities = splats.means, splats.opacities
    dtype = means.dtype
    C, N = viewmats.shape[0], means.shape[0]
    viewmats = viewmats.to(dtype).contiguous()
    Ks = Ks.to(dtype).contiguous()
    prim = get_primitive(primitive)
    ext = load_ext()
    means2d, conics, depths, _, radii = _project(prim, splats, viewmats, Ks, settings, False)
    width, height, tile_size = settings.width, settings.height, settings.tile_size
    opac = opacities.to(dtype).reshape(1, N).expand(C, N).contiguous()
    tile_offsets, ids, _, _ = _bins(ext, prim, means2d, conics, opac, depths, radii, settings)
    first, last = ext.rasterize_contributors(
        prim.kernel_id, means2d, conics, opac, depths, means.new_zeros(C, N, 0), means.new_zeros(C, 0), tile_offsets, ids,
        int(width), int(height), int(tile_size), int(k), ALPHA_MAX, ALPHA_MIN, T_EPS,
    )  # fmt: skip
    # camera-flattened ids (c*N + n) -> Gaussian ids n
    return tuple(torch.where(x >= 0, x.long() % max(N, 1), -1) for x in (first, last))
