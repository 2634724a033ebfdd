"""The viewer's pieces without a browser: camera conversions, splat conversion, targets, ports, colour maps."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import trimesh
import viser.transforms as vtf

from recon.data.errors import ReconError
from recon.data.scene import load_scene
from recon.models.splats import SH_C0, SplatModel
from recon.render import RenderOutputs
from viewer.camera import fov_from_intrinsics, intrinsics_from_fov, pose_from_viewmat, viewmat_from_pose
from viewer.live import LossCurve, format_seconds
from viewer.ports import find_free_port, port_is_free, url_for
from viewer.render_panel import colorize, parse_resolution
from viewer.scene_nodes import Frame, scene_up
from viewer.snapshot import ModelSnapshot
from viewer.targets import load_target


def test_viewmat_of_a_camera_looking_down_minus_z_known_answer():
    # viser: camera at (0,0,5) looking at the origin with +y up -> R_world_camera has columns x=(1,0,0),
    # y=(0,-1,0) (image y points down = world -y), z=(0,0,-1) (looking towards -z).
    R = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])
    viewmat = viewmat_from_pose(vtf.SO3.from_matrix(R).wxyz, (0.0, 0.0, 5.0))
    expected = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 5], [0, 0, 0, 1]])
    np.testing.assert_allclose(viewmat, expected, atol=1e-12)
    K = intrinsics_from_fov(math.radians(90.0), 640, 480)
    np.testing.assert_allclose(K, [[240.0, 0, 320], [0, 240, 240], [0, 0, 1]], atol=1e-9)
    # A point one unit to the right and one up (world +x, +y) lands right of and above the image centre.
    p = viewmat @ np.array([1.0, 1.0, 0.0, 1.0])
    u, v = (K @ p[:3])[:2] / p[2]
    assert u == pytest.approx(320 + 240 / 5) and v == pytest.approx(240 - 240 / 5)


def test_pose_viewmat_round_trip_and_fov():
    rng = np.random.default_rng(3)
    for _ in range(5):
        wxyz = rng.normal(size=4)
        wxyz /= np.linalg.norm(wxyz)
        pos = rng.normal(size=3)
        viewmat = viewmat_from_pose(wxyz, pos)
        wxyz2, pos2 = pose_from_viewmat(viewmat)
        np.testing.assert_allclose(viewmat_from_pose(wxyz2, pos2), viewmat, atol=1e-9)
        np.testing.assert_allclose(pos2, pos, atol=1e-9)
    K = intrinsics_from_fov(0.8, 100, 60)
    assert fov_from_intrinsics(K, 60) == pytest.approx(0.8)


def test_splat_arrays_known_answer():
    # One Gaussian with scales (2, 1, 0.5) rotated 90° about z: its x axis becomes world y.
    half = math.sqrt(0.5)
    params = {
        "means": torch.tensor([[1.0, 2.0, 3.0]]),
        "scales": torch.log(torch.tensor([[2.0, 1.0, 0.5]])),
        "quats": torch.tensor([[2 * half, 0.0, 0.0, 2 * half]]),  # unnormalised on purpose
        "opacities": torch.tensor([0.0]),
        "sh0": torch.tensor([[[0.5 / SH_C0, 0.0, -1.0 / SH_C0]]]),
        "shN": torch.zeros(1, 3, 3),
    }
    centers, covs, rgbs, opa = ModelSnapshot(SplatModel(params, 1), 1).splat_arrays()
    np.testing.assert_allclose(centers, [[1, 2, 3]])
    np.testing.assert_allclose(covs[0], np.diag([1.0, 4.0, 0.25]), atol=1e-6)
    np.testing.assert_allclose(rgbs[0], [1.0, 0.5, 0.0], atol=1e-6)  # 0.5+0.5, 0.5, and 0.5-1 clamped to 0
    np.testing.assert_allclose(opa, [[0.5]])


def test_snapshot_is_a_copy(viewer_run):
    model = SplatModel.load_ply(viewer_run / "splats.ply")
    snap = ModelSnapshot.of(model, sh_degree=0, step=7)
    with torch.no_grad():
        model.params["means"].add_(1.0)
    assert not torch.equal(snap.model.params["means"], model.params["means"])
    assert len(snap) == len(model) and snap.sh_degree == 0 and snap.step == 7
    assert snap.model.params["shN"].shape[1] == 3  # degree-1 SH coefficients kept for the render panel


def test_scene_up_and_first_view(viewer_scene):
    scene = load_scene(viewer_scene)
    up = scene_up(scene)
    assert up @ np.array([0.0, 0.0, 1.0]) > 0.9  # the tiny scene's cameras circle the origin with z up
    frame = Frame.of(scene, scene.points)
    i = int(scene.train_ids[0])
    center, forward = scene.cameras.centers[i], scene.cameras.camtoworlds[i][:3, 2]
    ahead = frame.look_at - center  # it looks where the first training camera looks...
    np.testing.assert_allclose(ahead / np.linalg.norm(ahead), forward, atol=1e-9)
    assert (frame.position - center) @ forward < 0  # ...from behind it, so that camera's frustum is in view
    assert (frame.position - center) @ up > 0


def test_targets_of_every_kind(viewer_run, viewer_scene, tmp_path):
    run = load_target(viewer_run)
    assert run.kind == "run" and run.model is not None and run.scene is not None and run.step == 25
    assert load_target(viewer_scene).kind == "scene"
    splats = load_target(viewer_run / "splats.ply")
    assert splats.kind == "splats" and len(splats.model) == len(run.model)
    points = load_target(viewer_scene / "points3D.ply")
    assert points.kind == "points" and points.points.shape == (80, 3) and points.points_rgb.dtype == np.uint8
    box = trimesh.creation.box()
    for suffix in (".ply", ".obj", ".glb"):
        box.export(tmp_path / f"box{suffix}")
        mesh = load_target(tmp_path / f"box{suffix}")
        assert mesh.kind == "mesh" and len(mesh.mesh.faces) == 12, suffix


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.ply", None, "does not exist"),
        ("garbage.ply", b"not a ply at all", "not a readable PLY"),
        ("notes.txt", b"hello", "cannot show a .txt file"),
        ("broken.obj", b"v 0 0 0\n", "holds no triangles"),
        ("empty_dir", "dir", "no run"),
    ],
)
def test_unreadable_targets_are_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ReconError, match=message) as err:
        load_target(path)
    assert "\n" not in str(err.value)


def test_run_with_a_corrupt_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / "run" / "ckpt").mkdir(parents=True)
    (tmp_path / "run" / "ckpt" / "step_000010.pt").write_bytes(b"truncated")
    with pytest.raises(ReconError, match="has no usable model: no checkpoint can be read") as err:
        load_target(tmp_path / "run")
    assert "\n" not in str(err.value)


def test_busy_port_moves_to_the_next_free_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert not port_is_free("127.0.0.1", busy)
        chosen = find_free_port("127.0.0.1", busy)
        assert chosen > busy and port_is_free("127.0.0.1", chosen)
    with pytest.raises(ReconError, match="out of range"):
        find_free_port("127.0.0.1", 70000)
    with pytest.raises(ReconError, match="cannot listen on"):
        find_free_port("192.0.2.1", 8080)  # TEST-NET address: never one of this machine's
    assert url_for("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert url_for("::1", 9000) == "http://[::1]:9000"


def test_colour_maps():
    h, w = 4, 6
    alpha = torch.ones(1, h, w, 1)
    alpha[0, 0, 0] = 0.0  # one empty pixel: shows the background
    depth = torch.linspace(1, 3, w).repeat(h, 1)[None, ..., None] * alpha
    normal = torch.tensor([0.0, 0.0, -1.0]).expand(1, h, w, 3) * alpha  # facing the camera (OpenCV -z)
    out = RenderOutputs(
        rgb=torch.full((1, h, w, 3), 0.25),
        alpha=alpha,
        depth_exp=depth,
        normal=normal,
        distort_l1=torch.zeros(1, h, w, 1),
    )
    bg = np.array([1.0, 1.0, 1.0], np.float32)
    assert (colorize(out, "RGB", bg) == 64).all()
    n = colorize(out, "Normal", bg)
    np.testing.assert_array_equal(n[1, 1], [128, 128, 255])  # facing the viewer: blue
    np.testing.assert_array_equal(n[0, 0], [255, 255, 255])  # empty: background
    d = colorize(out, "Depth", bg).astype(int)
    assert np.abs(d[1, 0] - d[1, -1]).sum() > 100  # near and far get different colours
    np.testing.assert_array_equal(d[1, 0], d[2, 0])  # same depth, same colour
    a = colorize(out, "Alpha", bg)
    assert a[0, 0, 0] == 0 and a[1, 1, 0] == 255
    assert colorize(out, "Distortion", bg).shape == (h, w, 3)
    assert parse_resolution("640x480", (10, 10)) == (640, 480)
    assert parse_resolution("browser window", (1000, 700)) == (1000, 700)


def test_loss_curve_stays_bounded_and_eta_format():
    curve = LossCurve(max_points=10)
    for step in range(1, 101):
        curve.add(step, 1.0 / step)
    steps, values = curve.arrays()
    assert len(steps) <= 10 and steps[-1] >= 90 and np.all(np.diff(steps) > 0)
    np.testing.assert_allclose(values, 1.0 / steps)
    assert format_seconds(3725) == "1:02:05" and format_seconds(float("nan")) == "-"


def test_refresh_throttle_spaces_refreshes_by_their_measured_cost():
    from viewer.throttle import RefreshThrottle

    th = RefreshThrottle(budget=0.05, settle=1.0)
    t = 0.0
    for _ in range(50):  # quiet: 0.1 s per step
        t += 0.1
        th.step(0.1, t)
    assert th.quiet_step == pytest.approx(0.1) and th.ready(t)
    th.started(copy_seconds=0.01)
    assert not th.ready(t)  # one refresh at a time
    # 0.03 s of the viewer's own time, but the steps ran 0.05 s slower (a browser on the same cores, say) until
    # the window closed, 1 s after the refresh's background part ended.
    th.finished(0.02, t)
    for _ in range(7):
        t += 0.15
        th.step(0.15, t)
    assert th.costs == [pytest.approx(0.35)]  # 7 steps x 0.05 s: more than the 0.03 s it saw itself
    wait = 0.35 * (1 / 0.05 - 1)
    assert not th.ready(t + wait - 0.01) and th.ready(t + wait + 0.01)
    th.charge(0.1, t + wait)  # panel work pushes the next refresh further
    assert not th.ready(t + wait + 0.01) and th.ready(t + wait + 0.1 * 19 + 0.01)


def test_every_mode_renders_convexes_and_normals_come_from_depth():
    """Convexes have no normal of their own: the Normal mode shows their depth map's normal; a flat wall of
    convexes facing the camera shows as blue."""
    from recon.models.convex import ConvexModel
    from viewer.render_panel import MODES, render_view

    g = np.stack(np.meshgrid(np.linspace(-1, 1, 12), np.linspace(-1, 1, 12)), -1).reshape(-1, 2)
    xyz = np.concatenate([g, np.full((len(g), 1), 3.0)], 1)  # a wall at z = 3 in front of the camera
    model = ConvexModel.from_points(
        xyz, np.full((len(g), 3), 0.5), sh_degree=0, delta_init=5.0, sigma_init=0.05
    )
    with torch.no_grad():
        model.params["opacities"].fill_(4.0)
    snap = ModelSnapshot.of(model, sh_degree=0)
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]], np.float32)
    for mode in MODES:
        img = render_view(snap, np.eye(4, dtype=np.float32), K, 64, 48, mode=mode, backend="cpu")
        assert img.shape == (48, 64, 3) and (img != 255).any(), mode
    n = render_view(snap, np.eye(4, dtype=np.float32), K, 64, 48, mode="Normal", backend="cpu").astype(int)
    centre = n[18:30, 24:40].reshape(-1, 3).mean(0)
    assert centre[2] > 200 and abs(centre[0] - 128) < 40 and abs(centre[1] - 128) < 40
