"""The sparse envelope function (METHODS.md §4.6, WGSEF): SEF_k(x) = ½‖x‖²_(k-sp), the convex envelope of ½‖x‖²
over k-sparse vectors, its proximal map, and the group version that rescales whole groups.

Why: a penalty whose prox zeroes all but about k groups while only shrinking (not thresholding) the strongest ones
lets a short fine-tune decide which k primitives or SH bands survive, with the loss in the loop, instead of a
one-shot magnitude cut.

The prox of λ·SEF_k at v (|v| sorted: a) has three parts set by one threshold μ ≥ 0:
    a_i ≤ μ             → 0
    μ < a_i ≤ μ(1+λ)/λ  → a_i − μ            (soft threshold)
    a_i > μ(1+λ)/λ      → a_i / (1+λ)        (ridge shrink)
with μ the positive root of Σ_i min((a_i − μ)₊, μ/λ) = k·μ/λ (μ = 0, the ridge alone, when at most k entries are
non-zero). That is Argyriou, Foygel & Srebro's (2012) Algorithm 1 written around μ; Σ_i min(...)/μ falls with μ,
so the root is unique: bisection over the 2d breakpoints brackets it, and it is exact inside its bracket; O(d log d).
"""

from __future__ import annotations

import torch
from torch import Tensor


def ksupport_norm_sq(x: Tensor, k: int) -> Tensor:
    """‖x‖²_(k-sp) of a vector: Σ_{i<k−r}(|x|↓_i)² + (Σ_{i≥k−r}|x|↓_i)²/(r+1), with r the unique integer of §4.6."""
    a = torch.sort(x.abs().flatten().double(), descending=True).values
    d = a.numel()
    if k >= d:
        return (a**2).sum()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    tail = torch.flip(torch.cumsum(torch.flip(a, [0]), 0), [0])  # tail[j] = Σ_{i≥j} a_i (0-based)
    for r in range(k):
        j = k - r - 1  # 0-based index of |x|↓_{k−r}
        mean = tail[j] / (r + 1)
        above = a[j - 1] if j >= 1 else torch.tensor(float("inf"), dtype=a.dtype)
        if above > mean >= a[j]:
            return (a[:j] ** 2).sum() + tail[j] ** 2 / (r + 1)
    return (a[: k - 1] ** 2).sum() + tail[0] ** 2 / k  # not reached for finite input


def sef(x: Tensor, k: int) -> Tensor:
    """SEF_k(x) = ½‖x‖²_(k-sp): ½‖x‖₁² for k = 1, ½‖x‖₂² for k ≥ d."""
    return 0.5 * ksupport_norm_sq(x, k)


def envelope_threshold(a: Tensor, k: int, lam: float) -> Tensor:
    """μ of the prox of ``lam``·SEF_k at magnitudes ``a`` ≥ 0 (1-D): 0 when at most k are non-zero."""
    if lam <= 0:
        raise ValueError(f"the prox strength must be positive, got {lam}")
    a = a.double()
    if int((a > 0).sum()) <= k:
        return a.new_zeros(())
    srt = torch.sort(a).values  # ascending
    prefix = torch.cat([a.new_zeros(1), torch.cumsum(srt, 0)])
    total = prefix[-1]
    ratio = (1 + lam) / lam

    def sets(mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(#top, #plateau, Σ plateau) at thresholds ``mu``: top a > μ(1+λ)/λ, plateau μ < a ≤ μ(1+λ)/λ."""
        n_le_mu = torch.searchsorted(srt, mu, right=True)
        n_le_top = torch.searchsorted(srt, mu * ratio, right=True)
        n_top = srt.numel() - n_le_top
        return n_top, n_le_top - n_le_mu, prefix[n_le_top] - prefix[n_le_mu]

    def excess(mu: Tensor) -> Tensor:
        """Σ min((a−μ)₊, μ/λ) − kμ/λ, divided by μ: non-increasing in μ."""
        n_top, n_mid, s_mid = sets(mu)
        return (s_mid - mu * n_mid + (n_top - k) * mu / lam) / mu

    def last_non_negative(cands: Tensor) -> int:
        """Index of the last of the ascending ``cands`` where the non-increasing excess is ≥ 0 (bisection)."""
        lo, hi = -1, cands.numel()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if float(excess(cands[mid : mid + 1])[0]) >= 0:
                lo = mid
            else:
                hi = mid
        return lo

    lo, hi = a.new_zeros(()), total + 1  # the root lies between two consecutive breakpoints
    for cands in (srt[srt > 0], srt[srt > 0] / ratio):
        i = last_non_negative(cands)
        if i >= 0:
            lo = torch.maximum(lo, cands[i])
        if i + 1 < cands.numel():
            hi = torch.minimum(hi, cands[i + 1])
    n_top, n_mid, s_mid = sets(((lo + hi) / 2)[None])  # the sets are fixed between two breakpoints
    denom = n_mid + (k - n_top) / lam
    return (s_mid / denom)[0] if float(denom[0]) > 0 else lo


def prox_sef(v: Tensor, k: int, lam: float) -> Tensor:
    """argmin_w ½‖w − v‖² + lam·SEF_k(w) for a 1-D ``v`` (computed in float64, returned in v's dtype)."""
    a = v.double().abs()
    mu = envelope_threshold(a, k, lam)
    out = torch.where(a > mu * (1 + lam) / lam, a / (1 + lam), (a - mu).clamp_min(0))
    return (torch.sign(v.double()) * out).to(v.dtype)


def group_scale(norms: Tensor, k: int, lam: float) -> Tensor:
    """Per group, the factor the group prox multiplies it by: prox_sef(norms)/norms (0 for empty groups). The
    group penalty SEF_k of the vector of group norms depends on norms only, so its prox rescales each group."""
    shrunk = prox_sef(norms.double(), k, lam)
    n = norms.double()
    return torch.where(n > 0, shrunk / n.clamp_min(1e-300), torch.zeros_like(n)).to(norms.dtype)


def top_k_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest ``scores`` (the hard threshold after a sparsifying fine-tune)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.flatten(), min(k, scores.numel())).indices] = True
    return mask.reshape(scores.shape)
