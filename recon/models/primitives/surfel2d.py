"""2D Gaussian surfels (2DGS): flat discs, rendered at each ray's intersection with their plane.

Surfels keep the 3DGS parameter dict: scales stay [N,3] because the strategies sample 3-D offsets from them; the
kernel reads only the two in-plane scales, and the third is kept tiny (SURFEL_THICKNESS × the first at
initialisation, × the smaller in-plane scale in files), so the splats.ply of a surfel run is a valid, flat
3D-Gaussian file other tools open.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .base import SPLAT_CAPABILITIES, SplatPrimitive, random_quats

SURFEL_THICKNESS = 1e-3  # a surfel's third scale relative to its in-plane one (ignored by the surfel kernel)


def _init_shape(scale: np.ndarray, seed: int) -> tuple[Tensor, Tensor]:
    """The 3DGS in-plane scale, the third SURFEL_THICKNESS times it, and a uniformly random orientation (seeded):
    a disc's normal is a real choice, and identity would start every surfel facing +z."""
    log_scales = torch.from_numpy(np.log(scale))[:, None].repeat(1, 3)
    log_scales[:, 2] += math.log(SURFEL_THICKNESS)
    return log_scales, random_quats(len(scale), seed)


def _file_log_scales(log_scales: Tensor) -> Tensor:
    """The third scale as SURFEL_THICKNESS × the smaller in-plane one (the stored one is ignored by the kernel),
    so every surfel is a flat 3D Gaussian whatever training did to its in-plane scales."""
    log_s = log_scales.detach().cpu().float().clone()
    log_s[:, 2] = log_s[:, :2].min(dim=1).values + math.log(SURFEL_THICKNESS)
    return log_s


SURFEL2D = SplatPrimitive(
    name="surfel2d",
    noun="surfels",
    capabilities=SPLAT_CAPABILITIES,  # flat already: nothing "volumetric" to flatten
    init_shape=_init_shape,
    file_log_scales=_file_log_scales,
)
