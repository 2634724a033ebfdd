"""3DCS densification (METHODS.md §3.1): split convexes on the accumulated signed ∂L/∂σ, prune, reset opacities.

Why its own strategy: gsplat's strategies grow Gaussians from screen-space positional gradients and edit means,
scales and quats; a convex has none of those (its kernel reads hull lines, so means2d carries no gradient), and
3DCS splits a convex into K shrunken copies around its own points. Every schedule is a fraction of training
(``strategy.convex``), so it works under ``--time-budget`` through the nominal step.
"""

from __future__ import annotations

from typing import Any

import torch
from gsplat.strategy.ops import _update_param_with_optimizer, remove, reset_opa
from torch import Tensor

from recon.models.convex import MASK_THRESHOLD

from .config import ConvexStrategyConfig
from .schedule import PeriodicStep
from .strategies import Densifier


@torch.no_grad()
def split_convexes(
    params, optimizers, state: dict[str, Tensor], which: Tensor, cfg: ConvexStrategyConfig
) -> int:
    """Replace each convex in ``which`` (bool [N]) by K children: child i is centred on the parent's point i with
    points c_i + shrink·(P − c), opacity child_opacity × the parent's, log δ × child_delta, log σ × child_sigma;
    the rest (mask, SH) copied. Children start with zero optimizer moments and zero densification statistics."""
    idx = which.nonzero(as_tuple=True)[0]
    if len(idx) == 0:
        return 0
    pts = params["points"][idx]  # [M,K,3]
    M, K = pts.shape[:2]
    centre = pts.mean(1, keepdim=True)
    child_pts = pts[:, :, None, :] + cfg.shrink * (pts - centre)[:, None, :, :]  # [M,K(child),K(point),3]
    opac = torch.sigmoid(params["opacities"][idx]) * cfg.child_opacity
    new_rows = {
        "points": child_pts.reshape(M * K, K, 3),
        "opacities": torch.logit(opac).repeat_interleave(K),
        "delta": (params["delta"][idx] * cfg.child_delta).repeat_interleave(K),
        "sigma": (params["sigma"][idx] * cfg.child_sigma).repeat_interleave(K),
    }

    def param_fn(name: str, p: Tensor) -> Tensor:
        rows = new_rows[name] if name in new_rows else p[idx].repeat_interleave(K, dim=0)
        return torch.nn.Parameter(torch.cat([p, rows.to(p.dtype)]), requires_grad=p.requires_grad)

    def optimizer_fn(key: str, v: Tensor) -> Tensor:
        return torch.cat([v, v.new_zeros((M * K, *v.shape[1:]))])

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)
    for k, v in state.items():
        if isinstance(v, Tensor):
            state[k] = torch.cat([v, v.new_zeros((M * K, *v.shape[1:]))])
    parents = torch.zeros(len(params["points"]), dtype=torch.bool, device=which.device)
    parents[idx] = True
    remove(params=params, optimizers=optimizers, state=state, mask=parents)
    return M * K - M


def convex_size(points: Tensor) -> Tensor:
    """3DCS's "scaling" statistic: the largest standard deviation of a convex's points along x, y or z [N]."""
    return points.std(dim=1, unbiased=False).amax(-1)


class ConvexDensifier(Densifier):
    """Splits on the mean signed ∂L/∂σ over the views a convex was visible in; prunes transparent, masked-off and
    (after ``prune_size_after``) oversized convexes; resets opacities periodically while splitting."""

    def __init__(self, cfg: ConvexStrategyConfig, steps: int, cap: int, params, extent: float):
        self.cfg, self.cap, self.extent = cfg, cap, extent
        self.max_grad = cfg.max_grad * (8.5 if extent > 300 else 1.0)
        self.start, self.stop = int(cfg.refine_start * steps), int(cfg.refine_stop * steps)
        self.prune_size_after = int(cfg.prune_size_after * steps)
        self.refine_step = PeriodicStep(max(1, round(cfg.refine_every * steps)))
        self.prune_step = PeriodicStep(max(1, round(cfg.prune_every * steps)))
        self.reset_step = PeriodicStep(max(1, round(cfg.reset_every * steps)))
        n = len(params["points"])
        device = params["points"].device
        self.state: dict[str, Tensor] = {
            "sigma_grad": torch.zeros(n, device=device),
            "count": torch.zeros(n, device=device),
        }
        self.nominal = 0
        self.events = (0, 0, 0)  # (refine, prune, reset) step numbers handed over for this step
        self.last: dict[str, int] = {}

    def begin(self, nominal: int) -> None:
        self.nominal = nominal
        self.events = (self.refine_step(nominal), self.prune_step(nominal), self.reset_step(nominal))

    @torch.no_grad()
    def post_backward(self, params, optimizers, info: dict, lr: float) -> None:
        sigma = info.get("sigma")
        if sigma is not None and sigma.grad is not None:
            visible = (info["radii"][..., 0] > 0).any(0)
            self.state["sigma_grad"][visible] += sigma.grad[visible].to(self.state["sigma_grad"].dtype)
            self.state["count"][visible] += 1
        refine, prune, reset = self.events
        n = self.nominal
        splitting = self.start <= n < self.stop
        if splitting and refine % self.refine_step.period == 0 and n > self.start:
            self.last = {"split": self._split(params, optimizers), "pruned": self._prune(params, optimizers)}
            self.state["sigma_grad"].zero_()
            self.state["count"].zero_()
        elif n >= self.stop and prune % self.prune_step.period == 0 and n > 0:
            self.last = {"pruned": self._prune(params, optimizers)}
        if splitting and reset % self.reset_step.period == 0 and n > 0:
            reset_opa(params=params, optimizers=optimizers, state=self.state, value=self.cfg.reset_opacity)

    def _split(self, params, optimizers) -> int:
        mean = self.state["sigma_grad"] / self.state["count"].clamp_min(1)
        which = (mean >= self.max_grad) & (self.state["count"] > 0)
        room = (self.cap - len(params["points"])) // max(params["points"].shape[1] - 1, 1)
        if int(which.sum()) > room:  # the cap: the largest gradients first
            keep = torch.zeros_like(which)
            if room > 0:
                keep[torch.topk(torch.where(which, mean, -torch.inf), room).indices] = True
            which = keep
        return split_convexes(params, optimizers, self.state, which, self.cfg)

    def _prune(self, params, optimizers) -> int:
        c = self.cfg
        drop = torch.sigmoid(params["opacities"]) < c.prune_opacity
        drop |= torch.sigmoid(params["mask"]) <= max(c.prune_mask, MASK_THRESHOLD)
        if self.nominal >= self.prune_size_after:
            drop |= convex_size(params["points"]) > c.prune_size * self.extent
        if bool(drop.all()):  # never prune the last convex
            drop[torch.argmax(torch.sigmoid(params["opacities"]))] = False
        if bool(drop.any()):
            remove(params=params, optimizers=optimizers, state=self.state, mask=drop)
        return int(drop.sum())

    def remove(self, params, optimizers, mask: Tensor) -> None:
        remove(params=params, optimizers=optimizers, state=self.state, mask=mask)

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy_state": self.state,
            "refine_step": self.refine_step.state_dict(),
            "prune_step": self.prune_step.state_dict(),
            "reset_step": self.reset_step.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state["strategy_state"]
        self.refine_step.load_state_dict(state["refine_step"])
        self.prune_step.load_state_dict(state["prune_step"])
        self.reset_step.load_state_dict(state["reset_step"])
