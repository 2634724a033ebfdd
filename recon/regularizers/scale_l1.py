"""Scale L1 (3DGS-MCMC, Kheradmand et al. 2024): L = weight · mean(|exp(log scales)|).

Why: paired with the opacity L1 under the MCMC strategy, it shrinks the Gaussians the photos do not need, so that
they fade away and MCMC can relocate them. Until it became a regularizer the trainer added it
whenever ``strategy.kind=mcmc``, with weight ``strategy.mcmc.scale_reg`` (0.01); here it is off unless
``reg.scale_l1.weight > 0``. Logged under its old name, ``scale_reg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


@dataclass
class ScaleL1Config(RegularizerConfig):
    pass


class ScaleL1(Regularizer):
    name = "scale_l1"
    config_class = ScaleL1Config
    needs = ("params",)
    requires = frozenset({"primitives"})

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        # the exact expression of the trainer's former MCMC branch, so the values match bit for bit
        return {"scale_reg": self.cfg.weight * torch.exp(ctx.params["scales"]).abs().mean()}
