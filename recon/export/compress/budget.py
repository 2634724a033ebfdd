"""How many splats, and which SH band groups, fit a file size.

Why measured, not modelled: gzip's ratio in ``.spz`` depends on the data, so the budget search encodes candidate
files in memory (tens of milliseconds each) and bisects on the splat count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .envelope import apply_band_masks, band_masks, band_norms
from .params import SplatArrays


def band_budget(shN: np.ndarray, degree: int, energy: float) -> list[int]:
    """Per band l = 1..degree, the fewest groups (primitive × band) that hold ``energy`` of its squared norm."""
    norms = band_norms(torch.from_numpy(shN), degree).double() ** 2
    ks = []
    for l in range(degree):
        col = torch.sort(norms[:, l], descending=True).values
        total = float(col.sum())
        if total <= 0 or energy <= 0:
            ks.append(0)
            continue
        share = torch.cumsum(col, 0) / total
        ks.append(min(len(col), int((share < energy).sum()) + 1))
    return ks


def keep_bands(s: SplatArrays, k_bands: list[int]) -> SplatArrays:
    """``s`` with all but the k_l strongest groups of each band zeroed."""
    shN = torch.from_numpy(s.shN.copy())
    degree = len(k_bands)
    apply_band_masks(shN, degree, band_masks(shN, degree, k_bands))
    return replace(s, shN=shN.numpy())


def planned(s: SplatArrays, n: int, degree: int, energy: float) -> tuple[SplatArrays, list[int]]:
    """The first ``n`` splats of ``s`` at SH ``degree`` with the band groups the energy rule keeps."""
    top = s.take(np.arange(n)).with_degree(degree)
    ks = band_budget(top.shN, degree, energy)
    return keep_bands(top, ks), ks


def fit_count(
    s: SplatArrays,  # sorted by decreasing importance
    encode: Callable[[SplatArrays], bytes],
    target_bytes: int,
    degree: int,
    energy: float,
) -> int:
    """The largest n whose file (first n splats, SH planned) is at most ``target_bytes``; 0 if none fits."""
    lo, hi = 0, len(s)
    if len(encode(planned(s, hi, degree, energy)[0])) <= target_bytes:
        return hi
    while hi - lo > max(1, len(s) // 2000):
        mid = (lo + hi) // 2
        if mid > 0 and len(encode(planned(s, mid, degree, energy)[0])) <= target_bytes:
            lo = mid
        else:
            hi = mid
    return lo
