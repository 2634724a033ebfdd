"""Kill-at-random: SIGKILL `recon train` at random moments of its training, continue with `--resume` each time, and
check that no kill leaves an unusable run folder and that the final model equals an uninterrupted run's.

A tiny generated scene (tests/train/conftest.py: 10 views of 32x32 px), a few hundred steps, a checkpoint every
few steps, one thread (exact resume). The kills fall at distinct random steps of the training, each a random
fraction of a step or two after that step is logged (so some land inside a checkpoint write). A run folder counts as unusable after a kill when a checkpoint under its
final name does not load, ``config.yaml`` does not parse, or the next start fails. A kill that lands before the
first checkpoint is followed by ``--overwrite`` (what the error message says to do), not ``--resume``.
Prints one JSON line.

    .venv/bin/python scripts/bench_kill.py [--kills 20] [--steps 400] [--ckpt-every 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402
import yaml  # noqa: E402

from recon.data.atomic import is_temporary  # noqa: E402
from recon.data.run_folder import RunFolder, load_checkpoint  # noqa: E402
from tests.train.conftest import make_tiny_scene  # noqa: E402

SETS = [
    "train.backend=cpu", "model.sh_degree=1", "train.eval_at_end=false", "data.split_every=5", "train.threads=1",
    "train.log_every=1", "strategy.default.refine_start=0.05",  # densification inside the few hundred steps
]  # fmt: skip


def _command(scene: Path, run: Path, steps: int, ckpt_every: int, *flags: str) -> list[str]:
    sets = sum((["--set", s] for s in [*SETS, f"train.ckpt_every={ckpt_every}"]), [])
    return [sys.executable, "-m", "recon.cli", "train", str(scene), "--out", str(run), "--steps", str(steps),
            *sets, *flags]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _logged_since(run: Path, t_ns: int) -> bool:
    """Whether the run's log was written after ``t_ns`` (time.time_ns): by the process started then."""
    try:
        return (run / RunFolder.LOG).stat().st_mtime_ns > t_ns
    except OSError:
        return False


def _last_step(run: Path) -> int:
    """The step of the last complete line of the run's log (0 when there is none yet)."""
    try:
        with open(run / RunFolder.LOG, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def _problems(run: Path) -> list[str]:
    """Why the run folder is unusable now (empty list: usable)."""
    folder = RunFolder(run)
    problems = []
    for ck in folder.checkpoints():
        try:
            state = load_checkpoint(ck)
            assert isinstance(state, dict) and "params" in state
        except Exception as e:  # noqa: BLE001 - any failure makes the folder unusable
            problems.append(f"{ck.name}: {type(e).__name__}")
    if folder.config_path.exists():
        try:
            yaml.safe_load(folder.config_path.read_text())
        except yaml.YAMLError:
            problems.append("config.yaml does not parse")
    return problems


def _temporaries(run: Path) -> int:
    return sum(is_temporary(p.name) for p in run.rglob("*") if p.is_file())


def _train_until_killed(cmd: list[str], run: Path, step: int, delay: float, log) -> tuple[bool, int | None]:
    """Start ``cmd``; once it has logged training step ``step``, SIGKILL it ``delay`` seconds later (a random point
    inside a step, a checkpoint write included). Returns (killed, exit code when it ended by itself)."""
    start = time.time_ns()
    with open(log, "a") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        while proc.poll() is None and not (_logged_since(run, start) and _last_step(run) >= step):
            time.sleep(0.005)
        if proc.poll() is not None:
            return False, proc.returncode
        try:
            return False, proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--ckpt-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="recon-kill-"))
    try:
        scene = make_tiny_scene(tmp / "scene")
        log = tmp / "stderr.txt"
        ref, run = tmp / "reference", tmp / "killed"
        t0 = time.perf_counter()
        done = subprocess.run(
            _command(scene, ref, args.steps, args.ckpt_every),
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        train_seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        ref_wall = time.perf_counter() - t0

        kills = resumes = restarts = unusable = temporaries_seen = 0
        steps_at_kill: list[int] = []
        flags: list[str] = []
        final_code = None
        step_seconds = train_seconds / args.steps
        targets = sorted(
            rng.sample(range(1, args.steps), args.kills)
        )  # random moments spread over the training
        while kills < args.kills:
            cmd = _command(scene, run, args.steps, args.ckpt_every, *flags)
            delay = rng.uniform(0.0, 2.0 * step_seconds)
            killed, code = _train_until_killed(cmd, run, targets[kills], delay, log)
            if not killed:  # it finished (or failed) before the kill
                final_code = code
                break
            kills += 1
            problems = _problems(run)
            unusable += bool(problems)
            temporaries_seen += _temporaries(run)
            newest = RunFolder(run).latest_checkpoint()
            steps_at_kill.append(int(newest.stem.split("_")[1]) if newest else 0)
            flags = ["--resume"] if newest else ["--overwrite"]
            resumes += newest is not None
            restarts += newest is None
        if final_code is None:
            cmd = _command(scene, run, args.steps, args.ckpt_every, *flags)
            final_code = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True).returncode

        a = load_checkpoint(RunFolder(ref).latest_checkpoint())
        b_path = RunFolder(run).latest_checkpoint()
        b = load_checkpoint(b_path) if b_path else {"step": None, "params": {}}
        same_keys = set(a["params"]) == set(b["params"])
        equal = same_keys and all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
        diff = (
            max(float((a["params"][k] - b["params"][k]).abs().max()) if a["params"][k].shape == b["params"][k].shape
                else float("inf") for k in a["params"])
            if same_keys else float("inf")
        )  # fmt: skip
        result = {
            "kills": kills,
            "resumes": resumes,
            "restarts_before_first_checkpoint": restarts,
            "unusable_run_folders": unusable + (final_code != 0),
            "final_exit_code": final_code,
            "final_step": b["step"],
            "steps": args.steps,
            "equal_to_uninterrupted": bool(equal and a["step"] == b["step"]),
            "max_abs_diff": diff,
            "num_primitives": [
                int(a["params"]["means"].shape[0]),
                int(b["params"].get("means", torch.empty(0)).shape[0]),
            ],
            "kill_steps": targets,
            "newest_checkpoint_at_kills": steps_at_kill,
            "temporaries_left_by_kills": temporaries_seen,
            "temporaries_left_at_end": _temporaries(run),
            "reference_train_seconds": train_seconds,
            "reference_wall_seconds": round(ref_wall, 1),
            "seconds": round(time.perf_counter() - t_start, 1),
        }
        print(json.dumps(result))
        ok = result["unusable_run_folders"] == 0 and result["equal_to_uninterrupted"] and kills == args.kills
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
