"""Depth distortion (METHODS.md §3.2a/b): penalise the spread of a pixel's compositing weights along the ray.

Why: a surface should be one thin layer; weight spread over depth is what makes 3DGS geometry noisy. The
rasterizer accumulates the pairwise sums inside its compositing loop, so this term only averages a rendered map:

* ``ndc2`` (2DGS): D = Σ_{j<i} w_i w_j (m_i − m_j)², m = f/(f−n)·(1 − n/z), n = 0.2, f = 100;
* ``l1`` (gsplat): D = Σ_{i≠j} w_i w_j |z_i − z_j| on raw depth (so it scales with the scene's units).

L = weight · mean over pixels of D. Paper-code defaults: ndc2 with weight 1000 (bounded scenes) or 100
(unbounded), l1 with weight 0.01; both switched on after step 3000.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


@dataclass
class DistortionConfig(RegularizerConfig):
    kind: Literal["ndc2", "l1"] = "ndc2"  # ndc2: 2DGS squared NDC form; l1: gsplat's raw-depth form


class Distortion(Regularizer):
    name = "dist"
    config_class = DistortionConfig
    cfg: DistortionConfig

    @property
    def needs(self) -> tuple[str, ...]:
        return ("distort_ndc2",) if self.cfg.kind == "ndc2" else ("distort_l1",)

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        d = getattr(ctx.outputs, self.needs[0])
        if d is None:
            raise ValueError(f"distortion regularizer needs the {self.needs[0]!r} map in the render")
        return {self.name: self.cfg.weight * d.mean()}
