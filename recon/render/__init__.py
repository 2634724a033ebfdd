"""Differentiable rasterization with gsplat's interface on every machine.

``rasterize`` takes ``gsplat.rasterization``'s arguments, shapes and meanings, plus ``outputs=`` (the maps wanted,
see ``outputs.OUTPUT_NAMES``) and ``backend=``:

- ``"cpu"``: our C++/OpenMP kernels with hand-written backward (``cpu.py``, ``csrc/``);
- ``"reference"``: pure PyTorch with autograd, the test oracle (small scenes only);
- ``"gsplat"``: gsplat's CUDA kernels (NVIDIA GPU only);
- ``"auto"``: gsplat when CUDA is available, its kernels load and the primitive has a gsplat path; otherwise cpu.

``primitive=`` picks what the parameters describe: one of ``PRIMITIVES``, each described by a ``RasterPrimitive``
in ``primitives.py`` (its kernel id, projections and the backends that render it). 3D Gaussians are the default
(semantics in ``reference.py``); 2D Gaussian surfels (2DGS) are in ``surfels.py``; smooth convexes (3DCS) in
``convex.py``: they take ``shape=(points, delta, sigma)`` instead of quats and scales, and ``means`` = the centres.

Returns ``(RenderOutputs, info)``; ``info`` carries the keys gsplat's strategies read (``means2d`` [C,N,2] with its
gradient retained, plus ``means2d.absgrad`` after backward when ``absgrad=True``; ``radii`` [C,N,2] int32;
``width``; ``height``; ``n_cameras``), so ``gsplat.strategy.DefaultStrategy`` and ``MCMCStrategy`` work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .outputs import OUTPUT_NAMES, RenderOutputs, normalize_outputs
from .primitives import PRIMITIVES, get_primitive
from .settings import RasterSettings, RenderRequest, Splats

__all__ = [
    "rasterize",
    "contributors",
    "RenderOutputs",
    "RasterSettings",
    "OUTPUT_NAMES",
    "PRIMITIVES",
    "resolve_backend",
]

BACKENDS = ("auto", "cpu", "reference", "gsplat")


def resolve_backend(backend: str, device: torch.device, primitive: str = "gaussian3d") -> str:
    """Turn ``auto`` into a concrete backend for tensors on ``device`` and the given primitive type; a ValueError
    when the primitive has no path on the backend asked for."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    prim = get_primitive(primitive)
    if backend != "auto":
        if backend not in prim.backends:
            why = f" ({prim.backend_note})" if prim.backend_note else ""
            raise ValueError(
                f"primitive {primitive!r} runs on backend {' or '.join(map(repr, prim.backends))}{why}; "
                "choose one of those, or 'auto'"
            )
        return backend
    if device.type == "cuda" and "gsplat" in prim.backends:
        from .gsplat_backend import gsplat_available

        if gsplat_available():
            return "gsplat"
    return "cpu" if "cpu" in prim.backends else prim.backends[0]


def rasterize(
    means: Tensor,  # [N,3] centres (where SH colours are evaluated)
    quats: Tensor | None,  # [N,4] wxyz, need not be normalised (None for convexes)
    scales: Tensor | None,  # [N,3] (activated, not log; None for convexes)
    opacities: Tensor,  # [N] (activated, in [0,1])
    colors: Tensor,  # [N,D] or [C,N,D] features, or SH coefficients [N,K,3] / [C,N,K,3] when sh_degree is set
    viewmats: Tensor,  # [C,4,4] world-to-camera, OpenCV axes
    Ks: Tensor,  # [C,3,3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [C,D]
    absgrad: bool = False,
    outputs: Sequence[str] | str = ("rgb",),
    backend: str = "auto",
    primitive: str = "gaussian3d",  # one of PRIMITIVES
    shape: Sequence[Tensor] | None = None,  # convexes: (points [N,K,3], delta [N], sigma [N]), activated
) -> tuple[RenderOutputs, dict]:
    """Render C views of N primitives; see the module docstring for backends, primitives and the returned values."""
    wanted = normalize_outputs(outputs)
    chosen = resolve_backend(backend, means.device, primitive)
    if means.dim() != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [N,3], got {tuple(means.shape)}")
    if viewmats.dim() != 3 or Ks.dim() != 3:
        raise ValueError("viewmats must be [C,4,4] and Ks [C,3,3]")
    settings = RasterSettings(width, height, near_plane, far_plane, radius_clip, eps2d, tile_size)
    splats = Splats(means, quats, scales, opacities, colors, None if shape is None else tuple(shape))
    prim = get_primitive(primitive)
    prim.geometry(splats)  # shapes checked before any work
    if "normal" in wanted and not prim.normals:
        raise ValueError(f"primitive {primitive!r} renders no normal map; ask for depth maps instead")
    args = (splats, viewmats, Ks, settings)
    request = RenderRequest(wanted, sh_degree, backgrounds, absgrad, primitive)
    if chosen == "cpu":
        from .cpu import rasterize_cpu as backend_fn
    elif chosen == "reference":
        from .reference import rasterize_reference as backend_fn
    else:
        from .gsplat_backend import rasterize_gsplat as backend_fn
    out, info = backend_fn(*args, request)
    info.setdefault("gaussian_ids", None)  # unpacked layout: gsplat's strategies require the key
    return out, info


def contributors(
    means: Tensor,  # [N,3]
    quats: Tensor,  # [N,4]
    scales: Tensor,  # [N,3] (activated)
    opacities: Tensor,  # [N] (activated)
    viewmats: Tensor,  # [C,4,4]
    Ks: Tensor,  # [C,3,3]
    width: int,
    height: int,
    k: int = 5,
    backend: str = "auto",
    primitive: str = "gaussian3d",
    shape: Sequence[Tensor] | None = None,  # as in rasterize
    **options,  # near_plane, far_plane, radius_clip, eps2d, tile_size as in rasterize
) -> tuple[Tensor, Tensor]:
    """Per pixel, the ids of the first ``k`` and the last ``k`` primitives it composites (α ≥ 1/255, before the
    transmittance stop), each in compositing order, −1 where a pixel composites fewer: (first, last), both
    [C,H,W,k] int64, no gradient. LE3D's near–far regularizer reads them (METHODS.md §3.3a).

    A query of its own rather than a RenderOutputs map: ids are integers without gradient, and only the
    ``cpu`` and ``reference`` backends provide them.
    """
    chosen = resolve_backend(backend, means.device, primitive)
    if k < 1:
        raise ValueError(f"contributors: k must be at least 1, got {k}")
    settings = RasterSettings(width, height, **options)
    detached = (None if t is None else t.detach() for t in (means, quats, scales, opacities))
    splats = Splats(*detached, shape=None if shape is None else tuple(t.detach() for t in shape))
    args = (splats, viewmats, Ks, settings, int(k))
    if chosen == "cpu":
        from .cpu import contributors_cpu

        return contributors_cpu(*args, primitive=primitive)
    if chosen == "reference":
        from .reference import first_and_last, pixel_contributions

        ids, _, _ = pixel_contributions(splats, viewmats, Ks, settings, primitive)
        return first_and_last(ids, int(k))
    raise ValueError(
        "per-pixel contributor ids need backend='cpu' or 'reference' (gsplat has no such kernel)"
    )
