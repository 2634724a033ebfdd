"""`recon train --viewer`: the live panel on the training thread's terms, and in a real browser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recon.data.scene import load_scene
from recon.models.splats import SplatModel
from recon.train.schedule import Clock
from tests.helpers import default_sigint
from tests.paths import REPO
from tests.viewer.conftest import open_page, wait_for
from viewer.live import LiveViewer
from viewer.ports import find_free_port


class FakeTrainer:
    """What `LiveViewer.on_step` reads from `recon.train.trainer.Trainer`."""

    def __init__(self, scene, model):
        self.scene, self.model = scene, model
        self.step, self.elapsed = 0, 0.0
        self.clock = Clock(100_000)
        self._stop_requested = False
        self.saves: list[tuple[int, int]] = []  # (step, thread id)

    def save(self) -> Path:
        self.saves.append((self.step, threading.get_ident()))
        return Path(f"ckpt/step_{self.step:06d}.pt")


def _training_thread(trainer, live, stop: threading.Event, step_seconds: float = 0.002):
    def loop():
        while not stop.is_set():
            time.sleep(step_seconds)
            trainer.step += 1
            trainer.elapsed += step_seconds
            live.on_step(trainer, {"loss": 1.0 / trainer.step, "psnr": 20.0, "sh_degree": 1})

    t = threading.Thread(target=loop, name="fake-training")
    t.start()
    return t


@pytest.fixture
def live_and_trainer(viewer_scene, viewer_run):
    live = LiveViewer("127.0.0.1", find_free_port("127.0.0.1", 8400), refresh_every=5, backend="reference")
    trainer = FakeTrainer(load_scene(viewer_scene), SplatModel.load_ply(viewer_run / "splats.ply"))
    stop = threading.Event()
    yield live, trainer, stop
    stop.set()
    live.close()


def test_pause_holds_the_training_thread_and_save_runs_on_it(live_and_trainer):
    live, trainer, stop = live_and_trainer
    thread = _training_thread(trainer, live, stop)
    wait_for(lambda: trainer.step > 20, what="steps")
    live.pause()
    time.sleep(0.2)
    held = trainer.step
    time.sleep(0.5)
    assert trainer.step == held  # paused: no step while held
    live.request_save()
    wait_for(lambda: trainer.saves, what="the save")
    assert trainer.saves == [(held, thread.ident)]  # on the training thread, at the held step
    assert trainer.step == held
    live.resume()
    wait_for(lambda: trainer.step > held + 10, what="steps after resume")
    stop.set()
    thread.join(5)
    assert "Saved" in live.note.content


def test_refresh_never_makes_the_training_thread_wait(live_and_trainer, monkeypatch):
    live, trainer, stop = live_and_trainer
    slow_push = live.viewer.set_splats

    def slow(snapshot):  # a browser update far slower than a training step
        time.sleep(0.3)
        slow_push(snapshot)

    monkeypatch.setattr(live.viewer, "set_splats", slow)
    durations = []
    wait_for(lambda: live._worker.idle, what="the viewer to start")
    for _ in range(300):
        time.sleep(0.002)
        trainer.step += 1
        t0 = time.perf_counter()
        live.on_step(trainer, {"loss": 0.5, "psnr": 20.0, "sh_degree": 1})
        durations.append(time.perf_counter() - t0)
    assert live.pushes + (not live._worker.idle) >= 1
    assert live.pushes < 300 / 5  # refreshes were skipped while one was on its way
    durations.sort()
    assert durations[len(durations) // 2] < 0.005 and durations[-1] < 0.1, (
        durations[len(durations) // 2],
        durations[-1],
    )


def _wait_for_line(path: Path, pattern: str, proc: subprocess.Popen, timeout: float = 60.0) -> re.Match:
    def found():
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {path.read_text()}")
        return re.search(pattern, path.read_text()) if path.exists() else None

    return wait_for(found, timeout=timeout, what=pattern)


def _shown_step(pg) -> int:
    m = re.search(r"Step\s+([\d,]+)", pg.inner_text("body"))
    return int(m.group(1).replace(",", "")) if m else -1


def test_recon_train_viewer_in_the_browser(browser, viewer_scene, tmp_path):
    run = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    port = find_free_port("127.0.0.1", 8500)
    cmd = [
        sys.executable,
        "-m",
        "recon.cli",
        "train",
        str(viewer_scene),
        "--out",
        str(run),
        "--steps",
        "100000",
        "--viewer",
        "--port",
        str(port),
        "--set",
        "train.backend=reference",
        "--set",
        "model.sh_degree=1",
        "--set",
        "train.eval_at_end=false",
        "--set",
        "train.ckpt_every=1000000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(err, "w") as errf:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errf,
            env=env,
            text=True,
            preexec_fn=default_sigint,  # the test stops it with Ctrl-C
        )
    try:
        url = _wait_for_line(err, r"viewer at (http://127\.0\.0\.1:\d+)", proc).group(1)
        pg, _ = open_page(browser, url)
        first = wait_for(lambda: max(_shown_step(pg), 0), what="a step in the page")
        wait_for(lambda: _shown_step(pg) > first, what="the step to advance")
        pg.get_by_role("button", name="Pause").click()
        pg.get_by_text("Paused").first.wait_for(timeout=10_000)
        held = _shown_step(pg)
        time.sleep(1.5)
        assert _shown_step(pg) == held
        pg.get_by_role("button", name="Save checkpoint").click()
        pg.get_by_text("Saved").first.wait_for(timeout=10_000)
        assert list((run / "ckpt").glob("step_*.pt"))
        pg.get_by_role("button", name="Resume").click()
        wait_for(lambda: _shown_step(pg) > held, what="the step to advance after Resume")
        pg.close()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: saves a checkpoint and exits 130
        code = proc.wait(60)
    assert code == 130, err.read_text()
    assert (run / "splats.ply").is_file()
