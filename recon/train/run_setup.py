"""Setting up a run: check the config against its representation, prepare the run folder, find and load the
scene. Shared by ``recon train`` and by the commands that reopen a finished run (``runs.py``)."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from rich.console import Console

from recon.data.atomic import remove_stale_temporaries
from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder, RunLock
from recon.data.scene import Scene, load_scene
from recon.data.split import SplitConfig
from recon.models.registry import model_traits
from recon.regularizers import check_supported

from .config import Config
from .densify import check_strategy

log = logging.getLogger("recon")


def training_backend(cfg: Config) -> str:
    """The rasterizer backend a run uses; a ReconError when the config asks for one its model lacks."""
    try:
        return model_traits(cfg.model).resolve_backend(cfg.train.backend)
    except ValueError as e:  # e.g. surfels on gsplat: a choice the user made in the config
        raise ReconError(f"train.backend / model: {e}") from None


def check_numbers(cfg: Config) -> None:
    """Counts and budgets that must be positive (and finite): refused in one line naming the option."""
    t = cfg.train
    counts = (
        ("--steps / train.steps", t.steps),
        ("train.ckpt_every", t.ckpt_every),
        ("train.log_every", t.log_every),
    )
    for name, value in counts:
        if value < 1:
            raise ReconError(f"{name} is {value}; use a whole number from 1 up")
    budget = t.time_budget
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise ReconError(
            f"--time-budget / train.time_budget is {budget}; use a positive number of seconds "
            "(or leave it out to train for train.steps)"
        )
    scale = cfg.data.downscale
    if not (math.isfinite(scale) and scale > 0):
        raise ReconError(f"--downscale / data.downscale is {scale}; use a positive factor (1 = full size)")


def check_config(cfg: Config) -> str:
    """Everything about ``cfg`` that can be refused before a run folder is touched; returns the backend."""
    check_numbers(cfg)
    backend = training_backend(cfg)
    traits = model_traits(cfg.model)
    check_supported(cfg.reg, traits.capabilities, traits.label)
    check_strategy(cfg.strategy, traits.capabilities, traits.label)
    return backend


def prepare_run(run: Path, resume: bool, overwrite: bool) -> RunLock:
    """Lock the run folder for this process and make it ready: kept for ``resume``, emptied for ``overwrite``
    (all but the lock: a live run is refused before anything is deleted), created when new. Temporary files of
    writes killed in an earlier run are removed. The caller releases the returned lock when training ends,
    however it ends."""
    if resume and overwrite:
        raise ReconError("--resume and --overwrite contradict each other; pass one of them")
    if run.exists() and not run.is_dir():
        raise ReconError(f"run folder {run} is a file; choose a folder for --out")
    lock = RunLock(run).acquire()
    try:
        stale = remove_stale_temporaries(run)
        if stale:
            log.info(f"removed {len(stale)} temporary file(s) of an earlier run killed while writing")
        entries = [p for p in run.iterdir() if p != lock.path]
        has_checkpoint = RunFolder(run).latest_checkpoint() is not None
        if resume and not has_checkpoint:
            raise ReconError(
                f"no checkpoint to resume in {run}; "
                + ("start it again with --overwrite" if entries else "start a new run without --resume")
            )
        if resume:
            return lock
        if entries and not overwrite:
            raise _not_empty(run, has_checkpoint)
        for p in entries:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _not_empty(run: Path, has_checkpoint: bool) -> ReconError:
    """The refusal of a non-empty run folder, sending the user to the one option that works for what it holds."""
    if has_checkpoint:
        return ReconError(
            f"run folder {run} is not empty; pass --resume to continue it or --overwrite to replace it"
        )
    if RunFolder(run).config_path.exists():
        return ReconError(
            f"run folder {run} holds a run that stopped before its first checkpoint; pass --overwrite to start "
            "it again, or choose another --out"
        )
    return ReconError(
        f"run folder {run} is not empty and holds no recon run; pass --overwrite to replace what is in it, or "
        "choose another --out"
    )


def scene_for_training(scene_path: Path, run: Path, console: Console) -> Path:
    """The scene folder to train on: ``scene_path`` itself, or a scene `recon process` makes from a photo folder."""
    from recon.data.photos import list_photos
    from recon.data.scene import find_scene

    if not scene_path.exists():
        raise ReconError(f"scene {scene_path} does not exist; pass a scene folder or a folder of photos")
    try:
        find_scene(scene_path)
        return scene_path
    except ReconError:
        if not scene_path.is_dir() or not list_photos(scene_path):
            raise
    from recon.data.sfm import process_photos

    target = run / "scene"
    if (target / "report.json").exists():
        return target
    console.print(f"{scene_path} is a photo folder: solving the cameras first (recon process)")
    process_photos(scene_path, target, overwrite=True, console=console)
    return target


def load_training_scene(scene_path: Path, cfg: Config) -> Scene:
    d = cfg.data
    return load_scene(
        scene_path,
        downscale=d.downscale,
        split=SplitConfig(every=d.split_every, split_file=d.split_file),
        background=d.background,
        ram_budget_mb=d.ram_budget_mb,
    )
