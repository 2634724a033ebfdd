"""The C++ projections of the primitives as autograd Functions (the ``cpu`` backend's first stage).

Each maps means, quats, scales to (means2d, payload, depths, camera-space normals, radii) for C cameras; the
payload is what the primitive's C++ kernel reads ([C,N,3] conic for 3D Gaussians, [C,N,6] (K a_u, K a_v) for
surfels, [C,N,29] hull lines and kernel constants for convexes, whose "means, quats, scales" are points [N,K,3],
δ [N] and σ [N]). ``settings`` is ``RasterSettings.projection_tuple()`` = (width, height, eps2d, near, far,
radius_clip).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._ext import load_ext
from .convex import RADIUS_CULL, REACH

__all__ = ["ProjectGaussians", "ProjectSurfels", "ProjectConvexes", "grad_or_empty"]


def empty_like_dtype(like: Tensor) -> Tensor:
    return torch.empty(0, dtype=like.dtype)


def grad_or_empty(g: Tensor | None, like: Tensor) -> Tensor:
    """An incoming gradient as a contiguous tensor, or an empty one (read as zero by the kernels)."""
    if g is None or g.numel() == 0:
        return empty_like_dtype(like)
    return g.contiguous()


class _CppProjection(torch.autograd.Function):
    """means, quats, scales -> (means2d, payload, depths, normals, radii) through a C++ forward/backward pair;
    subclasses name the pair and which of the settings it takes."""

    forward_op: str
    backward_op: str

    @staticmethod
    def cpp_settings(settings: tuple) -> tuple:
        return settings

    @classmethod
    def forward(cls, ctx, means, quats, scales, viewmats, Ks, settings, want_normals):
        ops = cls.cpp_settings(settings)
        means2d, payload, depths, radii, normals = getattr(load_ext(), cls.forward_op)(
            means, quats, scales, viewmats, Ks, *ops, want_normals
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.ops = ops
        ctx.mark_non_differentiable(radii)
        return means2d, payload, depths, normals, radii

    @classmethod
    @once_differentiable
    def backward(cls, ctx, g_means2d, g_payload, g_depths, g_normals, _g_radii):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        grads = (grad_or_empty(g, means) for g in (g_means2d, g_payload, g_depths, g_normals))
        d_means, d_quats, d_scales = getattr(load_ext(), cls.backward_op)(
            means, quats, scales, viewmats, Ks, *ctx.ops, *grads
        )
        return d_means, d_quats, d_scales, None, None, None, None


class ProjectGaussians(_CppProjection):
    """Projection of 3D Gaussians (EWA splatting with the ``eps2d`` low-pass, near/far culling, 3-sigma radius):
    payload = the conic [C,N,3]."""

    forward_op, backward_op = "project_forward", "project_backward"


class ProjectSurfels(_CppProjection):
    """Projection of 2D surfels (the C++ twin of ``surfels.project_surfels``): payload = (K a_u, K a_v) [C,N,6];
    eps2d is not used by surfels."""

    forward_op, backward_op = "project_surfels_forward", "project_surfels_backward"

    @staticmethod
    def cpp_settings(settings: tuple) -> tuple:
        width, height, _eps2d, near, far, radius_clip = settings
        return (width, height, near, far, radius_clip)


class ProjectConvexes(_CppProjection):
    """Projection of smooth convexes (the C++ twin of ``convex.project_convexes``): takes points [N,K,3], δ [N],
    σ [N] in place of means, quats, scales; payload [C,N,29] (convex.py step 5); no normals (``want_normals`` must
    be False). The twin's constants travel with the settings, so convex.py stays their single source."""

    forward_op, backward_op = "project_convexes_forward", "project_convexes_backward"

    @staticmethod
    def cpp_settings(settings: tuple) -> tuple:
        width, height, _eps2d, near, far, radius_clip = settings
        return (width, height, near, far, radius_clip, REACH, RADIUS_CULL)
