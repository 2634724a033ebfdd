"""Scene formats: COLMAP, transforms.json (nerfstudio / instant-ngp), Blender, PLY points, detection."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat, viewmat_to_c2w_opengl
from recon.data.errors import ReconError
from recon.data.formats.blender import read_blender
from recon.data.formats.colmap import read_colmap, write_colmap
from recon.data.formats.nerfstudio import read_transforms, write_transforms
from recon.data.ply import read_points_ply, write_points_ply
from recon.data.scene import load_scene


def random_cameras(
    rng: np.random.Generator, n: int, shared: bool, dist: bool, w: int = 32, h: int = 24
) -> Cameras:
    """Cameras on a sphere looking near the origin, with shared or per-camera intrinsics."""
    vms, ks = [], []
    for i in range(n):
        d = rng.normal(size=3)
        vms.append(look_at_viewmat(4.0 * d / np.linalg.norm(d), rng.normal(size=3) * 0.2))
        f = 30.0 if shared else 25.0 + 10 * rng.random()
        ks.append(
            intrinsics_matrix(
                f, f * (1.0 if shared else 1.01), w / 2 + 0.3, h / 2 - 0.2 + (0 if shared else i)
            )
        )
    ds = None
    if dist:
        ds = np.tile([-0.1, 0.02, 0.001, -0.002], (n, 1)) if shared else rng.normal(size=(n, 4)) * 0.01
    return Cameras(np.stack(vms), np.stack(ks), w, h, ds, [f"img_{i:03d}.png" for i in range(n)])


def write_images(
    folder: Path, names: list[str], w: int, h: int, seed: int = 0, rgba: bool = False
) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 4 if rgba else 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def assert_same_cameras(a: Cameras, b: Cameras, atol: float = 1e-6) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.viewmats, b.viewmats, atol=atol)
    np.testing.assert_allclose(a.Ks, b.Ks, atol=atol)
    np.testing.assert_array_equal(a.widths, b.widths)
    np.testing.assert_array_equal(a.heights, b.heights)
    assert (a.dist is None) == (b.dist is None)
    if a.dist is not None:
        np.testing.assert_allclose(a.dist, b.dist, atol=atol)


# -- COLMAP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [False, True])
@pytest.mark.parametrize("dist", [False, True])
def test_colmap_round_trip(tmp_path, text, dist):
    rng = np.random.default_rng(3)
    cams = random_cameras(rng, 6, shared=False, dist=dist)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    write_colmap(tmp_path / "sparse", cams, cams.names, xyz, rgb, text=text)
    suffix = ".txt" if text else ".bin"
    assert (tmp_path / "sparse" / f"cameras{suffix}").is_file()
    back, names, xyz2, rgb2 = read_colmap(tmp_path / "sparse")
    assert names == cams.names
    assert_same_cameras(back, cams)
    np.testing.assert_allclose(xyz2, xyz, atol=1e-6)
    np.testing.assert_array_equal(rgb2, rgb)


def test_colmap_shares_identical_intrinsics_and_sorts_by_name(tmp_path):
    rng = np.random.default_rng(4)
    cams = random_cameras(rng, 4, shared=True, dist=True)
    names = ["d.png", "b.png", "c.png", "a.png"]
    write_colmap(tmp_path, cams, names)
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert rec.num_cameras() == 1 and next(iter(rec.cameras.values())).model.name == "OPENCV"
    back, back_names, xyz, _ = read_colmap(tmp_path)
    assert back_names == sorted(names) and len(xyz) == 0
    order = [names.index(n) for n in back_names]
    np.testing.assert_allclose(back.viewmats, cams.viewmats[order], atol=1e-9)


def test_colmap_rewrite_in_other_format_removes_stale_files(tmp_path):
    cams = random_cameras(np.random.default_rng(5), 2, shared=True, dist=False)
    write_colmap(tmp_path, cams, cams.names, text=False)
    cams2 = cams.scaled(2.0)
    write_colmap(tmp_path, cams2, cams.names, text=True)
    assert not any(tmp_path.glob("*.bin")) and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert_same_cameras(read_colmap(tmp_path)[0], cams2)


@pytest.mark.parametrize(
    ("model", "params", "k", "dist"),
    [
        ("SIMPLE_PINHOLE", [30.0, 16.0, 12.0], (30, 30, 16, 12), None),
        ("PINHOLE", [30.0, 31.0, 16.0, 12.0], (30, 31, 16, 12), None),
        ("SIMPLE_RADIAL", [30.0, 16.0, 12.0, -0.1], (30, 30, 16, 12), [-0.1, 0, 0, 0]),
        ("RADIAL", [30.0, 16.0, 12.0, -0.1, 0.02], (30, 30, 16, 12), [-0.1, 0.02, 0, 0]),
        (
            "OPENCV",
            [30.0, 31.0, 16.0, 12.0, -0.1, 0.02, 0.001, 0.002],
            (30, 31, 16, 12),
            [-0.1, 0.02, 0.001, 0.002],
        ),
    ],
)
def test_colmap_camera_models(tmp_path, model, params, k, dist):
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(
        pycolmap.Camera(model=model, width=32, height=24, params=params, camera_id=1)
    )
    rec.add_image_with_trivial_frame(
        pycolmap.Image(name="a.png", camera_id=1, image_id=1), pycolmap.Rigid3d()
    )
    rec.write_text(str(tmp_path))
    cams = read_colmap(tmp_path)[0]
    np.testing.assert_allclose(cams.Ks[0], intrinsics_matrix(*k))
    if dist is None:
        assert cams.dist is None
    else:
        np.testing.assert_allclose(cams.dist[0], dist)


def test_colmap_unsupported_model_is_named(tmp_path):
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="OPENCV_FISHEYE", width=32, height=24, params=[30, 30, 16, 12, 0.1, 0, 0, 0])
    cam.camera_id = 1
    rec.add_camera_with_trivial_rig(cam)
    rec.add_image_with_trivial_frame(
        pycolmap.Image(name="a.png", camera_id=1, image_id=1), pycolmap.Rigid3d()
    )
    rec.write_binary(str(tmp_path))
    with pytest.raises(ReconError, match="OPENCV_FISHEYE"):
        read_colmap(tmp_path)
    with pytest.raises(ReconError, match="cannot read a COLMAP model"):
        read_colmap(tmp_path / "nothing")


# -- transforms.json -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dist", [False, True])
def test_transforms_round_trip(tmp_path, shared, dist):
    rng = np.random.default_rng(6)
    cams = random_cameras(rng, 5, shared=shared, dist=dist)
    paths = write_images(tmp_path / "images", cams.names, 32, 24)
    write_points_ply(tmp_path / "points3D.ply", rng.normal(size=(20, 3)), rng.integers(0, 256, (20, 3)))
    write_transforms(tmp_path / "transforms.json", cams, paths, ply_file_path="points3D.ply")
    data = json.loads((tmp_path / "transforms.json").read_text())
    assert ("fl_x" in data) == shared
    assert ("fl_x" in data["frames"][0]) == (not shared)
    assert data["frames"][0]["file_path"] == "images/img_000.png"
    back, back_paths, points, extra = read_transforms(tmp_path / "transforms.json")
    assert back_paths == paths and extra["skipped"] == 0 and extra["mask_paths"] is None
    assert back.names == [f"images/{n}" for n in cams.names]
    assert_same_cameras(back, cams)
    assert points is not None and points[0].shape == (20, 3) and points[1].dtype == np.uint8


def test_transforms_missing_images_skipped_with_one_counting_warning(tmp_path, caplog):
    cams = random_cameras(np.random.default_rng(7), 6, shared=True, dist=False)
    paths = [tmp_path / "images" / n for n in cams.names]
    write_transforms(tmp_path / "transforms.json", cams, paths)
    write_images(tmp_path / "images", [cams.names[i] for i in (0, 2, 3, 5)], 32, 24)
    with caplog.at_level(logging.WARNING, logger="recon"):
        back, back_paths, _, extra = read_transforms(tmp_path / "transforms.json")
    records = [r for r in caplog.records if r.name == "recon"]
    assert len(records) == 1
    assert "skipped 2 of 6 frames" in records[0].getMessage()
    assert extra["skipped"] == 2 and len(back) == 4
    np.testing.assert_allclose(back.viewmats, cams.viewmats[[0, 2, 3, 5]], atol=1e-9)
    for p in paths:
        p.unlink(missing_ok=True)
    with pytest.raises(ReconError, match="none of the 6 frames"):
        read_transforms(tmp_path / "transforms.json")


def test_instant_ngp_camera_angle_x(tmp_path):
    w, h = 40, 30
    write_images(tmp_path, ["a.jpg", "b.jpg"], w, h)
    c2w = viewmat_to_c2w_opengl(look_at_viewmat([0, -3, 1], [0, 0, 0]))[0]
    angle = 0.8
    data = {
        "camera_angle_x": angle,
        "aabb_scale": 4,
        "frames": [
            {"file_path": "a.jpg", "transform_matrix": c2w.tolist()},
            {"file_path": "b", "transform_matrix": c2w.tolist()},
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    cams, paths, points, _ = read_transforms(tmp_path / "transforms.json")
    f = 0.5 * w / math.tan(0.5 * angle)
    np.testing.assert_allclose(cams.Ks[0], intrinsics_matrix(f, f, w / 2, h / 2))
    assert list(cams.widths) == [w, w] and list(cams.heights) == [h, h] and points is None
    assert paths[1].name == "b.jpg"  # extension-less file_path resolved
    np.testing.assert_allclose(cams.viewmats[0], look_at_viewmat([0, -3, 1], [0, 0, 0]), atol=1e-12)


def test_transforms_per_frame_override_and_unsupported_models(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"], 32, 24)
    eye = np.eye(4).tolist()
    data = {
        "fl_x": 30.0,
        "fl_y": 30.0,
        "cx": 16.0,
        "cy": 12.0,
        "w": 32,
        "h": 24,
        "frames": [
            {"file_path": "a.png", "transform_matrix": eye},
            {"file_path": "b.png", "fl_x": 40.0, "k1": 0.1, "transform_matrix": eye},
        ],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    cams = read_transforms(tmp_path / "transforms.json")[0]
    assert cams.Ks[0, 0, 0] == 30.0 and cams.Ks[1, 0, 0] == 40.0 and cams.Ks[1, 1, 1] == 30.0
    np.testing.assert_allclose(cams.dist, [[0, 0, 0, 0], [0.1, 0, 0, 0]])
    # Identity OpenGL camera-to-world -> OpenCV world-to-camera flips y and z.
    np.testing.assert_allclose(cams.viewmats[0], np.diag([1.0, -1.0, -1.0, 1.0]), atol=1e-12)
    for bad, match in [({"camera_model": "OPENCV_FISHEYE"}, "OPENCV_FISHEYE"), ({"k3": 0.01}, "k3")]:
        (tmp_path / "transforms.json").write_text(json.dumps({**data, **bad}))
        with pytest.raises(ReconError, match=match):
            read_transforms(tmp_path / "transforms.json")


# -- PLY -----------------------------------------------------------------------------------------------------


def test_points_ply_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(8)
    xyz = rng.normal(size=(100, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (100, 3), dtype=np.uint8)
    write_points_ply(tmp_path / "p.ply", xyz, rgb)
    head = (tmp_path / "p.ply").read_bytes()[:300].decode("latin1")
    assert "format binary_little_endian 1.0" in head
    props = [line.split()[-1] for line in head.splitlines() if line.startswith("property")]
    assert props == ["x", "y", "z", "red", "green", "blue"]
    xyz2, rgb2 = read_points_ply(tmp_path / "p.ply")
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)
    # pycolmap reads the same file as a point cloud with the same colours.
    rec = pycolmap.Reconstruction()
    rec.import_PLY(str(tmp_path / "p.ply"))
    pts = list(rec.points3D.values())
    order = np.lexsort(xyz.T)
    got = np.array([p.xyz for p in pts])
    got_order = np.lexsort(got.T)
    np.testing.assert_allclose(got[got_order], xyz[order], atol=1e-6)
    np.testing.assert_array_equal(np.array([p.color for p in pts])[got_order], rgb[order])
    with pytest.raises(ReconError, match="not found"):
        read_points_ply(tmp_path / "missing.ply")


# -- Blender -------------------------------------------------------------------------------------------------


def make_blender(folder: Path, n_train: int = 3, n_test: int = 2, size: int = 16) -> None:
    rng = np.random.default_rng(9)
    for split, n in (("train", n_train), ("test", n_test)):
        frames = []
        for i in range(n):
            img = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
            img[0, 0, 3] = 0
            img[0, 1, 3] = 255
            img[0, 2, 3] = 128
            (folder / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "RGBA").save(folder / split / f"r_{i}.png")
            c2w = viewmat_to_c2w_opengl(look_at_viewmat(rng.normal(size=3) * 3 + [0, 0, 4], [0, 0, 0]))[0]
            frames.append(
                {"file_path": f"./{split}/r_{i}", "rotation": 0.01, "transform_matrix": c2w.tolist()}
            )
        (folder / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": 0.69, "frames": frames})
        )


def test_blender_reader_and_rgba_compositing(tmp_path):
    make_blender(tmp_path)
    cams, paths, train, test = read_blender(tmp_path)
    assert list(train) == [0, 1, 2] and list(test) == [3, 4]
    assert cams.names[3] == "test/r_0.png" and paths[0] == tmp_path / "train" / "r_0.png"
    f = 0.5 * 16 / math.tan(0.5 * 0.69)
    np.testing.assert_allclose(cams.Ks[:, 0, 0], f)
    bg = (0.2, 0.4, 0.6)
    scene = load_scene(tmp_path, background=bg)
    assert scene.format == "blender" and list(scene.test_ids) == [3, 4]
    raw = np.asarray(Image.open(paths[0])).astype(np.float32) / 255.0
    img = scene.image(0)
    assert img.dtype == np.float32 and img.shape == (16, 16, 3)
    np.testing.assert_allclose(img[0, 0], bg, atol=1e-6)  # alpha 0 -> exactly the background
    np.testing.assert_allclose(img[0, 1], raw[0, 1, :3], atol=1e-6)  # alpha 1 -> the pixel
    a = raw[0, 2, 3]
    np.testing.assert_allclose(img[0, 2], raw[0, 2, :3] * a + np.array(bg) * (1 - a), atol=1e-6)
    black = load_scene(tmp_path, background=(0, 0, 0)).image(0)
    np.testing.assert_allclose(black[0, 0], 0.0, atol=1e-7)


# -- detection -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["sparse/0", "sparse", "colmap/sparse/0"])
def test_load_scene_detects_colmap_layouts(tmp_path, layout):
    rng = np.random.default_rng(10)
    cams = random_cameras(rng, 5, shared=True, dist=False)
    write_images(tmp_path / "images", cams.names, 32, 24)
    xyz = rng.normal(size=(7, 3))
    write_colmap(tmp_path / layout, cams, cams.names, xyz, rng.integers(0, 256, (7, 3)))
    scene = load_scene(tmp_path)
    assert scene.format == "colmap" and len(scene) == 5 and scene.points.shape == (7, 3)
    assert_same_cameras(scene.cameras, cams)
    assert scene.image(2).shape == (24, 32, 3)
    assert len(scene.train_cameras()) + len(scene.test_cameras()) == 5


def test_load_scene_transforms_sorted_by_name(tmp_path):
    rng = np.random.default_rng(11)
    cams = random_cameras(rng, 4, shared=True, dist=False)
    order = [2, 0, 3, 1]
    paths = write_images(tmp_path / "images", cams.names, 32, 24)
    write_transforms(tmp_path / "transforms.json", cams[order], [paths[i] for i in order])
    scene = load_scene(tmp_path / "transforms.json")
    assert scene.format == "transforms" and scene.names == sorted(scene.names)
    np.testing.assert_allclose(scene.cameras.viewmats, cams.viewmats, atol=1e-9)
    assert scene.image_paths == paths and scene.points is None


def test_load_scene_errors(tmp_path):
    with pytest.raises(ReconError, match="no scene found in .*sparse/0 \\(COLMAP\\), transforms.json"):
        load_scene(tmp_path)
    with pytest.raises(ReconError, match="does not exist"):
        load_scene(tmp_path / "nope")
    cams = random_cameras(np.random.default_rng(12), 2, shared=True, dist=False)
    write_colmap(tmp_path / "sparse" / "0", cams, cams.names)
    with pytest.raises(ReconError, match="no images/ folder"):
        load_scene(tmp_path)
    with pytest.raises(ReconError, match="background"):
        load_scene(tmp_path, background=(2, 0, 0))
