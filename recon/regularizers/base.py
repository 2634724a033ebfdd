"""The regularizer framework (DESIGN.md §3): a config dataclass per regularizer plus a class with ``needs``,
``requires`` and ``loss(ctx)``. Helpers shared by several regularizers live here too; the regularizers themselves
live one per file and are listed in ``registry`` (this module imports none of them).

Why this shape: the trainer renders each view once, so it must know beforehand which maps every active term reads
(``needed_outputs``); each term comes back already weighted and named, so the trainer sums them and logs each by
name without knowing what any of them does. A regularizer is off unless its weight is above zero.

Steps: ``active(step)`` is true for ``start_step <= step < end_step`` (``end_step = -1``: never ends), where
``step`` is the number of training steps completed before the current one (the trainer's nominal step under a
time budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from recon.render.outputs import OUTPUT_NAMES, RenderOutputs

# What a representation may offer a regularizer (representations expose ``capabilities: frozenset[str]``), each
# with the words ``check_supported`` uses when one is missing.
CAPABILITIES: dict[str, str] = {
    # per-primitive parameters in ctx.params: means, log scales [N,3], quats, logit opacities, sh0/shN
    "primitives": "per-primitive parameters",
    # primitives with three axes, so there is a thickness to shrink (2D surfels are flat and lack it)
    "volumetric": "volumetric primitives",
    # the per-pixel contributor-id query (recon.render.contributors) of the cpu and reference rasterizers
    "contributors": "the per-pixel contributor query of the cpu/reference rasterizers",
    # a rendered "normal" map (Gaussians, surfels; a convex has no single normal)
    "normals": "a rendered normal map",
    # 3DCS's per-convex mask in ctx.params["mask"]
    "mask": "a per-primitive mask",
    # convex hull rows (points, delta, sigma) that 3DCS densification splits
    "hulls": "convex hull points",
}


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
    primitive: str = "gaussian3d"  # what ``params`` describe (recon.render.PRIMITIVES), for those renders too


def window_active(step: int, start: int, end: int) -> bool:
    """``start <= step < end`` with ``end = -1`` meaning open-ended."""
    return step >= start and (end < 0 or step < end)


class Regularizer:
    """Base class: subclasses set ``name`` (their ``reg.<name>`` config key), ``config_class``, ``needs`` and
    ``requires``, and implement ``loss``."""

    name: str = "reg"
    # the config dataclass this regularizer is built from (the registry makes its defaults from it)
    config_class: ClassVar[type[RegularizerConfig]] = RegularizerConfig
    # RenderOutputs field names the term reads from the step's render (plus "info"/"params" for documentation).
    needs: tuple[str, ...] = ()
    # CAPABILITIES a representation must offer for this term (empty: it reads only render maps)
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.requires) - CAPABILITIES.keys())
        if unknown:
            raise TypeError(
                f"{cls.__name__}.requires names unknown capabilities {unknown}; known: {list(CAPABILITIES)}"
            )

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


def visible_ids(info: dict, n: int, device) -> Tensor:
    """Ids of the primitives with a non-zero screen radius in any rendered camera (all ``n`` when ``info`` has no
    radii)."""
    radii = info.get("radii") if info else None
    if radii is None:
        return torch.arange(n, device=device)
    r = radii if radii.dim() == 2 else radii.amax(-1)  # [C,N]
    return torch.nonzero((r > 0).any(0)).squeeze(1)
