"""The registry of splat primitives the rasterizer composites: one ``RasterPrimitive`` descriptor each.

A descriptor says everything the backends need to know about a primitive, so nothing in ``recon/render`` tests a
primitive by name: the C++ kernel id (``K::kId`` in ``csrc/kernels.h``, passed explicitly to the compositor, never
inferred from the payload size), the payload size, the C++ projection (an autograd Function in
``cpu_projection.py``), the pure-torch twin of the projection and of the kernel (the ``reference`` backend), and the
backends that render it.

Adding a primitive: a kernel struct in ``csrc/kernels.h`` plus one case in ``dispatch_kernel`` (rasterize.cpp), its
C++ projection and autograd Function, a torch module with its projection and kernel (like ``surfels.py``), and one
entry in ``PRIMITIVE_TABLE`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .convex import PAYLOAD_SIZE as CONVEX_PAYLOAD
from .convex import convex_alpha, project_convexes
from .cpu_projection import ProjectConvexes, ProjectGaussians, ProjectSurfels
from .projection import Footprint, gaussian_alpha, project_gaussians
from .settings import Splats
from .surfels import project_surfels, surfel_alpha

__all__ = ["RasterPrimitive", "PRIMITIVES", "PRIMITIVE_TABLE", "get_primitive"]

# The tensors a primitive's projections read, taken from (and checked against) the Splats: (means, quats, scales)
# for Gaussians and surfels, Splats.shape for convexes.
Geometry = Callable[[Splats], tuple[Tensor, ...]]
# (*geometry, viewmats, Ks, settings.projection_tuple(), want_normals)
#   -> (means2d [C,N,2], payload [C,N,P], depths [C,N], normals [C,N,3] or empty, radii [C,N] int32)
CpuProjection = Callable[..., tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]
# (*geometry, viewmats, Ks, settings, want_normals) -> footprint (means2d, depths, radii, normals, tiles)
# with the kernel's ``payload`` [C,N,P]
ReferenceProjection = Callable[..., Footprint]
# (means2d [t,K,2] or [t,P,K,2], payload [t,K,P], depths [t,K], opacities [t,K], entry_ok [t,K], px [t,P], py [t,P])
#   -> (alpha [t,P,K], per-pixel depth [t,P,K] or None when the primitive composites its centre depth)
ReferenceAlpha = Callable[..., tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class RasterPrimitive:
    name: str  # the value of ``rasterize(..., primitive=...)`` and of ``model.primitive``
    kernel_id: int  # K::kId of its kernel struct in csrc/kernels.h
    payload_size: int  # numbers per primitive its kernel reads (K::kPayload)
    project_cpu: CpuProjection
    project_reference: ReferenceProjection
    alpha_reference: ReferenceAlpha
    backends: tuple[str, ...]  # concrete backends that render it
    backend_note: str = ""  # why a backend is missing, for the error message
    geometry: Geometry = None  # type: ignore[assignment]  # set below: what its projections read
    normals: bool = True  # whether it renders the "normal" map
    # whether the cpu backend bins it by the box its kernel reaches at each opacity (the C++ kernel's bound) rather
    # than by the projection's radius: for primitives whose radius is a loose bound (convexes' reach at opacity 1
    # from consecutive corners); info["radii"] stays the projection's, info["n_isects"] counts the tighter bins
    bins_by_kernel: bool = False

    @property
    def shaped_by_axes(self) -> bool:
        """Whether quats and scales shape it (Gaussians, surfels) rather than ``Splats.shape`` (convexes)."""
        return self.geometry is _axes_geometry


def _axes_geometry(splats: Splats) -> tuple[Tensor, Tensor, Tensor]:
    """(means, quats, scales) of Gaussians and surfels, shapes checked."""
    means, quats, scales = splats.means, splats.quats, splats.scales
    N = means.shape[0]
    if quats is None or scales is None or quats.shape != (N, 4) or scales.shape[0] != N or scales.dim() != 2:
        got = [None if t is None else tuple(t.shape) for t in (quats, scales)]
        raise ValueError(f"quats must be [N,4] and scales [N,3] (N={N}), got {got[0]}, {got[1]}")
    return means, quats, scales


def _convex_geometry(splats: Splats) -> tuple[Tensor, Tensor, Tensor]:
    """(points [N,K,3], δ [N], σ [N]) of convexes, from ``Splats.shape``."""
    N = splats.means.shape[0]
    shape = splats.shape
    if shape is None or len(shape) != 3:
        raise ValueError("convexes need shape=(points [N,K,3], delta [N], sigma [N])")
    points, delta, sigma = shape
    if (
        points.dim() != 3
        or points.shape[0] != N
        or points.shape[2] != 3
        or delta.shape != (N,)
        or sigma.shape != (N,)
    ):
        raise ValueError(
            f"convex shape must be points [N,K,3], delta [N], sigma [N] (N={N}), got "
            f"{tuple(points.shape)}, {tuple(delta.shape)}, {tuple(sigma.shape)}"
        )
    return points, delta, sigma


def _convex_reference(points, delta, sigma, viewmats, Ks, settings, want_normals):
    return project_convexes(points, delta, sigma, viewmats, Ks, settings, want_normals)


def _convexes_cpu(points, delta, sigma, viewmats, Ks, settings, want_normals):
    return ProjectConvexes.apply(points, delta, sigma, viewmats, Ks, settings, want_normals)


def _gaussians_cpu(means, quats, scales, viewmats, Ks, settings, want_normals):
    return ProjectGaussians.apply(means, quats, scales, viewmats, Ks, settings, want_normals)


def _surfels_cpu(means, quats, scales, viewmats, Ks, settings, want_normals):
    if scales.dim() == 2 and scales.shape[1] == 2:  # surfels read scales[:, :2]; the kernels take [N,3] rows
        scales = torch.cat([scales, scales.new_zeros(scales.shape[0], 1)], dim=1)
    return ProjectSurfels.apply(means, quats, scales.contiguous(), viewmats, Ks, settings, want_normals)


def _gaussian_alpha(m2d, payload, depths, opac, entry_ok, px, py):
    return gaussian_alpha(m2d, payload, opac, entry_ok, px, py), None


PRIMITIVE_TABLE: dict[str, RasterPrimitive] = {
    p.name: p
    for p in (
        # 3D Gaussians (3DGS): EWA projection, conic payload; semantics in reference.py
        RasterPrimitive(
            name="gaussian3d",
            kernel_id=0,
            payload_size=3,
            project_cpu=_gaussians_cpu,
            project_reference=project_gaussians,
            alpha_reference=_gaussian_alpha,
            backends=("cpu", "reference", "gsplat"),
            geometry=_axes_geometry,
        ),
        # 2D Gaussian surfels (2DGS): ray-splat intersection, per-pixel depth; semantics in surfels.py
        RasterPrimitive(
            name="surfel2d",
            kernel_id=1,
            payload_size=6,
            project_cpu=_surfels_cpu,
            project_reference=project_surfels,
            alpha_reference=surfel_alpha,
            backends=("cpu", "reference"),
            backend_note="gsplat's 2DGS kernels follow other conventions",
            geometry=_axes_geometry,
        ),
        # smooth convexes (3DCS): hull lines, LSE-sigmoid kernel; semantics in convex.py
        RasterPrimitive(
            name="convex",
            kernel_id=2,
            payload_size=CONVEX_PAYLOAD,
            project_cpu=_convexes_cpu,
            project_reference=_convex_reference,
            alpha_reference=convex_alpha,
            backends=("cpu", "reference"),
            backend_note="gsplat has no convex kernel",
            geometry=_convex_geometry,
            normals=False,
            bins_by_kernel=True,
        ),
    )
}
PRIMITIVES: tuple[str, ...] = tuple(PRIMITIVE_TABLE)


def get_primitive(name: str) -> RasterPrimitive:
    """The descriptor of ``name``; a ValueError naming the choices for an unknown one."""
    try:
        return PRIMITIVE_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown primitive {name!r}; choose from {list(PRIMITIVES)}") from None
