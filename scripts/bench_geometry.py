"""Benchmark geometry: train plain 3DGS, the geometry preset, the SuGaR preset, 2D surfels (the surfel preset) and
smooth convexes (the convex preset) on
the sample scene with the same time budget, mesh each run, score the meshes against the known ground truth, and
time a 300k-Gaussian export.

    python scripts/bench_geometry.py [--time-budget 600 | --steps 3000] [--presets plain geometry sugar surfel convex]
                                     [--out DIR]

The sample scene (``data/sample``, generated on first use) goes through `recon process` (structure from motion);
its sparse points are moved into the ground-truth frame by the similarity that best maps the solved camera
centres onto the true ones, and training uses the true cameras with those points, so meshes are in the frame of
``gt/mesh.ply`` while the initialisation is what a user's run would get. All runs start from configs/fast.yaml
(the CPU preset, 3000 nominal steps); the geometry presets' step numbers are written for 30k-step runs and are
scaled to the fast preset's length. Meshes are scored on the whole scene (objects + ground square, τ = 1% of its
diagonal) and on the objects' region (a box around them, τ = 1% of that box's diagonal). "floor" scores the TSDF
mesh of the ground truth's own ray-cast depth maps through the same export: the best any model can reach at the
scene's 320×240 resolution, and the reference for "reducible_error_cut" in the summary.

Targets (issue 6): the best geometry preset cuts Chamfer by ≥ 30% against the plain-3DGS TSDF mesh at the same
budget while losing ≤ 1 dB of held-out PSNR; exporting a 300,000-Gaussian run takes ≤ 60 s. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from _bench import REPO, machine, peak_rss_mb
from rich.console import Console

from recon.data.errors import ReconError
from recon.data.formats.nerfstudio import read_transforms, write_transforms
from recon.data.ply import write_points_ply
from recon.data.scene import load_scene
from recon.data.sfm import ProcessConfig, process_photos
from recon.data.synthetic import make_sample_scene
from recon.eval.mesh_metrics import load_mesh, mesh_scores
from recon.export.mesh import (
    MeshOptions,
    TSDFFusion,
    auto_bounds,
    clean_mesh,
    depth_points,
    export_run_mesh,
    fuse_view,
    pixel_rays,
    to_trimesh,
    tsdf_params,
    write_mesh,
)
from recon.models.splats import SplatModel, rgb_to_sh0
from recon.train.config import Config
from recon.train.overrides import load_yaml, merge, parse_set
from recon.train.runs import load_run_model
from recon.train.trainer import train

SCHEDULE_STEPS = 30_000  # the run length the presets' step numbers are written for
PRESETS = {
    "plain": None,
    "geometry": REPO / "configs" / "geometry.yaml",
    "sugar": REPO / "configs" / "sugar.yaml",
    "surfel": REPO / "configs" / "surfel.yaml",
    "convex": REPO / "configs" / "convex.yaml",
}
MESH_METHODS = {
    "plain": ["tsdf"],
    "geometry": ["tsdf"],
    "sugar": ["tsdf", "sugar"],
    "surfel": ["tsdf"],
    "convex": ["tsdf"],
}


def scaled_reg(reg: dict, factor: float) -> dict:
    """The preset's ``reg`` section with every step number (start/end/windows/kNN period) scaled by ``factor``."""

    def scale(v: int) -> int:
        return v if v < 0 else max(0, round(v * factor))

    out = {}
    for name, sub in reg.items():
        sub = dict(sub)
        for key in ("start_step", "end_step", "prune_step"):
            if key in sub:
                sub[key] = scale(int(sub[key]))
        if "entropy_window" in sub:
            sub["entropy_window"] = [scale(int(v)) for v in sub["entropy_window"]]
        if "knn_every" in sub:
            sub["knn_every"] = max(1, scale(int(sub["knn_every"])))
        out[name] = sub
    return out


def preset_config(name: str, budget: float | None, steps: int | None, sets: list[str]) -> Config:
    """configs/fast.yaml, then the named preset (step numbers scaled to the run's length), then the --set items.

    ``budget`` trains for that many seconds; ``steps`` instead fixes the step count (equal compute for every
    preset when other work shares the machine and a time budget would buy each run a different number of steps).
    """
    if not any(f.name == "reg" for f in dataclasses.fields(Config)):
        raise SystemExit(
            "bench_geometry: the training config has no `reg` field yet (regularizers not wired in)"
        )
    cfg = merge(Config(), load_yaml(REPO / "configs" / "fast.yaml"))
    if steps:
        cfg = merge(cfg, {"train": {"steps": steps}})
    if PRESETS[name] is not None:
        preset = load_yaml(PRESETS[name])
        if "reg" in preset:
            preset["reg"] = scaled_reg(preset["reg"], cfg.train.steps / SCHEDULE_STEPS)
        cfg = merge(cfg, preset)
    budget_sets = [] if steps else [f"train.time_budget={budget}"]
    for item in [*budget_sets, *sets]:
        cfg = merge(cfg, parse_set(item))
    return cfg


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ≈ s·R·src + t (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum(1).mean())
    return scale, rot, mu_d - scale * rot @ mu_s


def prepare_scene(sample: Path, work: Path, console: Console) -> tuple[Path, dict]:
    """True cameras + SfM points moved into the true frame, as a transforms.json scene; returns it and a report."""
    scene = work / "scene"
    if (scene / "transforms.json").exists():
        return scene / "transforms.json", json.loads((scene / "alignment.json").read_text())
    sfm_dir = work / "sfm"
    if not (sfm_dir / "report.json").exists():
        process_photos(sample / "images", sfm_dir, ProcessConfig(), overwrite=True, console=console)
    sfm = load_scene(sfm_dir)
    true_cams, true_paths, _, _ = read_transforms(sample / "gt" / "transforms.json")
    index = {Path(n).name: i for i, n in enumerate(true_cams.names)}
    pairs = [(i, index[Path(n).name]) for i, n in enumerate(sfm.cameras.names) if Path(n).name in index]
    if len(pairs) < 3:
        raise SystemExit(f"bench_geometry: only {len(pairs)} solved cameras match the true ones by name")
    src = sfm.cameras.centers[[i for i, _ in pairs]]
    dst = true_cams.centers[[j for _, j in pairs]]
    scale, rot, t = similarity(src, dst)
    residual = np.linalg.norm(scale * src @ rot.T + t - dst, axis=1)
    points = scale * sfm.points @ rot.T + t
    scene.mkdir(parents=True, exist_ok=True)
    write_points_ply(scene / "points3D.ply", points, sfm.points_rgb)
    write_transforms(scene / "transforms.json", true_cams, true_paths, scene / "points3D.ply")
    report = {
        "registered": len(pairs),
        "images": len(true_cams),
        "points": len(points),
        "camera_rms_after_alignment": float(np.sqrt((residual**2).mean())),
    }
    (scene / "alignment.json").write_text(json.dumps(report))
    return scene / "transforms.json", report


def object_box(sample: Path) -> tuple[np.ndarray, np.ndarray]:
    """A box around the sample scene's objects (10% margin sideways and on top, a sliver of ground below)."""
    meta = json.loads((sample / "scene.json").read_text())
    lo, hi = (np.asarray(b, dtype=np.float64) for b in meta["object_bounds"])
    pad = 0.1 * (hi - lo)
    return np.array([lo[0] - pad[0], lo[1] - pad[1], -0.05]), hi + pad


def score(mesh_path: Path, gt: trimesh.Trimesh, box, cameras) -> dict:
    """Scores of one mesh on three regions: the whole scene; the objects' box; the objects' box counting only
    ground truth some camera sees (DTU-style observation mask: the ground under an object cannot be recovered)."""
    pred = load_mesh(mesh_path)
    out: dict = {"triangles": len(pred.faces)}
    keys = (
        "chamfer_l1",
        "accuracy",
        "completeness",
        "precision",
        "recall",
        "fscore",
        "normal_consistency",
        "tau",
    )
    for region, kw in (
        ("scene", {}),
        ("objects", {"crop": box}),
        ("visible_objects", {"crop": box, "visible_from": cameras}),
    ):
        try:
            s = mesh_scores(pred, gt, **kw).asdict()
            out[region] = {k: s[k] for k in keys}
        except ReconError as e:  # e.g. a mesh with nothing in the objects' box
            out[region] = {"error": str(e)}
    return out


def surface_model(gt: trimesh.Trimesh, n: int, seed: int = 0) -> SplatModel:
    """n flat, opaque Gaussians tangent to the ground-truth surface (area-uniform), for timing the export."""
    pts, face = trimesh.sample.sample_surface(gt, n, seed=seed)
    normals = gt.face_normals[face]
    a = math.sqrt(gt.area / n)
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    t1 = np.cross(normals, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    rot = np.stack([t1, np.cross(normals, t1), normals], -1)
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(rot).as_quat()
    params = {
        "means": torch.tensor(pts, dtype=torch.float32),
        "scales": torch.log(torch.tensor([a, a, 0.02 * a], dtype=torch.float32)).repeat(n, 1),
        "quats": torch.tensor(np.concatenate([q[:, 3:], q[:, :3]], 1), dtype=torch.float32),
        "opacities": torch.full((n,), math.log(0.9 / 0.1)),
        "sh0": rgb_to_sh0(torch.full((n, 1, 3), 0.5)),
        "shN": torch.zeros(n, 0, 3),
    }
    return SplatModel(params, 0)


def ground_truth_depth(gt: trimesh.Trimesh, cameras, i: int) -> np.ndarray:
    """The ground truth's z-depth [H,W] at camera i's pixel centres (0 where the ray misses), by ray casting."""
    H, W = int(cameras.heights[i]), int(cameras.widths[i])
    rows, cols = (a.ravel() for a in np.mgrid[0:H, 0:W])
    origin, dirs = pixel_rays(cameras, i, rows, cols)  # dirs have camera-z 1, so z-depth = ray length / |dir|
    length = np.linalg.norm(dirs, axis=1)
    hits, ray, _ = gt.ray.intersects_location(
        np.broadcast_to(origin, dirs.shape), dirs / length[:, None], multiple_hits=False
    )
    depth = np.zeros(H * W, np.float32)
    depth[ray] = np.linalg.norm(hits - origin, axis=1) / length[ray]
    return depth.reshape(H, W)


def pipeline_floor(gt: trimesh.Trimesh, box, cameras, work: Path) -> dict:
    """Scores of the TSDF mesh of the ground truth's own depth maps, fused and cleaned exactly as a run's: the best
    any model can reach at this image resolution and voxel size (what is left is the depth maps' pixel grid and the
    voxels)."""
    opts = MeshOptions()
    fusion = TSDFFusion(tsdf_params(cameras, opts))
    points = []
    for i in range(len(cameras)):
        depth = ground_truth_depth(gt, cameras, i)
        fuse_view(fusion, cameras, i, depth, np.full((*depth.shape, 3), 0.5, np.float32), opts)
        points.append(depth_points(cameras, i, depth, stride=4))
    lo, hi = auto_bounds(np.concatenate(points), cameras)
    path = work / "ground_truth_depth_tsdf.ply"
    write_mesh(to_trimesh(clean_mesh(fusion.mesh(opts.weight_threshold), lo, hi, opts)), path)
    return score(path, gt, box, cameras)


def time_export(sample: Path, gt: trimesh.Trimesh, n: int, work: Path, box, cameras) -> dict:
    run = work / f"surface_{n}"
    run.mkdir(parents=True, exist_ok=True)
    surface_model(gt, n).save_ply(run / "splats.ply")
    (run / "run.json").write_text(json.dumps({"scene": str(sample / "gt" / "transforms.json")}))
    out = {}
    for method in ("tsdf", "sugar"):
        path = work / f"surface_{n}_{method}.ply"
        t0 = time.perf_counter()
        export_run_mesh(run, path, MeshOptions(method=method), Console(stderr=True))
        out[method] = {"seconds": round(time.perf_counter() - t0, 2), **score(path, gt, box, cameras)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-budget", type=float, default=600.0, help="training seconds per preset")
    parser.add_argument(
        "--steps", type=int, help="train every preset for this many steps instead of a time budget"
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--out", help="keep runs and meshes here (default: a temporary folder)")
    parser.add_argument(
        "--export-gaussians", type=int, default=300_000, help="size of the export-speed model"
    )
    parser.add_argument("--skip-export-timing", action="store_true")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="extra config override, applied to every preset",
    )
    args = parser.parse_args()
    conditions = machine()
    console = Console(stderr=True)
    sample = make_sample_scene(REPO / "data" / "sample")
    gt = load_mesh(sample / "gt" / "mesh.ply")
    box = object_box(sample)
    cameras = read_transforms(sample / "gt" / "transforms.json")[0]
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_geometry_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        scene, alignment = prepare_scene(sample, work, console)
        floor = pipeline_floor(gt, box, cameras, work)
        for name in args.presets:
            cfg = preset_config(name, args.time_budget, args.steps, args.sets)
            run = work / name
            console.print(f"[bold]bench_geometry: training {name}")
            res = train(scene, run, cfg, overwrite=True, console=console)
            model, _, _ = load_run_model(run)
            entry = {
                "steps": res.steps,
                "num_gaussians": res.num_primitives,
                "param_bytes": 4 * sum(int(p.numel()) for p in model.params.values()),
                "psnr_test": res.metrics.get("psnr"),
                "ssim_test": res.metrics.get("ssim"),
            }
            for method in MESH_METHODS[name]:
                path = work / f"{name}_{method}.ply"
                t0 = time.perf_counter()
                export_run_mesh(run, path, MeshOptions(method=method), console)
                entry[f"mesh_{method}"] = {
                    "export_seconds": round(time.perf_counter() - t0, 2),
                    **score(path, gt, box, cameras),
                }
            results[name] = entry
        export = None
        if not args.skip_export_timing:
            export = time_export(sample, gt, args.export_gaussians, work, box, cameras)
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    summary = {}
    if "plain" in results:
        for region in ("scene", "objects", "visible_objects"):
            base = results["plain"]["mesh_tsdf"][region].get("chamfer_l1")
            cands = [
                (n, m, e[m][region]["chamfer_l1"])
                for n, e in results.items()
                if n != "plain"
                for m in e
                if m.startswith("mesh_") and "chamfer_l1" in e[m][region]
            ]
            if base is None or not cands:
                continue
            n, m, c = min(cands, key=lambda x: x[2])
            drop = results["plain"]["psnr_test"] - results[n]["psnr_test"]
            least = floor[region].get("chamfer_l1")
            summary[region] = {
                "best": f"{n}/{m[5:]}",
                "chamfer_plain": round(base, 5),
                "chamfer_best": round(c, 5),
                "chamfer_floor": None if least is None else round(least, 5),
                "chamfer_cut": round(1 - c / base, 4),
                # the share of the error above the floor that the best preset removes
                "reducible_error_cut": None
                if least is None or base <= least
                else round((base - c) / (base - least), 4),
                "psnr_drop_db": round(drop, 3),
                "target_chamfer_cut_0.30": bool(1 - c / base >= 0.30),
                "target_psnr_drop_1db": bool(drop <= 1.0),
            }
    if export is not None:
        summary["export_seconds"] = {k: v["seconds"] for k, v in export.items()}
        summary["target_export_60s"] = bool(export["tsdf"]["seconds"] <= 60.0)
    print(
        json.dumps(
            {
                "bench": "geometry",
                "scene": "data/sample",
                "init": {"sfm": alignment},
                "time_budget_s": None if args.steps else args.time_budget,
                "steps_budget": args.steps,
                "floor": floor,
                "presets": results,
                "export_timing": {"gaussians": args.export_gaussians, **(export or {})},
                "summary": summary,
                "threads": torch.get_num_threads(),
                "peak_rss_mb": peak_rss_mb(),
                **conditions,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
