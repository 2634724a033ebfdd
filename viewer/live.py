"""`recon train --viewer`: the viewer, live while training runs.

``LiveViewer.on_step(trainer, stats)`` plugs into ``train(..., on_step=...)`` and runs on the training thread after
every step. It only records numbers and hands work to one background thread; the training thread never waits
for the browser. The splats are refreshed every N steps (N set in the page), only when the previous refresh has
finished, and only as often as ``RefreshThrottle`` allows for the training to slow by at most ``budget``. Pause
blocks the training thread inside ``on_step`` until Resume; Save runs ``trainer.save()`` on the training thread
at the next step.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np

from .app import Viewer, start_viewer
from .snapshot import ModelSnapshot
from .throttle import RefreshThrottle
from .worker import LatestWorker

PANEL_PERIOD = 1.0  # seconds between refreshes of the numbers in the panel
MAX_CURVE_POINTS = 1000


class LossCurve:
    """Loss against step with a bounded number of points: when full, keep every other point and record half as often."""

    def __init__(self, max_points: int = MAX_CURVE_POINTS):
        self.max_points = max_points
        self.stride = 1
        self.steps: list[int] = []
        self.values: list[float] = []

    def add(self, step: int, value: float) -> None:
        if step % self.stride or not math.isfinite(value):
            return
        self.steps.append(step)
        self.values.append(value)
        if len(self.steps) > self.max_points:
            self.steps, self.values = self.steps[::2], self.values[::2]
            self.stride *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.steps, np.float64), np.asarray(self.values, np.float64)


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LiveViewer:
    """The viewer plus a training panel (step, loss curve, Gaussian count, ETA, pause, resume, save)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        refresh_every: int = 100,
        budget: float = 0.05,
        backend: str = "auto",
    ):
        self.viewer: Viewer = start_viewer(host, port, backend)
        self.url = self.viewer.url
        self.throttle = RefreshThrottle(budget)
        self.curve = LossCurve()
        self.pushes = 0  # splat refreshes sent to the page
        self.push_seconds = 0.0  # their own cost in total (training-thread copy + background work)
        self.saved: list[Path] = []
        self._worker = LatestWorker("viewer-live")
        self._paused = threading.Event()
        self._save_requested = threading.Event()
        self._scene_shown = False
        self._last_push_step: int | None = None
        self._client_joined = threading.Event()
        self._last_panel = 0.0
        self._wall_per_step = float("nan")
        self._t_last_step: float | None = None
        self._last_step = -1
        self._closed = False
        self._build_panel(refresh_every)
        self.viewer.server.on_client_connect(lambda client: self._client_joined.set())

    # ----- page -----
    def _build_panel(self, refresh_every: int) -> None:
        gui = self.viewer.server.gui
        self.viewer.stats.content = "Waiting for the first training step..."
        with gui.add_folder("Training", order=-1, expand_by_default=True) as self.folder:
            self.status = gui.add_markdown("Starting...", order=1)
            # The loss plot (order 2) is added with the first two points: uPlot draws nothing for a chart that
            # starts out empty, even after data arrives.
            self.loss_plot = None
            self.pause_button = gui.add_button("Pause", order=3)
            self.resume_button = gui.add_button("Resume", disabled=True, order=4)
            self.save_button = gui.add_button("Save checkpoint", order=5)
            self.refresh_every = gui.add_number(
                "Refresh splats every N steps", int(refresh_every), min=1, step=1, order=6
            )
            self.note = gui.add_markdown(" ", order=7)
        self.pause_button.on_click(lambda _: self.pause())
        self.resume_button.on_click(lambda _: self.resume())
        self.save_button.on_click(lambda _: self.request_save())

    def pause(self) -> None:
        self._paused.set()
        self.pause_button.disabled, self.resume_button.disabled = True, False

    def resume(self) -> None:
        self._paused.clear()
        self.pause_button.disabled, self.resume_button.disabled = False, True

    def request_save(self) -> None:
        self._save_requested.set()
        self.note.content = "Saving a checkpoint at the next step..."

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    # ----- the training thread -----
    def on_step(self, trainer, stats: dict) -> None:
        """Called by the trainer after every step, on the training thread."""
        now = time.perf_counter()
        step = int(trainer.step)
        if (
            self._t_last_step is not None and step == self._last_step + 1
        ):  # timed from the previous step's end
            dt = now - self._t_last_step
            self.throttle.step(dt, now)
            self._wall_per_step = (
                dt if not math.isfinite(self._wall_per_step) else 0.95 * self._wall_per_step + 0.05 * dt
            )
        self._last_step = step
        self.curve.add(step, float(stats.get("loss", float("nan"))))
        if self._save_requested.is_set():
            self._save(trainer)
        if not self._scene_shown:
            self._scene_shown = True
            self._worker.submit(lambda scene=trainer.scene: self._show_scene(scene))
        elif self._want_push(step, now):
            self._push(trainer, stats, step)
        elif now - self._last_panel > PANEL_PERIOD and self._worker.idle:
            self._last_panel = now
            figures = self._figures(trainer, stats)
            self._worker.submit(lambda: self._charged(lambda: self._update_panel(figures)))
        if self._paused.is_set():
            self._hold(trainer, stats)
        self._t_last_step = time.perf_counter()

    def _want_push(self, step: int, now: float) -> bool:
        if not self._worker.idle:
            return False
        if self._last_push_step is None or self._client_joined.is_set():
            return True
        return step - self._last_push_step >= int(self.refresh_every.value) and self.throttle.ready(now)

    def _push(self, trainer, stats: dict, step: int) -> None:
        t0 = time.perf_counter()
        snapshot = ModelSnapshot.of(trainer.model, stats.get("sh_degree"), step)
        copy_seconds = time.perf_counter() - t0
        self.throttle.started(copy_seconds)
        figures = self._figures(trainer, stats)
        self._client_joined.clear()
        self._last_push_step = step

        def job() -> None:
            t1 = time.perf_counter()
            self.viewer.set_splats(snapshot)
            self._update_panel(figures)
            end = time.perf_counter()
            self.throttle.finished(end - t1, end)
            self.pushes += 1
            self.push_seconds += copy_seconds + end - t1

        self._last_panel = time.perf_counter()
        self._worker.submit(job)

    def _charged(self, job) -> None:
        """Run other background work (the panel's numbers) and let the throttle count its cost."""
        t0 = time.perf_counter()
        job()
        end = time.perf_counter()
        self.throttle.charge(end - t0, end)

    def _hold(self, trainer, stats: dict) -> None:
        """Pause: keep the training thread here (saving on request) until Resume, Ctrl-C or close."""
        self._worker.submit(lambda figures=self._figures(trainer, stats): self._update_panel(figures))
        while self._paused.is_set() and not trainer._stop_requested and not self._closed:
            if self._save_requested.is_set():
                self._save(trainer)
            time.sleep(0.05)
        self._worker.submit(lambda figures=self._figures(trainer, stats): self._update_panel(figures))

    def _save(self, trainer) -> None:
        self._save_requested.clear()
        path = trainer.save()
        self.saved.append(path)
        self.note.content = f"Saved `{path}`"

    # ----- what the page shows -----
    def _figures(self, trainer, stats: dict) -> dict:
        clock = trainer.clock
        step = int(trainer.step)
        if clock.time_budget:
            total, eta = None, max(0.0, clock.time_budget - trainer.elapsed)
        else:
            total = clock.steps
            eta = max(0, clock.steps - step) * self._wall_per_step
        return {
            "step": step,
            "total": total,
            "loss": float(stats.get("loss", float("nan"))),
            "psnr": float(stats.get("psnr", float("nan"))),
            "n": len(trainer.model),
            "eta": eta,
            "sec_per_step": self._wall_per_step,
            "paused": self._paused.is_set(),
            "curve": self.curve.arrays(),
        }

    def _update_panel(self, f: dict) -> None:
        of = f" / {f['total']:,}" if f["total"] else ""
        lines = [
            f"**Step** {f['step']:,}{of}",
            f"**Loss** {f['loss']:.4f} · **PSNR** {f['psnr']:.2f} dB",
            f"**Gaussians** {f['n']:,}",
            f"**ETA** {format_seconds(f['eta'])} · {f['sec_per_step']:.3f} s/step",
        ]
        if f["paused"]:
            lines.append("**Paused**: press Resume to continue")
        self.status.content = "  \n".join(lines)
        steps, values = f["curve"]
        if self.loss_plot is not None:
            self.loss_plot.data = (steps, values)
        elif len(steps) >= 2:
            with self.folder:
                self.loss_plot = self.viewer.server.gui.add_uplot(
                    data=(steps, values),
                    series=({"label": "step"}, {"label": "loss", "stroke": "#1c7ed6", "width": 1.5}),
                    scales={"x": {"time": False}, "y": {"distr": 3}},
                    aspect=2.0,
                    order=2,
                )

    def _show_scene(self, scene) -> None:
        self.viewer.show_scene(scene, points_visible=False)
        n_train, n_test = len(scene.train_ids), len(scene.test_ids)
        self.viewer.stats.content = (
            f"**training** on `{scene.root.name}`  \nCameras: {len(scene)} ({n_train} train, {n_test} test)"
        )

    # ----- lifetime -----
    def close(self) -> None:
        self._closed = True
        self._paused.clear()
        self._worker.close()
        self.viewer.close()
