"""LE3D near–far (METHODS.md §3.3a): contributor ids, one layer gives 0, two layers give the closed form."""

from __future__ import annotations

import math

import pytest
import torch

from recon.regularizers.nearfar import NearFar, NearFarConfig, contributor_sets
from recon.render import contributors

from .helpers import camera, context, params_of, quat_about_x, render

SIZE = 16


def layers(depths: list[float], per_layer: int, opacity: float):
    """Fronto-parallel layers of wide, flat Gaussians stacked on the optical axis: every pixel sees all of them."""
    means = torch.tensor([[0.0, 0.0, z] for z in depths for _ in range(per_layer)], dtype=torch.float64)
    n = len(means)
    scales = torch.tensor([[20.0, 20.0, 0.01]], dtype=torch.float64).repeat(n, 1)
    return params_of(means, quat_about_x(0.0, n), scales, torch.full((n,), opacity, dtype=torch.float64))


def contributor_ids(params, vm, K, size, k, backend="reference"):
    means, quats, scales, opac = _raw(params)
    return contributors(means, quats, scales, opac, vm, K, size, size, k=k, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_contributor_ids_are_the_first_and_last_k_in_order(backend):
    vm, K = camera(SIZE)
    params = layers([2.0, 4.0], per_layer=6, opacity=0.15)
    first, last = contributor_ids(params, vm, K, SIZE, 5, backend)
    assert first.shape == last.shape == (1, SIZE, SIZE, 5)
    assert first[0, 3, 7].tolist() == [0, 1, 2, 3, 4]  # depth order, ties by index
    assert last[0, 3, 7].tolist() == [7, 8, 9, 10, 11]
    few = layers([2.0], per_layer=3, opacity=0.15)
    first, last = contributor_ids(few, vm, K, SIZE, 5, backend)
    assert first[0, 0, 0].tolist() == [0, 1, 2, -1, -1]
    assert last[0, 0, 0].tolist() == [-1, -1, 0, 1, 2]


def test_one_layer_gives_zero():
    vm, K = camera(SIZE)
    params = layers([3.0], per_layer=4, opacity=0.6)  # ≤ 5 contributors per pixel: N = F
    reg = NearFar(NearFarConfig(weight=0.01))
    ctx = context(params, vm, K, SIZE, ())
    first, last = contributor_ids(params, vm, K, SIZE, 5)
    near, far = contributor_sets(first, last)
    assert near.tolist() == far.tolist() == [0, 1, 2, 3]
    assert float(reg.loss(ctx)["nearfar"].detach()) == pytest.approx(0.0, abs=1e-12)


def test_two_layers_give_the_closed_form():
    z = 2.0
    vm, K = camera(SIZE)
    params = layers([z, 2 * z], per_layer=6, opacity=0.15)
    reg = NearFar(NearFarConfig(weight=0.01))
    ctx = context(params, vm, K, SIZE, ())
    first, last = contributor_ids(params, vm, K, SIZE, 5)
    near, far = contributor_sets(first, last)
    assert near.tolist() == [0, 1, 2, 3, 4] and far.tolist() == [7, 8, 9, 10, 11]
    # alpha of each set rendered alone
    out_n, _ = render(params_of(*(t[near] for t in _raw(params))), vm, K, SIZE, ("alpha",))
    out_f, _ = render(params_of(*(t[far] for t in _raw(params))), vm, K, SIZE, ("alpha",))
    a_n, a_f = out_n.alpha.detach(), out_f.alpha.detach()
    expected = 0.01 * ((math.log((2 * z + 1e-3) / (z + 1e-3))) ** 2 * a_n * a_f).mean()
    loss = reg.loss(ctx)["nearfar"]
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-4)
    assert float(loss.detach()) > 1e-3  # ten times the tolerance: the two layers really are apart
    loss.backward()
    g = params["means"].grad[:, 2]
    assert (g[near] < 0).all() and (g[far] > 0).all()  # descent pulls the layers towards each other


def _raw(params):
    return (
        params["means"].detach(),
        params["quats"].detach(),
        torch.exp(params["scales"].detach()),
        torch.sigmoid(params["opacities"].detach()),
    )


def test_cpu_ids_match_the_reference_on_a_random_scene():
    from tests.render.conftest import make_random_scene

    scene = make_random_scene(200, 2, 36, 52, seed=4)
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "viewmats", "Ks", "width", "height")]
    for k in (1, 5, 40):  # 40: more than most pixels composite, so -1 padding shows up in both lists
        ref = contributors(*args, k=k, backend="reference")
        cpu = contributors(*args, k=k, backend="cpu")
        assert torch.equal(ref[0], cpu[0]) and torch.equal(ref[1], cpu[1])
    assert (ref[0] == -1).any() and (ref[0] >= 0).any()
