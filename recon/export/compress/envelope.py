"""The k-level group envelope on splats (METHODS.md §4.6, "in-app use"): one gate per primitive multiplied into
its opacity (groups = single gates, k = the primitive budget) and one group per primitive and SH band (the band's
(2l+1)·3 coefficients; k_l per band), each pulled toward k non-zero groups by the prox of λ·SEF_k after every
optimizer step of a short fine-tune.

Why: which splats and which view-dependent colours survive is then decided with the photometric loss in the loop
(a gate whose splat the images need is pushed back up by the loss; one they do not need is thresholded to zero),
not by magnitude alone. After the fine-tune the strongest k groups are kept (hard threshold) and the rest removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon.sparsity import group_scale, top_k_mask


def band_slices(degree: int) -> list[slice]:
    """Rows of ``shN`` [N,K,3] that hold each SH band l = 1..degree."""
    return [slice(l * l - 1, (l + 1) ** 2 - 1) for l in range(1, degree + 1)]


def band_norms(shN: Tensor, degree: int) -> Tensor:
    """[N, degree] Euclidean norm of each primitive's coefficients of each band."""
    cols = [shN[:, s].reshape(len(shN), -1).norm(dim=1) for s in band_slices(degree)]
    return torch.stack(cols, dim=1) if cols else shN.new_zeros(len(shN), 0)


@dataclass
class EnvelopeSchedule:
    """Budgets and strengths of the envelope during the sparsifying fine-tune."""

    k_primitives: int  # gates kept
    k_bands: list[int]  # SH band groups kept, per band l = 1..degree
    gate_strength: float  # λ of the gates' prox, per step
    band_strength: float  # λ of the SH bands' prox, per step


class GateOptimizer:
    """Plain gradient steps on the gates with one shared RMS normaliser.

    Why not Adam: Adam gives every gate a unit-size step whatever its gradient's size, so a splat the images barely
    need would resist the prox as strongly as an important one. One normaliser for all gates keeps their gradients'
    relative sizes, which is what lets the prox tell them apart.
    """

    def __init__(self, gates: Tensor, lr: float, beta: float = 0.99):
        self.gates, self.lr, self.beta = gates, lr, beta
        self.mean_sq = 0.0
        self.t = 0

    def step(self) -> None:
        g = self.gates.grad
        if g is None:
            return
        self.t += 1
        self.mean_sq = self.beta * self.mean_sq + (1 - self.beta) * float((g**2).mean())
        rms = (self.mean_sq / (1 - self.beta**self.t)) ** 0.5
        with torch.no_grad():
            self.gates -= self.lr * g / max(rms, 1e-30)
            self.gates.clamp_(0.0, 1.0)
        self.gates.grad = None


@torch.no_grad()
def prox_gates(gates: Tensor, k: int, strength: float) -> None:
    """gates ← prox of strength·SEF_k (each gate a group of one), in place."""
    gates.mul_(group_scale(gates.abs(), k, strength))


@torch.no_grad()
def prox_bands(shN: Tensor, degree: int, k_bands: list[int], strength: float) -> None:
    """Each band's groups (one per primitive) ← the group prox of strength·SEF_{k_l}, in place."""
    norms = band_norms(shN, degree)
    for l, (s, k) in enumerate(zip(band_slices(degree), k_bands)):
        shN[:, s] *= group_scale(norms[:, l], max(k, 1), strength)[:, None, None].to(shN.dtype)


@torch.no_grad()
def band_masks(shN: Tensor, degree: int, k_bands: list[int]) -> Tensor:
    """[N, degree] bool: the k_l strongest groups of each band (the hard threshold after the fine-tune)."""
    norms = band_norms(shN, degree)
    cols = [top_k_mask(norms[:, l], k) for l, k in enumerate(k_bands)]
    return torch.stack(cols, dim=1) if cols else torch.zeros(len(shN), 0, dtype=torch.bool)


@torch.no_grad()
def apply_band_masks(shN: Tensor, degree: int, masks: Tensor) -> None:
    """Zero the band groups outside ``masks``, in place."""
    for l, s in enumerate(band_slices(degree)):
        shN[:, s] *= masks[:, l, None, None].to(shN.dtype)
