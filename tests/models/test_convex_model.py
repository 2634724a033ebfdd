"""The convex model (3DCS, METHODS.md §3.1): initialisation, the mask gate, the file, the preview, and the split
known answer of its densification."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from recon.data.errors import ReconError
from recon.models.convex import ConvexModel, _rotmat_to_quat, fibonacci_sphere, mask_gate
from recon.models.registry import load_model_file
from recon.train.config import ConvexStrategyConfig
from recon.train.convex_strategy import convex_size, split_convexes


def _model(n: int = 40, seed: int = 0) -> ConvexModel:
    rng = np.random.default_rng(seed)
    return ConvexModel.from_points(rng.uniform(-1, 1, (n, 3)), rng.uniform(0, 1, (n, 3)), sh_degree=1)


def test_initial_convexes_sit_on_a_fibonacci_sphere_of_the_knn_radius():
    xyz = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    m = ConvexModel.from_points(xyz, np.full((4, 3), 0.5), points=6, init_size=1.2, delta_init=0.1)
    pts = m.params["points"].detach().double().numpy()
    # point 0: neighbours at 1, 2, 3 -> mean squared distance 14/3
    r = 1.2 * math.sqrt(14 / 3)
    assert np.allclose(np.linalg.norm(pts[0] - xyz[0], axis=1), r, rtol=1e-5)
    assert np.allclose((pts[0] - xyz[0]) / r, fibonacci_sphere(6), atol=1e-5)
    assert math.isclose(float(torch.exp(m.params["delta"][0])), 0.1 / math.sqrt(14 / 3), rel_tol=1e-5)
    assert math.isclose(float(torch.exp(m.params["sigma"][0])), 0.00095, rel_tol=1e-5)
    assert torch.allclose(torch.sigmoid(m.params["opacities"]), torch.tensor(0.1), atol=1e-6)
    sphere = fibonacci_sphere(6)
    assert np.allclose(sphere[:, 2], [1, 0.6, 0.2, -0.2, -0.6, -1]) and np.allclose(
        np.linalg.norm(sphere, axis=1), 1
    )


def test_points_per_convex_are_checked():
    with pytest.raises(ReconError, match="3 to 8 points"):
        ConvexModel.from_points(np.zeros((5, 3)), np.zeros((5, 3)), points=9)


def test_mask_gate_is_hard_forward_and_sigmoid_backward():
    m = torch.tensor([-10.0, -2.0, 0.0, 3.0], requires_grad=True)
    g = mask_gate(m)
    assert g.tolist() == [0.0, 1.0, 1.0, 1.0]  # sigmoid(-10) = 4.5e-5 <= 0.01: off
    g.sum().backward()
    s = torch.sigmoid(m.detach())
    assert torch.allclose(m.grad, s * (1 - s))


def test_file_round_trip_is_exact(tmp_path):
    m = _model()
    with torch.no_grad():
        for p in m.params.values():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "convexes.ply"
    m.save(path)
    back = load_model_file(path)  # the header says what it is
    assert isinstance(back, ConvexModel) and back.sh_degree == 1
    for k, v in m.params.items():
        assert torch.equal(v.detach(), back.params[k].detach()), k
    header = path.read_bytes()[:2000].decode("ascii", "replace")
    assert "comment recon primitive convex" in header and "property float p5_z" in header


def test_a_damaged_file_is_one_line(tmp_path):
    path = tmp_path / "convexes.ply"
    _model().save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ReconError, match="convexes.ply"):
        load_model_file(path)


def test_rotmat_to_quat_matches_scipy():
    R = Rotation.random(200, random_state=3)
    q = _rotmat_to_quat(torch.from_numpy(R.as_matrix()))
    back = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy())  # scipy is xyzw
    assert np.allclose(back.as_matrix(), R.as_matrix(), atol=1e-9)


def test_preview_is_the_moment_matched_gaussian():
    m = _model(5)
    g = m.preview()
    pts = m.params["points"].detach().double().numpy()
    assert np.allclose(g.means, pts.mean(1), atol=1e-5)
    d = pts - pts.mean(1, keepdims=True)
    expected = 0.75 * np.einsum("nki,nkj->nij", d, d) / pts.shape[1]
    assert np.allclose(g.covariances(), expected, rtol=1e-3, atol=1e-7)


def _adam_for(params):
    return {k: torch.optim.Adam([{"params": p, "lr": 1e-3, "name": k}]) for k, p in params.items()}


def test_split_known_answer():
    """A regular convex splits into K children centred on its points, 0.63-scaled copies, σ_raw × 0.88."""
    m = ConvexModel.from_points(np.zeros((1, 3)), np.full((1, 3), 0.5), points=6)
    extra = ConvexModel.from_points(np.full((1, 3), 5.0), np.full((1, 3), 0.5), points=6)
    params = torch.nn.ParameterDict(
        {k: torch.nn.Parameter(torch.cat([m.params[k].detach(), extra.params[k].detach()])) for k in m.params}
    )
    parent = params["points"][0].detach().clone()
    raw = {k: params[k][0].detach().clone() for k in ("sigma", "delta", "opacities", "mask", "sh0")}
    optimizers = _adam_for(params)
    state = {"sigma_grad": torch.tensor([1.0, 0.0]), "count": torch.tensor([1.0, 1.0])}
    cfg = ConvexStrategyConfig()
    added = split_convexes(params, optimizers, state, torch.tensor([True, False]), cfg)
    assert added == 5 and len(params["points"]) == 7 and state["count"].tolist() == [1.0] + [0.0] * 6
    children = params["points"][1:].detach()
    centre = parent.mean(0)
    assert torch.allclose(children.mean(1), parent, atol=1e-6)  # child i is centred on the parent's point i
    for i in range(6):
        assert torch.allclose(children[i] - parent[i], 0.63 * (parent - centre), atol=1e-6)
    assert torch.allclose(params["sigma"][1:], 0.88 * raw["sigma"].expand(6))
    assert torch.allclose(params["delta"][1:], raw["delta"].expand(6))
    assert torch.allclose(
        torch.sigmoid(params["opacities"][1:]), 0.5 * torch.sigmoid(raw["opacities"]).expand(6)
    )
    assert torch.equal(params["sh0"][1:], raw["sh0"].expand(6, 1, 3))
    assert torch.equal(params["points"][0], extra.params["points"][0])  # the other convex is untouched
    # optimizer state follows the rows
    assert all(o.param_groups[0]["params"][0] is params[k] for k, o in optimizers.items())


def test_convex_size_is_the_largest_axis_std():
    pts = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [2.0, 1.0, 0]]])
    assert torch.allclose(convex_size(pts), torch.tensor([1.0]))
