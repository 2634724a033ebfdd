"""Meshes from trained Gaussians: TSDF fusion of rendered depth, or SuGaR's level set + Poisson (METHODS.md §3.4).

* ``tsdf`` (2DGS's export, any primitive): render colour, alpha and surface depth from every camera, fuse them
  in an open3d ``VoxelBlockGrid`` (``ScalableTSDFVolume`` returns empty meshes in open3d-cpu 0.20), extract the
  zero level with marching cubes. Defaults from 2DGS: the scene radius r is the smallest camera distance to the
  point nearest all optical axes; depth_trunc = 2r, voxel = depth_trunc/1024 (but at least half a pixel's
  footprint at distance r), sdf_trunc = 5·voxel. Pixels covered less than alpha 0.5 carry no depth; surface
  depth is the median depth (2DGS's ``depth_ratio`` 1, its bounded-scene setting; ``depth_ratio`` blends in
  expected depth / alpha). On the sample scene the median cut the Chamfer distance of both a plain-3DGS and a
  surfel run by about a quarter against expected depth, which a semi-transparent layer pulls off the surface.
* ``sugar``: per camera, the median-depth point of each pixel is refined along the pixel's ray to where the
  Gaussians' density d(p) = Σ_j α_j exp(−½(p−μ_j)ᵀΣ_j⁻¹(p−μ_j)) (16 nearest Gaussians of the one found at the
  depth point, clamped at 1) crosses the level λ = 0.3, searching ±3σ of that Gaussian along the ray in 21 steps;
  the normal there is ∇d/‖∇d‖ turned towards the camera; screened Poisson reconstruction meshes the points and
  vertices of low Poisson density (below the 0.1 quantile) are removed. Deviation from SuGaR: its per-pixel depth
  comes from a triangle-"diamond" rendering of the Gaussians, ours from the splat renderer's median depth, and
  the Gaussian at a pixel is the one whose centre is nearest the depth point.

Both then crop to the bounds (by default the robust extent of the observed surface points inside the cameras'
sphere), drop small connected components, optionally decimate to a triangle budget, and write PLY/OBJ/GLB with
vertex colours atomically. Everything is in the scene's world frame, so meshes line up with the input cameras.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import open3d as o3d
import open3d.core as o3c
import torch
import trimesh
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from recon.data.atomic import atomic_path
from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.models.gaussians import GaussianModel, sh0_to_rgb
from recon.render import rasterize
from recon.render.projection import quat_to_rotmat

log = logging.getLogger("recon")

MESH_SUFFIXES = (".ply", ".obj", ".glb")
RUN_FILE = "run.json"


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


# ----------------------------------------------------------------------------------------------------------------
# Rendering


@dataclass
class ViewMaps:
    """One camera's rendered maps as float32 numpy arrays (H×W or H×W×3)."""

    rgb: np.ndarray  # colour un-premultiplied by alpha
    alpha: np.ndarray
    depth: np.ndarray  # surface depth (z, not ray length); 0 where alpha < alpha_min
    depth_median: np.ndarray


@torch.no_grad()
def render_view(model: GaussianModel, cameras: Cameras, i: int, opts: MeshOptions) -> ViewMaps:
    viewmats, Ks = cameras[[i]].torch()
    inputs = model.render_inputs()
    out, _ = rasterize(
        **inputs,
        viewmats=viewmats.float(),
        Ks=Ks.float(),
        width=int(cameras.widths[i]),
        height=int(cameras.heights[i]),
        sh_degree=model.sh_degree,
        outputs=("rgb", "alpha", "depth_exp", "depth_median"),
        backend=opts.backend,
    )
    alpha = out.alpha[0, ..., 0].clamp(0, 1)
    safe = alpha.clamp_min(1e-6)
    rgb = (out.rgb[0] / safe[..., None]).clamp(0, 1)
    median = out.depth_median[0, ..., 0]
    depth = (1 - opts.depth_ratio) * out.depth_exp[0, ..., 0] / safe + opts.depth_ratio * median
    depth = torch.where(alpha >= opts.alpha_min, depth, torch.zeros_like(depth))
    return ViewMaps(
        rgb=rgb.numpy().astype(np.float32),
        alpha=alpha.numpy().astype(np.float32),
        depth=depth.numpy().astype(np.float32),
        depth_median=torch.where(alpha >= opts.alpha_min, median, torch.zeros_like(median)).numpy(),
    )


def upsample_factor(width: int, height: int, opts: MeshOptions) -> int:
    """The integer factor a view's maps are upsampled by before fusion: ``depth_upsample``, lowered until the
    upsampled view holds at most ``upsample_max_pixels`` (never below 1)."""
    factor = max(1, int(opts.depth_upsample))
    while factor > 1 and width * height * factor * factor > opts.upsample_max_pixels:
        factor -= 1
    return factor


EDGE_SPAN = 0.05  # depths within this fraction of each other are one surface and interpolate


def upsample_maps(depth: np.ndarray, rgb: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth [fH,fW], rgb [fH,fW,3]) upsampled ``factor`` times with pixel centres kept in place: bilinear where
    the source pixel's 3×3 neighbourhood holds depth everywhere and spans at most EDGE_SPAN of its nearest depth,
    nearest pixel elsewhere, so depth edges stay sharp and no depth appears between a surface and the background."""
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    padded = torch.nn.functional.pad(d, (1, 1, 1, 1), mode="replicate")
    hi = torch.nn.functional.max_pool2d(padded, 3, stride=1)
    lo = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)
    smooth = (lo > 0) & (hi - lo <= EDGE_SPAN * lo)

    def up(x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "nearest":
            return torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
        return torch.nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    smooth_up = up(smooth.float(), "nearest") > 0.5
    depth_up = torch.where(smooth_up, up(d, "bilinear"), up(d, "nearest"))
    c = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    rgb_up = up(c, "bilinear").clamp(0, 1)[0].permute(1, 2, 0)
    return depth_up[0, 0].numpy(), np.ascontiguousarray(rgb_up.numpy())


def pixel_rays(cameras: Cameras, i: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre [3], world directions [P,3] with camera-z component 1) through the given pixel centres."""
    kinv = np.linalg.inv(cameras.Ks[i])
    pix = np.stack([cols + 0.5, rows + 0.5, np.ones_like(cols, dtype=np.float64)], -1)
    rot = cameras.viewmats[i, :3, :3]
    return cameras.centers[i], (pix @ kinv.T) @ rot  # R^T d for each row d


def depth_points(cameras: Cameras, i: int, depth: np.ndarray, stride: int = 1) -> np.ndarray:
    """World points [P,3] of the pixels with depth > 0 (every ``stride``-th pixel in each direction)."""
    rows, cols = np.nonzero(depth[::stride, ::stride] > 0)
    rows, cols = rows * stride, cols * stride
    origin, dirs = pixel_rays(cameras, i, rows, cols)
    return origin + dirs * depth[rows, cols, None]


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


# ----------------------------------------------------------------------------------------------------------------
# TSDF fusion


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
    """Fuse camera ``i``'s depth and colour, upsampled first as ``opts`` says (module docstring)."""
    view = cameras[[i]]
    factor = upsample_factor(int(view.widths[0]), int(view.heights[0]), opts)
    if factor > 1:
        depth, rgb = upsample_maps(depth, rgb, factor)
        view = view.scaled(1.0 / factor)
    fusion.integrate(depth, rgb, view.Ks[0], view.viewmats[0])


def tsdf_mesh(
    model: GaussianModel, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[o3d.geometry.TriangleMesh, np.ndarray, dict]:
    """Fuse the model's renders from ``cameras``; returns (mesh, sample of surface points, parameters used)."""
    params = tsdf_params(cameras, opts)
    fusion = TSDFFusion(params)
    views = select_views(len(cameras), opts.max_views)
    samples = []
    with _progress(console) as bar:
        task = bar.add_task("tsdf: render + fuse", total=len(views))
        for i in views:
            maps = render_view(model, cameras, int(i), opts)
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


# ----------------------------------------------------------------------------------------------------------------
# SuGaR level set + Poisson


@dataclass
class GaussianField:
    """The Gaussians' density field in a form cheap to evaluate at many points (no gradients)."""

    means: torch.Tensor  # [N,3]
    whiten: torch.Tensor  # [N,3,3] diag(1/s)·Rᵀ, so (p−μ)ᵀΣ⁻¹(p−μ) = ‖whiten·(p−μ)‖²
    scales: torch.Tensor  # [N,3]
    rot: torch.Tensor  # [N,3,3]
    opacities: torch.Tensor  # [N]
    graph: torch.Tensor  # [N,k] nearest Gaussians, itself first
    tree: cKDTree

    @staticmethod
    @torch.no_grad()
    def from_model(model: GaussianModel, k: int = 16) -> GaussianField:
        p = model.params
        means = p["means"].detach().float()
        rot = quat_to_rotmat(p["quats"].detach().float())
        scales = torch.exp(model.file_log_scales()).clamp_min(1e-9)  # surfels: flat Gaussians
        whiten = rot.transpose(1, 2) / scales[:, :, None]
        tree = cKDTree(means.numpy())
        k = min(k, len(means))
        _, idx = tree.query(means.numpy(), k=k)
        graph = torch.from_numpy(np.asarray(idx).reshape(len(means), k).astype(np.int64))
        opac = torch.sigmoid(p["opacities"].detach().float())
        return GaussianField(means, whiten, scales, rot, opac, graph, tree)

    def along_rays(
        self, x: torch.Tensor, u: torch.Tensor, t: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """d(x + t·u) (clamped at 1) for rays x [P,3] + t [P,S] · u [P,3] from the Gaussians ids [P,k] -> [P,S].

        ‖W(x + t·u − μ)‖² = A + 2tB + t²C is a quadratic in t, so each neighbour costs three dot products per
        ray instead of a 3×3 product per sample.
        """
        w = self.whiten[ids]  # [P,k,3,3]
        a = torch.einsum("pkij,pkj->pki", w, x[:, None, :] - self.means[ids])  # W(x − μ): [P,k,3]
        b = torch.einsum("pkij,pj->pki", w, u)  # W u
        A, B, C = (torch.einsum("pki,pki->pk", l, r) for l, r in ((a, a), (a, b), (b, b)))  # [P,k]
        tt = t[:, :, None]
        sq = torch.addcmul(torch.addcmul(A[:, None], tt, B[:, None], value=2.0), tt * tt, C[:, None])
        dens = torch.exp(sq.clamp_(0, 1e8).mul_(-0.5)).mul_(self.opacities[ids][:, None])
        return dens.sum(-1).clamp(max=1.0)

    def gradient(self, p: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """∇d at points p [P,3] from the Gaussians ids [P,k]: −Σ_j α_j e_j Wⱼᵀ Wⱼ (p − μ_j) -> [P,3]."""
        w = self.whiten[ids]  # [P,k,3,3]
        local = torch.einsum("pkij,pkj->pki", w, p[:, None, :] - self.means[ids])  # [P,k,3]
        terms = self.opacities[ids] * torch.exp(
            -0.5 * torch.einsum("pki,pki->pk", local, local).clamp(max=1e8)
        )
        back = torch.einsum("pkji,pkj->pki", w, local)  # Wᵀ local
        return -(terms[..., None] * back).sum(1)


@torch.no_grad()
def level_set_points(
    field: GaussianField, model: GaussianModel, cameras: Cameras, i: int, depth_median: np.ndarray,
    level: float, max_pixels: int, seed: int = 0, chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """SuGaR's level-set points of one view: (points [P,3], normals facing the camera [P,3], colours [P,3])."""
    rows, cols = np.nonzero(depth_median > 0)
    if len(rows) > max_pixels:
        keep = np.random.default_rng(seed).choice(len(rows), max_pixels, replace=False)
        rows, cols = rows[keep], cols[keep]
    if len(rows) == 0:
        empty = np.zeros((0, 3), np.float32)
        return empty, empty, empty
    origin, dirs = pixel_rays(cameras, i, rows, cols)
    x = origin + dirs * depth_median[rows, cols, None]  # the depth point on each pixel's ray
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    _, g = field.tree.query(x)
    g = torch.from_numpy(np.asarray(g, dtype=np.int64))
    x_t = torch.from_numpy(x).float()
    unit_t = torch.from_numpy(unit).float()
    cam = torch.from_numpy(origin).float()
    # σ along the ray of the Gaussian found there: ‖s ⊙ Rᵀv‖, v the unit vector from its centre to the camera
    v = cam - field.means[g]
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sigma = (field.scales[g] * (field.rot[g].transpose(1, 2) @ v[..., None]).squeeze(-1)).norm(dim=-1)
    steps = torch.linspace(-3.0, 3.0, 21)
    pts, nrm, hit = [], [], []
    for s in range(0, len(g), chunk):
        sl = slice(s, s + chunk)
        ids = field.graph[g[sl]]
        t = sigma[sl, None] * steps[None]  # [P,21]
        dens = field.along_rays(x_t[sl], unit_t[sl], t, ids)
        above = dens >= level
        # first crossing from below to above, with the first sample below the level
        cross = (~above[:, :-1]) & above[:, 1:]
        ok = torch.nonzero((~above[:, 0]) & cross.any(1)).squeeze(1)
        j = torch.argmax(cross[ok].int(), dim=1)  # index of the last sample below
        d0, d1 = dens[ok, j], dens[ok, j + 1]
        frac = ((level - d0) / (d1 - d0).clamp_min(1e-12)).clamp(0, 1)
        tt = t[ok, j] + frac * (t[ok, j + 1] - t[ok, j])
        p = x_t[sl][ok] + tt[:, None] * unit_t[sl][ok]
        gn = field.gradient(p, ids[ok])
        n = gn / gn.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n = torch.where(((cam - p) * n).sum(-1, keepdim=True) < 0, -n, n)  # face the camera
        pts.append(p)
        nrm.append(n)
        hit.append(g[sl][ok])
    found = torch.cat(hit)
    colors = sh0_to_rgb(model.params["sh0"].detach().float()[found, 0]).clamp(0, 1)
    return torch.cat(pts).numpy(), torch.cat(nrm).numpy(), colors.numpy()


def poisson_mesh(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray, depth: int, density_quantile: float
) -> o3d.geometry.TriangleMesh:
    """Screened Poisson surface of oriented points; vertices with support below the quantile are removed."""
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pcd.normals = o3d.utility.Vector3dVector(normals.astype(np.float64))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64))
    mesh, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(pcd, depth=depth)
    dens = np.asarray(dens)
    if density_quantile > 0 and len(dens):
        mesh.remove_vertices_by_mask(dens < np.quantile(dens, density_quantile))
    return mesh


def sugar_mesh(
    model: GaussianModel, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[o3d.geometry.TriangleMesh, np.ndarray, dict]:
    views = select_views(len(cameras), opts.max_views)
    field = GaussianField.from_model(model, opts.knn)
    per_view = max(1, opts.max_points // max(1, len(views)))
    pts, nrm, col = [], [], []
    with _progress(console) as bar:
        task = bar.add_task("sugar: level set", total=len(views))
        for i in views:
            maps = render_view(model, cameras, int(i), opts)
            p, n, c = level_set_points(
                field, model, cameras, int(i), maps.depth_median, opts.level, per_view, int(i)
            )
            pts.append(p)
            nrm.append(n)
            col.append(c)
            bar.advance(task)
        points = np.concatenate(pts)
        if len(points) < 4:
            raise ReconError(
                "the SuGaR level set found no surface points; train with the sugar preset "
                "(configs/sugar.yaml) or use --method tsdf"
            )
        task = bar.add_task(f"sugar: poisson ({len(points):,} points)", total=1)
        mesh = poisson_mesh(
            points, np.concatenate(nrm), np.concatenate(col), opts.poisson_depth, opts.density_quantile
        )
        bar.advance(task)
    return (
        mesh,
        points,
        {"points": int(len(points)), "level": opts.level, "poisson_depth": opts.poisson_depth},
    )


# ----------------------------------------------------------------------------------------------------------------
# Clean-up and output


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


def keep_triangles(mesh: o3d.geometry.TriangleMesh, keep: np.ndarray) -> o3d.geometry.TriangleMesh:
    """The triangles where ``keep`` is true and the vertices they use (numpy: open3d's own crop and clustering
    take tens of seconds on the multi-million-triangle meshes of a scene)."""
    faces = np.asarray(mesh.triangles)[keep]
    used, inverse = np.unique(faces, return_inverse=True)
    out = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices)[used]),
        o3d.utility.Vector3iVector(inverse.reshape(-1, 3).astype(np.int32)),
    )
    if mesh.has_vertex_colors():
        out.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors)[used])
    return out


def crop(mesh: o3d.geometry.TriangleMesh, lo, hi) -> o3d.geometry.TriangleMesh:
    """The triangles with all three vertices inside the box [lo, hi]."""
    verts = np.asarray(mesh.vertices)
    inside = np.all((verts >= np.asarray(lo)) & (verts <= np.asarray(hi)), axis=1)
    return keep_triangles(mesh, inside[np.asarray(mesh.triangles)].all(axis=1))


def remove_small_components(
    mesh: o3d.geometry.TriangleMesh, keep: int, min_triangles: int
) -> o3d.geometry.TriangleMesh:
    """Keep the ``keep`` largest connected components (sharing vertices), none smaller than ``min_triangles``
    triangles (unless even the largest is)."""
    faces = np.asarray(mesh.triangles)
    if len(faces) == 0:
        return mesh
    n = len(mesh.vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, vertex_label = connected_components(graph, directed=False)
    labels = vertex_label[faces[:, 0]]
    counts = np.bincount(labels)
    order = np.argsort(counts)[::-1][:keep]
    wanted = order[counts[order] >= min(min_triangles, counts.max())]
    return keep_triangles(mesh, np.isin(labels, wanted))


def clean_mesh(mesh: o3d.geometry.TriangleMesh, lo, hi, opts: MeshOptions) -> o3d.geometry.TriangleMesh:
    """Crop, drop degenerate triangles and small components, decimate to the triangle budget."""
    mesh = crop(mesh, lo, hi)
    mesh.remove_degenerate_triangles()
    mesh = remove_small_components(mesh, opts.keep_components, opts.min_component_triangles)
    if opts.decimate > 0 and len(mesh.triangles) > opts.decimate:
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(opts.decimate))
        mesh.remove_unreferenced_vertices()
    return mesh


def to_trimesh(mesh: o3d.geometry.TriangleMesh) -> trimesh.Trimesh:
    verts = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.triangles)
    colors = None
    if mesh.has_vertex_colors():
        rgb = np.clip(np.asarray(mesh.vertex_colors) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)


def write_mesh(mesh: trimesh.Trimesh, path: str | Path) -> None:
    """PLY (binary), OBJ or GLB by suffix, with vertex colours, written atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ReconError(f"mesh file {path} must end in {', '.join(MESH_SUFFIXES)}")
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=suffix[1:])


def extract_mesh(
    model: GaussianModel, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[trimesh.Trimesh, dict]:
    """Mesh the model seen from ``cameras``; returns the mesh and a summary of the parameters used."""
    if len(model) == 0:
        raise ReconError("the model has no Gaussians to mesh")
    if opts.method == "tsdf":
        raw, surface, info = tsdf_mesh(model, cameras, opts, console)
    elif opts.method == "sugar":
        raw, surface, info = sugar_mesh(model, cameras, opts, console)
    else:
        raise ReconError(f"unknown mesh method {opts.method!r}; choose tsdf or sugar")
    if opts.bounds is not None:
        lo, hi = (np.asarray(b, np.float64) for b in opts.bounds)
        if np.any(hi <= lo):
            raise ReconError(f"--bounds {opts.bounds}: every max must exceed its min")
    else:
        lo, hi = auto_bounds(surface, cameras)
    mesh = clean_mesh(raw, lo, hi, opts)
    info.update(method=opts.method, bounds=[lo.tolist(), hi.tolist()], triangles=len(mesh.triangles))
    return to_trimesh(mesh), info


# ----------------------------------------------------------------------------------------------------------------
# Run folders


def _run_setting(run: Path, section: str, key: str, default):
    """One value of a run's saved config.yaml (``default`` when the file or the key is absent)."""
    import yaml

    cfg_path = run / "config.yaml"
    if not cfg_path.exists():
        return default
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    return (cfg.get(section) or {}).get(key, default)


def run_cameras(run: Path) -> Cameras:
    """The cameras a run was trained with (its scene, at the run's image downscale)."""
    from recon.data.scene import load_scene

    meta = run / RUN_FILE
    if not meta.exists():
        raise ReconError(f"{run} has no {RUN_FILE} naming its scene; it was not written by `recon train`")
    scene_dir = Path(json.loads(meta.read_text())["scene"])
    downscale = float(_run_setting(run, "data", "downscale", 1.0))
    return load_scene(scene_dir, downscale=downscale).cameras


def export_run_mesh(
    run: str | Path, out: str | Path, opts: MeshOptions, console: Console | None = None
) -> dict:
    """`recon export RUN --mesh OUT`: mesh a trained run into OUT (.ply, .obj or .glb); returns a summary."""
    run = Path(run)
    if Path(out).suffix.lower() not in MESH_SUFFIXES:
        raise ReconError(f"mesh file {out} must end in {', '.join(MESH_SUFFIXES)}")
    if not run.is_dir():
        raise ReconError(f"run folder {run} does not exist; pass a folder written by `recon train`")
    splats = run / "splats.ply"
    if not splats.exists():
        raise ReconError(f"{run} has no splats.ply; finish training it with `recon train SCENE --out {run}`")
    t0 = time.perf_counter()
    # the run's primitive type (surfels render as surfels); without a config, the PLY's own header says
    model = GaussianModel.load_ply(splats, _run_setting(run, "model", "primitive", None))
    cameras = run_cameras(run)
    mesh, info = extract_mesh(model, cameras, opts, console)
    if len(mesh.faces) == 0:
        raise ReconError(f"the {opts.method} mesh of {run} is empty; check --bounds / --depth-trunc")
    write_mesh(mesh, out)
    info.update(
        out=str(out),
        vertices=len(mesh.vertices),
        gaussians=len(model),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return info


__all__ = [
    "MeshOptions",
    "camera_sphere",
    "tsdf_params",
    "TSDFFusion",
    "GaussianField",
    "level_set_points",
    "poisson_mesh",
    "extract_mesh",
    "write_mesh",
    "export_run_mesh",
]
