"""The sample scene: deterministic, cameras and mesh consistent with the photos, textured enough for SIFT, safe
to rerun and to interrupt."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from recon.data import synthetic
from recon.data.errors import ReconError
from recon.data.formats.nerfstudio import read_transforms

TINY = {"n_views": 6, "width": 64, "height": 48, "seed": 0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return synthetic.make_sample_scene(tmp_path_factory.mktemp("tiny") / "scene", **TINY)


@pytest.fixture(scope="module")
def scene0() -> synthetic.SampleScene:
    """The seed-0 scene as the generator builds it (320x240 and 64x48 share the aspect, hence the ground)."""
    return synthetic.SampleScene.build(0, synthetic.ground_half_size(320, 240))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_ino) for p in folder.rglob("*")}


def _local_std(gray: np.ndarray, k: int = 5) -> np.ndarray:
    """Standard deviation of grey levels in the k x k window around each pixel: ~0 on flat or smoothly shaded
    surfaces."""
    g = gray.astype(np.float64)
    mean = cv2.blur(g, (k, k))
    return np.sqrt(np.maximum(cv2.blur(g * g, (k, k)) - mean * mean, 0))


def test_layout(tiny):
    names = sorted(p.name for p in (tiny / "images").iterdir())
    assert names == [f"view_{i:03d}.png" for i in range(6)]
    for name in names:
        img = cv2.imread(str(tiny / "images" / name))
        assert img.shape == (48, 64, 3)
    meta = json.loads((tiny / "scene.json").read_text())
    assert meta["version"] == synthetic.VERSION
    assert meta["n_views"] == 6 and meta["seed"] == 0
    assert meta["params"]["width"] == 64 and meta["params"]["height"] == 48
    assert (tiny / "gt" / "transforms.json").is_file()
    assert not [p for p in tiny.iterdir() if p.name.startswith(".synthetic-")], "staging folder left behind"


def test_same_seed_is_byte_identical_other_seed_differs(tiny, tmp_path):
    again = synthetic.make_sample_scene(tmp_path / "again", **TINY)
    other = tmp_path / "other"  # a copy of the seed-0 scene, overwritten with seed 1
    shutil.copytree(tiny, other)
    synthetic.make_sample_scene(other, **{**TINY, "seed": 1}, overwrite=True)
    assert json.loads((other / "scene.json").read_text())["seed"] == 1
    for name in sorted(p.name for p in (tiny / "images").iterdir()):
        assert (again / "images" / name).read_bytes() == (tiny / "images" / name).read_bytes(), name
        assert (other / "images" / name).read_bytes() != (tiny / "images" / name).read_bytes(), name
    assert (again / "gt" / "mesh.ply").read_bytes() == (tiny / "gt" / "mesh.ply").read_bytes()
    assert (again / "gt" / "transforms.json").read_text() == (tiny / "gt" / "transforms.json").read_text()
    assert (other / "gt" / "mesh.ply").read_bytes() != (tiny / "gt" / "mesh.ply").read_bytes()
    assert not [p for p in other.iterdir() if p.name.startswith(".synthetic-")], "staging folder left behind"


def test_written_cameras_see_the_written_mesh_as_rendered(tiny, scene0):
    """Cameras read back from transforms.json: their pixel-centre rays all hit gt/mesh.ply (the ground fills every
    view, nothing is background) at the renderer's depth, and re-rendering through them reproduces the PNGs."""
    cams, paths, _, _ = read_transforms(tiny / "gt" / "transforms.json")
    assert [p.name for p in paths] == [f"view_{i:03d}.png" for i in range(6)]
    mesh = trimesh.load(tiny / "gt" / "mesh.ply", process=False)
    caster = trimesh.ray.ray_pyembree.RayMeshIntersector(mesh)
    renderer = synthetic.Renderer(scene0)
    for i, path in enumerate(paths):
        w, h = int(cams.widths[i]), int(cams.heights[i])
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5, indexing="xy")
        k = cams.Ks[i]
        d_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1).reshape(
            -1, 3
        )
        c2w = cams.camtoworlds[i]
        dirs = d_cam @ c2w[:3, :3].T
        origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
        loc, ray_idx, _ = caster.intersects_location(origins, dirs, multiple_hits=False)
        assert len(np.unique(ray_idx)) == w * h, f"{path.name}: some pixels see no surface"
        depth_mesh = np.zeros(w * h)
        depth_mesh[ray_idx] = (loc - c2w[:3, 3]) @ c2w[:3, 2]  # camera z of the hit
        rgb, depth = renderer.render(cams.viewmats[i], cams.Ks[i], w, h)
        assert np.allclose(depth.ravel(), depth_mesh, rtol=0, atol=1e-3), path.name
        photo = cv2.imread(str(path))[:, :, ::-1].astype(int)
        diff = np.abs(photo - rgb.astype(int))
        assert diff.max() <= 2 and (diff == 0).mean() > 0.99, path.name


def test_meshes_load_and_lie_where_expected(tiny):
    meta = json.loads((tiny / "scene.json").read_text())
    mesh = trimesh.load(tiny / "gt" / "mesh.ply", process=False)
    obj = trimesh.load(tiny / "gt" / "object.ply", process=False)
    g = meta["ground_half_size"]
    assert np.allclose(mesh.bounds[0], [-g, -g, 0.0]) and np.allclose(mesh.bounds[1][:2], [g, g])
    assert 0.5 < mesh.bounds[1][2] < 3.0  # the objects stand on the ground, about as tall as they are wide
    assert obj.bounds[0][2] >= 0.0
    assert np.all(np.abs(obj.bounds[:, :2]) < 2.5)  # centred on the origin, well inside the camera rings
    assert np.isclose(np.linalg.norm(obj.bounds[1] - obj.bounds[0]), meta["scene_size"])
    assert 3 < meta["scene_size"] < 6
    assert len(obj.faces) < 50_000 and len(mesh.faces) > len(obj.faces)
    assert obj.area > 8.0  # real 3-D shape (a unit box has area 6)


def test_images_are_textured(tiny, scene0):
    """Texture covers every surface in view: where the same view rendered with a uniform albedo is smooth (local
    std < 2 grey levels: no silhouette or shadow edge), the photo still varies, by > 10 grey levels on average and
    by > 3 at 95 % of those pixels (measured: >= 15 and >= 6.8 for this scene; ~0 for an untextured one)."""
    cams, paths, _, _ = read_transforms(tiny / "gt" / "transforms.json")
    renderer = synthetic.Renderer(scene0)
    for i, path in enumerate(paths):
        photo = _local_std(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        flat, _ = renderer.render(cams.viewmats[i], cams.Ks[i], 64, 48, textured=False)
        smooth = _local_std(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY)) < 2.0
        assert smooth.mean() > 0.5, path.name  # mostly smooth surfaces, so the check covers most of the image
        assert photo[smooth].mean() > 10.0 and np.percentile(photo[smooth], 5) > 3.0, path.name


def test_sift_finds_and_matches_many_features_at_default_size(scene0):
    """Neighbours in one ring and across rings share > 200 ratio-test SIFT matches; the texture (not shading)
    provides the keypoints."""
    cams = synthetic.rig_cameras(48, synthetic.DEFAULT_WIDTH, synthetic.DEFAULT_HEIGHT)
    renderer = synthetic.Renderer(scene0)
    w, h = synthetic.DEFAULT_WIDTH, synthetic.DEFAULT_HEIGHT
    views = {i: renderer.render(cams.viewmats[i], cams.Ks[i], w, h)[0] for i in (0, 1, 24)}
    flat, _ = renderer.render(cams.viewmats[0], cams.Ks[0], w, h, textured=False)
    sift = cv2.SIFT_create()
    feats = {i: sift.detectAndCompute(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), None) for i, im in views.items()}
    n_flat = len(sift.detect(cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY), None))
    for kp, _ in feats.values():
        assert len(kp) > 800 and len(kp) > 5 * n_flat
    matcher = cv2.BFMatcher()
    for a, b in (
        (0, 1),
        (0, 24),
    ):  # next in the lower ring (15 degrees round); the upper ring, 7.5 degrees round
        pairs = matcher.knnMatch(feats[a][1], feats[b][1], k=2)
        good = sum(1 for m, n in pairs if m.distance < 0.75 * n.distance)
        assert good > 200, (a, b, good)


def test_rerun_with_same_parameters_does_nothing(tiny):
    before = _snapshot(tiny)
    start = time.perf_counter()
    assert synthetic.make_sample_scene(tiny, **TINY) == tiny
    assert time.perf_counter() - start < 1.0
    assert _snapshot(tiny) == before


def test_other_parameters_refused_without_overwrite(tiny):
    before = _snapshot(tiny)
    with pytest.raises(ReconError, match="--overwrite"):
        synthetic.make_sample_scene(tiny, **{**TINY, "n_views": 7})
    assert _snapshot(tiny) == before


def test_foreign_folder_is_not_touched(tmp_path):
    photos = tmp_path / "mine" / "images"
    photos.mkdir(parents=True)
    (photos / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ReconError, match="no complete sample scene"):
        synthetic.make_sample_scene(tmp_path / "mine", n_views=2, width=32, height=24)
    assert [p.name for p in photos.iterdir()] == ["holiday.jpg"]


def test_interrupted_run_leaves_no_scene(tmp_path):
    def stop(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_sample_scene(out, n_views=4, width=32, height=24, on_view=stop)
    assert [p.name for p in out.iterdir() if not p.name.endswith(".lock")] == []
    synthetic.make_sample_scene(out, n_views=3, width=32, height=24)  # a plain rerun then completes it
    assert synthetic.is_current(out, 3, 32, 24, 0)
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "view_000.png",
        "view_001.png",
        "view_002.png",
    ]


def test_cli(tiny, tmp_path, capsys):
    args = [str(tiny), "--views", "6", "--width", "64", "--height", "48", "--seed", "0"]
    assert synthetic.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert synthetic.main([*args[:-1], "3"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert synthetic.main([str(tmp_path / "x"), "--views", "1"]) == 2
    assert "--views" in capsys.readouterr().err
