"""The regularizer framework (DESIGN.md §3): a config dataclass per regularizer plus a class with ``needs`` and
``loss(ctx)``.

Why this shape: the trainer renders each view once, so it must know beforehand which maps every active term reads
(``needed_outputs``); each term comes back already weighted and named, so the trainer sums them and logs each by
name without knowing what any of them does. A regularizer is off unless its weight is above zero.

Steps: ``active(step)`` is true for ``start_step <= step < end_step`` (``end_step = -1``: never ends), where
``step`` is the number of training steps completed before the current one (the trainer's nominal step under a
time budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from torch import Tensor

from recon.render.outputs import OUTPUT_NAMES, RenderOutputs


@dataclass
class RegularizerConfig:
    weight: float = 0.0  # multiplier of the term; 0 switches the regularizer off
    start_step: int = 0  # first step the term is applied
    end_step: int = -1  # first step it is no longer applied; -1 = never ends


@dataclass
class RegContext:
    """Everything a regularizer may read for the view being trained."""

    outputs: RenderOutputs  # the one render of this step (maps [C,H,W,k], with gradients)
    info: dict[str, Any]  # the rasterizer's info (radii [C,N,2], means2d, ...)
    params: Any  # the model's ParameterDict: means, scales (log), quats, opacities (logit), sh0, shN
    step: int
    viewmats: Tensor  # [C,4,4] world-to-camera
    Ks: Tensor  # [C,3,3]
    width: int
    height: int
    target: Tensor | None = None  # [H,W,3] the photo, when a term compares against it
    backend: str = "auto"  # rasterizer backend, for terms that render extra maps of their own
    primitive: str = "gaussian3d"  # what ``params`` describe ("surfel2d": 2D surfels), for those renders too


def window_active(step: int, start: int, end: int) -> bool:
    """``start <= step < end`` with ``end = -1`` meaning open-ended."""
    return step >= start and (end < 0 or step < end)


class Regularizer:
    """Base class: subclasses set ``name`` and ``needs`` and implement ``loss``."""

    name: str = "reg"
    # RenderOutputs field names the term reads from the step's render (plus "info"/"params" for documentation).
    needs: tuple[str, ...] = ()

    def __init__(self, cfg: RegularizerConfig):
        self.cfg = cfg

    def enabled(self) -> bool:
        return self.cfg.weight > 0

    def active(self, step: int) -> bool:
        return self.enabled() and window_active(step, self.cfg.start_step, self.cfg.end_step)

    def loss(self, ctx: RegContext) -> dict[str, Tensor]:
        """Already-weighted named terms, e.g. {"dist": λ·mean(D)}."""
        raise NotImplementedError

    def prune_mask(self, params: Any, step: int) -> Tensor | None:
        """Gaussians to remove after the optimizer step of ``step`` (a bool mask [N]), or None. A method whose
        schedule removes primitives (SuGaR's opacity prune) says so here; the trainer removes them together with
        their optimizer and densification state."""
        return None


def needed_outputs(regs: list[Regularizer], step: int) -> tuple[str, ...]:
    """The RenderOutputs maps the regularizers active at ``step`` read, in OUTPUT_NAMES order."""
    wanted = {n for r in regs if r.active(step) for n in r.needs}
    return tuple(n for n in OUTPUT_NAMES if n in wanted)


def regularization_terms(regs: list[Regularizer], ctx: RegContext) -> dict[str, Tensor]:
    """All named terms of the regularizers active at ``ctx.step`` (a name may appear only once)."""
    terms: dict[str, Tensor] = {}
    for r in regs:
        if not r.active(ctx.step):
            continue
        for name, value in r.loss(ctx).items():
            if name in terms:
                raise ValueError(f"two regularizers produce a term named {name!r}")
            terms[name] = value
    return terms


# The per-regularizer configs live beside their implementations; they import this module's base classes, so
# these imports come last (the package __init__ imports this module first, so the order always holds).
from .distortion import Distortion, DistortionConfig  # noqa: E402
from .flatten import Flatten, FlattenConfig  # noqa: E402
from .nearfar import NearFar, NearFarConfig  # noqa: E402
from .normal_consistency import NormalConsistency, NormalConsistencyConfig  # noqa: E402
from .sugar import Sugar, SugarConfig  # noqa: E402
from .tlog import TLog, TLogConfig  # noqa: E402


@dataclass
class RegularizersConfig:
    """One entry per regularizer (``reg.<name>.*`` in presets and ``--set``); all off by default."""

    dist: DistortionConfig = field(default_factory=DistortionConfig)  # depth distortion (METHODS §3.2a/b)
    normal: NormalConsistencyConfig = field(default_factory=NormalConsistencyConfig)  # §3.2e
    sugar: SugarConfig = field(default_factory=SugarConfig)  # SuGaR density/normal/entropy (§3.4)
    nearfar: NearFarConfig = field(default_factory=NearFarConfig)  # LE3D near–far (§3.3a)
    tlog: TLogConfig = field(default_factory=TLogConfig)  # LE3D coverage (§3.3b)
    flat: FlattenConfig = field(default_factory=FlattenConfig)  # PGSR's shortest-axis shrink


_CLASSES: dict[str, type[Regularizer]] = {
    "dist": Distortion,
    "normal": NormalConsistency,
    "sugar": Sugar,
    "nearfar": NearFar,
    "tlog": TLog,
    "flat": Flatten,
}


def build_regularizers(cfg: RegularizersConfig) -> list[Regularizer]:
    """The regularizers switched on in ``cfg`` (weight > 0; for SuGaR, any of its term weights > 0)."""
    regs = []
    for f in fields(cfg):
        reg = _CLASSES[f.name](getattr(cfg, f.name))
        if reg.enabled():
            regs.append(reg)
    return regs
