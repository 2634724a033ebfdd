"""Opacity L1 (3DGS-MCMC, Kheradmand et al. 2024): L = weight · mean(|sigmoid(opacity logits)|).

Why: with the MCMC strategy, Gaussians the photos do not need fade out (opacity towards 0) and become the dead
ones MCMC relocates to where live ones are. Until it became a regularizer the trainer added it whenever
``strategy.kind=mcmc``, with weight ``strategy.mcmc.opacity_reg`` (0.01); here it is off unless
``reg.opacity_l1.weight > 0``. Logged under its old name, ``opacity_reg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


@dataclass
class OpacityL1Config(RegularizerConfig):
    pass


class OpacityL1(Regularizer):
    name = "opacity_l1"
    config_class = OpacityL1Config
    needs = ("params",)
    requires = frozenset({"primitives"})

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        # the exact expression of the trainer's former MCMC branch, so the values match bit for bit
        return {"opacity_reg": self.cfg.weight * torch.sigmoid(ctx.params["opacities"]).abs().mean()}
