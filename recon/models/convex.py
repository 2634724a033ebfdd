"""Smooth convexes (3D Convex Splatting, METHODS.md §3.1) behind the ``Representation`` interface.

A convex is K points whose smoothed convex hull is the primitive (the kernel: ``recon.render.convex``). Parameters,
stored unconstrained in one dict so densification adds and removes rows of every tensor alike:

- ``points`` [N,K,3] free; ``delta`` [N] = log δ (smoothness), ``sigma`` [N] = log σ (sharpness);
- ``opacities`` [N] logit; ``mask`` [N] raw mask m, gating the opacity with the straight-through hard gate
  ŝ = (1[sigmoid(m) > MASK_THRESHOLD] − sigmoid(m)).detach() + sigmoid(m) (the forward is the hard gate, the
  gradient that of sigmoid(m));
- ``sh0`` [N,1,3], ``shN`` [N,B,3] SH colour evaluated at the centre (the mean of the points).

Initialisation from SfM points: K points on a Fibonacci sphere of radius ``init_size``·√(mean squared distance to
the 3 nearest neighbours) around each point, δ = ``delta_init``/√dist2, σ = ``sigma_init``, opacity 0.1, mask 1.
The model file is ``convexes.ply`` (``convex_ply.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from recon.data.errors import ReconError
from recon.render import RenderOutputs, rasterize, resolve_backend
from recon.render.convex import EDGES_MAX

from .base import GaussianCloud, Representation, Traits, rgb_to_sh0, sh0_to_rgb
from .convex_ply import read_convex_ply, write_convex_ply

log = logging.getLogger("recon")

__all__ = ["ConvexModel", "fibonacci_sphere", "mask_gate", "MASK_THRESHOLD"]

PRIMITIVE = "convex"
MASK_THRESHOLD = 0.01  # a convex whose sigmoid(mask) is at most this is switched off (and pruned)
# A convex previewed as a Gaussian: the points' covariance times this (points on a sphere of radius r have
# covariance r²/3; a Gaussian drawn to about 2σ ≈ r wants r²/4).
PREVIEW_COVARIANCE = 0.75


def fibonacci_sphere(k: int) -> np.ndarray:
    """[k,3] unit vectors: z = 1 − 2i/(k−1), θ = π(3 − √5)·i (3DCS's initial points)."""
    i = np.arange(k, dtype=np.float64)
    z = 1.0 - 2.0 * i / max(k - 1, 1)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    theta = math.pi * (3.0 - math.sqrt(5.0)) * i
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)


def mask_gate(mask: Tensor) -> Tensor:
    """The straight-through hard gate ŝ of the raw mask: 0/1 forward, sigmoid's gradient backward."""
    soft = torch.sigmoid(mask)
    hard = (soft > MASK_THRESHOLD).to(soft.dtype)
    return (hard - soft).detach() + soft


def _mean_sq_knn(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean squared distance to the k nearest neighbours (3DGS's distCUDA2), at least 1e-7."""
    if len(xyz) < 2:
        return np.full(len(xyz), 1e-4, dtype=np.float64)
    kk = min(k, len(xyz) - 1)
    dist, _ = cKDTree(xyz).query(xyz, k=kk + 1)
    return np.maximum((dist[:, 1:] ** 2).mean(axis=1), 1e-7)


class ConvexModel(Representation):
    """N smooth convexes of K points each with SH colour of degree up to ``sh_degree``."""

    kind = "splats"  # primitives composited by the rasterizer, like Gaussians and surfels
    primitives = (PRIMITIVE,)
    file_name = "convexes.ply"
    PARAM_NAMES = ("points", "delta", "sigma", "opacities", "mask", "sh0", "shN")

    def __init__(self, params: dict[str, Tensor], sh_degree: int):
        self.params = torch.nn.ParameterDict(
            {k: v if isinstance(v, torch.nn.Parameter) else torch.nn.Parameter(v) for k, v in params.items()}
        )
        missing = [k for k in self.PARAM_NAMES if k not in self.params]
        if missing:
            raise ReconError(f"convex model lacks {missing}; it was not written by recon's convex model")
        self.sh_degree = int(sh_degree)

    @property
    def primitive(self) -> str:
        return PRIMITIVE

    @property
    def points_per_convex(self) -> int:
        return int(self.params["points"].shape[1])

    # ----- construction -----
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray,
        rgb: np.ndarray,
        sh_degree: int = 3,
        points: int = 6,
        init_size: float = 1.2,
        delta_init: float = 0.1,
        sigma_init: float = 0.00095,
        init_opacity: float = 0.1,
    ) -> ConvexModel:
        """3DCS initialisation around each point (see the module docstring)."""
        if not 3 <= points <= EDGES_MAX:
            raise ReconError(f"model.convex.points is {points}; use 3 to {EDGES_MAX} points per convex")
        xyz = np.asarray(xyz, dtype=np.float64)
        rgb = np.asarray(rgb)
        rgb = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
        n = len(xyz)
        dist2 = _mean_sq_knn(xyz)
        radius = init_size * np.sqrt(dist2)
        pts = xyz[:, None, :] + radius[:, None, None] * fibonacci_sphere(points)[None]
        params = {
            "points": torch.from_numpy(pts.astype(np.float32)),
            "delta": torch.from_numpy(np.log(delta_init / np.sqrt(dist2)).astype(np.float32)),
            "sigma": torch.full((n,), math.log(sigma_init)),
            "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "mask": torch.ones(n),
            "sh0": rgb_to_sh0(torch.from_numpy(rgb))[:, None, :].clone(),
            "shN": torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3),
        }
        return cls(params, sh_degree)

    @classmethod
    def initialize(cls, scene: Any, model_cfg: Any, seed: int) -> ConvexModel:
        """From the scene's sparse points, or ``init_random_points`` random ones around the cameras."""
        m, c = model_cfg, model_cfg.convex
        shape = dict(
            sh_degree=m.sh_degree,
            points=c.points,
            init_size=c.init_size * m.init_scale,
            delta_init=c.delta_init,
            sigma_init=c.sigma_init,
            init_opacity=m.init_opacity,
        )
        if scene.points is not None and len(scene.points) > 0:
            rgb = (
                scene.points_rgb
                if scene.points_rgb is not None
                else np.full((len(scene.points), 3), 128, np.uint8)
            )
            return cls.from_points(scene.points, rgb, **shape)
        centers = scene.cameras.centers
        lo, hi = centers.min(0), centers.max(0)
        pad = 0.5 * (hi - lo).max()
        rng = np.random.default_rng(seed)
        log.info("scene has no sparse points: starting from %d random convexes", m.init_random_points)
        xyz = rng.uniform(lo - pad, hi + pad, size=(m.init_random_points, 3))
        return cls.from_points(xyz, rng.uniform(0, 1, size=(len(xyz), 3)).astype(np.float32), **shape)

    # ----- what it is -----
    @classmethod
    def traits(cls, model_cfg: Any) -> Traits:
        return Traits(
            label=f"model.primitive={PRIMITIVE}",
            capabilities=cls.CAPABILITIES,
            resolve_backend=lambda backend: resolve_backend(backend, torch.device("cpu"), PRIMITIVE),
        )

    # per-pixel contributor ids (compositor), the 3DCS mask, and hull rows for 3DCS densification
    CAPABILITIES = frozenset({"contributors", "mask", "hulls"})

    @property
    def capabilities(self) -> frozenset[str]:
        return self.CAPABILITIES

    @property
    def label(self) -> str:
        return f"model.primitive={PRIMITIVE}"

    @property
    def noun(self) -> str:
        return "convexes"

    @property
    def max_sh_degree(self) -> int:
        return self.sh_degree

    def __len__(self) -> int:
        return self.params["points"].shape[0]

    # ----- rendering -----
    def backends(self) -> tuple[str, ...]:
        from recon.render.primitives import get_primitive

        return get_primitive(PRIMITIVE).backends

    def activated(self) -> dict[str, Tensor]:
        """Centres, points, δ, σ, gated opacities and SH coefficients as the rasterizer takes them."""
        p = self.params
        return {
            "points": p["points"],
            "delta": torch.exp(p["delta"]),
            "sigma": torch.exp(p["sigma"]),
            "opacities": torch.sigmoid(p["opacities"]) * mask_gate(p["mask"]),
            "colors": torch.cat([p["sh0"], p["shN"]], dim=1),
        }

    def render(
        self,
        viewmats: Tensor,
        Ks: Tensor,
        width: int,
        height: int,
        outputs: Sequence[str] = ("rgb",),
        *,
        sh_degree: int | None = None,
        backgrounds: Tensor | None = None,
        backend: str = "auto",
        absgrad: bool = False,
    ) -> tuple[RenderOutputs, dict[str, Any]]:
        """Render through the shared compositor; ``info["sigma"]`` is the activated σ [N] with its gradient
        retained (3DCS densification reads ∂L/∂σ)."""
        a = self.activated()
        sigma = a["sigma"]
        if sigma.requires_grad:
            sigma.retain_grad()
        out, info = rasterize(
            means=a["points"].mean(1),
            quats=None,
            scales=None,
            opacities=a["opacities"],
            colors=a["colors"],
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            sh_degree=self.sh_degree if sh_degree is None else sh_degree,
            backgrounds=backgrounds,
            absgrad=absgrad,
            outputs=outputs,
            backend=backend,
            primitive=PRIMITIVE,
            shape=(a["points"], a["delta"], sigma),
        )
        info["sigma"] = sigma
        return out, info

    # ----- training -----
    def learning_rates(self, optim: Any, extent: float, progress: float = 0.0) -> dict[str, float]:
        """3DCS: points decay exponentially from points_lr to points_lr_final, not scaled by the extent."""
        t = min(max(progress, 0.0), 1.0)
        points_lr = math.exp(math.log(optim.points_lr) * (1 - t) + math.log(optim.points_lr_final) * t)
        return {
            "points": points_lr,
            "delta": optim.delta_lr,
            "sigma": optim.sigma_lr,
            "opacities": optim.opacities_lr,
            "mask": optim.mask_lr,
            "sh0": optim.sh0_lr,
            "shN": optim.shN_lr,
        }

    position_param = "points"

    # ----- persistence -----
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "primitive": PRIMITIVE,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "sh_degree": self.sh_degree,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConvexModel:
        return cls({k: v.clone() for k, v in state["params"].items()}, state["sh_degree"])

    def save(self, path: str | Path) -> None:
        write_convex_ply(path, {k: v.detach().cpu().float().numpy() for k, v in self.params.items()})

    @classmethod
    def load(cls, path: str | Path, **hints: Any) -> ConvexModel:
        params, degree = read_convex_ply(path)
        return cls(params, degree)

    # ----- viewing -----
    @torch.no_grad()
    def preview(self) -> GaussianCloud:
        """Each convex as the Gaussian of its points' moments (centre, PREVIEW_COVARIANCE × covariance), with
        its gated opacity and degree-0 colour."""
        a = {k: v.detach().cpu().float() for k, v in self.activated().items()}
        pts = a["points"]
        centre = pts.mean(1)
        d = (pts - centre[:, None]).double()
        cov = PREVIEW_COVARIANCE * d.transpose(1, 2) @ d / pts.shape[1]
        evals, evecs = torch.linalg.eigh(cov)
        evecs = evecs * torch.where(torch.linalg.det(evecs) < 0, -1.0, 1.0).to(evecs.dtype)[:, None, None]
        scales = evals.clamp_min(1e-12).sqrt().float()
        return GaussianCloud(
            means=centre.numpy(),
            quats=_rotmat_to_quat(evecs).float().numpy(),
            scales=scales.numpy(),
            opacities=a["opacities"].numpy(),
            rgb=sh0_to_rgb(self.params["sh0"].detach().cpu().float()[:, 0, :]).clamp(0.0, 1.0).numpy(),
        )


def _rotmat_to_quat(R: Tensor) -> Tensor:
    """Unit quaternions wxyz [N,4] of rotation matrices [N,3,3] (Shepperd's method: the largest of the four
    candidate components is computed first, the others from it, so no division is near zero)."""
    m = R
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cand = torch.stack([tr, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], dim=1)
    k = cand.argmax(1)
    q = torch.zeros(R.shape[0], 4, dtype=R.dtype)
    s = torch.sqrt((1.0 + 2.0 * cand.gather(1, k[:, None])[:, 0] - tr).clamp_min(1e-12)) * 2.0  # 4·|q_k|
    w = k == 0
    q[w, 0] = 0.25 * s[w]
    q[w, 1] = (m[w, 2, 1] - m[w, 1, 2]) / s[w]
    q[w, 2] = (m[w, 0, 2] - m[w, 2, 0]) / s[w]
    q[w, 3] = (m[w, 1, 0] - m[w, 0, 1]) / s[w]
    x = k == 1
    q[x, 0] = (m[x, 2, 1] - m[x, 1, 2]) / s[x]
    q[x, 1] = 0.25 * s[x]
    q[x, 2] = (m[x, 0, 1] + m[x, 1, 0]) / s[x]
    q[x, 3] = (m[x, 0, 2] + m[x, 2, 0]) / s[x]
    y = k == 2
    q[y, 0] = (m[y, 0, 2] - m[y, 2, 0]) / s[y]
    q[y, 1] = (m[y, 0, 1] + m[y, 1, 0]) / s[y]
    q[y, 2] = 0.25 * s[y]
    q[y, 3] = (m[y, 1, 2] + m[y, 2, 1]) / s[y]
    z = k == 3
    q[z, 0] = (m[z, 1, 0] - m[z, 0, 1]) / s[z]
    q[z, 1] = (m[z, 0, 2] + m[z, 2, 0]) / s[z]
    q[z, 2] = (m[z, 1, 2] + m[z, 2, 1]) / s[z]
    q[z, 3] = 0.25 * s[z]
    return q / q.norm(dim=1, keepdim=True)
