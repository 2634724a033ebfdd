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

The rasterizers do not report per-pixel contributor ids, so they come from an extra no-gradient pass of the
pure-torch reference compositor (``recon.render.reference.pixel_contributions``), which records every pixel's
composited list: exact, but slow and memory-hungry beyond small images and a few ten thousand Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.data.errors import ReconError
from recon.render import rasterize
from recon.render.reference import pixel_contributions

from .base import RegContext, Regularizer, RegularizerConfig

EPS = 1e-3


@dataclass
class NearFarConfig(RegularizerConfig):
    topk: int = 5  # K: how many of the first and last contributors of each pixel are recorded


def subset_depth_alpha(
    params, ids: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int, backend: str
) -> tuple[Tensor, Tensor]:
    """(depth_exp, alpha) [C,H,W,1] of the Gaussians ``ids`` rendered alone (no colour, no background)."""
    out, _ = rasterize(
        means=params["means"][ids],
        quats=params["quats"][ids],
        scales=torch.exp(params["scales"][ids]),
        opacities=torch.sigmoid(params["opacities"][ids]),
        colors=torch.zeros(len(ids), 1, dtype=params["means"].dtype, device=params["means"].device),
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        outputs=("alpha", "depth_exp"),
        backend=backend,
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


@torch.no_grad()
def contributor_ids(
    params, viewmats: Tensor, Ks: Tensor, width: int, height: int, k: int
) -> tuple[Tensor, Tensor]:
    """(first_k_ids, last_k_ids) [C,H,W,k]: each pixel's first and last k composited Gaussians, −1 = none."""
    ids, _, _ = pixel_contributions(
        params["means"].detach(),
        params["quats"].detach(),
        torch.exp(params["scales"].detach()),
        torch.sigmoid(params["opacities"].detach()),
        viewmats,
        Ks,
        width,
        height,
    )
    C, H, W, L = ids.shape
    if L == 0:
        none = torch.full((C, H, W, k), -1, dtype=torch.long, device=ids.device)
        return none, none.clone()
    pad = torch.full((C, H, W, k), -1, dtype=ids.dtype, device=ids.device)
    first = torch.cat([ids, pad], -1)[..., :k]
    count = (ids >= 0).sum(-1, keepdim=True)  # composited entries come first, then −1 padding
    pos = count - k + torch.arange(k, device=ids.device)  # the last k positions, oldest first
    last = torch.gather(ids, -1, pos.clamp(0, L - 1))
    last = torch.where(pos >= 0, last, torch.full_like(last, -1))
    return first, last


def contributor_sets(first_k_ids: Tensor, last_k_ids: Tensor) -> tuple[Tensor, Tensor]:
    """(N, F): sorted unique ids among the per-pixel first-K and last-K contributors (−1 entries dropped)."""
    near = torch.unique(first_k_ids[first_k_ids >= 0])
    far = torch.unique(last_k_ids[last_k_ids >= 0])
    return near, far


class NearFar(Regularizer):
    name = "nearfar"
    needs = ("params",)  # contributor ids come from an extra pass, depth and alpha from two extra renders

    def __init__(self, cfg: NearFarConfig):
        super().__init__(cfg)
        self.cfg: NearFarConfig = cfg
        if cfg.topk < 1:
            raise ReconError(f"reg.nearfar.topk must be at least 1, got {cfg.topk}")

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        first, last = contributor_ids(ctx.params, ctx.viewmats, ctx.Ks, ctx.width, ctx.height, self.cfg.topk)
        near, far = contributor_sets(first, last)
        if len(near) == 0 or len(far) == 0:
            return {self.name: ctx.params["means"].sum() * 0.0}
        args = (ctx.viewmats, ctx.Ks, ctx.width, ctx.height, ctx.backend)
        dn, an = subset_depth_alpha(ctx.params, near, *args)
        df, af = subset_depth_alpha(ctx.params, far, *args)
        return {self.name: self.cfg.weight * nearfar_value(dn, an, df, af)}
