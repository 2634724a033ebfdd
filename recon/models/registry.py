"""The representations by ``model.kind``: the one place that knows which classes exist.

Adding a representation: a ``Representation`` subclass in its own module, one entry in ``REPRESENTATIONS``, its
``model.kind`` value in ``recon/train/config.py``'s ``ModelConfig``, and tests parametrised over the kinds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder, error_line

from .base import Representation, Traits
from .splats import SplatModel

REPRESENTATIONS: dict[str, type[Representation]] = {cls.kind: cls for cls in (SplatModel,)}
DEFAULT_KIND = SplatModel.kind
log = logging.getLogger("recon")


def representation_class(kind: str) -> type[Representation]:
    try:
        return REPRESENTATIONS[kind]
    except KeyError:
        raise ReconError(f"unknown model.kind {kind!r}; choose from {', '.join(REPRESENTATIONS)}") from None


def create_model(scene: Any, model_cfg: Any, seed: int) -> Representation:
    """A fresh model of ``model_cfg.kind`` initialised for ``scene``."""
    return representation_class(model_cfg.kind).initialize(scene, model_cfg, seed)


def model_from_state(state: dict[str, Any]) -> Representation:
    """The model a checkpoint (or ``Representation.state_dict``) describes; checkpoints from before kinds
    existed hold splats."""
    return representation_class(state.get("kind", DEFAULT_KIND)).from_state(state)


def load_model_file(path: str | Path, kind: str = DEFAULT_KIND, **hints: Any) -> Representation:
    """Read a model file (Gaussians: a 3DGS PLY); ``hints`` are the run config's model settings it may need."""
    return representation_class(kind).load(path, **hints)


def model_file_name(kind: str = DEFAULT_KIND) -> str:
    return representation_class(kind).file_name


def model_traits(model_cfg: Any) -> Traits:
    return representation_class(model_cfg.kind).traits(model_cfg)


def load_run_model(run: RunFolder) -> tuple[Representation, int, float]:
    """The newest model of a run, with its step and training seconds: the newest checkpoint that can be read
    (unreadable ones are reported and skipped), else the model file. The run's saved ``model`` settings (kind,
    primitive, ...) take precedence over what the checkpoint or the file says."""
    settings = dict(run.config_dict().get("model") or {})
    kind = settings.pop("kind", DEFAULT_KIND)

    def from_checkpoint(state: dict[str, Any]) -> tuple[Representation, int, float]:
        state.setdefault("kind", kind)
        if settings.get("primitive") is not None:
            state["primitive"] = settings["primitive"]
        return model_from_state(state), int(state["step"]), float(state["elapsed"])

    had_checkpoints = bool(run.checkpoints())
    found = run.load_newest_checkpoint(from_checkpoint)
    if found is not None:
        return found[1]
    path = run.model_path(model_file_name(kind))
    if not path.is_file():
        what = "no checkpoint can be read" if had_checkpoints else "it has no checkpoint"
        raise ReconError(
            f"{run.path} has no usable model: {what} and {path.name} is missing; "
            f"train it again with `recon train SCENE --out {run.path} --overwrite`"
        )
    if had_checkpoints:
        log.warning(f"no checkpoint of {run.path} can be read; using {path.name}")
    try:
        return load_model_file(path, kind, **settings), 0, 0.0
    except ReconError:
        raise
    except Exception as e:  # a truncated or foreign model file: name it, in one line
        raise ReconError(
            f"cannot read {path} ({error_line(e)}); train the run again with --overwrite"
        ) from None
