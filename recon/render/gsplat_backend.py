"""Adapter from ``recon.render.rasterize`` to gsplat's CUDA rasterizer (NVIDIA GPUs only).

gsplat's 3DGS path renders colour, alpha and (un-normalised) expected depth; the other maps of the contract
(median depth, normals, distortion) have no 3DGS kernel in gsplat, so asking for them here is an error that points
to a backend that has them. gsplat differs from ``reference``/``cpu`` in two documented details that do not change
rendered pixels of ordinary scenes: it clips α at 0.999 (we use ALPHA_MAX = 0.99) and bins each Gaussian with an
opacity-aware per-axis box instead of a 3·sqrt(λmax) square, so ``info["radii"]`` differ.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .outputs import RenderOutputs
from .settings import RasterSettings, RenderRequest, Splats

__all__ = ["gsplat_available", "rasterize_gsplat", "GSPLAT_OUTPUTS"]

# Maps gsplat's rasterization() can produce; the rest need backend="cpu" or "reference".
GSPLAT_OUTPUTS = ("rgb", "alpha", "depth_exp")


@functools.lru_cache(maxsize=1)
def gsplat_available() -> bool:
    """True only when CUDA is usable and gsplat's compiled kernels load (may JIT-compile them the first time)."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception:  # a broken toolkit or build must mean "not available", never a crash at import
        return False
    return _C is not None


def rasterize_gsplat(
    splats: Splats, viewmats: Tensor, Ks: Tensor, settings: RasterSettings, request: RenderRequest
) -> tuple[RenderOutputs, dict]:
    """Render with ``gsplat.rasterization`` (classic mode, unpacked) and return our ``RenderOutputs`` and its meta.

    ``info`` is gsplat's meta dict (``means2d`` [C,N,2] with its gradient retained, ``radii`` [C,N,2], ``depths``,
    ``width``, ``height``, ``n_cameras``, ``tile_size``, ``tile_width``, ``tile_height``, ...) plus ``n_isects``.
    """
    means, quats, scales, opacities, colors = splats[:5]
    outputs, sh_degree, backgrounds, absgrad, _primitive = request
    wanted = tuple(outputs)
    unsupported = [name for name in wanted if name not in GSPLAT_OUTPUTS]
    if unsupported:
        raise ValueError(
            f"the gsplat backend cannot render {', '.join(unsupported)} (gsplat's 3DGS rasterizer only gives "
            f"{', '.join(GSPLAT_OUTPUTS)}); use backend='cpu' for these maps"
        )
    if not gsplat_available():
        raise RuntimeError("the gsplat backend needs an NVIDIA GPU with CUDA and gsplat's compiled kernels")
    if means.device.type != "cuda":
        raise ValueError(f"the gsplat backend needs CUDA tensors, got tensors on {means.device}")
    from gsplat import rasterization

    want_depth = "depth_exp" in wanted
    want_rgb = "rgb" in wanted
    if want_depth:
        render_mode = "RGB+D" if want_rgb else "D"  # "D": Σ w·z, our un-normalised depth_exp
    else:
        render_mode = "RGB"
    render, alphas, meta = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        **settings.as_kwargs(),  # width, height, near/far planes, radius_clip, eps2d, tile_size: gsplat's names
        sh_degree=sh_degree,
        packed=False,
        backgrounds=backgrounds,
        render_mode=render_mode,
        absgrad=absgrad,
        rasterize_mode="classic",
    )
    maps: dict[str, Tensor] = {}
    if want_rgb:
        maps["rgb"] = render[..., :-1] if want_depth else render
    if want_depth:
        maps["depth_exp"] = render[..., -1:]
    if "alpha" in wanted:
        maps["alpha"] = alphas
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    meta["n_isects"] = int(meta["isect_ids"].numel())
    return RenderOutputs(**maps), meta
