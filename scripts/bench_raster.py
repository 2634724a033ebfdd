"""Benchmark the ``cpu`` rasterizer on the Mip-NeRF 360 garden point cloud; prints one JSON line on stdout.

Gaussians are initialised as 3DGS does (scale = mean distance to the 3 nearest neighbours, identity rotation,
opacity 0.1, colour from the points, SH degree 0 given as plain RGB). Two cases:

(a) all 138,766 points at 648×420, camera 0: forward and forward+backward medians, RGB only and with every
    auxiliary map, plus the peak RSS of the process at that point;
(b) 20,000 points at 324×210: the same medians for ``cpu`` and for the pure-torch ``reference`` measured in the
    same run, and their ratio (absolute times on a shared machine are noise, ratios are not).

Times are medians over ``--runs`` timed runs after ``--warmup`` untimed ones (``time.perf_counter``), with the
minimum and the process CPU time (all threads, ``time.process_time``) beside them. The CPU pressure
(``/proc/pressure/cpu`` "some avg10", percent of time some task waited for a CPU) is recorded at the start and the
end: figures taken while other work competes for the cores are slower than the kernels are. The OpenMP wait policy
matters on a shared machine (workers that spin after each parallel region compete with the thread doing the
work); ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` as inherited are recorded, set them in the environment to compare.
Progress goes to stderr. Usage: ``python scripts/bench_raster.py [--data PATH] [--runs 7] [--warmup 2]``.
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

from recon.render import OUTPUT_NAMES, rasterize  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "garden" / "test_garden.npz"
TARGET_A_RGB_FB_S = 0.5
TARGET_AUX_OVERHEAD = 0.30
TARGET_RSS_MB = 2048
TARGET_B_SPEEDUP = 30.0


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


def garden_scene(path: Path, n: int | None, scale: float, seed: int = 0) -> dict:
    """3DGS-style Gaussians from the garden points (a random subset of ``n`` when given), camera 0."""
    from scipy.spatial import cKDTree

    data = np.load(path)
    pts = data["means3d"].astype(np.float32)
    cols = data["colors"].astype(np.float32) / 255.0
    if n is not None and n < len(pts):
        keep = np.sort(np.random.default_rng(seed).choice(len(pts), n, replace=False))
        pts, cols = pts[keep], cols[keep]
    dist, _ = cKDTree(pts).query(pts, k=4)
    s = dist[:, 1:].mean(axis=1).astype(np.float32)
    count = len(pts)
    Ks = torch.from_numpy(data["Ks"][:1].copy())
    Ks[:, :2] *= scale
    return dict(
        means=torch.from_numpy(pts),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(count, 1),
        scales=torch.from_numpy(np.repeat(s[:, None], 3, axis=1)),
        opacities=torch.full((count,), 0.1),
        colors=torch.from_numpy(cols),
        viewmats=torch.from_numpy(data["viewmats"][:1].copy()),
        Ks=Ks,
        width=round(int(data["width"]) * scale),
        height=round(int(data["height"]) * scale),
    )


def time_case(scene: dict, outputs, backend: str, warmup: int, runs: int) -> dict:
    """Median forward and forward+backward wall times (loss: the sum of every requested map)."""
    params = ("means", "quats", "scales", "opacities", "colors")
    leaves = {k: scene[k].clone().requires_grad_(True) for k in params}
    args = {**scene, **leaves}

    def forward():
        return rasterize(**args, outputs=outputs, backend=backend)

    def forward_backward():
        out, info = forward()
        sum(v.sum() for v in out.asdict().values()).backward()
        for leaf in leaves.values():
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
    log(f"{backend} {'+'.join(outputs)}: {result}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of test_garden.npz")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per figure (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--reference-runs", type=int, default=5, help="timed runs for the reference backend")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: {args.data} not found (pass --data PATH to test_garden.npz)", file=sys.stderr)
        sys.exit(2)

    report: dict = {
        "benchmark": "bench_raster",
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "cpu_count": os.cpu_count(),
        "cpu_pressure_avg10_start": cpu_pressure_avg10(),
        "runs": args.runs,
        "warmup": args.warmup,
    }
    log(f"cpu pressure avg10 at start: {report['cpu_pressure_avg10_start']}")

    log("case (a): all points, 648x420, camera 0")
    scene_a = garden_scene(args.data, None, 1.0)
    rgb = time_case(scene_a, ("rgb",), "cpu", args.warmup, args.runs)
    aux = time_case(scene_a, OUTPUT_NAMES, "cpu", args.warmup, args.runs)
    report["a"] = {
        "n_gaussians": int(scene_a["means"].shape[0]),
        "width": scene_a["width"],
        "height": scene_a["height"],
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

    log("case (b): 20,000 points, 324x210, cpu and reference")
    scene_b = garden_scene(args.data, 20_000, 0.5)
    cpu_b = time_case(scene_b, ("rgb",), "cpu", args.warmup, args.runs)
    ref_b = time_case(scene_b, ("rgb",), "reference", 1, args.reference_runs)
    report["b"] = {
        "n_gaussians": int(scene_b["means"].shape[0]),
        "width": scene_b["width"],
        "height": scene_b["height"],
        "cpu": cpu_b,
        "reference": ref_b,
        "speedup_forward": round(ref_b["forward_s"] / cpu_b["forward_s"], 1),
        "speedup_forward_backward": round(ref_b["forward_backward_s"] / cpu_b["forward_backward_s"], 1),
    }
    report["peak_rss_mb_with_reference"] = round(peak_rss_mb(), 1)
    report["cpu_pressure_avg10_end"] = cpu_pressure_avg10()
    report["targets_met"] = {
        "a_rgb_forward_backward_le_0.5s": rgb["forward_backward_s"] <= TARGET_A_RGB_FB_S,
        "a_aux_overhead_le_30pct": report["a"]["aux_overhead_forward_backward"] <= TARGET_AUX_OVERHEAD,
        "a_peak_rss_le_2GB": report["a"]["peak_rss_mb"] <= TARGET_RSS_MB,
        "b_speedup_ge_30x": report["b"]["speedup_forward_backward"] >= TARGET_B_SPEEDUP,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
