"""Benchmark the viewer on a run (default: ../shared/data's lund photos trained into --run); prints one JSON line.

(a) Render panel: frames per second of what one press of *Render view* costs (``RenderPanel.show_render``:
    rasterize with ``--backend``, colour mapping, PNG hand-over to the page) at 640×480 from the first training
    camera of the run's scene; median over ``--frames`` frames after one warm-up frame, for every mode.
(b) Training slowdown: one training run, resumed from a copy of the run's last checkpoint (so the Gaussian count is
    the trained one), ``--steps`` more steps in alternating blocks of ``--block`` steps with the live viewer's
    ``on_step`` called or not; a step's time is the wall time from the end of one step to the end of the next,
    viewer work included. When the viewer turns off, the time its background thread still needs to finish is
    added to the block that caused it. slowdown = mean(on) / mean(off) − 1. The first block (viewer on: the
    scene's cameras and thumbnails go to the page once) is not counted. ``--refresh-every`` is the page's
    "refresh splats every N steps" (10: far more often than the throttle allows, so the throttle is what is
    measured). ``--browser`` keeps a headless Chromium connected to the page throughout, so the websocket traffic
    and the browser's own software-WebGL work compete for the same cores.

Absolute times on a shared 2-core machine are noise; the ratio of interleaved blocks is the figure to read. The
CPU pressure (``/proc/pressure/cpu`` some avg10) is recorded at the start and the end.
Usage: ``python scripts/bench_viewer.py --run RUN [--steps 200] [--block 20] [--browser]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

from recon.train.checkpoint import latest_checkpoint, load_checkpoint  # noqa: E402
from recon.train.config import Config  # noqa: E402
from recon.train.overrides import build_config, load_yaml  # noqa: E402
from recon.train.trainer import train  # noqa: E402
from viewer.app import start_viewer  # noqa: E402
from viewer.camera import fov_from_intrinsics, intrinsics_from_fov  # noqa: E402
from viewer.live import LiveViewer  # noqa: E402
from viewer.render_panel import MODES  # noqa: E402
from viewer.targets import load_target  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def log(msg: str) -> None:
    print(f"[bench_viewer] {msg}", file=sys.stderr, flush=True)


def cpu_pressure_avg10() -> float | None:
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(dict(kv.split("=") for kv in line.split()[1:])["avg10"])
    except (OSError, KeyError, ValueError, IndexError):
        return None


def bench_render(run: Path, frames: int, backend: str) -> dict:
    target = load_target(run)
    if target.scene is None:
        raise SystemExit(
            f"{run}: its scene is not where run.json says; the render benchmark needs its cameras"
        )
    viewer = start_viewer("127.0.0.1", 8700, backend)
    try:
        viewer.show(target)
        scene = target.scene
        i = int(scene.train_ids[0])
        viewmat = scene.cameras.viewmats[i]
        K = intrinsics_from_fov(
            fov_from_intrinsics(scene.cameras.Ks[i], int(scene.cameras.heights[i])), 640, 480
        )
        panel = viewer.render_panel
        ms = {}
        for mode in MODES:
            panel.mode.value = mode
            panel.show_render(viewmat, K, 640, 480)  # warm-up (first call compiles / loads the kernels)
            times = [panel.show_render(viewmat, K, 640, 480).seconds for _ in range(frames)]
            ms[mode] = round(1000 * statistics.median(times), 1)
            log(f"render {mode}: {ms[mode]} ms")
        return {
            "n_gaussians": len(target.model),
            "render_ms_640x480": ms,
            "render_fps_640x480": round(1000 / ms["RGB"], 2),
        }
    finally:
        viewer.close()


class Interleave:
    """on_step that alternates blocks of steps with the live viewer on and off and times every step."""

    def __init__(self, live: LiveViewer, block: int):
        self.live, self.block = live, block
        self.times: dict[str, list[float]] = {"on": [], "off": []}
        self.t_prev: float | None = None
        self.start_step: int | None = None

    def phase(self, step: int) -> str:
        k = (step - self.start_step - 1) // self.block
        return "warmup" if k == 0 else ("on" if k % 2 == 1 else "off")

    def on_step(self, trainer, stats) -> None:
        if self.start_step is None:
            self.start_step = trainer.step - 1
        phase = self.phase(trainer.step)
        if phase != "off":
            self.live.on_step(trainer, stats)
        now = time.perf_counter()
        if self.t_prev is not None and phase in self.times:
            self.times[phase].append(now - self.t_prev)
        if phase != "off" and self.phase(trainer.step + 1) == "off":
            t0 = time.perf_counter()
            self.live._worker.wait_idle()
            if phase in self.times:
                self.times[phase][-1] += time.perf_counter() - t0
        self.t_prev = time.perf_counter()


def bench_training(run: Path, steps: int, block: int, refresh_every: int, browser: bool) -> dict:
    ck = latest_checkpoint(run)
    if ck is None:
        raise SystemExit(f"{run} has no checkpoint to resume from")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        (copy / "ckpt").mkdir(parents=True)
        shutil.copy(ck, copy / "ckpt" / ck.name)
        for name in ("config.yaml", "run.json"):
            shutil.copy(run / name, copy / name)
        start = int(load_checkpoint(ck)["step"])
        base = load_yaml(run / "config.yaml")
        base["train"].update(steps=start + steps, time_budget=None, eval_at_end=False, ckpt_every=10**9)
        cfg = build_config(Config, base=base)
        live = LiveViewer("127.0.0.1", 8800, refresh_every=refresh_every)
        timer = Interleave(live, block)
        pw = context = None
        try:
            if browser:
                from playwright.sync_api import sync_playwright

                pw = sync_playwright().start()
                context = pw.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"),
                    executable_path=CHROMIUM,
                    args=CHROMIUM_FLAGS,
                    headless=True,
                    viewport={"width": 1000, "height": 700},
                )
                context.new_page().goto(live.url)
            result = train(
                json.loads((run / "run.json").read_text())["scene"],
                copy,
                cfg,
                resume=True,
                on_step=timer.on_step,
            )
        finally:
            pushes, push_seconds = live.pushes, live.push_seconds
            live.close()
            if context is not None:
                context.close()
            if pw is not None:
                pw.stop()
    on, off = np.mean(timer.times["on"]), np.mean(timer.times["off"])
    blocks = {
        k: [round(float(np.mean(v[i : i + block])), 4) for i in range(0, len(v), block)]
        for k, v in timer.times.items()
    }
    return {
        "train_steps": steps,
        "block": block,
        "refresh_every": refresh_every,
        "browser": browser,
        "n_gaussians_training": result.num_primitives,
        "sec_per_step_off": round(float(off), 4),
        "sec_per_step_on": round(float(on), 4),
        "slowdown": round(float(on / off - 1), 4),
        "pushes": pushes,
        "push_seconds_mean": round(push_seconds / max(pushes, 1), 4),
        "steps_timed": {k: len(v) for k, v in timer.times.items()},
        "block_means": blocks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder written by recon train")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument(
        "--refresh-every", type=int, default=10, help="the page's 'refresh splats every N steps'"
    )
    parser.add_argument(
        "--browser", action="store_true", help="keep a headless Chromium connected to the page"
    )
    args = parser.parse_args()
    run = Path(args.run)
    pressure = [cpu_pressure_avg10()]
    out = {"run": str(run), "backend": args.backend}
    if args.frames > 0:
        out.update(bench_render(run, args.frames, args.backend))
    out.update(bench_training(run, args.steps, args.block, args.refresh_every, args.browser))
    pressure.append(cpu_pressure_avg10())
    out["cpu_pressure_avg10"] = pressure
    print(json.dumps(out))


if __name__ == "__main__":
    main()
