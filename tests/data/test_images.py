"""Undistortion known answers and the lazy, budgeted, disk-cached ImageStore."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat, viewmat_to_c2w_opengl
from recon.data.errors import ReconError
from recon.data.formats.colmap import write_colmap
from recon.data.images import ImageStore
from recon.data.scene import load_scene
from recon.data.undistort import (
    distort_normalized,
    project_points,
    undistort_cameras,
    undistort_image,
    undistort_maps,
    undistorted_K,
)

W, H = 320, 240
K = intrinsics_matrix(300.0, 310.0, 161.3, 119.6)


def _to_cv(k: np.ndarray) -> np.ndarray:
    k = k.copy()
    k[:2, 2] -= 0.5
    return k


def _blobs(uv: np.ndarray, w: int, h: int, sigma: float = 1.2) -> np.ndarray:
    """Gaussian dots centred at ``uv`` (pixel centres at +0.5)."""
    u = np.arange(w) + 0.5
    v = np.arange(h) + 0.5
    img = np.zeros((h, w))
    for cu, cv in uv:
        img += np.exp(-((u[None, :] - cu) ** 2 + (v[:, None] - cv) ** 2) / (2 * sigma**2))
    return img


def _centroid(img: np.ndarray, guess: np.ndarray, r: int = 5) -> np.ndarray:
    iu, iv = int(guess[0]), int(guess[1])
    win = img[iv - r : iv + r + 1, iu - r : iu + r + 1].astype(np.float64)
    win = np.clip(win - 0.05 * win.max(), 0, None)
    vv, uu = np.mgrid[iv - r : iv + r + 1, iu - r : iu + r + 1] + 0.5
    return np.array([(win * uu).sum() / win.sum(), (win * vv).sum() / win.sum()])


@pytest.mark.parametrize("dist", [[-0.25, 0.08, 0.002, -0.003], [0.15, 0.03, -0.001, 0.002]])
def test_undistortion_known_answer(dist):
    dist = np.array(dist)
    gx, gy = np.meshgrid(np.linspace(-0.45, 0.45, 11), np.linspace(-0.35, 0.35, 9))
    pts = np.stack([gx.ravel() * 2.0, gy.ravel() * 2.0, np.full(gx.size, 2.0)], axis=1)
    uv_dist = project_points(K, dist, pts)
    distorted = _blobs(uv_dist, W, H).astype(np.float32)

    k_new = undistorted_K(K, dist, W, H)
    und = undistort_image(distorted, K, dist, k_new)
    uv_pin = project_points(k_new, None, pts)  # where a pinhole camera k_new sees the same 3D points
    inside = np.all((uv_pin > 8) & (uv_pin < [W - 8, H - 8]), axis=1)
    assert inside.sum() > 60
    found = np.array([_centroid(und, g) for g in uv_pin[inside]])
    err = np.linalg.norm(found - uv_pin[inside], axis=1)
    assert err.max() < 0.5, err.max()
    assert np.median(err) < 0.1
    # The distortion really moved the dots: without undistortion they would be far off.
    assert np.linalg.norm(uv_dist[inside] - uv_pin[inside], axis=1).max() > 2.0

    # Same answer as OpenCV once the half-pixel convention is accounted for.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    src = (uv_dist - 0.5).reshape(-1, 1, 2)
    cv_pts = cv2.undistortPoints(src, _to_cv(K), dist, R=None, P=_to_cv(k_new), criteria=criteria)
    np.testing.assert_allclose(cv_pts.reshape(-1, 2) + 0.5, uv_pin, atol=1e-4)
    mx, my = undistort_maps(K, dist, k_new, W, H)
    cx, cy = cv2.initUndistortRectifyMap(_to_cv(K), dist, None, _to_cv(k_new), (W, H), cv2.CV_32FC1)
    np.testing.assert_allclose(mx, cx, atol=1e-3)
    np.testing.assert_allclose(my, cy, atol=1e-3)
    # alpha = 0: every output pixel samples inside the input image.
    assert mx.min() >= -0.5 - 1e-3 and mx.max() <= W - 0.5 + 1e-3
    assert my.min() >= -0.5 - 1e-3 and my.max() <= H - 0.5 + 1e-3


def test_distortion_model_known_values():
    x, y = np.array([0.3]), np.array([-0.2])
    xd, yd = distort_normalized(x, y, [0.1, 0.01, 0.001, 0.002])
    r2 = 0.13
    radial = 1 + 0.1 * r2 + 0.01 * r2**2
    assert np.isclose(xd[0], 0.3 * radial + 2 * 0.001 * 0.3 * -0.2 + 0.002 * (r2 + 2 * 0.09))
    assert np.isclose(yd[0], -0.2 * radial + 0.001 * (r2 + 2 * 0.04) + 2 * 0.002 * 0.3 * -0.2)
    cams = Cameras(np.eye(4)[None], K[None], W, H, np.zeros((1, 4)))
    np.testing.assert_allclose(undistort_cameras(cams).Ks[0], K)  # zero distortion keeps K
    assert undistort_cameras(cams).dist is None


# -- ImageStore ----------------------------------------------------------------------------------------------


def _scene_files(root, n, w=64, h=48, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = root / "images" / f"img_{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8)).save(p)
        paths.append(p)
    ks = np.tile(intrinsics_matrix(50.0, 50.0, w / 2, h / 2), (n, 1, 1))
    vms = np.stack([look_at_viewmat([np.cos(i), np.sin(i), 1.0], [0, 0, 0]) for i in range(n)])
    cams = Cameras(vms, ks, w, h, names=[p.name for p in paths])
    return paths, cams


def test_image_store_stays_under_budget(tmp_path):
    paths, cams = _scene_files(tmp_path, 30)
    one = 64 * 48 * 3
    store = ImageStore(paths, cams, tmp_path, ram_budget_mb=5.5 * one / 2**20)
    rng = np.random.default_rng(1)
    peak = 0
    for _ in range(3):
        for i in rng.permutation(30):
            img = store.image(i)
            assert store.cached_bytes <= store.budget_bytes
            peak = max(peak, store.cached_bytes)
            expected = np.asarray(Image.open(paths[i]), dtype=np.float32) / 255.0
            np.testing.assert_allclose(img, expected, atol=1e-6)
    assert peak == 5 * one  # it does cache, up to the budget
    assert not (tmp_path / ".cache").exists()  # full size, no distortion: nothing written to disk
    tiny = ImageStore(paths, cams, tmp_path, ram_budget_mb=0.5 * one / 2**20)
    assert tiny.image(0).shape == (48, 64, 3) and tiny.cached_bytes == 0


def test_downscale_cache_written_once_and_reused(tmp_path):
    paths, cams = _scene_files(tmp_path, 4)
    store = ImageStore(paths, cams, tmp_path, downscale=2.0)
    assert (store.cameras.widths[0], store.cameras.heights[0]) == (32, 24)
    np.testing.assert_allclose(store.cameras.Ks[0], intrinsics_matrix(25.0, 25.0, 16.0, 12.0))
    img = store.image(1)
    cached = tmp_path / ".cache" / "images_2" / "images" / "img_001.png"
    assert cached.is_file() and img.shape == (24, 32, 3)
    src = np.asarray(Image.open(paths[1]))
    np.testing.assert_allclose(
        img * 255.0, cv2.resize(src, (32, 24), interpolation=cv2.INTER_AREA), atol=1e-3
    )
    mtime = cached.stat().st_mtime_ns
    again = ImageStore(paths, cams, tmp_path, downscale=2.0).image(1)  # a new run
    assert cached.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again, img)
    # A source newer than its cached copy is processed again.
    os.utime(paths[1], ns=(mtime + 10**9, mtime + 10**9))
    ImageStore(paths, cams, tmp_path, downscale=2.0).image(1)
    assert cached.stat().st_mtime_ns != mtime


def test_existing_downscaled_folder_is_used(tmp_path):
    paths, cams = _scene_files(tmp_path, 3)
    (tmp_path / "images_2").mkdir()
    for i, p in enumerate(paths):
        size = (32, 24) if i < 2 else (31, 24)  # the last one has the wrong size and is ignored
        Image.new("RGB", size, (10 * i, 20, 30)).save(tmp_path / "images_2" / p.name)
    store = ImageStore(paths, cams, tmp_path, downscale=2)
    np.testing.assert_allclose(store.image(1)[5, 5], np.array([10, 20, 30]) / 255.0, atol=1e-6)
    assert not (tmp_path / ".cache").exists()
    assert store.image(2).shape == (24, 32, 3)
    assert (tmp_path / ".cache" / "images_2" / "images" / "img_002.png").is_file()


def test_size_mismatch_is_a_user_error(tmp_path):
    paths, cams = _scene_files(tmp_path, 1, w=48, h=64)
    wrong = Cameras(cams.viewmats, cams.Ks, 64, 48, names=cams.names)
    with pytest.raises(ReconError, match="EXIF"):
        ImageStore(paths, wrong, tmp_path).image(0)


@pytest.mark.parametrize("downscale", [1.0, 2.0])
def test_distorted_colmap_scene_is_undistorted_once(tmp_path, downscale):
    paths, cams = _scene_files(tmp_path, 3, w=W // 4, h=H // 4)
    k = K.copy()
    k[:2] /= 4
    cams = Cameras(
        cams.viewmats,
        np.tile(k, (3, 1, 1)),
        W // 4,
        H // 4,
        np.tile([-0.2, 0.05, 0.001, 0.0], (3, 1)),
        cams.names,
    )
    write_colmap(tmp_path / "sparse" / "0", cams, cams.names)
    scene = load_scene(tmp_path, downscale=downscale)
    assert scene.cameras.dist is None
    k_new = undistorted_K(k, cams.dist[0], W // 4, H // 4)
    expected_k = Cameras(np.eye(4)[None], k_new[None], W // 4, H // 4).scaled(downscale).Ks[0]
    np.testing.assert_allclose(scene.cameras.Ks[1], expected_k, atol=1e-9)
    img = scene.image(1)
    src = np.asarray(Image.open(paths[1]))
    und = undistort_image(src, k, cams.dist[0], k_new)
    if downscale != 1.0:
        und = cv2.resize(und, (W // 8, H // 8), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(img * 255.0, und, atol=1e-3)
    folder = tmp_path / ".cache" / f"images_{downscale:g}_undistorted" / "images"
    files = list(folder.glob("img_001-*.png"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    load_scene(tmp_path, downscale=downscale).image(1)
    assert files[0].stat().st_mtime_ns == mtime


def test_masks_from_transforms_and_colmap(tmp_path):
    paths, cams = _scene_files(tmp_path, 2)
    frames = []
    for i, p in enumerate(paths):
        m = np.zeros((48, 64), np.uint8)
        m[:, : 16 * (i + 1)] = 255
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(m).save(tmp_path / "masks" / f"{p.name}.png")
        c2w = viewmat_to_c2w_opengl(cams.viewmats[i])[0]
        frames.append(
            {
                "file_path": f"images/{p.name}",
                "mask_path": f"masks/{p.name}.png",
                "transform_matrix": c2w.tolist(),
            }
        )
    meta = {"fl_x": 50.0, "fl_y": 50.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene(tmp_path, downscale=2)
    m = scene.mask(1)
    assert m.shape == (24, 32) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, 1.0}
    assert m[:, :16].min() == 1.0 and m[:, 16:].max() == 0.0
    (tmp_path / "transforms.json").unlink()
    write_colmap(tmp_path / "sparse" / "0", cams, cams.names)
    colmap = load_scene(tmp_path)
    assert colmap.mask_paths == [tmp_path / "masks" / f"{p.name}.png" for p in paths]
    assert colmap.mask(0)[:, :16].min() == 1.0 and colmap.mask(0)[:, 16:].max() == 0.0


def test_image_on_another_background_for_random_background_training(tmp_path):
    paths, cams = _scene_files(tmp_path, 2, channels=4)
    rgb_paths, rgb_cams = _scene_files(tmp_path / "rgb", 1, channels=3)
    store = ImageStore(paths, cams, tmp_path, background=(1.0, 1.0, 1.0))
    raw = np.asarray(Image.open(paths[0]), dtype=np.float32) / 255.0
    bg = np.array([0.2, 0.5, 0.9], np.float32)
    expected = raw[..., :3] * raw[..., 3:] + bg * (1 - raw[..., 3:])
    assert store.has_alpha(0)
    np.testing.assert_allclose(store.image_on(0, bg), expected, atol=1e-6)
    assert not np.allclose(store.image_on(0, bg), store.image(0))
    plain = ImageStore(rgb_paths, rgb_cams, tmp_path / "rgb")
    assert not plain.has_alpha(0)
    np.testing.assert_allclose(plain.image_on(0, bg), plain.image(0))
