"""Working with finished run folders: load the model, evaluate, export."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recon.data.errors import ReconError
from recon.export.splat import write_splat
from recon.models.gaussians import GaussianModel

from .checkpoint import latest_checkpoint, load_checkpoint
from .config import Config
from .overrides import build_config, load_yaml
from .trainer import RUN_FILE, load_training_scene, training_backend, write_metrics


def check_run(run: str | Path) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise ReconError(f"run folder {run} does not exist; pass a folder written by `recon train`")
    if not (run / "splats.ply").exists() and latest_checkpoint(run) is None:
        raise ReconError(
            f"{run} has no splats.ply or checkpoint; train it first with `recon train SCENE --out {run}`"
        )
    return run


def load_run_model(run: Path) -> tuple[GaussianModel, int, float]:
    """The newest model of a run: the last checkpoint if there is one, else splats.ply; its primitive type is the
    run's ``model.primitive`` (config.yaml), else what the checkpoint or the PLY says."""
    cfg_path = run / "config.yaml"
    primitive = load_run_config(run).model.primitive if cfg_path.exists() else None
    ck = latest_checkpoint(run)
    if ck is not None:
        s = load_checkpoint(ck)
        primitive = primitive or s.get("primitive", "gaussian3d")
        return GaussianModel(s["params"], s["sh_degree"], primitive), int(s["step"]), float(s["elapsed"])
    return GaussianModel.load_ply(run / "splats.ply", primitive), 0, 0.0


def load_run_config(run: Path) -> Config:
    path = run / "config.yaml"
    return build_config(Config, base=load_yaml(path)) if path.exists() else Config()


def evaluate_run(run: str | Path) -> dict:
    run = check_run(run)
    meta = run / RUN_FILE
    if not meta.exists():
        raise ReconError(f"{run} has no {RUN_FILE} naming its scene; it was not written by `recon train`")
    scene_dir = Path(json.loads(meta.read_text())["scene"])
    cfg = load_run_config(run)
    scene = load_training_scene(scene_dir, cfg)
    model, steps, seconds = load_run_model(run)
    with torch.no_grad():
        return write_metrics(model, scene, run, steps, seconds, training_backend(cfg))


def export_run(run: str | Path, splat: str | None = None, ply: str | None = None) -> list[str]:
    run = check_run(run)
    model, _, _ = load_run_model(run)
    done = []
    if splat:
        n = write_splat(model, splat)
        done.append(f"wrote {n:,} splats to {splat}")
    if ply:
        model.save_ply(ply)
        kind = "surfels" if model.primitive == "surfel2d" else "Gaussians"
        done.append(f"wrote {len(model):,} {kind} to {ply}")
    return done
