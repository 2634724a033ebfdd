"""Between viser's browser camera and recon's cameras (OpenCV axes, world-to-camera viewmats, pinhole K).

viser reports ``client.camera.wxyz`` and ``.position`` as the camera-to-world pose ``P_world = R p_camera + t`` in
OpenCV axes (x right, y down, z forward; its look direction is +z and its up direction is -y), and ``fov`` as the
vertical field of view in radians of a three.js perspective camera whose optical axis passes through the centre of
the canvas. So the viewmat is the inverse of ``[R | t]``, and K has square pixels with the principal point at the
image centre (pixel centres at +0.5, as gsplat and recon use).
"""

from __future__ import annotations

import math

import numpy as np
import viser.transforms as vtf


def viewmat_from_pose(wxyz, position) -> np.ndarray:
    """[4,4] world-to-camera matrix of a camera whose camera-to-world rotation is ``wxyz`` and centre ``position``."""
    R = vtf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    t = np.asarray(position, dtype=np.float64)
    viewmat = np.eye(4)
    viewmat[:3, :3] = R.T
    viewmat[:3, 3] = -R.T @ t
    return viewmat


def pose_from_viewmat(viewmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) in viser's convention for a world-to-camera matrix: the inverse of ``viewmat_from_pose``."""
    viewmat = np.asarray(viewmat, dtype=np.float64)
    R = viewmat[:3, :3].T
    # Re-orthonormalise: viewmats read from files carry rounding that SO3.from_matrix would carry into wxyz.
    u, _, vt = np.linalg.svd(R)
    R = u @ vt
    position = -R @ viewmat[:3, 3]
    return vtf.SO3.from_matrix(R).wxyz, position


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> np.ndarray:
    """[3,3] K for a vertical field of view in radians: square pixels, principal point at the image centre."""
    fy = 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([[fy, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: np.ndarray, height: int) -> float:
    """Vertical field of view in radians of a pinhole camera (the one viser's frustums and camera take)."""
    return 2.0 * math.atan(0.5 * height / float(K[1, 1]))


def viewer_camera(camera, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat, K) of a viser ``CameraHandle`` rendered at ``width`` x ``height`` (vertical fov kept)."""
    return viewmat_from_pose(camera.wxyz, camera.position), intrinsics_from_fov(camera.fov, width, height)
