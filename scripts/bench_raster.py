"""Benchmark the ``cpu`` rasterizer on the Mip-NeRF 360 garden point cloud; prints one JSON line on stdout.

One primitive per point (``--primitive``). Gaussians (and surfels) are initialised as 3DGS does (scale = mean
distance to the 3 nearest neighbours, identity rotation, opacity 0.1, colour from the points, SH degree 0 given as
plain RGB); convexes as 3DCS does (METHODS.md §3.1: 6 points on a Fibonacci sphere of radius 1.2·√dist² around
the point, dist² the mean squared distance to its 3 nearest neighbours, δ = 0.1/√dist², σ = 0.00095, opacity 0.1).
Every figure is one view (camera 0). Cases:

(a) all 138,766 points at 648×420: forward and forward+backward medians, RGB only and with every auxiliary map
    the primitive renders, plus the peak RSS of the process at that point; for a primitive other than Gaussians,
    also 3D Gaussians on the same points in the same run and the ratio of the two;
(b) 20,000 points at 324×210: the same medians for ``cpu`` and for the pure-torch ``reference`` measured in the
    same run, and their ratio (absolute times on a shared machine are noise, ratios are not);
(twin, with ``--twin``) the pure-torch reference path, the primitive's twin, at 648×420 on ``--twin-points`` of
    the case (a) primitives (the twin keeps every pixel-primitive pair of the view for its backward, so not all),
    beside the cpu path on the same primitives, and their ratio. ``--cases`` picks among a and b.

Times are medians over ``--runs`` timed runs after ``--warmup`` untimed ones (``time.perf_counter``), with the
minimum and the process CPU time (all threads, ``time.process_time``) beside them. The CPU pressure
(``/proc/pressure/cpu`` "some avg10", percent of time some task waited for a CPU) is recorded at the start and the
end, and the share of CPU time stolen by the hypervisor over the run (``/proc/stat`` steal column): figures taken
while other work competes for the cores are slower than the kernels are. The OpenMP wait policy
matters on a shared machine (workers that spin after each parallel region compete with the thread doing the
work); ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` as inherited are recorded, set them in the environment to compare.
Progress goes to stderr. Usage: ``python scripts/bench_raster.py [--data PATH] [--runs 7] [--warmup 2]
[--primitive convex] [--cases a] [--twin]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from recon.render import OUTPUT_NAMES, PRIMITIVES, rasterize  # noqa: E402
from recon.render.primitives import get_primitive  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "garden" / "test_garden.npz"
TARGET_A_RGB_FB_S = 0.5
TARGET_AUX_OVERHEAD = 0.30
TARGET_RSS_MB = 2048
TARGET_B_SPEEDUP = 30.0
TARGET_CONVEX_VS_GAUSSIANS = (
    2.5  # convex forward+backward at most this many times the Gaussians' (same points)
)
TARGET_TWIN_SPEEDUP = 20.0  # cpu path at least this many times faster than the pure-torch twin


def log(msg: str) -> None:
    print(f"[bench_raster] {msg}", file=sys.stderr, flush=True)


def cpu_pressure_avg10() -> float | None:
    """The "some avg10" figure of /proc/pressure/cpu, or None where the kernel does not expose it."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    fields = dict(kv.split("=") for kv in first.split()[1:])
    return float(fields["avg10"])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def cpu_ticks() -> tuple[int, int]:
    """(all, steal) ticks of the "cpu" line of /proc/stat, summed over the CPUs; (0, 0) where it is missing."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_share(start: tuple[int, int], end: tuple[int, int]) -> float | None:
    """Percent of all CPU ticks between two cpu_ticks() readings that the hypervisor stole."""
    total = end[0] - start[0]
    return round(100.0 * (end[1] - start[1]) / total, 2) if total > 0 else None


def garden_scene(
    path: Path, n: int | None, scale: float, seed: int = 0, primitive: str = "gaussian3d"
) -> dict:
    """One primitive per garden point (a random subset of ``n`` when given, neighbours counted within it), as the
    module docstring initialises them, seen by camera 0 at ``scale`` times the image size."""
    from scipy.spatial import cKDTree

    data = np.load(path)
    pts = data["means3d"].astype(np.float32)
    cols = data["colors"].astype(np.float32) / 255.0
    if n is not None and n < len(pts):
        keep = np.sort(np.random.default_rng(seed).choice(len(pts), n, replace=False))
        pts, cols = pts[keep], cols[keep]
    dist, _ = cKDTree(pts).query(pts, k=4)
    count = len(pts)
    Ks = torch.from_numpy(data["Ks"][:1].copy())
    Ks[:, :2] *= scale
    scene = dict(
        opacities=torch.full((count,), 0.1),
        colors=torch.from_numpy(cols),
        viewmats=torch.from_numpy(data["viewmats"][:1].copy()),
        Ks=Ks,
        width=round(int(data["width"]) * scale),
        height=round(int(data["height"]) * scale),
        primitive=primitive,
    )
    if get_primitive(primitive).shaped_by_axes:
        s = dist[:, 1:].mean(axis=1).astype(np.float32)
        scene.update(
            means=torch.from_numpy(pts),
            quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(count, 1),
            scales=torch.from_numpy(np.repeat(s[:, None], 3, axis=1)),
        )
        return scene
    from recon.models.convex import fibonacci_sphere

    dist2 = np.maximum((dist[:, 1:].astype(np.float64) ** 2).mean(axis=1), 1e-7)  # as recon.models.convex
    radius = 1.2 * np.sqrt(dist2)
    points = pts[:, None, :] + radius[:, None, None] * fibonacci_sphere(6)[None]
    scene.update(
        means=None,  # the points' mean, taken inside the timed call so the gradient reaches the points
        quats=None,
        scales=None,
        shape=(
            torch.from_numpy(points.astype(np.float32)),
            torch.from_numpy((0.1 / np.sqrt(dist2)).astype(np.float32)),
            torch.full((count,), 0.00095),
        ),
    )
    return scene


def subset(scene: dict, n: int, seed: int = 1) -> dict:
    """A random subset of ``n`` primitives of a scene (sizes unchanged: neighbours were counted in the whole)."""
    count = len(scene["opacities"])
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(count, min(n, count), replace=False)))

    def take(v):
        if isinstance(v, tuple):
            return tuple(t[keep] for t in v)
        return v[keep] if torch.is_tensor(v) and v.dim() >= 1 and len(v) == count else v

    return {k: take(v) for k, v in scene.items()}


def maps_of(primitive: str) -> tuple[str, ...]:
    """Every map the primitive renders."""
    return tuple(o for o in OUTPUT_NAMES if o != "normal" or get_primitive(primitive).normals)


def time_case(scene: dict, outputs, backend: str, warmup: int, runs: int) -> dict:
    """Median forward and forward+backward wall times (loss: the sum of every requested map)."""
    params = ("means", "quats", "scales", "opacities", "colors")
    leaves = {k: scene[k].clone().requires_grad_(True) for k in params if scene.get(k) is not None}
    shape = scene.get("shape")
    shape_leaves = None if shape is None else tuple(t.clone().requires_grad_(True) for t in shape)
    args = {**scene, **leaves}
    if shape_leaves is not None:
        args["shape"] = shape_leaves

    def forward():
        if shape_leaves is not None:
            args["means"] = shape_leaves[0].mean(1)
        return rasterize(**args, outputs=outputs, backend=backend)

    def forward_backward():
        out, info = forward()
        sum(v.sum() for v in out.asdict().values()).backward()
        for leaf in (*leaves.values(), *(shape_leaves or ())):
            leaf.grad = None
        return info

    result = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
        for _ in range(warmup):
            fn()
        wall, cpu = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        result[f"{name}_s"] = round(statistics.median(wall), 4)
        result[f"{name}_min_s"] = round(min(wall), 4)
        result[f"{name}_cpu_s"] = round(
            statistics.median(cpu), 4
        )  # all threads' CPU time, incl. OpenMP spinning
    _, info = forward()
    result["n_isects"] = info["n_isects"]
    log(f"{scene['primitive']} {backend} {'+'.join(outputs)}: {result}")
    return result


def case_a(args, primitive: str) -> dict:
    """All points at 648×420 (and, for a primitive other than Gaussians, Gaussians on the same points)."""
    log(f"case (a): all points, 648x420, camera 0, {primitive}")
    scene = garden_scene(args.data, None, 1.0, primitive=primitive)
    rgb = time_case(scene, ("rgb",), "cpu", args.warmup, args.runs)
    aux = time_case(scene, maps_of(primitive), "cpu", args.warmup, args.runs)
    report = {
        "primitive": primitive,
        "n_primitives": int(len(scene["opacities"])),
        "width": scene["width"],
        "height": scene["height"],
        "rgb": rgb,
        "all_maps": aux,
        "aux_overhead_forward_backward": round(
            aux["forward_backward_s"] / rgb["forward_backward_s"] - 1.0, 3
        ),
        "aux_overhead_forward_backward_cpu": round(
            aux["forward_backward_cpu_s"] / rgb["forward_backward_cpu_s"] - 1.0, 3
        ),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if primitive != "gaussian3d":
        log("case (a): 3D Gaussians on the same points, same run")
        gauss = garden_scene(args.data, None, 1.0, primitive="gaussian3d")
        g_rgb = time_case(gauss, ("rgb",), "cpu", args.warmup, args.runs)
        report["gaussian3d_rgb"] = g_rgb
        report["ratio_to_gaussians_forward_backward"] = round(
            rgb["forward_backward_s"] / g_rgb["forward_backward_s"], 2
        )
        report["ratio_to_gaussians_forward"] = round(rgb["forward_s"] / g_rgb["forward_s"], 2)
    return report


def case_b(args, primitive: str) -> dict:
    log(f"case (b): 20,000 points, 324x210, cpu and reference, {primitive}")
    scene = garden_scene(args.data, 20_000, 0.5, primitive=primitive)
    cpu_b = time_case(scene, ("rgb",), "cpu", args.warmup, args.runs)
    ref_b = time_case(scene, ("rgb",), "reference", 1, args.reference_runs)
    return {
        "n_primitives": int(len(scene["opacities"])),
        "width": scene["width"],
        "height": scene["height"],
        "cpu": cpu_b,
        "reference": ref_b,
        "speedup_forward": round(ref_b["forward_s"] / cpu_b["forward_s"], 1),
        "speedup_forward_backward": round(ref_b["forward_backward_s"] / cpu_b["forward_backward_s"], 1),
    }


def case_twin(args, primitive: str) -> dict:
    log(
        f"twin: {args.twin_points} of the case (a) primitives, 648x420, cpu and the pure-torch twin, {primitive}"
    )
    scene = subset(garden_scene(args.data, None, 1.0, primitive=primitive), args.twin_points)
    cpu = time_case(scene, ("rgb",), "cpu", args.warmup, args.runs)
    twin = time_case(scene, ("rgb",), "reference", 1, args.reference_runs)
    return {
        "n_primitives": int(len(scene["opacities"])),
        "width": scene["width"],
        "height": scene["height"],
        "cpu": cpu,
        "twin": twin,
        "speedup_forward": round(twin["forward_s"] / cpu["forward_s"], 1),
        "speedup_forward_backward": round(twin["forward_backward_s"] / cpu["forward_backward_s"], 1),
        "peak_rss_mb_with_twin": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of test_garden.npz")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--reference-runs", type=int, default=5, help="timed runs for the reference backend")
    parser.add_argument(
        "--primitive", choices=PRIMITIVES, default="gaussian3d", help="what each point becomes"
    )
    parser.add_argument(
        "--cases", default="a,b", help="comma-separated cases to run among a, b (default a,b)"
    )
    parser.add_argument("--twin", action="store_true", help="also time the pure-torch twin (reference) path")
    parser.add_argument("--twin-points", type=int, default=500, help="primitives the twin case renders")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (pass --data PATH to test_garden.npz)", file=sys.stderr)
        sys.exit(2)
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if not cases <= {"a", "b"}:
        parser.error(f"--cases takes a and b, got {sorted(cases)}")

    ticks0 = cpu_ticks()
    report: dict = {
        "benchmark": "bench_raster",
        "primitive": args.primitive,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "cpu_count": os.cpu_count(),
        "cpu_pressure_avg10_start": cpu_pressure_avg10(),
        "steal_ticks_start": ticks0[1],
        "runs": args.runs,
        "warmup": args.warmup,
    }
    log(f"cpu pressure avg10 at start: {report['cpu_pressure_avg10_start']}")
    targets = {}
    if "a" in cases:
        report["a"] = case_a(args, args.primitive)
        a = report["a"]
        targets["a_rgb_forward_backward_le_0.5s"] = a["rgb"]["forward_backward_s"] <= TARGET_A_RGB_FB_S
        targets["a_aux_overhead_le_30pct"] = a["aux_overhead_forward_backward"] <= TARGET_AUX_OVERHEAD
        targets["a_peak_rss_le_2GB"] = a["peak_rss_mb"] <= TARGET_RSS_MB
        if args.primitive == "convex":
            targets["a_convex_le_2.5x_gaussians"] = (
                a["ratio_to_gaussians_forward_backward"] <= TARGET_CONVEX_VS_GAUSSIANS
            )
    if "b" in cases:
        report["b"] = case_b(args, args.primitive)
        report["peak_rss_mb_with_reference"] = round(peak_rss_mb(), 1)
        targets["b_speedup_ge_30x"] = report["b"]["speedup_forward_backward"] >= TARGET_B_SPEEDUP
    if args.twin:
        report["twin"] = case_twin(args, args.primitive)
        targets["twin_speedup_ge_20x"] = report["twin"]["speedup_forward_backward"] >= TARGET_TWIN_SPEEDUP
    ticks1 = cpu_ticks()
    report["cpu_pressure_avg10_end"] = cpu_pressure_avg10()
    report["steal_ticks_end"] = ticks1[1]
    report["steal_pct_during_run"] = steal_share(ticks0, ticks1)
    report["targets_met"] = targets
    print(json.dumps(report))


if __name__ == "__main__":
    main()
