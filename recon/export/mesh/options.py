"""The options of a mesh export, shared by every step of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class MeshOptions:
    """How to turn Gaussians into a mesh; ``None`` values are estimated from the cameras and the scene."""

    method: Literal["tsdf", "sugar"] = "tsdf"
    voxel: float | None = None  # TSDF voxel edge in scene units; see tsdf_params for the default
    sdf_trunc: float | None = None  # TSDF truncation distance; default 5 voxels
    depth_trunc: float | None = None  # ignore depth beyond this; default 2 × the camera-sphere radius
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # crop box (lo, hi)
    depth_ratio: float = 1.0  # TSDF surface depth: 1 = median depth, 0 = expected depth / alpha, or a blend
    alpha_min: float = 0.5  # pixels less covered than this carry no depth
    depth_upsample: int = 4  # TSDF: upsample each view's maps this many times before fusion (1 = off) ...
    upsample_max_pixels: int = 4_000_000  # ... but to at most this many pixels a view
    weight_threshold: float = 1.0  # TSDF voxels observed fewer times are left out (2DGS: any observation)
    level: float = 0.3  # SuGaR: density level of the surface
    poisson_depth: int = 9  # SuGaR: octree depth of the Poisson reconstruction (SuGaR: 10)
    density_quantile: float = 0.1  # SuGaR: drop Poisson vertices below this quantile of support
    max_points: int = 1_000_000  # SuGaR: level-set points at most (pixels are subsampled evenly across views)
    knn: int = 16  # SuGaR: neighbours in the density
    keep_components: int = 50  # keep at most this many of the largest connected components ...
    min_component_triangles: int = 50  # ... and none smaller than this
    decimate: int = 0  # quadric decimation to at most this many triangles; 0 = keep all
    max_views: int = 0  # render at most this many cameras (evenly spread); 0 = all
    backend: str = "auto"  # rasterizer backend
