"""Flattening: shrink each visible Gaussian's shortest axis, so 3D Gaussians become the discs the geometric terms
assume (PGSR, Chen et al. 2024, "Planar-based Gaussian Splatting", eq. 2: L_s = ‖min(s₁, s₂, s₃)‖₁; NeuSG, Chen et
al. 2023, uses the same term).

Why: normal consistency ties each Gaussian's shortest axis to the surface normal, which only means something for
a flat Gaussian; a thick one spreads its opacity along the ray, and the median depth of a thick shell lies inside
the surface. Measured here in pixels (the shortest axis times fx / z, for the Gaussians the view sees) rather than
PGSR's world units, so one weight serves scenes of any scale:

    L = weight · mean_visible( min(s) · fx / z )
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig, visible_ids


@dataclass
class FlattenConfig(RegularizerConfig):
    pass


def thickness_pixels(means: Tensor, log_scales: Tensor, viewmat: Tensor, K: Tensor) -> Tensor:
    """Each Gaussian's shortest axis in pixels at its depth in this view [N] (0 behind the camera)."""
    z = means @ viewmat[2, :3] + viewmat[2, 3]
    thin = torch.exp(log_scales.amin(-1))
    return torch.where(z > 1e-6, thin * K[0, 0] / z.clamp_min(1e-6), torch.zeros_like(thin))


class Flatten(Regularizer):
    name = "flat"
    config_class = FlattenConfig
    requires = frozenset({"primitives", "volumetric"})  # surfels are flat already
    needs = ("info", "params")  # no render maps: visibility comes from info["radii"]

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        p = ctx.params
        n = p["means"].shape[0]
        terms = []
        for c in range(ctx.viewmats.shape[0]):  # one term per rendered view, over the Gaussians it sees
            ids = visible_ids({"radii": _camera_radii(ctx.info, c)}, n, p["means"].device)
            if ids.numel():
                terms.append(
                    thickness_pixels(p["means"][ids], p["scales"][ids], ctx.viewmats[c], ctx.Ks[c]).mean()
                )
        if not terms:
            return {self.name: p["means"].sum() * 0.0}
        return {self.name: self.cfg.weight * torch.stack(terms).mean()}


def _camera_radii(info: dict, c: int) -> Tensor | None:
    """Camera c's screen radii [1,N(,2)] from the rasterizer's info (None when it has none)."""
    radii = info.get("radii") if info else None
    return None if radii is None else radii[c : c + 1]
