"""SuGaR alignment terms (METHODS.md §3.4): the partition-of-unity grid known answers, normals, entropy, kNN."""

from __future__ import annotations

import math

import pytest
import torch

from recon.regularizers.base import RegContext
from recon.regularizers.sugar import (
    Sugar,
    SugarConfig,
    density_loss,
    knn_graph,
    normal_loss,
    opacity_entropy,
    shortest_axis,
)
from recon.render.outputs import RenderOutputs
from recon.render.projection import quat_to_rotmat

from .helpers import params_of, quat_about_x

A = 0.1  # grid spacing
N_SIDE = 21


def grid(tilt_deg: float = 0.0, isotropic: bool = False, tilt_every_second: bool = False):
    """21×21 Gaussians in z = 0, scales (0.6a, 0.6a, 0.01a), opacity a²/(2π(0.6a)²): an in-plane partition of
    unity, so the density is exactly that of a flat surface up to kNN truncation."""
    xs = (torch.arange(N_SIDE, dtype=torch.float64) - N_SIDE // 2) * A
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    n = X.numel()
    means = torch.stack([X.flatten(), Y.flatten(), torch.zeros(n, dtype=torch.float64)], -1)
    scales = torch.tensor([0.6 * A, 0.6 * A, (0.6 if isotropic else 0.01) * A], dtype=torch.float64).repeat(
        n, 1
    )
    quats = quat_about_x(0.0, n)
    tilted = torch.arange(n) % 2 == 1 if tilt_every_second else torch.ones(n, dtype=torch.bool)
    quats[tilted] = quat_about_x(tilt_deg, int(tilted.sum()))
    opac = torch.full((n,), A * A / (2 * math.pi * (0.6 * A) ** 2), dtype=torch.float64)
    return means, quats, scales, opac


def central_ids() -> torch.Tensor:
    ij = torch.arange(N_SIDE * N_SIDE)
    i, j = ij // N_SIDE, ij % N_SIDE
    return ij[((i - N_SIDE // 2).abs() <= 5) & ((j - N_SIDE // 2).abs() <= 5)]


def losses(k: int = 16, samples: int = 20000, clip_eps: float | None = None, seed: int = 0, **grid_kw):
    means, quats, scales, opac = grid(**grid_kw)
    rot = quat_to_rotmat(quats)
    gen = torch.Generator().manual_seed(seed)
    central = central_ids()
    g = central[torch.randint(len(central), (samples,), generator=gen)]
    eps = torch.randn(samples, 3, generator=gen, dtype=torch.float64)
    if clip_eps is not None:
        eps = eps.clamp(-clip_eps, clip_eps)
    p = means[g] + (rot[g] @ (1.5 * scales[g] * eps)[..., None]).squeeze(-1)
    ids = knn_graph(means, k)[g]
    nb = (means[ids], rot[ids], scales[ids], opac[ids])
    g_normal = shortest_axis(rot[g], scales[g])
    return float(density_loss(p, means[g], g_normal, nb)), float(normal_loss(p, g_normal, nb))


def test_density_known_answers():
    aligned16, _ = losses(k=16)
    aligned36, _ = losses(k=36)
    assert aligned16 < 0.1 and aligned16 == pytest.approx(0.072, abs=0.005)
    assert aligned36 < 0.01
    assert losses(tilt_deg=20.0)[0] > 0.3
    assert losses(isotropic=True)[0] > 0.3


def test_normal_loss_zero_for_coplanar_and_grows_with_the_angle():
    # ε clipped to 3σ: far out in the tails every neighbour's weight underflows the 1e-6 floor of the
    # normalisation, and such a sample scores ‖n_g‖² = 1 whatever the normals are.
    assert losses(samples=4000, clip_eps=3.0)[1] < 1e-6
    values = [
        losses(samples=4000, clip_eps=3.0, tilt_deg=a, tilt_every_second=True)[1] for a in (5, 10, 20, 40)
    ]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[0] > 1e-4


def test_entropy_known_answers():
    assert float(opacity_entropy(torch.tensor([0.0, 1.0], dtype=torch.float64))) == pytest.approx(
        0.0, abs=1e-8
    )
    assert float(opacity_entropy(torch.tensor([0.5], dtype=torch.float64))) == pytest.approx(
        math.log(2), rel=1e-9
    )


def test_knn_graph_lists_itself_first_and_the_true_neighbours():
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0], [3.5, 0, 0]])
    g = knn_graph(pts, 2)
    assert g.tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    assert knn_graph(pts, 16).shape == (4, 4)


def _ctx(params, step: int, visible: torch.Tensor | None = None) -> RegContext:
    n = params["means"].shape[0]
    radii = (
        torch.ones(1, n, 2, dtype=torch.int32)
        if visible is None
        else visible.int()[None, :, None].repeat(1, 1, 2)
    )
    return RegContext(
        outputs=RenderOutputs(), info={"radii": radii}, params=params, step=step,
        viewmats=torch.eye(4)[None], Ks=torch.eye(3)[None], width=1, height=1,
    )  # fmt: skip


def test_regularizer_schedule_terms_and_graph_refresh():
    torch.manual_seed(0)
    params = params_of(*grid())
    cfg = SugarConfig(
        weight=2.0, density_weight=0.2, normal_weight=0.2, entropy_weight=0.1, start_step=10,
        entropy_window=(5, 10), knn=16, knn_every=3, samples=512,
    )  # fmt: skip
    reg = Sugar(cfg)
    assert not reg.active(4) and reg.active(5) and reg.active(100)
    assert set(reg.loss(_ctx(params, 6))) == {"sugar_entropy"}
    opac = torch.sigmoid(params["opacities"]).detach()
    assert float(reg.loss(_ctx(params, 6))["sugar_entropy"].detach()) == pytest.approx(
        2.0 * 0.1 * float(opacity_entropy(opac))
    )
    terms = reg.loss(_ctx(params, 10))
    assert set(terms) == {"sugar_density", "sugar_normal"}
    sum(terms.values()).backward()
    assert params["scales"].grad.abs().sum() > 0 and params["quats"].grad.abs().sum() > 0
    first = reg.graph
    reg.loss(_ctx(params, 11))
    assert reg.graph is first  # within knn_every: reused
    reg.loss(_ctx(params, 13))
    assert reg.graph is not first  # knn_every steps later: rebuilt
    kept = reg.graph
    fewer = params_of(*(t[:-5] for t in grid()))  # the Gaussians were replaced (e.g. pruned)
    reg.loss(_ctx(fewer, 14))
    assert reg.graph is not kept and reg.graph.shape[0] == fewer["means"].shape[0]


def test_only_visible_gaussians_are_sampled_and_entropy_uses_them():
    params = params_of(*grid())
    n = params["means"].shape[0]
    visible = torch.zeros(n, dtype=torch.bool)
    visible[:7] = True
    reg = Sugar(SugarConfig(entropy_weight=1.0, density_weight=1.0, samples=256))
    reg.loss(_ctx(params, 0, visible))["sugar_density"].backward()
    touched = params["scales"].grad.abs().sum(-1) > 0
    # the sampling Gaussians are visible ones; only their neighbours (within 16-NN) receive gradient
    graph = knn_graph(params["means"], 16)
    assert set(torch.nonzero(touched).flatten().tolist()) <= set(graph[:7].flatten().tolist())
    params.zero_grad()
    reg.loss(_ctx(params, 0, visible))["sugar_entropy"].backward()
    assert torch.nonzero(params["opacities"].grad).flatten().tolist() == list(range(7))


def test_opacity_prune_fires_once_when_its_step_is_crossed():
    logits = torch.logit(torch.tensor([0.2, 0.6, 0.45, 0.9]))
    params = {"opacities": logits.clone()}
    reg = Sugar(SugarConfig(entropy_weight=0.1, prune_opacity=0.5, prune_step=10))
    assert reg.prune_mask(params, 8) is None  # first call only records the step
    assert reg.prune_mask(params, 9) is None
    mask = reg.prune_mask(params, 12)  # a time budget may jump over the exact step
    assert mask.tolist() == [True, False, True, False]
    assert reg.prune_mask(params, 13) is None  # once only
    resumed = Sugar(SugarConfig(entropy_weight=0.1, prune_opacity=0.5, prune_step=10))
    assert resumed.prune_mask(params, 11) is None and resumed.prune_mask(params, 12) is None
    off = Sugar(SugarConfig(entropy_weight=0.1, prune_step=10))  # prune_opacity 0: never
    assert off.prune_mask(params, 9) is None and off.prune_mask(params, 10) is None
