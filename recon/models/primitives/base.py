"""``SplatPrimitive``: what a splat primitive adds on top of its rasterizer descriptor (``recon.render.primitives``).

Why: the splat model (``recon/models/splats.py``) is one class for every primitive; what differs between 3D
Gaussians, surfels and later convexes lives in one descriptor each: how initial shapes are drawn, how the shape
is written to a 3DGS-layout file other tools open, which capabilities it offers to regularizers and densification,
and what messages call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.render.primitives import RasterPrimitive, get_primitive

# (initial isotropic scale per point [N] float32, seed) -> (log scales [N,3], quaternions [N,4] wxyz)
InitShape = Callable[[np.ndarray, int], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class SplatPrimitive:
    name: str  # model.primitive, and the rasterizer primitive of the same name
    noun: str  # what messages call many of them
    capabilities: frozenset[str]  # offered to regularizers and densification (see recon.regularizers)
    init_shape: InitShape
    file_log_scales: Callable[[Tensor], Tensor]  # stored log scales [N,3] -> as a 3D-Gaussian file shows them

    @property
    def raster(self) -> RasterPrimitive:
        return get_primitive(self.name)


def identity_quats(n: int) -> Tensor:
    q = torch.zeros(n, 4)
    q[:, 0] = 1.0
    return q


def random_quats(n: int, seed: int) -> Tensor:
    """Uniformly random orientations (normalised Gaussian 4-vectors), seeded."""
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return q / q.norm(dim=-1, keepdim=True)


# The capabilities every splat primitive offers: per-primitive parameter rows, the cpu/reference rasterizers'
# per-pixel contributor ids, and a rendered normal map.
SPLAT_CAPABILITIES = frozenset({"primitives", "contributors", "normals"})
