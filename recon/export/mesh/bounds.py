"""Where the cameras look, and the sizes that follow from it: the camera sphere, the TSDF parameters, the crop box,
and which cameras to use.

The scene radius r is the smallest camera distance to the point nearest all optical axes (2DGS's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recon.data.cameras import Cameras
from recon.data.errors import ReconError

from .options import MeshOptions


@dataclass
class SceneSphere:
    """Where the cameras look: the point nearest all optical axes and the smallest camera distance to it."""

    center: np.ndarray
    radius: float


def camera_sphere(cameras: Cameras) -> SceneSphere:
    """Least-squares point closest to every optical axis (the "focus point"), radius = nearest camera distance.

    Falls back to the centroid of the camera centres when the axes are (nearly) parallel.
    """
    centers = cameras.centers
    dirs = cameras.viewmats[:, 2, :3]  # camera +z axis in world coordinates (rows of R are the camera axes)
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # I − d dᵀ per camera
    a = proj.sum(0)
    b = np.einsum("cij,cj->i", proj, centers)
    if np.linalg.cond(a) < 1e8:
        center = np.linalg.solve(a, b)
    else:
        center = centers.mean(0)
    radius = float(np.linalg.norm(centers - center, axis=1).min())
    if not math.isfinite(radius) or radius <= 0:
        radius = float(np.linalg.norm(centers - centers.mean(0), axis=1).max()) or 1.0
    return SceneSphere(center, radius)


@dataclass
class TSDFParams:
    voxel: float
    sdf_trunc: float
    depth_trunc: float


def tsdf_params(cameras: Cameras, opts: MeshOptions) -> TSDFParams:
    """Defaults from the camera sphere (2DGS: depth_trunc = 2r, voxel = depth_trunc/1024, sdf_trunc = 5 voxels),
    except that a voxel is never smaller than half a pixel's footprint at distance r: finer voxels only cost
    memory when the depth maps cannot resolve them (2DGS renders ~1000-pixel images, CPU runs far smaller ones).
    Each value is overridden by its option when set."""
    sphere = camera_sphere(cameras)
    depth_trunc = opts.depth_trunc or 2.0 * sphere.radius
    focal = float(np.mean(cameras.Ks[:, [0, 1], [0, 1]]))
    voxel = opts.voxel or max(depth_trunc / 1024.0, 0.5 * sphere.radius / focal)
    sdf_trunc = opts.sdf_trunc or 5.0 * voxel
    if min(depth_trunc, voxel, sdf_trunc) <= 0:
        raise ReconError("--voxel, --sdf-trunc and --depth-trunc must be positive")
    return TSDFParams(voxel=voxel, sdf_trunc=sdf_trunc, depth_trunc=depth_trunc)


def select_views(n: int, max_views: int) -> np.ndarray:
    """Indices of at most ``max_views`` cameras spread evenly over ``n`` (all when max_views <= 0)."""
    if max_views <= 0 or max_views >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_views)).astype(np.int64))


def auto_bounds(surface: np.ndarray, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Crop box: the 0.5–99.5 percentile extent of the observed surface points, padded by 2% of its diagonal,
    within the box of twice the camera-sphere radius around its centre."""
    sphere = camera_sphere(cameras)
    lo_s, hi_s = sphere.center - 2 * sphere.radius, sphere.center + 2 * sphere.radius
    if len(surface) == 0:
        return lo_s, hi_s
    lo, hi = np.percentile(surface, 0.5, axis=0), np.percentile(surface, 99.5, axis=0)
    pad = 0.02 * float(np.linalg.norm(hi - lo))
    return np.maximum(lo - pad, lo_s), np.minimum(hi + pad, hi_s)


def crop_bounds(surface: np.ndarray, cameras: Cameras, opts: MeshOptions) -> tuple[np.ndarray, np.ndarray]:
    """The crop box (lo, hi): ``opts.bounds`` when given (every max must exceed its min), else ``auto_bounds``."""
    if opts.bounds is not None:
        lo, hi = (np.asarray(b, np.float64) for b in opts.bounds)
        if np.any(hi <= lo):
            raise ReconError(f"--bounds {opts.bounds}: every max must exceed its min")
        return lo, hi
    return auto_bounds(surface, cameras)
