"""SuGaR surface alignment (METHODS.md §3.4): make 3D Gaussians flat, opaque and aligned with the surface.

Why: a level set of the Gaussians' density is only a good surface when the density near it looks like that of
an ideal surface of flat Gaussians; then SuGaR's level-set + Poisson export (``recon.export.mesh``) works. Three
terms, each with its own weight (the overall ``weight`` multiplies all three):

* density: at points p sampled in visible Gaussians g, the density of g's k nearest neighbours,
  d(p) = Σ_j α_j exp(−½ (p−μ_j)ᵀΣ_j⁻¹(p−μ_j)) (clamped to 1 with the gradient kept), should equal the density of
  a flat surface through g, d̄(p) = exp(−⟨p−μ_g, n_g⟩² / (2β²)) with β the neighbours' mean smallest scale;
  L = mean |d − d̄|.
* normal: n_g should equal the density-and-distance weighted mean of its neighbours' normals (weights without
  gradient, neighbours' normals oriented like n_g); L = mean ‖n_g − Σ ω̂_j n_j‖².
* entropy: binary entropy of the visible Gaussians' opacities, pushing them to 0 or 1 (own step window).

The k-nearest-neighbour graph (scipy cKDTree on the centres) is rebuilt every ``knn_every`` steps and whenever the
set of Gaussians changed (densification replaces the parameter tensors). SuGaR's schedule in a 30k-step run:
entropy for 7000 ≤ step < 9000, density and normal from 9000, weights 0.2 / 0.2 / 0.1, k = 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from recon.render.projection import quat_to_rotmat

from .base import RegContext, Regularizer, RegularizerConfig, visible_ids, window_active

MAX_SQ_DIST = 1e8


@dataclass
class SugarConfig(RegularizerConfig):
    """``weight`` multiplies the three term weights; ``start_step``/``end_step`` bound the density and normal
    terms, ``entropy_window`` the entropy term. Off unless one of the term weights is above zero."""

    weight: float = 1.0
    density_weight: float = 0.0  # SuGaR: 0.2
    normal_weight: float = 0.0  # SuGaR: 0.2
    entropy_weight: float = 0.0  # SuGaR: 0.1
    entropy_window: tuple[int, int] = (0, -1)  # [start, end) steps of the entropy term; end -1 = never ends
    knn: int = 16  # neighbours of each Gaussian, itself included
    knn_every: int = 500  # rebuild the neighbour graph every this many steps
    samples: int = 4096  # points sampled per step (SuGaR's GPU code: 1,000,000)
    sample_scale: float = 1.5  # samples are μ + R(scale_factor · s ⊙ ε), ε ~ N(0, I)
    prune_opacity: float = 0.0  # SuGaR: 0.5 — remove the Gaussians less opaque than this, once, at prune_step
    prune_step: int = -1  # SuGaR: the end of the entropy window (9000 of 30k); -1 = never


def gaussian_frames(params) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(means [N,3], rotations [N,3,3] (columns = axes), scales [N,3], opacities [N]) of the model parameters."""
    return (
        params["means"],
        quat_to_rotmat(params["quats"]),
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
    )


def shortest_axis(rot: Tensor, scales: Tensor) -> Tensor:
    """Unit normal of each Gaussian: the rotation column of its smallest scale (no gradient through the choice)."""
    axis = torch.argmin(scales.detach(), dim=-1)
    return torch.gather(rot, -1, axis[..., None, None].expand(*rot.shape[:-1], 1)).squeeze(-1)


def knn_graph(means: Tensor, k: int) -> Tensor:
    """[N,k] int64 ids of each centre's k nearest centres, itself first (fewer columns if N < k)."""
    pts = means.detach().cpu().double().numpy()
    k = min(k, len(pts))
    _, idx = cKDTree(pts).query(pts, k=k)
    idx = np.asarray(idx).reshape(len(pts), k)
    return torch.from_numpy(idx.astype(np.int64)).to(means.device)


def sample_points(mu: Tensor, rot: Tensor, scales: Tensor, scale_factor: float) -> Tensor:
    """One point per row: μ + R (scale_factor · s ⊙ ε), ε ~ N(0, I) (differentiable in μ, R, s)."""
    eps = torch.randn_like(mu)
    return mu + (rot @ (scale_factor * scales * eps)[..., None]).squeeze(-1)


def neighbour_terms(p: Tensor, mu: Tensor, rot: Tensor, scales: Tensor, opac: Tensor) -> Tensor:
    """α_j exp(−½ (p−μ_j)ᵀΣ_j⁻¹(p−μ_j)) for points p [S,3] and their neighbours [S,k,·] -> [S,k]."""
    local = torch.einsum("skji,skj->ski", rot, p[:, None, :] - mu)  # Rᵀ(p − μ)
    sq = ((local / scales) ** 2).sum(-1).clamp(max=MAX_SQ_DIST)
    return opac * torch.exp(-0.5 * sq)


def density_loss(
    p: Tensor, g_mu: Tensor, g_normal: Tensor, nb: tuple[Tensor, Tensor, Tensor, Tensor]
) -> Tensor:
    """mean_p |d(p) − d̄(p)| (METHODS §3.4) for points p sampled in Gaussians g with neighbours nb."""
    mu, rot, scales, opac = nb
    d = neighbour_terms(p, mu, rot, scales, opac).sum(-1)
    d = torch.where(d >= 1.0, d / d.detach().clamp_min(1.0), d)  # value 1 above the surface, gradient kept
    f = ((p - g_mu) * g_normal).sum(-1)
    beta = scales.min(-1).values.mean(-1)
    ideal = torch.exp(-(f**2) / (2.0 * beta**2))
    return (d - ideal).abs().mean()


def normal_loss(p: Tensor, g_normal: Tensor, nb: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """mean_p ‖n_g − Σ_j ω̂_j n_j‖² with ω_j = sg(α_j e^{…} |⟨p − μ_j, n_j⟩| / max(min s_j, 1e-6)²)."""
    mu, rot, scales, opac = nb
    n = shortest_axis(rot, scales)  # [S,k,3]
    n = n * torch.sign((n * g_normal[:, None, :]).sum(-1, keepdim=True)).detach()
    with torch.no_grad():
        w = neighbour_terms(p, mu, rot, scales, opac)
        w = w * ((p[:, None, :] - mu) * n).sum(-1).abs() / scales.min(-1).values.clamp_min(1e-6) ** 2
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-6)
    avg = (w[..., None] * n).sum(1)
    return ((g_normal - avg) ** 2).sum(-1).mean()


def opacity_entropy(opac: Tensor) -> Tensor:
    """Mean binary entropy −α log α − (1−α) log(1−α) (with 1e-10 inside the logs)."""
    return (-opac * torch.log(opac + 1e-10) - (1 - opac) * torch.log(1 - opac + 1e-10)).mean()


class Sugar(Regularizer):
    name = "sugar"
    config_class = SugarConfig
    requires = frozenset({"primitives"})
    needs = ("info", "params")  # no extra render maps: visibility comes from info["radii"]

    def __init__(self, cfg: SugarConfig):
        super().__init__(cfg)
        self.cfg: SugarConfig = cfg
        self.graph: Tensor | None = None
        self._graph_means: Tensor | None = None  # the parameter tensor the graph was built from
        self._graph_step = 0
        self._last_step: int | None = (
            None  # the step prune_mask last saw, to fire once when prune_step is crossed
        )

    def enabled(self) -> bool:
        c = self.cfg
        return c.weight > 0 and max(c.density_weight, c.normal_weight, c.entropy_weight) > 0

    def _surface_active(self, step: int) -> bool:
        c = self.cfg
        return max(c.density_weight, c.normal_weight) > 0 and window_active(step, c.start_step, c.end_step)

    def _entropy_active(self, step: int) -> bool:
        c = self.cfg
        return c.entropy_weight > 0 and window_active(step, *c.entropy_window)

    def active(self, step: int) -> bool:
        return self.enabled() and (self._surface_active(step) or self._entropy_active(step))

    def prune_mask(self, params, step: int) -> Tensor | None:
        """SuGaR's one-off prune of the Gaussians with opacity below ``prune_opacity`` (after the entropy term has
        pushed opacities to 0 or 1), when the run first reaches ``prune_step``. Under a time budget steps are
        nominal and may jump, so it fires on the crossing rather than on equality; a resumed run that starts past
        the step does not prune again."""
        c = self.cfg
        last, self._last_step = self._last_step, step
        if not self.enabled() or c.prune_opacity <= 0 or c.prune_step < 0 or last is None:
            return None
        if not (last < c.prune_step <= step):
            return None
        return torch.sigmoid(params["opacities"].detach()).flatten() < c.prune_opacity

    def neighbours(self, means: Tensor, step: int) -> Tensor:
        """The kNN graph, rebuilt on schedule or when the Gaussians were replaced (densification, pruning)."""
        stale = (
            self.graph is None
            or self._graph_means is not means
            or self.graph.shape[0] != means.shape[0]
            or step - self._graph_step >= self.cfg.knn_every
            or step < self._graph_step
        )
        if stale:
            self.graph = knn_graph(means, self.cfg.knn)
            self._graph_means = means
            self._graph_step = step
        return self.graph

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        c = self.cfg
        mu, rot, scales, opac = gaussian_frames(ctx.params)
        vis = visible_ids(ctx.info, mu.shape[0], mu.device)
        terms: dict[str, Tensor] = {}
        if len(vis) == 0:
            return terms
        if self._entropy_active(ctx.step):
            terms["sugar_entropy"] = c.weight * c.entropy_weight * opacity_entropy(opac[vis])
        if not self._surface_active(ctx.step):
            return terms
        graph = self.neighbours(ctx.params["means"], ctx.step)
        g = vis[torch.randint(len(vis), (c.samples,), device=mu.device)]
        p = sample_points(mu[g], rot[g], scales[g], c.sample_scale)
        g_normal = shortest_axis(rot[g], scales[g])
        ids = graph[g]  # [S,k]
        nb = (mu[ids], rot[ids], scales[ids], opac[ids])
        if c.density_weight > 0:
            terms["sugar_density"] = c.weight * c.density_weight * density_loss(p, mu[g], g_normal, nb)
        if c.normal_weight > 0:
            terms["sugar_normal"] = c.weight * c.normal_weight * normal_loss(p, g_normal, nb)
        return terms
