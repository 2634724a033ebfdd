"""3DCS's mask loss (METHODS.md §3.1): weight · mean(sigmoid(m)) over the convexes' masks.

Why: together with the straight-through gate on the opacity (``recon.models.convex.mask_gate``) it pushes convexes
the photos do not need below the mask threshold, where they render nothing and are pruned. 3DCS weighs it 5e-4
(``configs/convex.yaml``); off by default like every regularizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


@dataclass
class ConvexMaskConfig(RegularizerConfig):
    pass


class ConvexMask(Regularizer):
    name = "mask"
    config_class = ConvexMaskConfig
    needs = ("params",)
    requires = frozenset({"mask"})

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        return {self.name: self.cfg.weight * torch.sigmoid(ctx.params["mask"]).mean()}
