"""TSDF fusion (2DGS's export, any representation that renders depth): take colour, alpha and surface depth
from every camera, fuse them in an open3d ``VoxelBlockGrid`` (``ScalableTSDFVolume`` returns empty meshes in
open3d-cpu 0.20), extract the zero level with marching cubes. Defaults from 2DGS: depth_trunc = 2r with r the
camera-sphere radius, voxel = depth_trunc/1024 (but at least half a pixel's footprint at distance r),
sdf_trunc = 5·voxel (``tsdf_params``). Each view's maps are upsampled before fusion (``upsample_maps``).

``tsdf_mesh`` takes a render function, camera index -> ``ViewMaps``, not a model.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import open3d.core as o3c
from rich.console import Console

from recon.data.cameras import Cameras
from recon.data.errors import ReconError

from .bounds import TSDFParams, select_views, tsdf_params
from .options import MeshOptions
from .progress import progress_bar
from .views import RenderFn, depth_points, upsample_factor, upsample_maps


def o3d_intrinsic(K: np.ndarray) -> o3c.Tensor:
    """open3d indexes pixels from their centres at integer coordinates; ours sit at +0.5."""
    k = np.array(K, dtype=np.float64)
    k[0, 2] -= 0.5
    k[1, 2] -= 0.5
    return o3c.Tensor(k)


# open3d 0.20's ExtractTriangleMesh crashed (SIGSEGV) on the sample scene at 291,633 active blocks of 8³ voxels
# (a voxel half the default with a 10-voxel truncation) and meshed 218,076 blocks fine; beyond this, stop with a
# message instead of taking the process down.
MAX_TSDF_BLOCKS = 220_000


class TSDFFusion:
    """A VoxelBlockGrid holding TSDF, weight and colour; ``integrate`` one view at a time, then ``mesh``."""

    def __init__(self, params: TSDFParams, block_count: int = 4096, block_resolution: int = 8):
        self.params = params
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=float(params.voxel),
            block_resolution=block_resolution,
            block_count=block_count,
            device=o3c.Device("CPU:0"),
        )
        self.multiplier = params.sdf_trunc / params.voxel

    def integrate(self, depth: np.ndarray, rgb: np.ndarray, K: np.ndarray, viewmat: np.ndarray) -> None:
        """Fuse one view: z-depth [H,W] (0 = none) and colour [H,W,3] in [0,1] seen by pinhole K, world-to-camera."""
        d = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth, dtype=np.float32)))
        c = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32)))
        intr = o3d_intrinsic(K)
        extr = o3c.Tensor(np.asarray(viewmat, dtype=np.float64))
        p = self.params
        coords = self.grid.compute_unique_block_coordinates(
            d, intr, extr, 1.0, p.depth_trunc, self.multiplier
        )
        if coords.shape[0] == 0:
            return
        self.grid.integrate(coords, d, c, intr, intr, extr, 1.0, p.depth_trunc, self.multiplier)

    def vertex_bound(self, weight_threshold: float) -> int:
        """An upper bound on the marching-cubes vertex count: sign changes along the blocks' inner edges between
        observed voxels, plus one per observed voxel on a block's far face in each axis (its edge into the next
        block). open3d's own estimate (``estimated_vertex_number=-1``) is too small on large grids (e.g. a voxel
        half the default on the sample scene) and it then writes past its buffer and crashes."""
        index = self.grid.hashmap().active_buf_indices().to(o3c.int64).numpy()
        tsdf = self.grid.attribute("tsdf").numpy()[index][..., 0]
        seen = self.grid.attribute("weight").numpy()[index][..., 0] >= weight_threshold
        positive = tsdf >= 0
        bound = 0
        for axis in (1, 2, 3):
            sign, ok = np.swapaxes(positive, 1, axis), np.swapaxes(seen, 1, axis)
            bound += int(((sign[:, 1:] != sign[:, :-1]) & ok[:, 1:] & ok[:, :-1]).sum())
            bound += int(ok[:, -1].sum())
        return max(bound, 1)

    def mesh(self, weight_threshold: float = 1.0) -> o3d.geometry.TriangleMesh:
        blocks = self.grid.hashmap().size()
        if blocks == 0:
            return o3d.geometry.TriangleMesh()
        if blocks > MAX_TSDF_BLOCKS:
            raise ReconError(
                f"the TSDF grid holds {blocks:,} voxel blocks, more than open3d meshes without crashing "
                f"({MAX_TSDF_BLOCKS:,}); pass a larger --voxel (now {self.params.voxel:.4g}) or a smaller "
                f"--depth-trunc (now {self.params.depth_trunc:.4g})"
            )
        bound = self.vertex_bound(weight_threshold)
        mesh = self.grid.extract_triangle_mesh(
            weight_threshold=weight_threshold, estimated_vertex_number=bound
        )
        # the vertex arrays keep the bound's length; the vertices in use come first
        tris = mesh.triangle.indices
        used = int(tris.max().item()) + 1 if tris.shape[0] > 0 else 0
        for key in list(mesh.vertex):
            mesh.vertex[key] = mesh.vertex[key][:used]
        return mesh.to_legacy()


def fuse_view(
    fusion: TSDFFusion, cameras: Cameras, i: int, depth: np.ndarray, rgb: np.ndarray, opts: MeshOptions
) -> None:
    """Fuse camera ``i``'s depth and colour, upsampled first as ``opts`` says (``upsample_factor``)."""
    view = cameras[[i]]
    factor = upsample_factor(int(view.widths[0]), int(view.heights[0]), opts)
    if factor > 1:
        depth, rgb = upsample_maps(depth, rgb, factor)
        view = view.scaled(1.0 / factor)
    fusion.integrate(depth, rgb, view.Ks[0], view.viewmats[0])


def tsdf_mesh(
    render: RenderFn, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[o3d.geometry.TriangleMesh, np.ndarray, dict]:
    """Fuse the maps ``render(i)`` returns for each camera i of ``cameras`` (``opts.max_views`` of them);
    returns (mesh, sample of surface points, parameters used)."""
    params = tsdf_params(cameras, opts)
    fusion = TSDFFusion(params)
    views = select_views(len(cameras), opts.max_views)
    samples = []
    with progress_bar(console) as bar:
        task = bar.add_task("tsdf: render + fuse", total=len(views))
        for i in views:
            maps = render(int(i))
            fuse_view(fusion, cameras, int(i), maps.depth, maps.rgb, opts)
            samples.append(_subsample(depth_points(cameras, int(i), maps.depth, stride=4), 20_000, int(i)))
            bar.advance(task)
    mesh = fusion.mesh(opts.weight_threshold)
    info = {
        "voxel": params.voxel,
        "sdf_trunc": params.sdf_trunc,
        "depth_trunc": params.depth_trunc,
        "depth_upsample": opts.depth_upsample,
    }
    return mesh, np.concatenate(samples) if samples else np.zeros((0, 3)), info


def _subsample(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.random.default_rng(seed).choice(len(points), n, replace=False)]
