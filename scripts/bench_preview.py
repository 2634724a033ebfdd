"""How well a representation's Gaussian preview (what the browser's splat layer and `.splat` files show) matches
its exact render, for several preview covariance scales.

    python scripts/bench_preview.py --run RUN [--factors 0.25 0.5 0.75 1 1.5]

For convexes, ``preview()`` moment-matches each convex with a Gaussian whose covariance is
``PREVIEW_COVARIANCE`` × the covariance of its points; this renders the run's test views both ways (SH degree 0 on
both sides, the preview's colour is view-independent) and prints one JSON line with the PSNR of the preview
against the exact render for each factor, so the constant is the measured best.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
from pathlib import Path

import torch
from _bench import machine

from recon.data.run_folder import RunFolder
from recon.models import convex as convex_module
from recon.render import rasterize
from recon.train.run_setup import load_training_scene
from recon.train.runs import load_run_config, load_run_model


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean().clamp_min(1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.5])
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    run = Path(args.run)
    model, _, _ = load_run_model(run)
    cfg = load_run_config(run)
    scene = load_training_scene(RunFolder(run).scene_dir(), cfg)
    ids = (scene.test_ids if len(scene.test_ids) else scene.train_ids)[: args.views].tolist()
    cams = scene.cameras[ids]
    viewmats, Ks = cams.torch()
    w, h = int(cams.widths[0]), int(cams.heights[0])
    bg = torch.ones(len(ids), 3)
    with torch.no_grad():
        exact, _ = model.render(viewmats, Ks, w, h, ("rgb",), sh_degree=0, backgrounds=bg)
        base = convex_module.PREVIEW_COVARIANCE
        scores = {}
        for f in args.factors:
            convex_module.PREVIEW_COVARIANCE = f  # the constant preview() reads
            g = model.preview()
            out, _ = rasterize(
                torch.from_numpy(g.means), torch.from_numpy(g.quats), torch.from_numpy(g.scales),
                torch.from_numpy(g.opacities), torch.from_numpy(g.rgb), viewmats, Ks, w, h, backgrounds=bg,
            )  # fmt: skip
            scores[str(f)] = round(psnr(out.rgb, exact.rgb), 3)
        convex_module.PREVIEW_COVARIANCE = base
    best = max(scores, key=scores.get)
    line = {
        "bench": "preview",
        "primitive": model.primitive,
        "n": len(model),
        "views": len(ids),
        "psnr_preview_vs_exact": scores,
        "best_factor": float(best),
        "current_factor": base,
        **machine(),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
