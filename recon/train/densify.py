"""Which densifier a run gets: ``strategy.kind`` picks it, and each kind needs a capability of the representation
(checked before the run folder is touched, in one line)."""

from __future__ import annotations

from recon.data.errors import ReconError

from .config import StrategyConfig
from .convex_strategy import ConvexDensifier
from .strategies import Densifier, StrategyDensifier, make_strategy

# strategy.kind -> (the capability it edits, how messages name that)
STRATEGY_NEEDS: dict[str, tuple[str, str]] = {
    "default": ("primitives", "per-Gaussian means, scales and quats"),
    "mcmc": ("primitives", "per-Gaussian means, scales and quats"),
    "convex": ("hulls", "convex hull points"),
}
# the strategy a representation with that capability wants, for the message
_SUGGEST = {"primitives": "default", "hulls": "convex"}


def check_strategy(cfg: StrategyConfig, capabilities: frozenset[str], label: str) -> None:
    """Refuse a strategy whose rows the representation lacks; representations without rows need none."""
    need, words = STRATEGY_NEEDS[cfg.kind]
    if need in capabilities or not ({"primitives", "hulls"} & capabilities):
        return
    have = next(c for c in ("primitives", "hulls") if c in capabilities)
    raise ReconError(
        f"strategy.kind={cfg.kind} edits {words}, which {label} does not have; "
        f"use --set strategy.kind={_SUGGEST[have]}, or a preset made for it (configs/*.yaml)"
    )


def make_densifier(
    cfg: StrategyConfig, steps: int, cap: int, capabilities: frozenset[str], params, optimizers, extent: float
) -> Densifier:
    """The configured strategy for a representation with per-primitive rows; none for one without."""
    need, _ = STRATEGY_NEEDS[cfg.kind]
    if need not in capabilities:
        return Densifier()
    if cfg.kind == "convex":
        return ConvexDensifier(cfg.convex, steps, cap, params, extent)
    return StrategyDensifier(make_strategy(cfg, steps, cap), params, optimizers, extent, cap)
