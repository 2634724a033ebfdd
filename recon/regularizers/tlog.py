"""LE3D transmittance regularizer "TLog" (METHODS.md §3.3b): L = weight · mean(−log(min(1, A + 1e-3))).

Why: it pushes every pixel to full coverage, so no background shows through surfaces — which the TSDF and
level-set exports would otherwise carve holes at. Only for scenes without real background (sky, missing
geometry): there it would invent surfaces. LE3D's weight: 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig

EPS = 1e-3


@dataclass
class TLogConfig(RegularizerConfig):
    pass


def tlog(alpha: Tensor) -> Tensor:
    """mean(−log(min(1, alpha + 1e-3))) over all pixels; 0 where alpha = 1."""
    return -torch.log(torch.clamp(alpha + EPS, max=1.0)).mean()


class TLog(Regularizer):
    name = "tlog"
    config_class = TLogConfig
    needs = ("alpha",)

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        if ctx.outputs.alpha is None:
            raise ValueError("the tlog regularizer needs the 'alpha' map in the render")
        return {self.name: self.cfg.weight * tlog(ctx.outputs.alpha)}
