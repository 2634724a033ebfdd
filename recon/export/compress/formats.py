"""The compressed formats ``recon compress`` writes, by file suffix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recon.data.errors import ReconError

from .compressed_ply import encode_compressed_ply
from .params import SplatArrays
from .spz import encode_spz


@dataclass(frozen=True)
class Format:
    name: str
    encode: Callable[[SplatArrays], bytes]
    # per-primitive SH zeros cost next to nothing (entropy coded): keep the model's SH degree and let the
    # envelope choose band groups; otherwise every splat pays for every band, so default to degree 0
    entropy_coded: bool


FORMATS: dict[str, Format] = {
    ".spz": Format("spz", encode_spz, entropy_coded=True),
    ".ply": Format("compressed PLY", encode_compressed_ply, entropy_coded=False),
}


def format_for(path: str | Path) -> Format:
    """The format ``path``'s suffix names; a ReconError listing the choices otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ReconError(
            f"--out {path}: recon compress writes {' or '.join(FORMATS)} (spz, or the compressed PLY "
            "SuperSplat reads); choose a file name with one of those suffixes"
        )
    return FORMATS[suffix]
