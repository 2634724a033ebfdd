"""The representations by ``model.kind`` and ``model.primitive``: the one place that knows which classes exist.

Adding a representation: a ``Representation`` subclass in its own module and one entry in ``CLASSES``; the config's
``model.kind`` and ``model.primitive`` choices come from here. Tests are parametrised over ``CLASSES``.
A kind may hold several classes when they split its primitives (splats: Gaussians and surfels in ``SplatModel``,
convexes in ``ConvexModel``); ``model.primitive`` then picks the class.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder, error_line

from .base import Representation, Traits
from .convex import ConvexModel
from .ply import ply_primitive
from .splats import SplatModel

CLASSES: tuple[type[Representation], ...] = (SplatModel, ConvexModel)
# model.kind -> its classes, the first being the kind's default
REPRESENTATIONS: dict[str, tuple[type[Representation], ...]] = {}
for _cls in CLASSES:
    REPRESENTATIONS[_cls.kind] = (*REPRESENTATIONS.get(_cls.kind, ()), _cls)
PRIMITIVES: tuple[str, ...] = tuple(p for cls in CLASSES for p in cls.primitives)  # model.primitive choices
DEFAULT_KIND = SplatModel.kind
log = logging.getLogger("recon")


def representation_class(kind: str, primitive: str | None = None) -> type[Representation]:
    """The class of ``kind`` that holds ``primitive`` (None: the kind's first class)."""
    classes = REPRESENTATIONS.get(kind)
    if not classes:
        raise ReconError(f"unknown model.kind {kind!r}; choose from {', '.join(REPRESENTATIONS)}")
    if primitive is None:
        return classes[0]
    for cls in classes:
        if primitive in cls.primitives or not cls.primitives:
            return cls
    choices = [p for cls in classes for p in cls.primitives]
    raise ReconError(f"unknown primitive {primitive!r}; choose from {', '.join(choices)}")


def _class_of(model_cfg: Any) -> type[Representation]:
    return representation_class(model_cfg.kind, getattr(model_cfg, "primitive", None))


def create_model(scene: Any, model_cfg: Any, seed: int) -> Representation:
    """A fresh model of ``model_cfg.kind`` / ``model_cfg.primitive`` initialised for ``scene``."""
    return _class_of(model_cfg).initialize(scene, model_cfg, seed)


def model_from_state(state: dict[str, Any]) -> Representation:
    """The model a checkpoint (or ``Representation.state_dict``) describes; checkpoints from before kinds
    existed hold splats."""
    return representation_class(state.get("kind", DEFAULT_KIND), state.get("primitive")).from_state(state)


def load_model_file(
    path: str | Path, kind: str = DEFAULT_KIND, primitive: str | None = None, **hints: Any
) -> Representation:
    """Read a model file (Gaussians: a 3DGS PLY; convexes: a convex PLY); ``primitive`` None takes it from the
    PLY header recon writes. ``hints`` are the run config's other model settings it may need."""
    if primitive is None and Path(path).suffix.lower() == ".ply":
        primitive = ply_primitive(path)
    cls = representation_class(kind, primitive)
    if primitive is not None and len(cls.primitives) > 1:
        hints["primitive"] = primitive
    return cls.load(path, **hints)


def model_file_name(kind: str = DEFAULT_KIND, primitive: str | None = None) -> str:
    return representation_class(kind, primitive).file_name


def model_traits(model_cfg: Any) -> Traits:
    return _class_of(model_cfg).traits(model_cfg)


def load_run_model(run: RunFolder) -> tuple[Representation, int, float]:
    """The newest model of a run, with its step and training seconds: the newest checkpoint that can be read
    (unreadable ones are reported and skipped), else the model file. The run's saved ``model`` settings (kind,
    primitive, ...) take precedence over what the checkpoint or the file says."""
    settings = dict(run.config_dict().get("model") or {})
    kind = settings.pop("kind", DEFAULT_KIND)
    settings.pop("convex", None)  # initialisation settings, not needed to read a model

    def from_checkpoint(state: dict[str, Any]) -> tuple[Representation, int, float]:
        state.setdefault("kind", kind)
        if settings.get("primitive") is not None:
            state["primitive"] = settings["primitive"]
        return model_from_state(state), int(state["step"]), float(state["elapsed"])

    had_checkpoints = bool(run.checkpoints())
    found = run.load_newest_checkpoint(from_checkpoint)
    if found is not None:
        return found[1]
    path = run.model_path(model_file_name(kind, settings.get("primitive")))
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
