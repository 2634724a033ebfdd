"""The splats a compressed file holds, as plain numpy arrays in the 3DGS PLY's conventions.

Why: every writer (spz, compressed PLY, gsplat's PNGs) and the budget search work on the same arrays; keeping them
out of torch and out of the model makes writers pure functions of data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class SplatArrays:
    means: np.ndarray  # [N,3]
    scales: np.ndarray  # [N,3] log scales as files store them
    quats: np.ndarray  # [N,4] wxyz, any norm
    opacities: np.ndarray  # [N] logit
    sh0: np.ndarray  # [N,1,3] DC coefficient
    shN: np.ndarray  # [N,K,3] higher coefficients, K = (degree+1)²−1
    primitive: str = "gaussian3d"

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.shN.shape[1] + 1))) - 1

    def take(self, index: np.ndarray) -> SplatArrays:
        """The splats at ``index`` (indices or a boolean mask), in that order."""
        return replace(
            self,
            **{k: getattr(self, k)[index] for k in ("means", "scales", "quats", "opacities", "sh0", "shN")},
        )

    def with_degree(self, degree: int) -> SplatArrays:
        """The same splats with SH cut to ``degree`` (or zero-padded up to it)."""
        k = (degree + 1) ** 2 - 1
        sh = self.shN[:, :k]
        if sh.shape[1] < k:
            sh = np.concatenate([sh, np.zeros((len(self), k - sh.shape[1], 3), np.float32)], axis=1)
        return replace(self, shN=sh)

    def torch_params(self) -> dict[str, torch.Tensor]:
        """Raw parameters as ``SplatModel`` keeps them."""
        names = ("means", "scales", "quats", "opacities", "sh0", "shN")
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), np.float32)) for k in names}

    @classmethod
    def from_params(cls, params: dict[str, torch.Tensor], primitive: str = "gaussian3d") -> SplatArrays:
        p = {k: v.detach().cpu().float().numpy() for k, v in params.items()}
        return cls(p["means"], p["scales"], p["quats"], p["opacities"], p["sh0"], p["shN"], primitive)

    @classmethod
    def from_model(cls, model) -> SplatArrays:
        """A splat model's primitives with the log scales its files show (``file_log_scales``)."""
        arrays = cls.from_params(dict(model.params.items()), model.primitive)
        return replace(arrays, scales=model.file_log_scales().detach().cpu().float().numpy())
