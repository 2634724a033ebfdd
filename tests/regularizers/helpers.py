"""Small analytic scenes for the regularizer tests: one camera at the origin looking down +z (OpenCV axes)."""

from __future__ import annotations

import math

import torch

from recon.regularizers.base import RegContext
from recon.render import rasterize


def camera(size: int = 16, f: float | None = None, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity world-to-camera; principal point on the centre of pixel (size//2, size//2)."""
    f = float(size) if f is None else f
    c = size // 2 + 0.5
    K = torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype)[None], K[None]


def quat_about_x(deg: float, n: int, dtype=torch.float64) -> torch.Tensor:
    h = math.radians(deg) / 2
    return torch.tensor([math.cos(h), math.sin(h), 0.0, 0.0], dtype=dtype).repeat(n, 1)


def params_of(means, quats, scales, opacities) -> torch.nn.ParameterDict:
    """A model-style ParameterDict (log scales, logit opacities) holding the given activated values."""
    n = means.shape[0]
    return torch.nn.ParameterDict(
        {
            "means": torch.nn.Parameter(means.clone()),
            "quats": torch.nn.Parameter(quats.clone()),
            "scales": torch.nn.Parameter(torch.log(scales)),
            "opacities": torch.nn.Parameter(torch.logit(opacities)),
            "sh0": torch.nn.Parameter(torch.zeros(n, 1, 3, dtype=means.dtype)),
            "shN": torch.nn.Parameter(torch.zeros(n, 0, 3, dtype=means.dtype)),
        }
    )


def render(params, viewmats, Ks, size, outputs, backend: str = "reference"):
    return rasterize(
        means=params["means"],
        quats=params["quats"],
        scales=torch.exp(params["scales"]),
        opacities=torch.sigmoid(params["opacities"]),
        colors=torch.zeros(params["means"].shape[0], 3, dtype=params["means"].dtype),
        viewmats=viewmats,
        Ks=Ks,
        width=size,
        height=size,
        outputs=outputs,
        backend=backend,
    )


def context(params, viewmats, Ks, size, outputs, step: int = 0, backend: str = "reference") -> RegContext:
    out, info = render(params, viewmats, Ks, size, outputs, backend)
    return RegContext(
        outputs=out, info=info, params=params, step=step, viewmats=viewmats, Ks=Ks, width=size, height=size,
        backend=backend,
    )  # fmt: skip


def plane_grid(
    z: float, half: float, spacing: float, opacity: float, tilt_deg: float = 0.0, dtype=torch.float64
):
    """Flat Gaussians (thin along their normal) on a square grid in the plane at depth z, normals tilted about x."""
    xs = torch.arange(-half, half + 1e-9, spacing, dtype=dtype)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    n = X.numel()
    means = torch.stack([X.flatten(), Y.flatten(), torch.full((n,), z, dtype=dtype)], -1)
    scales = torch.tensor([spacing, spacing, 1e-3 * spacing], dtype=dtype).repeat(n, 1)
    return means, quat_about_x(tilt_deg, n, dtype), scales, torch.full((n,), opacity, dtype=dtype)
