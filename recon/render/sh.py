"""Real spherical harmonics (degrees 0-3) for view-dependent colour, in plain torch with autograd.

The constants and the basis ordering are those of 3DGS and gsplat (``gsplat/cuda/_torch_impl.py``,
``_eval_sh_bases_fast``), so SH coefficients trained here load in other 3DGS viewers and the other backends agree
with this module to float rounding. The C++ kernels' tests import the constants below rather than restating them.

Basis index k, for a unit direction (x, y, z):

    k=0      C0
    k=1..3   -C1 y,  C1 z,  -C1 x
    k=4..8   C2[0] xy,  C2[1] yz,  C2[2] (2z² - x² - y²),  C2[3] xz,  C2[4] (x² - y²)
    k=9..15  C3[0] y(3x² - y²),  C3[1] xyz,  C3[2] y(4z² - x² - y²),  C3[3] z(2z² - 3x² - 3y²),
             C3[4] x(4z² - x² - y²),  C3[5] z(x² - y²),  C3[6] x(x² - 3y²)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "MAX_SH_DEGREE",
    "num_sh_bases",
    "sh_basis",
    "eval_sh",
    "camera_centers",
    "colors_from_sh",
]

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def num_sh_bases(sh_degree: int) -> int:
    """Number of coefficients a degree-``sh_degree`` expansion uses: (d+1)²."""
    return (sh_degree + 1) ** 2


def _check_degree(sh_degree: int) -> None:
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")


def sh_basis(sh_degree: int, dirs: Tensor) -> Tensor:
    """The (d+1)² real SH basis values at ``dirs`` [...,3] (normalised here), shape [..., (d+1)²]."""
    _check_degree(sh_degree)
    d = dirs / dirs.norm(dim=-1, keepdim=True)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if sh_degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if sh_degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if sh_degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(sh_degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Σ_k Y_k(dir) coeff_k over the first (d+1)² coefficients: coeffs [...,K,3], dirs [...,3] -> [...,3].

    ``dirs`` need not be unit length; it is normalised inside (as gsplat does), so the gradient w.r.t. ``dirs``
    is the tangential one and any positive rescaling of a direction changes nothing.
    """
    n = num_sh_bases(sh_degree)
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh_degree {sh_degree} needs K >= {n} coefficients, got K = {coeffs.shape[-2]}")
    basis = sh_basis(sh_degree, dirs)  # [..., n]
    return (basis.unsqueeze(-1) * coeffs[..., :n, :]).sum(dim=-2)


def camera_centers(viewmats: Tensor) -> Tensor:
    """World positions of the cameras of world-to-camera ``viewmats`` [C,4,4]: -Rᵀt, [C,3]."""
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    return -(R.transpose(1, 2) @ t.unsqueeze(-1)).squeeze(-1)


def colors_from_sh(sh_degree: int, coeffs: Tensor, means: Tensor, viewmats: Tensor) -> Tensor:
    """Per-camera RGB from SH: clamp_min(eval_sh(normalise(mean - campos)) + 0.5, 0), shape [C,N,3].

    ``coeffs`` is [N,K,3] (shared by all cameras) or [C,N,K,3]; ``means`` [N,3]; ``viewmats`` [C,4,4] are treated
    as constants (no camera-pose gradient). The +0.5 offset is the 3DGS convention that makes zero coefficients grey.
    """
    C = viewmats.shape[0]
    if coeffs.dim() == 3:
        coeffs = coeffs.unsqueeze(0).expand(C, *coeffs.shape)
    if coeffs.dim() != 4 or coeffs.shape[-1] != 3:
        raise ValueError(f"SH coefficients must be [N,K,3] or [C,N,K,3], got {tuple(coeffs.shape)}")
    campos = camera_centers(viewmats.detach()).to(means.dtype)
    dirs = means.unsqueeze(0) - campos[:, None, :]  # [C,N,3]
    return torch.clamp_min(eval_sh(sh_degree, coeffs, dirs) + 0.5, 0.0)
