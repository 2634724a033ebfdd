"""gsplat's DefaultStrategy runs unchanged on the info our CPU backends return, and really refines."""

from __future__ import annotations

import math

import pytest
import torch

from recon.render import rasterize

BACKENDS = ["reference", "cpu"]


def _require(backend: str) -> None:
    if backend == "cpu":
        pytest.importorskip(
            "recon.render.cpu", reason="the C++ cpu backend (recon.render.cpu) is not importable yet"
        )


def _params(groups: dict[str, int], gen: torch.Generator) -> dict[str, torch.nn.Parameter]:
    """Gaussians near the origin in three groups: small (to duplicate), large (to split), transparent (to prune)."""
    n = sum(groups.values())
    log_scale = torch.empty(n, 3)
    logit_opacity = torch.empty(n)
    start = 0
    for name, count in groups.items():
        sl = slice(start, start + count)
        log_scale[sl] = math.log({"small": 0.005, "large": 0.08, "transparent": 0.05}[name])
        logit_opacity[sl] = math.log(0.001 / 0.999) if name == "transparent" else 0.4
        start += count
    log_scale += torch.rand(n, 3, generator=gen) * 0.1
    return {
        "means": torch.nn.Parameter((torch.rand(n, 3, generator=gen) - 0.5) * 1.0),
        "scales": torch.nn.Parameter(log_scale),
        "quats": torch.nn.Parameter(torch.randn(n, 4, generator=gen)),
        "opacities": torch.nn.Parameter(logit_opacity),
        "colors": torch.nn.Parameter(torch.rand(n, 3, generator=gen)),
        # provenance of every row, carried along by duplicate/split/remove; not trained
        "tag": torch.nn.Parameter(torch.arange(n, dtype=torch.float32), requires_grad=False),
    }


@pytest.mark.parametrize("absgrad", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_default_strategy_splits_clones_and_prunes(backend, absgrad, random_scene):
    _require(backend)
    from gsplat.strategy import DefaultStrategy

    cams = random_scene(20, 2, 32, 40, seed=0)
    viewmats, Ks, W, H = cams["viewmats"], cams["Ks"], cams["width"], cams["height"]
    gen = torch.Generator().manual_seed(0)
    groups = {"small": 30, "large": 30, "transparent": 10}
    params = _params(groups, gen)
    small = set(range(0, 30))
    large = set(range(30, 60))
    transparent = set(range(60, 70))
    optimizers = {k: torch.optim.Adam([p], lr=1e-3, eps=1e-15) for k, p in params.items() if p.requires_grad}
    strategy = DefaultStrategy(
        prune_opa=0.005,
        grow_grad2d=1e-9,  # any Gaussian that received gradient grows
        grow_scale3d=0.02,  # between the small (0.005) and large (0.08) groups
        refine_start_iter=0,
        refine_every=3,
        reset_every=10_000,
        absgrad=absgrad,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(2, H, W, 3, generator=gen)

    large_scale_before = None
    for step in range(4):
        out, info = rasterize(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]),
            colors=params["colors"],
            viewmats=viewmats,
            Ks=Ks,
            width=W,
            height=H,
            absgrad=absgrad,
            backend=backend,
        )
        assert info["radii"].shape == (2, len(params["means"]), 2)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = ((out.rgb - target) ** 2).mean()
        loss.backward()
        if step == 3:
            large_scale_before = params["scales"].detach()[30:60].clone()
            grads = info["means2d"].absgrad if absgrad else info["means2d"].grad
            assert grads is not None and grads.abs().sum() > 0
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if step < 3:
            assert len(params["means"]) == 70  # no refinement before step 3

    tags = params["tag"].detach().long().tolist()
    counts = {t: tags.count(t) for t in set(tags)}
    duplicated = [t for t in small if counts.get(t, 0) == 2]
    split = [t for t in large if counts.get(t, 0) == 2]
    pruned = [t for t in transparent if counts.get(t, 0) == 0]
    assert duplicated and split and pruned, (len(duplicated), len(split), len(pruned))
    assert len(params["means"]) == 70 + len(duplicated) + len(split) - len(pruned)
    assert all(counts.get(t, 0) in (1, 2) for t in small | large)

    scales = params["scales"].detach()
    means = params["means"].detach()
    tag_t = params["tag"].detach().long()
    for t in duplicated[:5]:  # a clone is an exact copy
        rows = torch.nonzero(tag_t == t).squeeze(1)
        assert torch.equal(scales[rows[0]], scales[rows[1]]) and torch.equal(means[rows[0]], means[rows[1]])
    for t in split[:5]:  # a split gives two children 1.6x smaller at sampled positions
        rows = torch.nonzero(tag_t == t).squeeze(1)
        torch.testing.assert_close(scales[rows[0]], large_scale_before[t - 30] - math.log(1.6))
        assert not torch.equal(means[rows[0]], means[rows[1]])
    for name, opt in optimizers.items():  # the optimizers follow the new parameters
        assert opt.param_groups[0]["params"][0] is params[name]
