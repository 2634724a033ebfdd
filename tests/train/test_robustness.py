"""Hostile-user cases of issue 20: arguments refused before anything is written, SIGTERM like Ctrl-C, damaged
checkpoints skipped for the next older one, and one writer per run folder."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from recon.cli import main
from recon.data.run_folder import RunFolder, RunLock
from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.runs import load_run_model
from recon.train.trainer import TrainingFailed, train
from tests.helpers import default_sigint
from tests.paths import REPO

FAST = [
    "train.backend=cpu",
    "model.sh_degree=1",
    "train.log_every=1",
    "data.split_every=5",
    "train.eval_at_end=false",
]
SETS = sum((["--set", s] for s in FAST), [])


def _cfg(*sets: str) -> Config:
    return build_config(Config, sets=[*FAST, *sets])


@pytest.fixture
def recon_log():
    """Messages of the ``recon`` logger (which `recon.cli.main` stops from propagating to caplog's handler)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("recon"), Collect(logging.WARNING)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _one_line_error(capsys, code: int, expected: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("recon: error:"), err
    assert expected in err, err
    return err


# ----- deliverable 4: arguments checked before anything is written -----


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--time-budget", "0"], "--time-budget"),
        (["--time-budget", "nan"], "--time-budget"),
        (["--time-budget", "inf"], "--time-budget"),
        (["--time-budget", "-5"], "--time-budget"),
        (["--steps", "0"], "--steps"),
        (["--steps", "-10"], "--steps"),
        (["--set", "train.steps=0"], "train.steps"),
        (["--set", "train.ckpt_every=0"], "train.ckpt_every"),
        (["--set", "train.log_every=-1"], "train.log_every"),
        (["--downscale", "0"], "--downscale"),
    ],
)
def test_bad_counts_and_budgets_are_refused_before_the_run_folder(
    args, expected, tiny_scene, tmp_path, capsys
):
    run = tmp_path / "deep" / "run"
    code = main(["train", str(tiny_scene), "--out", str(run), *SETS, *args])
    _one_line_error(capsys, code, expected)
    assert not (tmp_path / "deep").exists()


@pytest.mark.parametrize(
    "args, expected",
    [(["--samples", "0"], "--samples"), (["--tau", "nan"], "--tau"), (["--tau", "-1"], "--tau")],
)
def test_eval_mesh_refuses_bad_counts(args, expected, tmp_path, capsys):
    code = main(["eval-mesh", str(tmp_path / "a.ply"), str(tmp_path / "b.ply"), *args])
    _one_line_error(capsys, code, expected)


# ----- deliverable 5: SIGTERM like Ctrl-C -----


def _train_command(scene, run) -> list[str]:
    return [
        sys.executable, "-m", "recon.cli", "train", str(scene), "--out", str(run), "--steps", "100000",
        *SETS, "--set", "train.ckpt_every=1000000",
    ]  # fmt: skip


def _default_stop_signals() -> None:
    """``preexec_fn``: Ctrl-C, SIGTERM and SIGHUP at their defaults in the child (a nohup'd or background pytest
    would hand down ignored ones, which recon rightly leaves ignored)."""
    default_sigint()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _wait_for_steps(proc: subprocess.Popen, log, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}")
        if log.exists() and len(log.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} steps within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_save_a_checkpoint_and_exit_cleanly(sig, tiny_scene, tmp_path):
    run = tmp_path / "run"
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(err, "w") as errf:
        proc = subprocess.Popen(
            _train_command(tiny_scene, run), cwd=REPO, stdout=subprocess.PIPE, stderr=errf, env=env, text=True,
            preexec_fn=_default_stop_signals,
        )  # fmt: skip
    try:
        _wait_for_steps(proc, run / "log.jsonl", 3)
        proc.send_signal(sig)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 128 + sig, text
    assert "Traceback" not in text and "stack trace" not in text and "***" not in text, text
    assert "checkpoint saved" in text, text
    ckpts = RunFolder(run).checkpoints()
    assert ckpts and int(torch.load(ckpts[-1], weights_only=False)["step"]) >= 3
    assert not (run / RunFolder.LOCK).exists()


def test_pycolmap_leaves_sigterm_to_python():
    """pycolmap's glog failure handler would print a native stack trace on SIGTERM; recon.data.native undoes it."""
    code = "import os, signal, recon.data.native; os.kill(os.getpid(), signal.SIGTERM); import time; time.sleep(5)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert proc.stderr == ""


def test_signal_handlers_are_put_back_after_training(tiny_scene, tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    train(tiny_scene, tmp_path / "run", _cfg("train.steps=2"))
    assert {s: signal.getsignal(s) for s in before} == before


# ----- deliverable 2: a damaged checkpoint falls back to the next older one -----


@pytest.fixture
def run_with_three_checkpoints(tiny_scene, tmp_path):
    run = tmp_path / "run"
    train(tiny_scene, run, _cfg("train.steps=30", "train.ckpt_every=10"))
    assert [p.name for p in RunFolder(run).checkpoints()] == [f"step_0000{n}0.pt" for n in (1, 2, 3)]
    return run


def _damage(path, how: str) -> None:
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(os.urandom(4096))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_eval_export_and_view_use_the_next_older_checkpoint(
    how, run_with_three_checkpoints, tmp_path, capsys
):
    run = run_with_three_checkpoints
    newest = RunFolder(run).checkpoints()[-1]
    _damage(newest, how)
    assert main(["eval", str(run)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["steps"] == 20
    warnings = [line for line in captured.err.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1 and newest.name in warnings[0], captured.err
    assert "Traceback" not in captured.err
    assert main(["export", str(run), "--ply", str(tmp_path / "out.ply")]) == 0
    assert (tmp_path / "out.ply").is_file()
    assert newest.exists()  # read-only commands leave the damaged file where it is

    from viewer.targets import load_target

    assert load_target(run).step == 20


def test_read_only_commands_fall_back_to_the_model_file(
    run_with_three_checkpoints, tmp_path, capsys, recon_log
):
    run = run_with_three_checkpoints
    for ck in RunFolder(run).checkpoints():
        _damage(ck, "truncated")
    model, step, _ = load_run_model(run)
    assert step == 0 and len(model) > 0
    assert sum("cannot be read" in m for m in recon_log) == 3
    assert any("using splats.ply" in m for m in recon_log)
    assert main(["export", str(run), "--splat", str(tmp_path / "x.splat")]) == 0
    (run / "splats.ply").unlink()
    capsys.readouterr()
    code = main(["export", str(run), "--splat", str(tmp_path / "y.splat")])
    *warnings, error = capsys.readouterr().err.splitlines()
    assert code == 2 and error.startswith("recon: error:") and "no usable model" in error, error
    assert len(warnings) == 3 and all(w.startswith("WARNING: checkpoint") for w in warnings), warnings


def test_resume_skips_a_damaged_checkpoint(run_with_three_checkpoints, tiny_scene, recon_log):
    run = run_with_three_checkpoints
    folder = RunFolder(run)
    newest = folder.checkpoints()[-1]
    _damage(newest, "truncated")
    result = train(tiny_scene, run, _cfg("train.steps=40", "train.ckpt_every=10"), resume=True)
    assert result.steps == 40
    assert any("cannot be read" in m for m in recon_log)
    # set aside, so it is neither taken for the newest again nor pruned in place of a good one
    assert (newest.parent / (newest.name + ".unreadable")).exists()
    assert [p.name for p in folder.checkpoints()] == ["step_000020.pt", "step_000030.pt", "step_000040.pt"]


def test_resume_with_no_readable_checkpoint_is_one_line(run_with_three_checkpoints, tiny_scene, capsys):
    run = run_with_three_checkpoints
    for ck in RunFolder(run).checkpoints():
        _damage(ck, "garbage")
    code = main(["train", str(tiny_scene), "--out", str(run), "--resume", *SETS])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "--overwrite" in err.splitlines()[-1] and "Traceback" not in err, err


# ----- deliverable 1: one writer per run folder -----


def test_a_second_writer_is_refused_naming_the_holder(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_scene, run, _cfg("train.steps=5"))
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()  # the first run's progress bar
    with RunLock(run):  # another recon train writing this run (a flock on a second descriptor conflicts too)
        for flags in ([], ["--resume"], ["--overwrite"]):
            code = main(["train", str(tiny_scene), "--out", str(run), "--steps", "5", *SETS, *flags])
            err = _one_line_error(capsys, code, f"PID {os.getpid()}")
            assert "in use" in err
        assert sorted(p.name for p in run.rglob("*")) == sorted([*before, RunFolder.LOCK])
    assert not (run / RunFolder.LOCK).exists()


def test_a_live_writer_in_another_process_is_refused(tiny_scene, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from recon.data.run_folder import RunLock; RunLock({str(run)!r}).acquire(); "
         "print('locked', flush=True); import time; time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["train", str(tiny_scene), "--out", str(run), "--overwrite", *SETS])
        _one_line_error(capsys, code, f"PID {holder.pid}")
        assert (run / RunFolder.LOCK).exists()  # --overwrite deleted nothing of the live run
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_message(tiny_scene, tmp_path, recon_log):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / RunFolder.LOCK).write_text(f"{dead.pid}\n")
    result = train(tiny_scene, run, _cfg("train.steps=3"))
    assert result.steps == 3
    assert any(f"PID {dead.pid}" in m and "taking the lock over" in m for m in recon_log)
    assert not (run / RunFolder.LOCK).exists()


def test_the_lock_is_released_when_training_fails(tiny_scene, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg("train.steps=50", "train.ckpt_every=5", "optim.opacities_lr=1e30", "optim.sh0_lr=1e30")
    with pytest.raises(TrainingFailed, match="training stopped"):
        train(tiny_scene, run, cfg)
    assert not (run / RunFolder.LOCK).exists()
    RunLock(run).acquire().release()
