"""Per-primitive importance: how much each splat contributes to the training views.

Why: a splat's share of the rendered pixels, Σ over views and pixels of its blending weight α·T, is what removing
it costs the images; it ranks splats for pruning (LightGaussian's global significance without the volume term).
Computed exactly with one forward and backward pass per view: render a per-splat scalar feature c (all zero), then
∂(Σ image)/∂c_i = Σ_pixels α_i·T_i.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from recon.render import rasterize


def contribution(
    render_inputs: dict,  # rasterize keyword arguments of the splats (activated tensors, primitive)
    views: Iterable[tuple[Tensor, Tensor, int, int]],  # (viewmats [1,4,4], Ks [1,3,3], width, height)
    backend: str = "cpu",
) -> Tensor:
    """[N] float64: Σ over ``views`` and their pixels of each primitive's blending weight."""
    geometry = {k: v.detach() for k, v in render_inputs.items() if k not in ("colors", "primitive")}
    n = geometry["means"].shape[0]
    total = torch.zeros(n, dtype=torch.float64)
    for viewmats, Ks, width, height in views:
        feature = torch.zeros(n, 1, requires_grad=True)
        with torch.enable_grad():
            out, _ = rasterize(
                **geometry,
                colors=feature,
                viewmats=viewmats,
                Ks=Ks,
                width=width,
                height=height,
                backgrounds=torch.zeros(1, 1),
                outputs=("rgb",),
                backend=backend,
                primitive=render_inputs.get("primitive", "gaussian3d"),
            )
            (grad,) = torch.autograd.grad(out.rgb.sum(), feature)
        total += grad[:, 0].double()
    return total
