"""A frozen copy of a Gaussian model: what the viewer renders while training goes on changing the real one.

Densification replaces the parameter tensors and the optimizer steps them in place, so the viewer never reads
``trainer.model`` from its own threads: the training thread copies the raw parameters (a few memcpys), and the
viewer's threads activate and convert that copy at their leisure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from recon.models.gaussians import SH_C0, GaussianModel, covariances, file_log_scales_of, render_inputs_of


@dataclass(frozen=True)
class SplatSnapshot:
    params: dict[
        str, torch.Tensor
    ]  # raw parameters as GaussianModel stores them (log scales, logit opacities)
    sh_degree: int  # the SH degree to render with (the active one during training)
    step: int | None = None
    primitive: str = "gaussian3d"  # what the parameters describe, as GaussianModel.primitive

    @classmethod
    def of(cls, model: GaussianModel, sh_degree: int | None = None, step: int | None = None) -> SplatSnapshot:
        with torch.no_grad():
            params = {k: v.detach().to("cpu", copy=True) for k, v in model.params.items()}
        return cls(params, model.sh_degree if sh_degree is None else int(sh_degree), step, model.primitive)

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @cached_property
    def render_inputs(self) -> dict:
        """`recon.render.rasterize` keyword arguments (colors as SH coefficients [N,K,3], and the primitive)."""
        return render_inputs_of(self.params, self.primitive)

    def splat_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(centers [N,3], covariances [N,3,3], rgbs [N,3] in [0,1], opacities [N,1]) for viser's splat renderer.

        Σ = R diag(s²) Rᵀ with R from the normalised wxyz quaternion (surfels as flat Gaussians); the colour is the
        view-independent SH term (the browser renderer has no SH), clamped as the rasterizer clamps it.
        """
        p = self.params
        with torch.no_grad():
            cov = covariances(p["quats"].float(), torch.exp(file_log_scales_of(p["scales"], self.primitive)))
            rgb = (p["sh0"][:, 0, :].float() * SH_C0 + 0.5).clamp(0.0, 1.0)
            opa = torch.sigmoid(p["opacities"].float())[:, None]
        return p["means"].float().numpy(), cov.numpy(), rgb.numpy(), opa.numpy()
