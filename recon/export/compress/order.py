"""Morton (Z-order) sorting of splats by position.

Why: neighbours in space end up neighbours in the file, so the compressed PLY's 256-splat chunks are small boxes
(finer quantisation of positions and scales) and gzip in ``.spz`` finds repeated bytes; both formats' reference
writers sort this way.
"""

from __future__ import annotations

import numpy as np


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 10 bits of each value (for 3-D interleaving)."""
    v = v.astype(np.uint64) & np.uint64(0x3FF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x030000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x0300F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x030C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x09249249)
    return v


def morton_order(means: np.ndarray) -> np.ndarray:
    """Indices that sort ``means`` [N,3] along a 30-bit Morton curve over their bounding box."""
    if len(means) == 0:
        return np.zeros(0, np.int64)
    lo, hi = means.min(0), means.max(0)
    cells = np.clip((means - lo) / np.maximum(hi - lo, 1e-12) * 1023.0, 0, 1023).astype(np.uint64)
    code = _spread_bits(cells[:, 0]) | (_spread_bits(cells[:, 1]) << np.uint64(1))
    code |= _spread_bits(cells[:, 2]) << np.uint64(2)
    return np.argsort(code, kind="stable")
