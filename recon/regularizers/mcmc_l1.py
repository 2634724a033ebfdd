"""3DGS-MCMC's two L1 terms (Kheradmand et al. 2024): weight · mean(|activated parameter|), on opacities
(sigmoid of the logits) and on scales (exp of the log scales).

Why: with the MCMC strategy, Gaussians the photos do not need fade out (opacity towards 0) or shrink, and become the
dead ones MCMC relocates to where live ones are. Until they became regularizers the trainer added them whenever
``strategy.kind=mcmc`` (weights ``strategy.mcmc.opacity_reg`` / ``scale_reg``, 0.01); now they are off unless
``reg.opacity_l1.weight`` / ``reg.scale_l1.weight`` > 0 (``configs/mcmc.yaml`` sets both), logged under the old
names ``opacity_reg`` and ``scale_reg``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


class _ActivatedL1(Regularizer):
    """weight · mean(|activation(params[param])|), logged as ``term``."""

    needs = ("params",)
    requires = frozenset({"primitives"})
    param: str
    term: str
    activation: Callable[[Tensor], Tensor]

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        # the exact expression of the trainer's former MCMC branch, so the values match bit for bit
        return {self.term: self.cfg.weight * type(self).activation(ctx.params[self.param]).abs().mean()}


@dataclass
class OpacityL1Config(RegularizerConfig):
    pass


@dataclass
class ScaleL1Config(RegularizerConfig):
    pass


class OpacityL1(_ActivatedL1):
    name, config_class, param, term, activation = (
        "opacity_l1",
        OpacityL1Config,
        "opacities",
        "opacity_reg",
        torch.sigmoid,
    )


class ScaleL1(_ActivatedL1):
    name, config_class, param, term, activation = "scale_l1", ScaleL1Config, "scales", "scale_reg", torch.exp
