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
    assert s.chamfer_l1 < 1e-5  # samples are measured to the other surface, so no sampling gap
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


def test_distances_do_not_depend_on_the_sample_count():
    # Two parallel squares 0.01 apart: every sample is exactly 0.01 from the other surface however sparse the
    # samples are (to the other mesh's samples it would be about the sample spacing, 0.03 at 1000 samples).
    a = trimesh.creation.box(extents=[1.0, 1.0, 1e-4])
    b = a.copy()
    b.apply_translation([0.0, 0.0, 0.01])
    for n in (1_000, 50_000):
        s = mesh_scores(a, b, n_samples=n, tau=0.02)
        assert s.chamfer_l1 == pytest.approx(0.01, abs=1e-3)
        assert s.fscore == 1.0


def test_scores_hold_far_from_the_origin():
    # georeferenced coordinates: float32 alone would round 0.1 at 1e6 to steps of 0.0625
    far = np.array([1e6, -2e6, 5e5])
    a, b = sphere(1.1), sphere(1.0)
    a.apply_translation(far)
    b.apply_translation(far)
    assert mesh_scores(a, b, n_samples=N, tau=0.05).chamfer_l1 == pytest.approx(0.1, abs=0.005)


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


def test_visibility_keeps_only_ground_truth_the_cameras_see():
    from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
    from recon.eval.mesh_metrics import visible_mask

    ground = trimesh.creation.box(extents=[4.0, 4.0, 0.02])
    ground.apply_translation([0, 0, -0.01])  # top face at z = 0
    block = trimesh.creation.box(extents=[1.0, 1.0, 1.0])
    block.apply_translation([0, 0, 0.5])  # standing on the ground
    gt = trimesh.util.concatenate([ground, block])
    eyes = [(3 * np.cos(a), 3 * np.sin(a), 3.0) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    K = intrinsics_matrix(60.0, 60.0, 32.0, 32.0)
    views = np.stack([look_at_viewmat(np.array(e), np.zeros(3)) for e in eyes])
    cams = Cameras(views, np.repeat(K[None], 8, 0), 64, 64)
    # block top, the block's bottom (on the ground), open ground, a point under the ground
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.5, 1.5, 0.0], [0.0, 0.0, -0.02]])
    assert visible_mask(pts, gt, cams, tol=1e-4).tolist() == [True, False, True, False]
    # an open box (no bottom) is all that photos can show of the block: with the bottom counted, recall suffers
    open_box = block.submesh([np.nonzero(block.face_normals[:, 2] > -0.9)[0]], append=True)
    crop = (
        (-0.6, -0.6, -0.05),
        (0.6, 0.6, 1.1),
    )  # the block, bottom included (the ground's faces are too big)
    everything = mesh_scores(open_box, gt, n_samples=N, crop=crop, tau=0.02)
    seen = mesh_scores(open_box, gt, n_samples=N, crop=crop, tau=0.02, visible_from=cams)
    assert everything.recall < 0.9
    assert seen.recall > 0.99 and seen.precision > 0.99
    # the ground truth itself, hidden bottom included, is a perfect prediction: its hidden samples lie on the true
    # surface, so accuracy measures against all of it (only completeness is limited to what cameras see)
    itself = mesh_scores(block, gt, n_samples=N, crop=crop, tau=0.02, visible_from=cams)
    plain = mesh_scores(block, block, n_samples=N, tau=0.02)
    assert itself.precision > 0.999 and itself.fscore > 0.999
    assert itself.accuracy < 1.5 * plain.accuracy


def test_cli_visible_from_a_scene(tmp_path, capsys):
    import imageio.v3 as iio

    from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
    from recon.data.formats.nerfstudio import write_transforms

    eyes = [(3 * np.cos(a), 3 * np.sin(a), 0.5) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    K = intrinsics_matrix(40.0, 40.0, 16.0, 16.0)
    cams = Cameras(
        np.stack([look_at_viewmat(np.array(e), np.zeros(3)) for e in eyes]), np.repeat(K[None], 6, 0), 32, 32
    )
    (tmp_path / "images").mkdir()
    paths = [tmp_path / "images" / f"{i}.png" for i in range(6)]
    for path in paths:
        iio.imwrite(path, np.zeros((32, 32, 3), np.uint8))
    write_transforms(tmp_path / "transforms.json", cams, paths)
    sphere(1.0).export(tmp_path / "gt.ply")
    half = sphere(1.0)
    half = half.submesh(
        [np.nonzero(half.triangles_center[:, 2] > -0.7)[0]], append=True
    )  # bottom cap missing
    half.export(tmp_path / "pred.ply")
    args = ["eval-mesh", str(tmp_path / "pred.ply"), str(tmp_path / "gt.ply"), "--samples", "20000"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--visible-from", str(tmp_path)]) == 0
    seen = json.loads(capsys.readouterr().out)
    assert (
        seen["recall"] > plain["recall"]
    )  # the cameras, slightly above the equator, never see the bottom cap
