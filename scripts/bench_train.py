"""Benchmark `recon train` on the lund photos (cameras solved at full size, trained at a long side of 480 px)
under a time budget.

    python scripts/bench_train.py [--time-budget 600] [--config configs/fast.yaml] [--primitive convex]

``--primitive`` trains that primitive: convex takes configs/convex.yaml unless ``--config`` is given, the others
set model.primitive on top of the config. Prints one JSON line: held-out PSNR/SSIM, steps per second, primitive
count, parameter bytes (float32, what quality per byte is measured against), peak RSS.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _bench import REPO, SHARED_DATA, machine, peak_rss_mb
from PIL import Image
from rich.console import Console

from recon.data.sfm import ProcessConfig, process_photos
from recon.models.registry import PRIMITIVES
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.runs import load_run_model
from recon.train.trainer import train

PRESETS = {"convex": REPO / "configs" / "convex.yaml"}  # primitives with a preset of their own
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def first_image(scene: Path) -> Path | None:
    """One of the scene's images (they share a size), to find the downscale that gives the training size."""
    images = sorted(p for p in (scene / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", default=str(SHARED_DATA / "lund" / "images"))
    parser.add_argument("--scene", help="an already processed scene (skips recon process)")
    parser.add_argument("--time-budget", type=float, default=600.0)
    parser.add_argument("--train-size", type=int, default=480, help="long side of the training images (px)")
    parser.add_argument("--config", help="preset (default: configs/fast.yaml, or the primitive's own preset)")
    parser.add_argument("--primitive", choices=PRIMITIVES, default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    if args.config is None:
        args.config = str(PRESETS.get(args.primitive, REPO / "configs" / "fast.yaml"))
    if args.primitive is not None:
        args.sets.insert(0, f"model.primitive={args.primitive}")
    conditions = machine()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(args.scene) if args.scene else Path(tmp) / "scene"
        if not args.scene:
            # SfM on the photos as they are: at 480 px SIFT registers 2 of the 29 lund photos, at full size all
            process_photos(args.photos, scene, ProcessConfig(max_image_size=0), console=console)
        downscale = max(Image.open(p).size) / args.train_size if (p := first_image(scene)) else 1.0
        sets = [f"train.time_budget={args.time_budget}", f"data.downscale={downscale:.6g}", *args.sets]
        cfg = build_config(Config, preset=args.config, sets=sets)
        result = train(scene, Path(tmp) / "run", cfg, console=console)
        model, _, _ = load_run_model(Path(tmp) / "run")
        param_bytes = 4 * sum(int(p.numel()) for p in model.params.values())
    print(
        json.dumps(
            {
                "bench": "train",
                "scene": "lund" if not args.scene else args.scene,
                "config": Path(args.config).name,
                "primitive": model.primitive,
                "time_budget_s": args.time_budget,
                "train_downscale": round(downscale, 4),
                "steps": result.steps,
                "steps_per_second": round(result.steps / result.seconds, 3),
                "num_gaussians": result.num_primitives,
                "param_bytes": param_bytes,
                "psnr_test": result.metrics.get("psnr"),
                "ssim_test": result.metrics.get("ssim"),
                "n_test": result.metrics.get("n_images"),
                "peak_rss_mb": peak_rss_mb(),
                **conditions,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
