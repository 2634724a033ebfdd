"""LE3D near–far regularization (METHODS.md §3.3a): pull the near and far ends of each pixel's weights together.

Why: a cheap stand-in for depth distortion that also reaches primitives far behind the surface (which a
distortion term weighs by their tiny compositing weight). Per pixel, take the ids of the first K and the last K
primitives it composited (α ≥ 1/255; ``first_k_ids``/``last_k_ids``, −1 = none). N is the union of all first-K
ids over the image, F the union of all last-K ids (no gradient through the choice). Rendering depth
and alpha of N alone and of F alone gives (D_N, A_N) and (D_F, A_F); with D̄ = D/A on pixels where both are
defined,

    L = weight · mean_valid[ log((D̄_F + 1e-3)/(D̄_N + 1e-3))² · A_N · A_F ]

LE3D: K = 5, weight 0.01, rendered at a fixed 600×800; here the two extra renders use the training view's own
resolution and camera.

The ids come from ``recon.render.contributors`` (one extra compositing pass without features or gradient, in
C++ on the ``cpu`` backend); the gsplat backend has no such kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.data.errors import ReconError
from recon.render import contributors, rasterize

from .base import RegContext, Regularizer, RegularizerConfig

EPS = 1e-3


@dataclass
class NearFarConfig(RegularizerConfig):
    topk: int = 5  # K: how many of the first and last contributors of each pixel are recorded


def subset_depth_alpha(ctx: RegContext, ids: Tensor) -> tuple[Tensor, Tensor]:
    """(depth_exp, alpha) [C,H,W,1] of the primitives ``ids`` rendered alone (no colour, no background)."""
    params = ctx.params
    out, _ = rasterize(
        means=params["means"][ids],
        quats=params["quats"][ids],
        scales=torch.exp(params["scales"][ids]),
        opacities=torch.sigmoid(params["opacities"][ids]),
        colors=torch.zeros(len(ids), 1, dtype=params["means"].dtype, device=params["means"].device),
        viewmats=ctx.viewmats,
        Ks=ctx.Ks,
        width=ctx.width,
        height=ctx.height,
        outputs=("alpha", "depth_exp"),
        backend=ctx.backend,
        primitive=ctx.primitive,
    )
    return out.depth_exp, out.alpha


def nearfar_value(depth_n: Tensor, alpha_n: Tensor, depth_f: Tensor, alpha_f: Tensor) -> Tensor:
    """mean over valid pixels of log((D̄_F + 1e-3)/(D̄_N + 1e-3))² · A_N · A_F (0 when no pixel is valid)."""
    dn = depth_n / alpha_n
    df = depth_f / alpha_f
    valid = torch.isfinite(dn) & torch.isfinite(df) & (alpha_n > 0) & (alpha_f > 0)
    if not bool(valid.any()):
        return depth_n.sum() * 0.0
    dn = torch.where(valid, dn, torch.ones_like(dn))
    df = torch.where(valid, df, torch.ones_like(df))
    value = torch.log((df + EPS) / (dn + EPS)) ** 2 * alpha_n * alpha_f
    return value[valid].mean()


def contributor_sets(first_k_ids: Tensor, last_k_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(N, F): sorted unique ids among the per-pixel first-K and last-K contributors (−1 entries dropped)."""
    near = torch.unique(first_k_ids[first_k_ids >= 0])
    far = torch.unique(last_k_ids[last_k_ids >= 0])
    return near, far


class NearFar(Regularizer):
    name = "nearfar"
    config_class = NearFarConfig
    requires = frozenset({"primitives", "contributors"})
    needs = ("params",)  # ids come from an extra compositing pass, depth and alpha from two extra renders

    def __init__(self, cfg: NearFarConfig):
        super().__init__(cfg)
        self.cfg: NearFarConfig = cfg
        if cfg.topk < 1:
            raise ReconError(f"reg.nearfar.topk must be at least 1, got {cfg.topk}")

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        p = ctx.params
        first, last = contributors(
            p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), ctx.viewmats, ctx.Ks,
            ctx.width, ctx.height, k=self.cfg.topk, backend=ctx.backend, primitive=ctx.primitive,
        )  # fmt: skip
        near, far = contributor_sets(first, last)
        if len(near) == 0 or len(far) == 0:
            return {self.name: ctx.params["means"].sum() * 0.0}
        dn, an = subset_depth_alpha(ctx, near)
        df, af = subset_depth_alpha(ctx, far)
        return {self.name: self.cfg.weight * nearfar_value(dn, an, df, af)}
