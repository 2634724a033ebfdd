"""Working with finished run folders: load the model and config, evaluate, export splat files."""

from __future__ import annotations

from pathlib import Path

import torch

from recon.data.run_folder import RunFolder
from recon.eval.render_eval import write_metrics
from recon.export.splat import write_splat
from recon.models import Representation
from recon.models.registry import load_run_model as _load_run_model
from recon.models.registry import model_file_name

from .config import Config
from .overrides import build_config, load_yaml
from .run_setup import load_training_scene, training_backend


def check_run(run: str | Path) -> RunFolder:
    """The run folder, or a ReconError naming what to do when it holds no trained model."""
    folder = RunFolder(run)
    return folder.check_trained(
        model_file_name(folder.setting("model", "kind", "splats"), folder.setting("model", "primitive", None))
    )


def load_run_model(run: str | Path) -> tuple[Representation, int, float]:
    """The newest model of a run (last checkpoint, else its model file), its step and training seconds."""
    return _load_run_model(RunFolder(run))


def load_run_config(run: str | Path) -> Config:
    folder = RunFolder(run)
    if not folder.config_path.exists():
        return Config()
    return build_config(Config, base=_upgrade_config(load_yaml(folder.config_path)))


def _upgrade_config(raw: dict) -> dict:
    """Saved configs of older versions in today's keys: MCMC's strategy.mcmc.opacity_reg / scale_reg are the
    regularizers reg.opacity_l1 / reg.scale_l1 now (applied when strategy.kind was mcmc)."""
    mcmc = (raw.get("strategy") or {}).get("mcmc") or {}
    moved = {"opacity_reg": "opacity_l1", "scale_reg": "scale_l1"}
    if any(k in mcmc for k in moved):
        was_mcmc = (raw.get("strategy") or {}).get("kind") == "mcmc"
        for old, new in moved.items():
            weight = mcmc.pop(old, 0.0)
            if was_mcmc:
                raw.setdefault("reg", {}).setdefault(new, {})["weight"] = weight
    return raw


def evaluate_run(run: str | Path) -> dict:
    folder = check_run(run)
    scene_dir = folder.scene_dir()
    cfg = load_run_config(folder.path)
    scene = load_training_scene(scene_dir, cfg)
    model, steps, seconds = load_run_model(folder.path)
    with torch.no_grad():
        return write_metrics(model, scene, folder, steps, seconds, training_backend(cfg))


def export_run(run: str | Path, splat: str | None = None, ply: str | None = None) -> list[str]:
    folder = check_run(run)
    model, _, _ = load_run_model(folder.path)
    done = []
    if splat:
        n = write_splat(model, splat)
        done.append(f"wrote {n:,} splats to {splat}")
    if ply:
        model.save(ply)
        done.append(f"wrote {len(model):,} {model.noun} to {ply}")
    return done
