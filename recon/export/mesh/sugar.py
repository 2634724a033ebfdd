"""SuGaR's mesh: per camera, the median-depth point of each pixel is refined along the pixel's ray to where the
Gaussians' density d(p) = Σ_j α_j exp(−½(p−μ_j)ᵀΣ_j⁻¹(p−μ_j)) (16 nearest Gaussians of the one found at the
depth point, clamped at 1) crosses the level λ = 0.3, searching ±3σ of that Gaussian along the ray in 21 steps;
the normal there is ∇d/‖∇d‖ turned towards the camera; screened Poisson reconstruction meshes the points and
vertices of low Poisson density (below the 0.1 quantile) are removed. Deviation from SuGaR: its per-pixel depth
comes from a triangle-"diamond" rendering of the Gaussians, ours from the splat renderer's median depth, and
the Gaussian at a pixel is the one whose centre is nearest the depth point.

The level set reads the Gaussians' own parameters, so unlike TSDF fusion it takes the model, not a render function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
import torch
from rich.console import Console
from scipy.spatial import cKDTree

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.models.splats import SplatModel, sh0_to_rgb
from recon.render.projection import quat_to_rotmat

from .bounds import select_views
from .options import MeshOptions
from .progress import progress_bar
from .views import pixel_rays, render_view


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
    def from_model(model: SplatModel, k: int = 16) -> GaussianField:
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
    field: GaussianField, model: SplatModel, cameras: Cameras, i: int, depth_median: np.ndarray,
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
    model: SplatModel, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[o3d.geometry.TriangleMesh, np.ndarray, dict]:
    views = select_views(len(cameras), opts.max_views)
    field = GaussianField.from_model(model, opts.knn)
    per_view = max(1, opts.max_points // max(1, len(views)))
    pts, nrm, col = [], [], []
    with progress_bar(console) as bar:
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
