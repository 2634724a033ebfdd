"""Registration under an unknown similarity with partial overlap (issue 17): the pieces, the pipeline on random
cases with a known answer, and the `recon align` / `recon eval-mesh --align --ot` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from recon.cli import main
from recon.data.ply import write_points_ply
from recon.eval.align import AlignConfig, align_points, octahedral_rotations
from recon.eval.align_cases import alignment_errors, asymmetric_shape, random_case
from recon.eval.align_io import sh_rotation
from recon.eval.pose import umeyama
from recon.models.ply import write_3dgs_ply
from recon.ot import sinkhorn_log, sinkhorn_unbalanced, squared_euclidean
from recon.render.sh import eval_sh

N = 3000  # points per cloud in the pipeline tests: enough for < 1% scale, fast on 2 cores


@pytest.fixture(scope="module")
def shape() -> trimesh.Trimesh:
    return asymmetric_shape()


def test_unbalanced_sinkhorn_is_sinkhorn_when_balanced_and_ignores_far_mass():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.rand(30, 2, generator=g, dtype=torch.float64),
        torch.rand(40, 2, generator=g, dtype=torch.float64),
    )
    a, b = torch.full((30,), 1 / 30, dtype=torch.float64), torch.full((40,), 1 / 40, dtype=torch.float64)
    C = squared_euclidean(x, y)
    balanced = sinkhorn_unbalanced(a, b, C, 0.05, iterations=2000)
    assert torch.allclose(balanced.plan, sinkhorn_log(a, b, C, 0.05).plan, atol=1e-9)
    # a quarter of the reference far away: with a relaxed reference marginal it receives (almost) nothing,
    # while balanced OT must send it a quarter of the mass
    y_far = torch.cat([y[:30], y[30:] + 10.0])
    C = squared_euclidean(x, y_far)
    relaxed = sinkhorn_unbalanced(a, b, C, 0.01, rho_a=None, rho_b=0.1, iterations=500)
    assert relaxed.plan[:, 30:].sum() < 1e-6
    assert relaxed.plan.sum(1) == pytest.approx(a, abs=1e-6)  # the exact side stays exact
    assert sinkhorn_log(a, b, C, 0.05).plan[:, 30:].sum() == pytest.approx(0.25, abs=1e-6)


def test_weighted_umeyama_ignores_zero_weight_pairs_and_can_stay_rigid():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    R = Rotation.random(random_state=1).as_matrix()
    dst = 2.5 * src @ R.T + [1.0, -2.0, 0.5]
    dst[:10] += rng.normal(scale=5.0, size=(10, 3))  # outliers
    w = np.r_[np.zeros(10), np.ones(40)]
    s, R_est, t = umeyama(src, dst, w)
    assert s == pytest.approx(2.5, rel=1e-9)
    assert np.allclose(R_est, R, atol=1e-9) and np.allclose(t, [1.0, -2.0, 0.5], atol=1e-9)
    s, R_est, _ = umeyama(src[10:], dst[10:] / 2.5, with_scale=False)
    assert s == 1.0 and np.allclose(R_est, R, atol=1e-9)


def test_rotation_hypotheses_are_the_24_proper_cube_rotations():
    G = octahedral_rotations()
    assert G.shape == (24, 3, 3)
    assert np.allclose(np.linalg.det(G), 1.0)
    assert len({tuple(g.round().astype(int).ravel()) for g in G}) == 24


@pytest.mark.parametrize("seed", range(5))
def test_recovers_random_similarity_with_crop_and_noise(shape, seed):
    case = random_case(shape, seed, n_src=N, n_ref=N)  # any rotation, scale 0.2–5, 30% cropped, 1% noise
    result = align_points(case.src, case.ref, case.ref_normals)
    rot_err, scale_err = alignment_errors(case, result.scale, result.rotation)
    assert rot_err < 2.0 and scale_err < 0.01, (rot_err, scale_err)
    assert result.inlier_fraction > 0.9 and result.confidence > 0.0
    moved = case.src @ result.transform[:3, :3].T + result.transform[:3, 3]
    truth = case.src @ (case.scale * case.R).T + case.t
    assert np.median(np.linalg.norm(moved - truth, axis=1)) < 0.01  # the shape is about 1.3 across


def test_no_scale_keeps_scale_one(shape):
    case = random_case(shape, 11, n_src=N, n_ref=N, scale_range=(1.0, 1.0))
    result = align_points(case.src, case.ref, case.ref_normals, AlignConfig(with_scale=False))
    assert result.scale == 1.0
    assert alignment_errors(case, result.scale, result.rotation)[0] < 2.0


def test_sh_rotation_rotates_the_colour_function():
    R = Rotation.random(random_state=3).as_matrix()
    coeffs = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 3)))
    moved = coeffs.clone()
    for sl, M in sh_rotation(R, 3):
        band = slice(sl.start + 1, sl.stop + 1)
        moved[band] = torch.from_numpy(M) @ coeffs[band]
    dirs = torch.from_numpy(np.random.default_rng(1).normal(size=(20, 3)))
    # the moved splat seen from R d looks as the original did from d
    assert torch.allclose(
        eval_sh(3, moved, dirs @ torch.from_numpy(R).T), eval_sh(3, coeffs, dirs), atol=1e-9
    )


def _truth_matrix(case) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = case.scale * case.R, case.t
    return T


def test_cli_aligns_a_point_cloud_to_a_mesh(tmp_path, shape, capsys):
    case = random_case(shape, 3, n_src=N, n_ref=N)
    shape.export(tmp_path / "ref.obj")
    write_points_ply(tmp_path / "src.ply", case.src)
    args = ["align", str(tmp_path / "src.ply"), str(tmp_path / "ref.obj"), "--out", str(tmp_path / "out.ply")]
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["source_kind"] == "points" and line["reference_kind"] == "mesh"
    assert abs(line["scale"] / case.scale - 1) < 0.01
    v = PlyData.read(str(tmp_path / "out.ply"))["vertex"]
    moved = np.stack([v["x"], v["y"], v["z"]], 1)
    truth = case.src @ (case.scale * case.R).T + case.t
    assert np.median(np.linalg.norm(moved - truth, axis=1)) < 0.02
    assert "red" in v.data.dtype.names  # every property kept


def test_cli_aligns_splats_and_meshes_in_their_own_format(tmp_path, shape, capsys):
    case = random_case(shape, 4, n_src=N, n_ref=N, crop=0.0, noise=0.0)
    n = len(case.src)
    params = {
        "means": case.src.astype(np.float32),
        "scales": np.full((n, 3), -3.0, np.float32),
        "quats": np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        "opacities": np.zeros(n, np.float32),
        "sh0": np.zeros((n, 1, 3), np.float32),
        "shN": np.zeros((n, 3, 3), np.float32),
    }
    write_3dgs_ply(tmp_path / "splats.ply", params, ["recon primitive gaussian"])
    ref = shape.copy()
    ref.export(tmp_path / "ref.ply")
    out = tmp_path / "aligned.ply"
    assert main(["align", str(tmp_path / "splats.ply"), str(tmp_path / "ref.ply"), "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["source_kind"] == "splats" and line["reference_kind"] == "mesh"
    v = PlyData.read(str(out))["vertex"]
    assert np.allclose(v["scale_0"], -3.0 + np.log(case.scale), atol=0.01)
    q = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    R_splat = Rotation.from_quat(np.roll(q, -1, axis=1)).as_matrix()
    assert alignment_errors(case, case.scale, R_splat[0])[0] < 2.0
    assert "recon primitive gaussian" in PlyData.read(str(out)).comments

    # a mesh source comes back as a mesh of the same format, lying on the reference
    moved = shape.copy()
    moved.apply_transform(np.linalg.inv(_truth_matrix(case)))
    moved.export(tmp_path / "moved.obj")
    out = tmp_path / "back.obj"
    assert main(["align", str(tmp_path / "moved.obj"), str(tmp_path / "ref.ply"), "--out", str(out)]) == 0
    back = trimesh.load(out, process=False)
    assert np.abs(back.vertices - shape.vertices).max() < 0.01


def test_cli_bad_inputs_exit_2(tmp_path, shape, capsys):
    shape.export(tmp_path / "ref.obj")
    (tmp_path / "junk.ply").write_text("not a ply\n")
    (tmp_path / "cloud.xyz").write_text("0 0 0\n")
    write_points_ply(tmp_path / "few.ply", np.zeros((3, 3)))
    ref = str(tmp_path / "ref.obj")
    for src in ("missing.ply", "junk.ply", "cloud.xyz", "few.ply"):
        assert main(["align", str(tmp_path / src), ref]) == 2
    assert main(["align", ref, ref, "--out", str(tmp_path / "out.ply")]) == 2  # not the source's format
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(e.startswith("recon: error:") for e in err)


def test_eval_mesh_align_and_ot(tmp_path, shape, capsys):
    case = random_case(shape, 5)
    moved = shape.copy()
    moved.apply_transform(np.linalg.inv(_truth_matrix(case)))
    moved.export(tmp_path / "pred.obj")
    shape.export(tmp_path / "gt.obj")
    args = ["eval-mesh", str(tmp_path / "pred.obj"), str(tmp_path / "gt.obj"), "--samples", "20000"]
    assert main([*args, "--ot", "--ot-samples", "500"]) == 0
    raw = json.loads(capsys.readouterr().out.strip())
    assert main([*args, "--align", "--ot", "--ot-samples", "500"]) == 0
    aligned = json.loads(capsys.readouterr().out.strip())
    assert raw["fscore"] < 0.2 and aligned["fscore"] > 0.99
    assert aligned["chamfer_l1"] < 0.002
    assert aligned["sinkhorn_distance"] < 0.1 * raw["sinkhorn_distance"]
    assert abs(aligned["alignment"]["scale"] / case.scale - 1) < 0.01
