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

from .cpu_projection import ProjectGaussians, ProjectSurfels
from .projection import Footprint, gaussian_alpha, project_gaussians
from .surfels import project_surfels, surfel_alpha

__all__ = ["RasterPrimitive", "PRIMITIVES", "PRIMITIVE_TABLE", "get_primitive"]

# (means, quats, scales, viewmats, Ks, settings.projection_tuple(), want_normals)
#   -> (means2d [C,N,2], payload [C,N,P], depths [C,N], normals [C,N,3] or empty, radii [C,N] int32)
CpuProjection = Callable[..., tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]
# (means, quats, scales, viewmats, Ks, settings, want_normals) -> footprint (means2d, depths, radii, normals, tiles)
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
