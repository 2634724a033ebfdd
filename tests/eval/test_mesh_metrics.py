"""Mesh scores: known answers on concentric spheres and crossing planes, and the `recon eval-mesh` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from recon.cli import main
from recon.data.errors import ReconError
from recon.eval.mesh_metrics import crop_mesh, mesh_scores

N = 40_000


def sphere(r: float = 1.0) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=5)
    m.apply_scale(r)
    return m


def test_identical_meshes_score_perfectly():
    s = mesh_scores(sphere(), sphere(), n_samples=N)
    assert s.chamfer_l1 < 0.01  # only the sampling gap of two independent point sets
    assert s.precision > 0.999 and s.recall > 0.999 and s.fscore > 0.999
    assert s.normal_consistency > 0.99
    assert s.tau == pytest.approx(0.01 * np.linalg.norm([2.0, 2.0, 2.0]), rel=1e-3)


def test_concentric_spheres_known_answers():
    s = mesh_scores(sphere(1.1), sphere(1.0), n_samples=N, tau=0.05)
    assert s.accuracy == pytest.approx(0.1, abs=0.005)
    assert s.completeness == pytest.approx(0.1, abs=0.005)
    assert s.chamfer_l1 == pytest.approx(0.1, abs=0.005)
    assert s.precision == 0.0 and s.recall == 0.0 and s.fscore == 0.0
    loose = mesh_scores(sphere(1.1), sphere(1.0), n_samples=N, tau=0.15)
    assert loose.fscore == 1.0
    assert loose.normal_consistency > 0.99  # same directions, only offset


def test_half_a_sphere_has_full_precision_and_half_recall():
    full = sphere()
    half = full.submesh([np.nonzero(full.triangles_center[:, 2] > 0)[0]], append=True)
    s = mesh_scores(half, full, n_samples=N)
    assert s.precision > 0.999
    assert s.recall == pytest.approx(0.5, abs=0.02)
    assert s.fscore == pytest.approx(2 * 0.5 / 1.5, abs=0.02)


def test_perpendicular_planes_have_no_normal_consistency():
    a = trimesh.creation.box(extents=[2.0, 2.0, 1e-3])
    b = a.copy()
    b.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    s = mesh_scores(a, b, n_samples=N)
    # thin boxes: the big faces are perpendicular, only the slivers along the sides agree
    assert s.normal_consistency < 0.1


def test_crop_keeps_only_the_box_and_rejects_an_empty_one():
    m = sphere()
    c = crop_mesh(m, (-2, -2, 0.5), (2, 2, 2))
    assert c.triangles_center[:, 2].min() >= 0.5
    with pytest.raises(ReconError, match="no triangles"):
        crop_mesh(m, (5, 5, 5), (6, 6, 6))


def test_cli_prints_one_json_line(tmp_path, capsys):
    sphere(1.05).export(tmp_path / "pred.ply")
    sphere(1.0).export(tmp_path / "gt.obj")
    assert (
        main(["eval-mesh", str(tmp_path / "pred.ply"), str(tmp_path / "gt.obj"), "--samples", "20000"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert scores["chamfer_l1"] == pytest.approx(0.05, abs=0.005)
    assert set(scores) >= {"chamfer_l1", "precision", "recall", "fscore", "normal_consistency", "tau"}
    assert main(["eval-mesh", str(tmp_path / "missing.ply"), str(tmp_path / "gt.obj")]) == 2
