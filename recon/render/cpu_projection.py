"""The C++ projections of the primitives as autograd Functions (the ``cpu`` backend's first stage).

Each maps means, quats, scales to (means2d, payload, depths, camera-space normals, radii) for C cameras; the
payload is what the primitive's C++ kernel reads ([C,N,3] conic for 3D Gaussians, [C,N,6] (K a_u, K a_v) for
surfels). ``settings`` is ``RasterSettings.projection_tuple()`` = (width, height, eps2d, near, far, radius_clip).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._ext import load_ext

__all__ = ["ProjectGaussians", "ProjectSurfels", "grad_or_empty"]


def empty_like_dtype(like: Tensor) -> Tensor:
    return torch.empty(0, dtype=like.dtype)


def grad_or_empty(g: Tensor | None, like: Tensor) -> Tensor:
    """An incoming gradient as a contiguous tensor, or an empty one (read as zero by the kernels)."""
    if g is None or g.numel() == 0:
        return empty_like_dtype(like)
    return g.contiguous()


class ProjectGaussians(torch.autograd.Function):
    """Projection of 3D Gaussians; ``settings`` = (width, height, eps2d, near, far, radius_clip)."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, settings, want_normals):
        means2d, conics, depths, radii, normals = load_ext().project_forward(
            means, quats, scales, viewmats, Ks, *settings, want_normals
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.settings = settings
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, normals, radii

    @staticmethod
    @once_differentiable
    def backward(ctx, g_means2d, g_conics, g_depths, g_normals, _g_radii):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        d_means, d_quats, d_scales = load_ext().project_backward(
            means,
            quats,
            scales,
            viewmats,
            Ks,
            *ctx.settings,
            grad_or_empty(g_means2d, means),
            grad_or_empty(g_conics, means),
            grad_or_empty(g_depths, means),
            grad_or_empty(g_normals, means),
        )
        return d_means, d_quats, d_scales, None, None, None, None


class ProjectSurfels(torch.autograd.Function):
    """Projection of 2D surfels (the C++ twin of ``surfels.project_surfels``): means, quats, scales -> means2d,
    payload (K a_u, K a_v) [C,N,6], depths, camera-space normals, radii; ``settings`` as for ``_Project`` (eps2d is
    not used by surfels)."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, settings, want_normals):
        width, height, _eps2d, near, far, radius_clip = settings
        means2d, payload, depths, radii, normals = load_ext().project_surfels_forward(
            means, quats, scales, viewmats, Ks, width, height, near, far, radius_clip, want_normals
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.settings = (width, height, near, far, radius_clip)
        ctx.mark_non_differentiable(radii)
        return means2d, payload, depths, normals, radii

    @staticmethod
    @once_differentiable
    def backward(ctx, g_means2d, g_payload, g_depths, g_normals, _g_radii):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        d_means, d_quats, d_scales = load_ext().project_surfels_backward(
            means,
            quats,
            scales,
            viewmats,
            Ks,
            *ctx.settings,
            grad_or_empty(g_means2d, means),
            grad_or_empty(g_payload, means),
            grad_or_empty(g_depths, means),
            grad_or_empty(g_normals, means),
        )
        return d_means, d_quats, d_scales, None, None, None, None
