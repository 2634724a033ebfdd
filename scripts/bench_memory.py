"""Peak memory of training steps with 300,000 Gaussians at 480 px (target: peak RSS <= 4 GB).

    python scripts/bench_memory.py [--n 300000] [--width 480] [--height 360] [--steps 5]

Builds a real training state (model, Adam per parameter, gsplat's DefaultStrategy state) over Gaussians spread in
front of a camera, runs full training steps (render, L1+SSIM, backward, strategy bookkeeping, optimizer step), and
prints one JSON line with the peak RSS of the process.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see recon/__init__.py)

import argparse
import json
import time

import numpy as np
import torch
from _bench import machine, peak_rss_mb
from gsplat.strategy import DefaultStrategy

from recon.data.cameras import intrinsics_matrix, look_at_viewmat
from recon.losses.photometric import photometric_loss
from recon.models.splats import SplatModel
from recon.render import rasterize
from recon.train.config import Config
from recon.train.trainer import make_optimizers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    conditions = machine()
    rss_start = peak_rss_mb()
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 1.0, (args.n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (args.n, 3), dtype=np.uint8)
    model = SplatModel.from_points(xyz, rgb, sh_degree=3)
    cfg = Config()
    optimizers = make_optimizers(model, cfg, 1.0)
    strategy = DefaultStrategy(refine_start_iter=10**9)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats = torch.from_numpy(look_at_viewmat((0, -6, 1), (0, 0, 0))).float()[None]
    f = 0.8 * args.width
    Ks = torch.from_numpy(intrinsics_matrix(f, f, args.width / 2, args.height / 2)).float()[None]
    target = torch.rand(args.height, args.width, 3)
    times = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        out, info = rasterize(
            **model.render_inputs(),
            viewmats=viewmats,
            Ks=Ks,
            width=args.width,
            height=args.height,
            sh_degree=3,
            backgrounds=torch.ones(1, 3),
        )
        loss = sum(photometric_loss(out.rgb[0], target).values())
        strategy.step_pre_backward(model.params, optimizers, state, step, info)
        loss.backward()
        for o in optimizers.values():
            o.step()
            o.zero_grad(set_to_none=True)
        strategy.step_post_backward(model.params, optimizers, state, step, info)
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "bench": "memory",
                "n_gaussians": args.n,
                "width": args.width,
                "height": args.height,
                "sh_degree": 3,
                "steps": args.steps,
                "median_step_s": round(float(np.median(times)), 3),
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": rss_start,
                "target_mb": 4096,
                **conditions,
            }
        )
    )


if __name__ == "__main__":
    main()
