"""Normal consistency (2DGS, METHODS.md §3.2e): the rendered normal should agree with the normal of the rendered
depth.

Why: 3D Gaussians can fit the photos with primitives whose orientation has nothing to do with the surface they
sit on; tying the composited primitive normals to the depth surface makes both consistent, which is what a mesh
needs. Per pixel (camera space, OpenCV axes):

    surf_depth  = (1 − r)·depth_exp/alpha + r·depth_median           (r = depth_ratio: 0 unbounded, 1 bounded)
    P(u, v)     = surf_depth · K⁻¹ (u + 0.5, v + 0.5, 1)              (back-projected pixel centre)
    surf_normal = normalize(∂ᵥP × ∂ᵤP) · alpha.detach()               (central differences; faces the camera)
    L           = weight · mean over interior pixels of (1 − ⟨normal, surf_normal⟩)

``normal`` is the composited Σ wᵢnᵢ (not renormalised), so a perfectly consistent pixel scores 1 − alpha²; the
one-pixel image border has no central difference and is left out of the mean. Paper defaults: weight 0.05 from
step 7000 (2DGS); 0.0125 (CityGaussianV2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import RegContext, Regularizer, RegularizerConfig


@dataclass
class NormalConsistencyConfig(RegularizerConfig):
    depth_ratio: float = 0.0  # 0: expected depth (unbounded scenes), 1: median depth (bounded), or a blend


def surface_depth(depth_exp: Tensor, alpha: Tensor, depth_median: Tensor | None, ratio: float) -> Tensor:
    """[C,H,W,1] metric depth of the surface a pixel sees: normalised expected depth blended with the median."""
    expected = depth_exp / alpha.clamp_min(1e-6)
    if ratio <= 0 or depth_median is None:
        return expected
    return (1.0 - ratio) * expected + ratio * depth_median


def depth_to_points(depth: Tensor, Ks: Tensor) -> Tensor:
    """[C,H,W,3] camera-space points of the pixel centres at ``depth`` [C,H,W,1]."""
    C, H, W = depth.shape[:3]
    v, u = torch.meshgrid(
        torch.arange(H, dtype=depth.dtype, device=depth.device) + 0.5,
        torch.arange(W, dtype=depth.dtype, device=depth.device) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H,W,3]
    rays = torch.einsum("cij,hwj->chwi", torch.linalg.inv(Ks.to(depth.dtype)), pix)
    return rays * depth


def points_to_normals(points: Tensor) -> Tensor:
    """[C,H,W,3] unit normals of a camera-space point map by central differences, facing the camera; 0 on the
    one-pixel border."""
    dv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
    du = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
    n = F.normalize(torch.linalg.cross(dv, du, dim=-1), dim=-1)
    return F.pad(n.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)


def surface_normals(
    depth_exp: Tensor, alpha: Tensor, depth_median: Tensor | None, Ks: Tensor, ratio: float = 0.0
) -> Tensor:
    """``surf_normal`` of METHODS §2.1: normal of the back-projected surface depth, times alpha.detach()."""
    depth = surface_depth(depth_exp, alpha, depth_median, ratio)
    return points_to_normals(depth_to_points(depth, Ks)) * alpha.detach()


def normal_error(normal: Tensor, surf_normal: Tensor) -> Tensor:
    """[C,H-2,W-2] per-pixel 1 − ⟨normal, surf_normal⟩ on the interior pixels."""
    err = 1.0 - (normal * surf_normal).sum(-1)
    return err[:, 1:-1, 1:-1]


class NormalConsistency(Regularizer):
    name = "normal"
    config_class = NormalConsistencyConfig
    requires = frozenset({"normals"})  # the rendered normal map
    cfg: NormalConsistencyConfig

    @property
    def needs(self) -> tuple[str, ...]:
        return ("alpha", "depth_exp", "normal") + (("depth_median",) if self.cfg.depth_ratio > 0 else ())

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        o = ctx.outputs
        missing = [n for n in self.needs if getattr(o, n) is None]
        if missing:
            raise ValueError(f"the normal-consistency regularizer needs {missing} in the render")
        surf = surface_normals(o.depth_exp, o.alpha, o.depth_median, ctx.Ks, self.cfg.depth_ratio)
        return {self.name: self.cfg.weight * normal_error(o.normal, surf).mean()}
