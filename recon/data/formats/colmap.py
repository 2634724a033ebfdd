"""COLMAP sparse models (binary or text): read by ``colmap_files``, written through pycolmap.

COLMAP already uses OpenCV axes, world-to-camera poses (``cam_from_world``) and pixel centres at +0.5, so
poses and intrinsics pass through unchanged; only the camera models are mapped to a pinhole K plus
``k1 k2 p1 p2``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from recon.data.atomic import atomic_path
from recon.data.cameras import Cameras, intrinsics_matrix
from recon.data.errors import ReconError
from recon.data.native import pycolmap
from recon.data.validate import check_cameras

from .colmap_files import FIX, read_model_files

MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")


def _intrinsics(model: str, params: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(K, [k1 k2 p1 p2]) of one COLMAP camera."""
    p = [float(v) for v in params]
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return intrinsics_matrix(f, f, cx, cy), np.zeros(4)
    if model == "PINHOLE":
        fx, fy, cx, cy = p
        return intrinsics_matrix(fx, fy, cx, cy), np.zeros(4)
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return intrinsics_matrix(f, f, cx, cy), np.array([k, 0.0, 0.0, 0.0])
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return intrinsics_matrix(f, f, cx, cy), np.array([k1, k2, 0.0, 0.0])
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return intrinsics_matrix(fx, fy, cx, cy), np.array([k1, k2, p1, p2])
    raise ReconError(
        f"COLMAP camera model {model} in {where} is not supported; re-run SfM with one of "
        "SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL or OPENCV (e.g. `recon process`), "
        "or undistort the images with COLMAP first"
    )


def read_colmap(sparse_dir: str | os.PathLike) -> tuple[Cameras, list[str], np.ndarray, np.ndarray]:
    """(cameras sorted by image name, image names, points xyz [P,3] float32, points rgb [P,3] uint8).

    Only images with a pose are returned (COLMAP writes only those). ``dist`` is None when every camera is a
    pinhole. The files are parsed and checked by ``colmap_files``; the cameras by ``recon.data.validate``.
    """
    sparse_dir = Path(sparse_dir)
    model = read_model_files(sparse_dir)
    images = sorted(model.images, key=lambda im: im.name)
    if not images:
        raise ReconError(
            f"the COLMAP model in {sparse_dir} has no registered images; re-run SfM on more photos"
        )
    cams = {
        cid: _intrinsics(c.model, c.params, str(sparse_dir))
        for cid, c in model.cameras.items()
        if any(im.camera_id == cid for im in images)
    }
    viewmats, ks, dists, widths, heights = [], [], [], [], []
    for im in images:
        cam = model.cameras[im.camera_id]
        k, d = cams[im.camera_id]
        viewmats.append(im.viewmat())
        ks.append(k)
        dists.append(d)
        widths.append(cam.width)
        heights.append(cam.height)
    dist = np.stack(dists)
    names = [im.name for im in images]
    cameras = Cameras(
        np.stack(viewmats), np.stack(ks), widths, heights, dist if np.any(dist) else None, names
    )
    labels = [f"image {im.id} ({im.name}, camera {im.camera_id})" for im in images]
    check_cameras(cameras, sparse_dir, FIX, labels)
    return cameras, names, model.xyz.astype(np.float32), model.rgb


def _camera_params(cameras: Cameras, i: int) -> tuple[str, tuple[float, ...]]:
    k = cameras.Ks[i]
    if abs(k[0, 1]) > 1e-12:
        raise ValueError("write_colmap: COLMAP cameras have no skew; K[0,1] must be 0")
    base = (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    if cameras.has_distortion and np.any(cameras.dist[i][:4]):
        return "OPENCV", base + tuple(float(v) for v in cameras.dist[i][:4])
    return "PINHOLE", base


def write_colmap(
    sparse_dir: str | os.PathLike,
    cameras: Cameras,
    image_names: list[str],
    points: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    text: bool = False,
) -> None:
    """Write a COLMAP model (PINHOLE, or OPENCV for distorted cameras; identical intrinsics share one camera).

    Every file is moved into ``sparse_dir`` atomically. Model files of the other format (``.txt`` when writing
    binary and vice versa) are removed, so a later read cannot pick up a stale model.
    """
    if len(image_names) != len(cameras):
        raise ValueError(f"write_colmap: {len(cameras)} cameras but {len(image_names)} image names")
    sparse_dir = Path(sparse_dir)
    rec = pycolmap.Reconstruction()
    camera_ids: dict[tuple, int] = {}
    for i in range(len(cameras)):
        model, params = _camera_params(cameras, i)
        key = (model, int(cameras.widths[i]), int(cameras.heights[i]), params)
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            cam = pycolmap.Camera(
                model=model,
                width=int(cameras.widths[i]),
                height=int(cameras.heights[i]),
                params=list(params),
                camera_id=camera_ids[key],
            )
            rec.add_camera_with_trivial_rig(cam)
        pose = pycolmap.Rigid3d(np.ascontiguousarray(cameras.viewmats[i, :3, :4]))
        image = pycolmap.Image(name=str(image_names[i]), camera_id=camera_ids[key], image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pose)
    if points is not None:
        xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        colors = (
            np.zeros_like(xyz, dtype=np.uint8)
            if rgb is None
            else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        )
        for p, c in zip(xyz, colors):
            rec.add_point3D(p, pycolmap.Track(), c)

    sparse_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".colmap-", dir=sparse_dir))
    try:
        (rec.write_text if text else rec.write_binary)(str(tmp_dir))
        for f in sorted(tmp_dir.iterdir()):
            with atomic_path(sparse_dir / f.name) as tmp:
                os.replace(f, tmp)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    stale = ".bin" if text else ".txt"
    for name in MODEL_FILES:
        (sparse_dir / f"{name}{stale}").unlink(missing_ok=True)
