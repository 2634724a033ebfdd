"""Training step time of each primitive at the same primitive count: every primitive starts from the same sparse
points of the sample scene (one primitive per point, its own initialisation), densification off, and trains
``--steps`` steps on the same views; the first ``--warmup`` steps are not timed.

    python scripts/bench_step.py [--primitives gaussian3d convex] [--steps 60] [--scene SCENE]

Target (issue 13): a convex step ≤ 2× a Gaussian step at equal count. The primitives run interleaved in blocks of
``--block`` steps, so a change in the machine's load hits them alike. Prints one JSON line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _bench import REPO, machine
from rich.console import Console

from recon.data.sfm import ProcessConfig, process_photos
from recon.data.synthetic import make_sample_scene
from recon.models.registry import PRIMITIVES
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.run_setup import load_training_scene
from recon.train.trainer import Trainer

PRESETS = {"convex": REPO / "configs" / "convex.yaml"}


def steal_fraction(before: list[int], after: list[int]) -> float:
    """Share of CPU time the host took from this machine between two /proc/stat samples."""
    total = sum(after) - sum(before)
    return round((after[7] - before[7]) / total, 3) if total > 0 else 0.0


def proc_stat() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def make_trainer(scene_dir: Path, primitive: str, work: Path) -> Trainer:
    preset = PRESETS.get(primitive, REPO / "configs" / "fast.yaml")
    sets = [
        f"model.primitive={primitive}",
        "train.eval_at_end=false",
        "strategy.default.refine_start=1.0",  # no densification: the count stays the initial one
        "strategy.convex.refine_start=1.0",
        "strategy.convex.prune_every=1.0",
    ]
    cfg = build_config(Config, preset=preset, sets=sets)
    scene = load_training_scene(scene_dir, cfg)
    run = work / primitive
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    return Trainer(scene, cfg, run, Console(stderr=True, quiet=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--primitives", nargs="+", default=["gaussian3d", "convex"], choices=PRIMITIVES)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--scene", help="a processed scene (default: the sample scene, processed here)")
    args = parser.parse_args()
    conditions = machine()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scene = Path(args.scene) if args.scene else work / "scene"
        if not args.scene:
            sample = make_sample_scene(REPO / "data" / "sample")
            process_photos(
                sample / "images", scene, ProcessConfig(), console=Console(stderr=True, quiet=True)
            )
        trainers = {p: make_trainer(scene, p, work) for p in args.primitives}
        counts = {p: len(t.model) for p, t in trainers.items()}
        for t in trainers.values():
            for _ in range(args.warmup):
                t.train_step()
        seconds = dict.fromkeys(trainers, 0.0)
        stat0 = proc_stat()
        done = 0
        while done < args.steps:
            n = min(args.block, args.steps - done)
            for p, t in trainers.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    t.train_step()
                seconds[p] += time.perf_counter() - t0
            done += n
        steal = steal_fraction(stat0, proc_stat())
    per_step = {p: round(s / args.steps, 4) for p, s in seconds.items()}
    out = {
        "bench": "step",
        "primitives": counts,
        "steps": args.steps,
        "sec_per_step": per_step,
        "host_steal_fraction": steal,
        **conditions,
    }
    if "gaussian3d" in per_step:
        out["ratio_to_gaussian3d"] = {p: round(v / per_step["gaussian3d"], 3) for p, v in per_step.items()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
