"""Benchmark `recon compress` on a trained lund run: file size against held-out PSNR.

    python scripts/bench_compress.py [--run RUN] [--time-budget 300] [--ratios 20 50]

Without --run it solves the lund photos' cameras at full size and trains them at a 480 px long side with
configs/fast.yaml at SH degree 3 (the 3DGS PLY's usual degree) for --time-budget seconds. Rows: the run's 3DGS PLY; straight conversions of the
unpruned model to .spz and compressed PLY; gsplat's PNG compression on the CPU (no PLAS sort, no K-means: their
packages need GitHub or CUDA; SH as gsplat's NPZ or dropped); and `recon compress` at --ratios of the PLY's size
(.spz), plus the first ratio as compressed PLY. A control row fine-tunes for the same steps and removes nothing, so
an undertrained run's gain from the extra steps is not mistaken for free compression. Prints one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _bench import REPO, SHARED_DATA, machine, peak_rss_mb
from rich.console import Console

from recon.export.compress.compressed_ply import write_compressed_ply
from recon.export.compress.gsplat_png import gsplat_png_size, parts_available
from recon.export.compress.options import CompressOptions
from recon.export.compress.params import SplatArrays
from recon.export.compress.spz import write_spz
from recon.train.compress import compress_run
from recon.train.evaluate_file import evaluate_model_file
from recon.train.runs import load_run_model


def train_lund(tmp: Path, budget: float, console: Console) -> Path:
    from PIL import Image

    from recon.data.sfm import ProcessConfig, process_photos
    from recon.train.config import Config
    from recon.train.overrides import build_config
    from recon.train.trainer import train

    scene = tmp / "scene"
    # cameras solved on the photos as they are (at 480 px SIFT registers few lund photos), training at 480 px
    process_photos(SHARED_DATA / "lund" / "images", scene, ProcessConfig(max_image_size=0), console=console)
    size = max(Image.open(next(iter(sorted((scene / "images").iterdir())))).size)
    sets = [f"train.time_budget={budget}", "model.sh_degree=3", f"data.downscale={size / 480:.6g}"]
    cfg = build_config(Config, preset=str(REPO / "configs" / "fast.yaml"), sets=sets)
    train(scene, tmp / "run", cfg, console=console)
    return tmp / "run"


def row(run: Path, name: str, path: Path, ply_bytes: int, base_psnr: float | None, t0: float) -> dict:
    m = evaluate_model_file(run, path)
    psnr = m["psnr"]
    return {
        "name": name,
        "bytes": m["bytes"],
        "ratio": round(ply_bytes / m["bytes"], 2),
        "splats": m["num_primitives"],
        "psnr_test": round(psnr, 3),
        "dpsnr": None if base_psnr is None else round(psnr - base_psnr, 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", help="a trained run (default: process and train lund)")
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--ratios", type=float, nargs="+", default=[20.0, 50.0])
    parser.add_argument("--steps", type=int, default=100, help="fine-tune steps of each compress phase")
    args = parser.parse_args()
    conditions = machine()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = Path(args.run) if args.run else train_lund(tmp, args.time_budget, console)
        model, steps, _ = load_run_model(run)
        ply = tmp / "splats.ply"
        model.save(ply)
        ply_bytes = ply.stat().st_size
        rows = [row(run, "3dgs_ply", ply, ply_bytes, None, time.perf_counter())]
        base = rows[0]["psnr_test"]
        arrays = SplatArrays.from_model(model)
        t0 = time.perf_counter()
        write_spz(tmp / "plain.spz", arrays)
        rows.append(row(run, "spz_unpruned", tmp / "plain.spz", ply_bytes, base, t0))
        t0 = time.perf_counter()
        write_compressed_ply(tmp / "plain.ply", arrays)
        rows.append(row(run, "compressed_ply_unpruned", tmp / "plain.ply", ply_bytes, base, t0))
        for sh in ("drop", "npz"):
            t0 = time.perf_counter()
            size, back = gsplat_png_size(arrays, sh)
            write_spz(tmp / "png_back.spz", back, version=3)  # only to evaluate what gsplat decodes
            r = row(run, f"gsplat_png_sh_{sh}", tmp / "png_back.spz", ply_bytes, base, t0)
            r.update(
                bytes=size, ratio=round(ply_bytes / size, 2), note="PSNR of the decoded splats (via spz v3)"
            )
            rows.append(r)
        # control: the same fine-tune steps with nothing removed (an undertrained run gains from them alone)
        t0 = time.perf_counter()
        control = CompressOptions(
            keep_contribution=1.0, sh_energy=1.0, band_strength=0.0,
            sparsify_steps=args.steps, recover_steps=args.steps,
        )  # fmt: skip
        compress_run(run, tmp / "finetuned.spz", control)
        rows.append(row(run, "finetune_only_spz", tmp / "finetuned.spz", ply_bytes, base, t0))
        tuned = rows[-1]["psnr_test"]
        jobs = [(f"recon_compress_spz_{r:g}x", ".spz", r) for r in args.ratios]
        jobs.append((f"recon_compress_ply_{args.ratios[0]:g}x", ".ply", args.ratios[0]))
        for name, suffix, ratio in jobs:
            t0 = time.perf_counter()
            opts = CompressOptions(
                target_mb=ply_bytes / ratio / 1e6, sparsify_steps=args.steps, recover_steps=args.steps
            )
            out = tmp / f"{name}{suffix}"
            compress_run(run, out, opts)
            rows.append(row(run, name, out, ply_bytes, base, t0))
            rows[-1]["dpsnr_vs_finetune_only"] = round(rows[-1]["psnr_test"] - tuned, 3)
    ok = [r for r in rows[1:] if r["ratio"] >= 20 and r["dpsnr"] >= -0.3]
    print(
        json.dumps(
            {
                "bench": "compress",
                "run": args.run or f"lund, fast.yaml, SH 3, {args.time_budget:g} s",
                "run_steps": steps,
                "splats": len(model),
                "ply_bytes": ply_bytes,
                "gsplat_png_parts_on_cpu": parts_available(),
                "rows": rows,
                "target": "ratio >= 20 at dpsnr >= -0.3",
                "target_met_by": [r["name"] for r in ok],
                "peak_rss_mb": peak_rss_mb(),
                **conditions,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
