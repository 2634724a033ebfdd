"""Meshes from trained Gaussians: TSDF fusion of rendered depth, or SuGaR's level set + Poisson (METHODS.md §3.4).

* ``tsdf`` (2DGS's export, any primitive): render colour, alpha and surface depth from every camera, fuse them
  in an open3d ``VoxelBlockGrid``, extract the zero level with marching cubes (``tsdf``; the rendered maps and
  the surface depth: ``views``; the voxel size and truncation from the camera sphere: ``bounds``).
* ``sugar``: refine each pixel's median-depth point along its ray to the level set of the Gaussians' density,
  with normals from its gradient, and mesh the points by screened Poisson reconstruction (``sugar``).

Both then crop to the bounds (by default the robust extent of the observed surface points inside the cameras'
sphere), drop small connected components, optionally decimate to a triangle budget (``cleanup``), and write
PLY/OBJ/GLB with vertex colours atomically (``write``). Everything is in the scene's world frame, so meshes line up
with the input cameras. ``extract`` chains the steps for a model, ``run`` for a run folder.

Modules, each importing only the ones listed before it: ``options`` (MeshOptions), ``bounds``, ``views``,
``progress``, ``tsdf``, ``sugar``, ``cleanup``, ``write``, ``extract``, ``run``.
"""

from .bounds import (
    SceneSphere,
    TSDFParams,
    auto_bounds,
    camera_sphere,
    crop_bounds,
    select_views,
    tsdf_params,
)
from .cleanup import clean_mesh, crop, keep_triangles, remove_small_components
from .extract import extract_mesh
from .options import MeshOptions
from .run import export_run_mesh, run_cameras
from .sugar import GaussianField, level_set_points, poisson_mesh, sugar_mesh
from .tsdf import TSDFFusion, fuse_view, tsdf_mesh
from .views import RenderFn, ViewMaps, depth_points, pixel_rays, render_view, upsample_factor, upsample_maps
from .write import MESH_SUFFIXES, to_trimesh, write_mesh

__all__ = [
    "MESH_SUFFIXES",
    "MeshOptions",
    "SceneSphere",
    "TSDFParams",
    "camera_sphere",
    "tsdf_params",
    "select_views",
    "auto_bounds",
    "crop_bounds",
    "ViewMaps",
    "RenderFn",
    "render_view",
    "upsample_factor",
    "upsample_maps",
    "pixel_rays",
    "depth_points",
    "TSDFFusion",
    "fuse_view",
    "tsdf_mesh",
    "GaussianField",
    "level_set_points",
    "poisson_mesh",
    "sugar_mesh",
    "keep_triangles",
    "crop",
    "remove_small_components",
    "clean_mesh",
    "to_trimesh",
    "write_mesh",
    "extract_mesh",
    "run_cameras",
    "export_run_mesh",
]
