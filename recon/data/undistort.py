"""Undistortion of OpenCV ``k1 k2 p1 p2`` cameras into pinhole cameras, done once at load.

Choice of the new intrinsics: ``cv2.getOptimalNewCameraMatrix`` with ``alpha = 0`` at the original image size,
so every pixel of the undistorted image sees real content (no black borders for either barrel or pincushion
distortion) and the renderer never has to mask anything. The cost is a slight crop of the outermost content.

Pixel convention: recon (like COLMAP and gsplat) puts pixel centres at +0.5, OpenCV at integers. Intrinsics
are shifted by 0.5 px around every OpenCV call, and the remap tables are built here from the distortion model
itself, so the mapping is written out once and is known-answer testable.
"""

from __future__ import annotations

import cv2
import numpy as np

from recon.data.cameras import Cameras
from recon.data.validate import check_cameras


def distort_normalized(x: np.ndarray, y: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The OpenCV radial-tangential model on normalized image coordinates (x = X/Z, y = Y/Z)."""
    k1, k2, p1, p2 = (float(v) for v in np.asarray(dist, dtype=np.float64).reshape(-1)[:4])
    r2 = x * x + y * y
    radial = 1.0 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def project_points(K: np.ndarray, dist: np.ndarray | None, pts_cam: np.ndarray) -> np.ndarray:
    """[N,2] pixel positions (centres at +0.5) of camera-frame points [N,3], with distortion when given."""
    pts_cam = np.asarray(pts_cam, dtype=np.float64).reshape(-1, 3)
    x = pts_cam[:, 0] / pts_cam[:, 2]
    y = pts_cam[:, 1] / pts_cam[:, 2]
    if dist is not None:
        x, y = distort_normalized(x, y, dist)
    u = K[0, 0] * x + K[0, 1] * y + K[0, 2]
    v = K[1, 1] * y + K[1, 2]
    return np.stack([u, v], axis=1)


def _to_cv(K: np.ndarray) -> np.ndarray:
    k = np.array(K, dtype=np.float64)
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    return k


def _from_cv(K: np.ndarray) -> np.ndarray:
    k = np.array(K, dtype=np.float64)
    k[0, 2] += 0.5
    k[1, 2] += 0.5
    return k


def undistorted_K(K: np.ndarray, dist: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pinhole K of the undistorted image: all pixels valid (alpha = 0), same size as the input."""
    dist4 = np.asarray(dist, dtype=np.float64).reshape(-1)[:4]
    if not np.any(dist4):
        return np.array(K, dtype=np.float64)
    new, _ = cv2.getOptimalNewCameraMatrix(
        _to_cv(K),
        dist4,
        (int(width), int(height)),
        0.0,
        (int(width), int(height)),
        centerPrincipalPoint=False,
    )
    return _from_cv(new)


def undistort_maps(
    K: np.ndarray, dist: np.ndarray, K_new: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` tables: for each undistorted pixel, where to sample the distorted image (OpenCV pixels).

    Pixel centre (u, v) of the output -> normalized ray through ``K_new`` -> distorted normalized point ->
    pixel of the input through ``K``; minus 0.5 because ``cv2.remap`` addresses pixel centres at integers.
    """
    u = np.arange(int(width), dtype=np.float64) + 0.5
    v = np.arange(int(height), dtype=np.float64) + 0.5
    uu, vv = np.meshgrid(u, v)
    y = (vv - K_new[1, 2]) / K_new[1, 1]
    x = (uu - K_new[0, 2] - K_new[0, 1] * y) / K_new[0, 0]
    xd, yd = distort_normalized(x, y, dist)
    map_x = K[0, 0] * xd + K[0, 1] * yd + K[0, 2] - 0.5
    map_y = K[1, 1] * yd + K[1, 2] - 0.5
    return map_x.astype(np.float32), map_y.astype(np.float32)


def undistort_image(
    image: np.ndarray,
    K: np.ndarray,
    dist: np.ndarray,
    K_new: np.ndarray,
    interpolation: int = cv2.INTER_LINEAR,
    maps: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The image a pinhole camera ``K_new`` would have taken; same size and dtype as ``image``."""
    h, w = image.shape[:2]
    map_x, map_y = maps if maps is not None else undistort_maps(K, dist, K_new, w, h)
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)


def undistort_cameras(cameras: Cameras) -> Cameras:
    """The pinhole cameras of the undistorted images (``dist`` None); unchanged when nothing is distorted."""
    if cameras.dist is None:
        return cameras
    ks = []
    for i in range(len(cameras)):
        try:
            ks.append(undistorted_K(cameras.Ks[i], cameras.dist[i], cameras.widths[i], cameras.heights[i]))
        except cv2.error:
            ks.append(np.full((3, 3), np.nan))  # refused below, naming the camera
    out = Cameras(
        cameras.viewmats.copy(),
        np.stack(ks),
        cameras.widths.copy(),
        cameras.heights.copy(),
        None,
        list(cameras.names),
    )
    fix = "its distortion k1 k2 p1 p2 cannot be undone; check those values or undistort the images first"
    return check_cameras(out, "undistorted cameras", fix)
