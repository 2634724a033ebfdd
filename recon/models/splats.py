"""Splat models: N primitives (3D Gaussians, 2D surfels, ...) with SH colour, behind the ``Representation``
interface; what differs between primitives lives in their descriptors (``primitives/``).

Parameters are stored unconstrained (log scales, logit opacities, raw quaternions) in one dict, one tensor per
name, so gsplat's strategies (which add, split and remove rows of every tensor in the dict) work unchanged. The
model file is the standard 3DGS PLY (``ply.py``), so other splat viewers open it.
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

from recon.render import RenderOutputs, rasterize, resolve_backend
from recon.render.projection import quat_to_rotmat

from .base import SH_C0, GaussianCloud, Representation, Traits, rgb_to_sh0, sh0_to_rgb
from .ply import PLY_COMMENT, read_3dgs_ply, write_3dgs_ply
from .primitives import DEFAULT_PRIMITIVE, SPLAT_PRIMITIVES, SplatPrimitive, splat_primitive

log = logging.getLogger("recon")

__all__ = [
    "SH_C0",
    "SplatModel",
    "covariances",
    "knn_mean_distance",
    "render_inputs_of",
    "rgb_to_sh0",
    "sh0_to_rgb",
]

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def knn_mean_distance(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance of each point to its k nearest neighbours (the 3DGS initial scale)."""
    if len(xyz) < 2:
        return np.full(len(xyz), 0.01, dtype=np.float32)
    kk = min(k, len(xyz) - 1)
    dist, _ = cKDTree(xyz).query(xyz, k=kk + 1)
    d = dist[:, 1:].mean(axis=1)
    return np.maximum(d, 1e-7).astype(np.float32)


def render_inputs_of(params, primitive: str = DEFAULT_PRIMITIVE) -> dict:
    """`recon.render.rasterize` keyword arguments from raw parameters (log scales, logit opacities): activated
    tensors, colors as the SH coefficients [N,K,3], and the primitive type."""
    return {
        "means": params["means"],
        "quats": params["quats"],
        "scales": torch.exp(params["scales"]),
        "opacities": torch.sigmoid(params["opacities"]),
        "colors": torch.cat([params["sh0"], params["shN"]], dim=1),
        "primitive": primitive,
    }


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """[N,3,3] Σ = R·diag(s)²·Rᵀ from raw quaternions (normalised here) and activated scales."""
    r = quat_to_rotmat(quats)
    m = r * scales[:, None, :]
    return m @ m.transpose(1, 2)


class SplatModel(Representation):
    """N splat primitives of one type (``model.primitive``) with SH colour of degree up to ``sh_degree``."""

    kind = "splats"
    primitives = tuple(SPLAT_PRIMITIVES)
    file_name = "splats.ply"
    PARAM_NAMES = PARAM_NAMES

    def __init__(self, params: dict[str, Tensor], sh_degree: int, primitive: str = DEFAULT_PRIMITIVE):
        self.params = torch.nn.ParameterDict(
            {k: v if isinstance(v, torch.nn.Parameter) else torch.nn.Parameter(v) for k, v in params.items()}
        )
        self.sh_degree = int(sh_degree)
        self.spec: SplatPrimitive = splat_primitive(primitive)

    @property
    def primitive(self) -> str:
        return self.spec.name

    # ----- construction -----
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray,
        rgb: np.ndarray,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        primitive: str = DEFAULT_PRIMITIVE,
        seed: int = 0,
    ) -> SplatModel:
        """3DGS initialisation: scale from the 3 nearest neighbours, SH DC from colour; the primitive's
        descriptor turns the scale into its shape and orientation."""
        spec = splat_primitive(primitive)
        xyz = np.asarray(xyz, dtype=np.float32)
        rgb = np.asarray(rgb)
        rgb = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
        n = len(xyz)
        log_scales, quats = spec.init_shape(knn_mean_distance(xyz) * init_scale, seed)
        params = {
            "means": torch.from_numpy(xyz).clone(),
            "scales": log_scales,
            "quats": quats,
            "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "sh0": rgb_to_sh0(torch.from_numpy(rgb))[:, None, :].clone(),
            "shN": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3),
        }
        return cls(params, sh_degree, primitive)

    @classmethod
    def initialize(cls, scene: Any, model_cfg: Any, seed: int) -> SplatModel:
        """From the scene's sparse points (grey where they have no colour), or ``init_random_points`` random ones
        around the cameras when it has none."""
        m = model_cfg
        shape = dict(
            sh_degree=m.sh_degree, init_opacity=m.init_opacity, init_scale=m.init_scale, primitive=m.primitive
        )
        if scene.points is not None and len(scene.points) > 0:
            rgb = (
                scene.points_rgb
                if scene.points_rgb is not None
                else np.full((len(scene.points), 3), 128, np.uint8)
            )
            return cls.from_points(scene.points, rgb, seed=seed, **shape)
        c = scene.cameras.centers
        lo, hi = c.min(0), c.max(0)
        pad = 0.5 * (hi - lo).max()
        log.info(
            "scene has no sparse points: starting from %d random %s",
            m.init_random_points,
            splat_primitive(m.primitive).noun,
        )
        return cls.random_in_box(lo - pad, hi + pad, m.init_random_points, seed=seed, **shape)

    @classmethod
    def random_in_box(cls, lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0, **kwargs) -> SplatModel:
        """Primitives uniformly in an axis-aligned box with random colours (for scenes without sparse points)."""
        rng = np.random.default_rng(seed)
        xyz = rng.uniform(lo, hi, size=(n, 3)).astype(np.float32)
        rgb = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
        return cls.from_points(xyz, rgb, seed=seed, **kwargs)

    # ----- what it is -----
    @classmethod
    def traits(cls, model_cfg: Any) -> Traits:
        spec = splat_primitive(model_cfg.primitive)
        return Traits(
            label=f"model.primitive={spec.name}",
            capabilities=spec.capabilities,
            resolve_backend=lambda backend: resolve_backend(backend, torch.device("cpu"), spec.name),
        )

    @property
    def capabilities(self) -> frozenset[str]:
        return self.spec.capabilities

    @property
    def label(self) -> str:
        return f"model.primitive={self.primitive}"

    @property
    def noun(self) -> str:
        return self.spec.noun

    @property
    def max_sh_degree(self) -> int:
        return self.sh_degree

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    # ----- rendering -----
    def backends(self) -> tuple[str, ...]:
        return self.spec.raster.backends

    def render_inputs(self) -> dict:
        """`recon.render.rasterize` keyword arguments: activated tensors (colors are SH coefficients [N,K,3]) and
        the primitive type."""
        return render_inputs_of(self.params, self.primitive)

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
        return rasterize(
            **self.render_inputs(),
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            sh_degree=self.sh_degree if sh_degree is None else sh_degree,
            backgrounds=backgrounds,
            absgrad=absgrad,
            outputs=outputs,
            backend=backend,
        )

    # ----- training -----
    def learning_rates(self, optim: Any, extent: float, progress: float = 0.0) -> dict[str, float]:
        """3DGS: means decay exponentially from means_lr to means_lr_final, times the scene extent."""
        t = min(max(progress, 0.0), 1.0)
        means_lr = math.exp(math.log(optim.means_lr) * (1 - t) + math.log(optim.means_lr_final) * t)
        return {
            "means": means_lr * extent,
            "scales": optim.scales_lr,
            "quats": optim.quats_lr,
            "opacities": optim.opacities_lr,
            "sh0": optim.sh0_lr,
            "shN": optim.shN_lr,
        }

    # ----- persistence -----
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "sh_degree": self.sh_degree,
            "primitive": self.primitive,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SplatModel:
        params = {k: v.clone() for k, v in state["params"].items()}
        return cls(params, state["sh_degree"], state.get("primitive", DEFAULT_PRIMITIVE))

    def file_log_scales(self) -> Tensor:
        """[N,3] float32 CPU log scales as splat files and viewers show them (the primitive's descriptor)."""
        return self.spec.file_log_scales(self.params["scales"])

    def save(self, path: str | Path) -> None:
        """Write the 3DGS PLY; the header names the primitive type in a comment."""
        p = {k: v.detach().cpu().float().numpy() for k, v in self.params.items()}
        p["scales"] = self.file_log_scales().numpy()
        write_3dgs_ply(path, p, [PLY_COMMENT + self.primitive])

    save_ply = save

    @classmethod
    def load(cls, path: str | Path, primitive: str | None = None, **hints: Any) -> SplatModel:
        """Read a 3DGS-layout PLY; ``primitive`` None takes it from recon's header comment (3D Gaussians when the
        file has none, as in files from other tools)."""
        params, degree, comments = read_3dgs_ply(path)
        if primitive is None:
            tagged = [c[len(PLY_COMMENT) :].strip() for c in comments if c.startswith(PLY_COMMENT)]
            primitive = tagged[0] if tagged else DEFAULT_PRIMITIVE
        return cls(params, degree, primitive)

    load_ply = load

    # ----- viewing -----
    def preview(self) -> GaussianCloud:
        with torch.no_grad():
            p = {k: v.detach().cpu().float() for k, v in self.params.items()}
            q = p["quats"] / p["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
            return GaussianCloud(
                means=p["means"].numpy(),
                quats=q.numpy(),
                scales=torch.exp(self.file_log_scales()).numpy(),
                opacities=torch.sigmoid(p["opacities"]).numpy(),
                rgb=sh0_to_rgb(p["sh0"][:, 0, :]).clamp(0.0, 1.0).numpy(),
            )
