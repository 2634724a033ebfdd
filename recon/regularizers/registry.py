"""The one list of regularizers: ``RegularizersConfig`` is the table, one line per regularizer.

Each field is an entry: its name is the config key (``reg.<key>.*`` in presets and ``--set``), its annotation the
regularizer's config dataclass (``recon.train.overrides`` validates values against it), ``entry(Class)`` the
class built from it, and the comment documents it. ``build_regularizers`` and ``check_supported`` walk the fields in
order, so the order here is the order terms are computed, summed and logged.

Adding a regularizer: write ``recon/regularizers/<name>.py`` (a ``RegularizerConfig`` subclass and a
``Regularizer`` subclass with ``name = "<key>"``, ``config_class``, ``needs``, ``requires`` and ``loss``), then add
its line at the end of ``RegularizersConfig`` below. Nothing else imports it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from recon.data.errors import ReconError

from .base import CAPABILITIES, Regularizer
from .convex_mask import ConvexMask, ConvexMaskConfig
from .distortion import Distortion, DistortionConfig
from .flatten import Flatten, FlattenConfig
from .mcmc_l1 import OpacityL1, OpacityL1Config, ScaleL1, ScaleL1Config
from .nearfar import NearFar, NearFarConfig
from .normal_consistency import NormalConsistency, NormalConsistencyConfig
from .sugar import Sugar, SugarConfig
from .tlog import TLog, TLogConfig


def entry(cls: type[Regularizer]) -> Any:
    """A ``RegularizersConfig`` field: the default is ``cls``'s config (off), the class rides in the metadata."""
    return field(default_factory=cls.config_class, metadata={"regularizer": cls})


@dataclass
class RegularizersConfig:
    """One entry per regularizer (``reg.<name>.*`` in presets and ``--set``); all off by default."""

    dist: DistortionConfig = entry(Distortion)  # depth distortion (METHODS §3.2a/b)
    normal: NormalConsistencyConfig = entry(NormalConsistency)  # §3.2e
    sugar: SugarConfig = entry(Sugar)  # SuGaR density/normal/entropy (§3.4)
    nearfar: NearFarConfig = entry(NearFar)  # LE3D near–far (§3.3a)
    tlog: TLogConfig = entry(TLog)  # LE3D coverage (§3.3b)
    flat: FlattenConfig = entry(Flatten)  # PGSR's shortest-axis shrink
    opacity_l1: OpacityL1Config = entry(OpacityL1)  # 3DGS-MCMC's L1 on opacities (logged as opacity_reg)
    scale_l1: ScaleL1Config = entry(ScaleL1)  # 3DGS-MCMC's L1 on scales (logged as scale_reg)
    mask: ConvexMaskConfig = entry(ConvexMask)  # 3DCS's mask loss on convexes (§3.1; configs/convex.yaml)


def _table(config: type) -> dict[str, type[Regularizer]]:
    """{config key: class} in declaration order, checked against the annotations so the two cannot drift apart."""
    hints = get_type_hints(config)
    table: dict[str, type[Regularizer]] = {}
    for f in fields(config):
        cls = f.metadata.get("regularizer")
        if cls is None:
            raise TypeError(f"{config.__name__}.{f.name}: declare it as entry(<Regularizer class>)")
        if hints[f.name] is not cls.config_class or cls.name != f.name:
            raise TypeError(
                f"{config.__name__}.{f.name}: annotated {hints[f.name].__name__}, but {cls.__name__} has "
                f"name {cls.name!r} and config_class {cls.config_class.__name__}"
            )
        table[f.name] = cls
    return table


REGULARIZERS: dict[str, type[Regularizer]] = _table(RegularizersConfig)


def _built(cfg: RegularizersConfig) -> list[tuple[str, Regularizer]]:
    built = [(key, cls(getattr(cfg, key))) for key, cls in REGULARIZERS.items()]
    return [(key, reg) for key, reg in built if reg.enabled()]


def build_regularizers(cfg: RegularizersConfig) -> list[Regularizer]:
    """The regularizers switched on in ``cfg`` (weight > 0; for SuGaR, any of its term weights > 0), in table order."""
    return [reg for _, reg in _built(cfg)]


def check_supported(cfg: RegularizersConfig, capabilities: frozenset[str], what: str) -> None:
    """Refuse, in one line, the first enabled regularizer that needs a capability the representation lacks.

    ``capabilities`` is what the representation offers (names from ``base.CAPABILITIES``); ``what`` describes it
    for the message, e.g. ``"model.primitive=NAME"``. Call it before any work (the run folder included)."""
    have = frozenset(capabilities)
    for key, reg in _built(cfg):
        missing = [c for c in CAPABILITIES if c in reg.requires and c not in have]
        if missing:
            raise ReconError(
                f"reg.{key} needs {CAPABILITIES[missing[0]]}, which {what} lacks; set reg.{key}.weight=0"
            )
