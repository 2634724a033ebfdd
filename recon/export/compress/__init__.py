"""Compact splat files: importance (``importance``), the k-level group envelope on gates and SH bands
(``envelope``), size budgets (``budget``), Morton order (``order``), and the writers of ``.spz`` (``spz``) and the
PlayCanvas compressed PLY (``compressed_ply``), by suffix in ``formats``; gsplat's PNG compression as the library
baseline (``gsplat_png``). The run-level pipeline is ``recon/train/compress.py`` (its fine-tunes need the
trainer's pieces)."""

from .formats import FORMATS, format_for
from .options import CompressOptions
from .params import SplatArrays

__all__ = ["FORMATS", "CompressOptions", "SplatArrays", "format_for"]
