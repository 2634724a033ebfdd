"""3D Gaussians (3DGS): isotropic initial scales from the nearest neighbours, identity rotations."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import SPLAT_CAPABILITIES, SplatPrimitive, identity_quats


def _init_shape(scale: np.ndarray, seed: int) -> tuple[Tensor, Tensor]:
    log_scales = torch.from_numpy(np.log(scale))[:, None].repeat(1, 3)
    return log_scales, identity_quats(len(scale))


def _file_log_scales(log_scales: Tensor) -> Tensor:
    return log_scales.detach().cpu().float().clone()


GAUSSIAN3D = SplatPrimitive(
    name="gaussian3d",
    noun="Gaussians",
    capabilities=SPLAT_CAPABILITIES | {"volumetric"},
    init_shape=_init_shape,
    file_log_scales=_file_log_scales,
)
