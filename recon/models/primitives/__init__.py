"""The splat primitives a ``SplatModel`` can hold, by ``model.primitive``: one descriptor each.

Adding one: its rasterizer descriptor (``recon/render/primitives.py``), a module here with its ``SplatPrimitive``,
and one entry in ``SPLAT_PRIMITIVES``.
"""

from __future__ import annotations

from recon.data.errors import ReconError

from .base import SplatPrimitive
from .gaussian3d import GAUSSIAN3D
from .surfel2d import SURFEL2D

SPLAT_PRIMITIVES: dict[str, SplatPrimitive] = {p.name: p for p in (GAUSSIAN3D, SURFEL2D)}
DEFAULT_PRIMITIVE = GAUSSIAN3D.name


def splat_primitive(name: str) -> SplatPrimitive:
    """The descriptor of ``name``; a ReconError naming the choices for an unknown one."""
    try:
        return SPLAT_PRIMITIVES[name]
    except KeyError:
        raise ReconError(f"unknown primitive {name!r}; choose from {', '.join(SPLAT_PRIMITIVES)}") from None


__all__ = ["SplatPrimitive", "SPLAT_PRIMITIVES", "DEFAULT_PRIMITIVE", "splat_primitive"]
