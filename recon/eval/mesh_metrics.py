"""How good is a mesh: Chamfer-L1, precision / recall / F-score at τ, and normal consistency against ground truth.

Both meshes are sampled uniformly by area (fixed seed, so a score is reproducible), and each sample is measured to
the exact closest point of the *other mesh's surface* (open3d's ``RaycastingScene``), not to the other mesh's
samples: point-to-sample distances carry the spacing of the samples (with 200,000 samples on the sample scene's
object box, a mesh scored against itself got a Chamfer distance of 0.0052, about half of a trained model's),
which compresses every difference between meshes; point-to-surface distances give identical meshes 0.

* accuracy = mean distance from predicted samples to the ground-truth surface, completeness = the reverse;
  Chamfer-L1 = (accuracy + completeness) / 2 (the DTU / 2DGS convention);
* precision = fraction of predicted samples within τ of the ground truth, recall = the reverse,
  F-score = 2PR / (P + R); τ defaults to 1% of the ground truth's bounding-box diagonal;
* normal consistency = mean |⟨n_pred, n_gt⟩| between each sample's face normal and the normal of the triangle
  holding its closest point on the other mesh, averaged over both directions (absolute: the meshes' orientation
  conventions may differ).

``crop`` limits both meshes to a box first, for scoring one region of a scene. ``visible_from`` (cameras) keeps
only the ground-truth samples some camera sees (inside its image, in front of it, not occluded by the ground
truth itself) as the surface to be reconstructed, like DTU's observation masks: surfaces no photo shows (the
ground under an object) cannot be reconstructed and would otherwise dominate completeness and recall. Accuracy,
precision and the predicted side of the normal score still measure against the whole (cropped) ground truth: a
predicted point lying on a hidden part of the true surface is not an error, and measuring it against the visible
part only would give a perfect mesh a Chamfer distance far above zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh

from recon.data.cameras import Cameras
from recon.data.errors import ReconError


@dataclass
class MeshScores:
    chamfer_l1: float
    accuracy: float
    completeness: float
    precision: float
    recall: float
    fscore: float
    normal_consistency: float
    tau: float
    n_samples: int

    def asdict(self) -> dict:
        return asdict(self)


def load_mesh(path: str | Path, what: str = "a triangle mesh") -> trimesh.Trimesh:
    """A triangle mesh from PLY/OBJ/GLB/STL/OFF (scenes are merged into one mesh); ``what`` is what the error
    message asks for instead."""
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"mesh file {path} does not exist")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as e:
        raise ReconError(f"{path} is not a readable mesh ({e})") from None
    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        loaded = trimesh.util.concatenate(parts) if parts else None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ReconError(f"{path} holds no triangles; pass {what}")
    return loaded


def crop_mesh(mesh: trimesh.Trimesh, lo, hi) -> trimesh.Trimesh:
    """The triangles whose centroid lies inside the box [lo, hi]."""
    c = mesh.triangles_center
    keep = np.all((c >= np.asarray(lo)) & (c <= np.asarray(hi)), axis=1)
    out = mesh.submesh([np.nonzero(keep)[0]], append=True) if keep.any() else None
    if out is None or len(out.faces) == 0:
        raise ReconError(f"no triangles inside the crop box {list(lo)}..{list(hi)}")
    return out


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly by area and the unit normals of the faces they lie on."""
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    normals = mesh.face_normals[face]
    return np.asarray(pts), np.asarray(normals)


def closest_on_surface(mesh: trimesh.Trimesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance [P], unit normal [P,3] of the triangle holding the closest point) from each point to ``mesh``.

    open3d works in float32, so coordinates are taken relative to the mesh's centre first: far from the origin
    (georeferenced scenes) float32 would round away the millimetres being measured."""
    origin = mesh.bounds.mean(0)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.ascontiguousarray(mesh.vertices - origin, dtype=np.float32)),
        o3d.core.Tensor(np.ascontiguousarray(mesh.faces, dtype=np.uint32)),
    )
    local = points - origin
    closest = scene.compute_closest_points(o3d.core.Tensor(np.ascontiguousarray(local, dtype=np.float32)))
    dist = np.linalg.norm(closest["points"].numpy().astype(np.float64) - local, axis=1)
    return dist, mesh.face_normals[closest["primitive_ids"].numpy().astype(np.int64)]


def visible_mask(points: np.ndarray, mesh: trimesh.Trimesh, cameras: Cameras, tol: float) -> np.ndarray:
    """Which points (lying on ``mesh``) at least one camera sees: projected inside its image, in front of it, and
    the first hit of the ray from its centre lies within ``tol`` of the point."""
    seen = np.zeros(len(points), dtype=bool)
    for i in range(len(cameras)):
        todo = np.nonzero(~seen)[0]
        if len(todo) == 0:
            break
        cam = (points[todo] - cameras.centers[i]) @ cameras.viewmats[i, :3, :3].T  # camera-frame offsets
        z = cam[:, 2]
        uv = (cam @ cameras.Ks[i].T)[:, :2] / np.maximum(z, 1e-12)[:, None]
        inside = (z > 1e-9) & (uv[:, 0] >= 0) & (uv[:, 0] <= cameras.widths[i]) & (uv[:, 1] >= 0)
        inside &= uv[:, 1] <= cameras.heights[i]
        cand = todo[inside]
        if len(cand) == 0:
            continue
        origin = np.broadcast_to(cameras.centers[i], (len(cand), 3))
        offset = points[cand] - origin
        dist = np.linalg.norm(offset, axis=1)
        hits, ray_ids, _ = mesh.ray.intersects_location(origin, offset / dist[:, None], multiple_hits=False)
        first = np.full(len(cand), np.inf)
        first[ray_ids] = np.linalg.norm(hits - origin[ray_ids], axis=1)
        seen[cand[first >= dist - tol]] = True
    return seen


def mesh_scores(
    pred: trimesh.Trimesh,
    gt: trimesh.Trimesh,
    tau: float | None = None,
    n_samples: int = 200_000,
    seed: int = 0,
    crop: tuple | None = None,
    visible_from: Cameras | None = None,
) -> MeshScores:
    """Score ``pred`` against ``gt`` (see the module docstring)."""
    full_gt = gt
    if crop is not None:
        pred, gt = crop_mesh(pred, *crop), crop_mesh(gt, *crop)
    if tau is None:
        tau = 0.01 * float(np.linalg.norm(gt.bounds[1] - gt.bounds[0]))
    if not tau > 0:
        raise ReconError(f"tau must be positive, got {tau}")
    p_pts, p_nrm = sample_surface(pred, n_samples, seed)
    g_pts, g_nrm = sample_surface(gt, n_samples, seed + 1)
    # Accuracy side: the whole ground truth; completeness side: its visible samples only (module docstring).
    d_pg, gt_nrm_at_pred = closest_on_surface(gt, p_pts)
    if visible_from is not None:
        tol = 1e-4 * float(np.linalg.norm(full_gt.bounds[1] - full_gt.bounds[0]))
        keep = visible_mask(g_pts, full_gt, visible_from, tol)
        if not keep.any():
            raise ReconError("no part of the ground-truth mesh is visible from the given cameras")
        g_pts, g_nrm = g_pts[keep], g_nrm[keep]
    d_gp, pred_nrm_at_gt = closest_on_surface(pred, g_pts)
    precision = float((d_pg < tau).mean())
    recall = float((d_gp < tau).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    nc = 0.5 * (
        float(np.abs((p_nrm * gt_nrm_at_pred).sum(1)).mean())
        + float(np.abs((g_nrm * pred_nrm_at_gt).sum(1)).mean())
    )
    acc, comp = float(d_pg.mean()), float(d_gp.mean())
    return MeshScores(
        chamfer_l1=0.5 * (acc + comp),
        accuracy=acc,
        completeness=comp,
        precision=precision,
        recall=recall,
        fscore=fscore,
        normal_consistency=nc,
        tau=float(tau),
        n_samples=n_samples,
    )


def eval_mesh_files(
    pred: str | Path,
    gt: str | Path,
    tau: float | None = None,
    n_samples: int = 200_000,
    crop: tuple | None = None,
    visible_from: str | Path | None = None,
    align: bool = False,
    ot_samples: int | None = None,
) -> dict:
    """`recon eval-mesh PRED GT`: the scores as a dict (one JSON line on the command line); ``visible_from`` is a
    scene (folder or transforms.json) whose cameras decide which ground truth counts. ``align`` registers the
    prediction to the ground truth first (`recon.eval.align`, a similarity; the alignment is reported beside the
    scores); ``ot_samples`` adds the Sinkhorn divergence of that many samples of each surface."""
    cameras = None
    if visible_from is not None:
        from recon.data.scene import load_scene

        cameras = load_scene(visible_from).cameras
    pred_mesh, gt_mesh = load_mesh(pred), load_mesh(gt)
    extra: dict = {}
    if align:
        from recon.eval.align import align_points

        src, _ = sample_surface(pred_mesh, 20_000, seed=0)
        ref, ref_normals = sample_surface(gt_mesh, 20_000, seed=1)
        result = align_points(src, ref, ref_normals)
        pred_mesh = pred_mesh.copy()
        pred_mesh.apply_transform(result.transform)
        extra["alignment"] = result.asdict()
    scores = mesh_scores(pred_mesh, gt_mesh, tau=tau, n_samples=n_samples, crop=crop, visible_from=cameras)
    out = scores.asdict()
    if ot_samples is not None:
        out.update(surface_sinkhorn_divergence(pred_mesh, gt_mesh, ot_samples))
    return {**out, **extra}


def surface_sinkhorn_divergence(pred: trimesh.Trimesh, gt: trimesh.Trimesh, n: int, seed: int = 0) -> dict:
    """S_ε between ``n`` uniform samples of each surface (`recon.ot.sinkhorn_divergence`, cost ‖x − y‖²,
    ε = 0.01 · mean cost), reported as its square root too: a distance in scene units, 0 for equal surfaces,
    that grows where the two put different amounts of area (which Chamfer, a nearest-point distance, misses)."""
    import torch

    from recon.ot import OTConfig, SinkhornConfig, sinkhorn_divergence

    x, _ = sample_surface(pred, n, seed + 2)
    y, _ = sample_surface(gt, n, seed + 3)
    cfg = OTConfig(eps=0.01, eps_relative=True, sinkhorn=SinkhornConfig(tol=1e-6))
    value = float(sinkhorn_divergence(torch.from_numpy(x), torch.from_numpy(y), config=cfg))
    return {
        "sinkhorn_divergence": value,
        "sinkhorn_distance": float(np.sqrt(max(value, 0.0))),
        "ot_samples": n,
    }
