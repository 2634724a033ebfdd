"""Densification: gsplat's DefaultStrategy and MCMCStrategy, with pure-torch stand-ins for MCMC's CUDA ops.

gsplat's MCMC relocation (`compute_relocation`) and position noise (`quat_scale_to_covar_preci`) are CUDA kernels;
``TorchMCMCStrategy`` overrides the three methods that call them with the same math in PyTorch (3DGS-MCMC,
Kheradmand et al. 2024, eq. 9 for the relocated opacity and scale), so MCMC densification runs on the CPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from gsplat.strategy.ops import _multinomial_sample, _update_param_with_optimizer, remove, reset_opa
from torch import Tensor

from recon.models.splats import covariances

from .config import StrategyConfig
from .schedule import PeriodicStep


def relocation_torch(
    opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor
) -> tuple[Tensor, Tensor]:
    """Opacity and scale of each of the N copies a Gaussian is split into, so the N copies render like the original.

    o_new = 1 − (1 − o)^(1/N);  s_new = s · o / Σ_{i=1..N} Σ_{k=0..i−1} C(i−1,k) (−1)^k o_new^(k+1) / √(k+1).
    """
    n_max = binoms.shape[0]
    n = ratios.clamp(1, n_max).to(torch.long)
    new_o = 1.0 - torch.pow(1.0 - opacities, 1.0 / n.to(opacities.dtype))
    i = torch.arange(1, n_max + 1, device=opacities.device)
    k = torch.arange(n_max, device=opacities.device)
    # term[k] = (-1)^k / sqrt(k+1) * o_new^(k+1); inner sum over k < i weighted by C(i-1, k); outer over i <= N.
    powers = new_o[:, None] ** (k[None, :] + 1).to(new_o.dtype)  # [M, n_max]
    term = powers * ((-1.0) ** k / torch.sqrt(k + 1.0)).to(new_o.dtype)
    coeff = binoms.to(new_o.dtype)  # [i-1, k]
    inner = term @ coeff.T  # [M, n_max]: sum_k C(i-1,k) term_k, for each i
    mask = (i[None, :] <= n[:, None]).to(new_o.dtype)
    denom = (inner * mask).sum(1)
    new_s = scales * (opacities / denom)[:, None]
    return new_o, new_s


class TorchMCMCStrategy(MCMCStrategy):
    """gsplat's MCMCStrategy with relocation and noise computed in PyTorch (runs on any device)."""

    def step_post_backward(
        self, params, optimizers, state, step: int, info: dict[str, Any], lr: float
    ) -> None:
        binoms = state["binoms"].to(params["means"].device)
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            self._relocate_gs(params, optimizers, binoms)
            self._add_new_gs(params, optimizers, binoms)
        self._inject_noise(params, lr * self.noise_lr)

    @torch.no_grad()
    def _relocate_gs(self, params, optimizers, binoms: Tensor) -> int:
        opacities = torch.sigmoid(params["opacities"].flatten())
        dead = opacities <= self.min_opacity
        n_dead = int(dead.sum())
        alive = (~dead).nonzero(as_tuple=True)[0]
        if n_dead == 0 or len(alive) == 0:
            return 0
        dead_idx = dead.nonzero(as_tuple=True)[0]
        src = alive[_multinomial_sample(opacities[alive], n_dead, replacement=True)]
        self._copy_from(params, optimizers, binoms, opacities, src, dead_idx)
        return n_dead

    @torch.no_grad()
    def _add_new_gs(self, params, optimizers, binoms: Tensor) -> int:
        n_now = len(params["means"])
        n_new = max(0, min(self.cap_max, int(1.05 * n_now)) - n_now)
        if n_new == 0:
            return 0
        opacities = torch.sigmoid(params["opacities"].flatten())
        src = _multinomial_sample(opacities, n_new, replacement=True)
        self._copy_from(params, optimizers, binoms, opacities, src, None)
        return n_new

    def _copy_from(
        self, params, optimizers, binoms, opacities: Tensor, src: Tensor, dst: Tensor | None
    ) -> None:
        """Split each sampled Gaussian into (times sampled + 1) equal copies: into ``dst`` rows, or appended."""
        eps = torch.finfo(torch.float32).eps
        counts = torch.bincount(src, minlength=len(opacities))[src] + 1
        new_o, new_s = relocation_torch(opacities[src], torch.exp(params["scales"])[src], counts, binoms)
        new_o = new_o.clamp(self.min_opacity, 1.0 - eps)

        def param_fn(name: str, p: Tensor) -> Tensor:
            if name == "opacities":
                p[src] = torch.logit(new_o).reshape(p[src].shape)
            elif name == "scales":
                p[src] = torch.log(new_s)
            trainable = p.requires_grad
            if dst is None:
                p = torch.cat([p, p[src]])  # under no_grad: the new tensor does not require grad by itself
            else:
                p[dst] = p[src]
            return torch.nn.Parameter(p, requires_grad=trainable)

        def optimizer_fn(key: str, v: Tensor) -> Tensor:
            if dst is None:
                return torch.cat([v, torch.zeros((len(src), *v.shape[1:]), dtype=v.dtype, device=v.device)])
            v[src] = 0
            return v

        _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)

    @torch.no_grad()
    def _inject_noise(self, params, scaler: float) -> None:
        opacities = torch.sigmoid(params["opacities"].flatten())
        covars = covariances(params["quats"], torch.exp(params["scales"]))
        gate = torch.sigmoid(
            100.0 * ((1.0 - opacities) - 0.995)
        )  # noise only for nearly transparent Gaussians
        noise = torch.randn_like(params["means"]) * gate[:, None] * scaler
        params["means"].add_(torch.einsum("nij,nj->ni", covars, noise))


def make_strategy(cfg: StrategyConfig, steps: int, cap: int) -> DefaultStrategy | MCMCStrategy:
    """Build the configured strategy; iteration settings are fractions of ``steps`` (the nominal length)."""
    if cfg.kind == "mcmc":
        m = cfg.mcmc
        return TorchMCMCStrategy(
            cap_max=min(m.cap_max, cap),
            noise_lr=m.noise_lr,
            refine_start_iter=int(m.refine_start * steps),
            refine_stop_iter=int(m.refine_stop * steps),
            refine_every=m.refine_every,
            min_opacity=m.min_opacity,
        )
    d = cfg.default
    return DefaultStrategy(
        prune_opa=d.prune_opa,
        grow_grad2d=d.grow_grad2d,
        grow_scale3d=d.grow_scale3d,
        prune_scale3d=d.prune_scale3d,
        refine_start_iter=int(d.refine_start * steps),
        refine_stop_iter=int(d.refine_stop * steps),
        reset_every=d.reset_every,
        refine_every=d.refine_every,
        absgrad=d.absgrad,
    )


@torch.no_grad()
def enforce_cap(params, optimizers, state: dict, cap: int) -> int:
    """Remove the least opaque Gaussians beyond ``cap`` (DefaultStrategy has no cap of its own)."""
    n = len(params["means"])
    if n <= cap:
        return 0
    order = torch.argsort(params["opacities"].flatten())
    mask = torch.zeros(n, dtype=torch.bool, device=params["means"].device)
    mask[order[: n - cap]] = True
    remove(params=params, optimizers=optimizers, state=state, mask=mask)
    return int(mask.sum())


def binomial_table(n_max: int = 51) -> Tensor:
    t = torch.zeros(n_max, n_max)
    for n in range(n_max):
        for k in range(n + 1):
            t[n, k] = math.comb(n, k)
    return t


@torch.no_grad()
def reset_opacities_if_due(strategy: DefaultStrategy, params, optimizers, state: dict, step: int) -> bool:
    """3DGS's periodic opacity reset, done here because gsplat 1.5.3's test for it never fires.

    gsplat writes ``step % self.reset_every == 0 & step > 0``; Python reads that as
    ``step % reset_every == (0 & step) > 0``, a chained comparison that is always False.
    """
    if not (0 < step < strategy.refine_stop_iter) or step % strategy.reset_every != 0:
        return False
    reset_opa(params=params, optimizers=optimizers, state=state, value=strategy.prune_opa * 2.0)
    return True


# ----------------------------------------------------------------------------------------------------------------
# One adapter over every densification strategy, so the trainer's step is the same for any representation.


class Densifier:
    """No densification (representations without per-primitive rows). Subclasses wrap a strategy.

    Per training step the trainer calls ``begin(nominal)`` once, ``pre_backward`` before and ``post_backward``
    after the optimizer step; ``remove`` deletes primitives a regularizer asked to prune, keeping the strategy's
    own per-primitive state in line.
    """

    absgrad = False  # whether the render must accumulate |dL/dmeans2d| per pixel

    def begin(self, nominal: int) -> None:
        pass

    def pre_backward(self, params, optimizers, info: dict) -> None:
        pass

    def post_backward(self, params, optimizers, info: dict, lr: float) -> None:
        pass

    def remove(self, params, optimizers, mask: Tensor) -> None:
        raise ValueError("this representation has no primitives to remove")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class StrategyDensifier(Densifier):
    """gsplat's DefaultStrategy (plus our cap and opacity reset) or our TorchMCMCStrategy."""

    def __init__(self, strategy: DefaultStrategy | MCMCStrategy, params, optimizers, extent: float, cap: int):
        self.strategy, self.cap = strategy, cap
        self.default = isinstance(strategy, DefaultStrategy)
        strategy.check_sanity(params, optimizers)
        self.state = (
            strategy.initialize_state(scene_scale=extent) if self.default else strategy.initialize_state()
        )
        self.refine_step = PeriodicStep(strategy.refine_every)
        self.absgrad = bool(getattr(strategy, "absgrad", False))
        self.step_arg = 0

    def begin(self, nominal: int) -> None:
        self.step_arg = self.refine_step(nominal)

    def pre_backward(self, params, optimizers, info: dict) -> None:
        self.strategy.step_pre_backward(params, optimizers, self.state, self.step_arg, info)

    def post_backward(self, params, optimizers, info: dict, lr: float) -> None:
        s, step = self.strategy, self.step_arg
        if not self.default:
            s.step_post_backward(params, optimizers, self.state, step, info, lr=lr)
            return
        s.step_post_backward(params, optimizers, self.state, step, info)
        if step % s.refine_every == 0:
            enforce_cap(params, optimizers, self.state, self.cap)
        reset_opacities_if_due(s, params, optimizers, self.state, step)

    def remove(self, params, optimizers, mask: Tensor) -> None:
        remove(params=params, optimizers=optimizers, state=self.state, mask=mask)

    def state_dict(self) -> dict[str, Any]:
        return {"strategy_state": self.state, "refine_step": self.refine_step.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state["strategy_state"]
        self.refine_step.load_state_dict(state["refine_step"])
