"""3D Gaussians or 2D Gaussian surfels: parameters, 3DGS-style initialisation, render inputs, and the standard 3DGS
PLY layout.

Parameters are stored unconstrained (log scales, logit opacities, raw quaternions) in one dict, one tensor per
name, so gsplat's strategies (which add, split and remove rows of every tensor in the dict) work unchanged.

Surfels (``primitive="surfel2d"``, 2DGS) keep the same dict: scales stay [N,3] because the strategies sample 3-D
offsets from them; the kernel reads only the two in-plane scales, and the third is kept tiny (1e-3 × the first at
initialisation, 1e-3 × the smaller in-plane scale in the PLY), so the splats.ply of a surfel run is a valid, flat
3D-Gaussian file other tools open. The PLY carries a ``recon primitive surfel2d`` comment so recon reads it back
as surfels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement
from scipy.spatial import cKDTree

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError
from recon.render.outputs import PRIMITIVES
from recon.render.projection import quat_to_rotmat

SH_C0 = 0.28209479177387814
SURFEL_THICKNESS = 1e-3  # a surfel's third scale relative to its in-plane one (ignored by the surfel kernel)
_PLY_COMMENT = "recon primitive "  # + the primitive name, in the PLY header of every model recon writes


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """Colour in [0,1] -> degree-0 SH coefficient that renders it (colour = SH·C0 + 0.5)."""
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


def knn_mean_distance(xyz: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance of each point to its k nearest neighbours (the 3DGS initial scale)."""
    if len(xyz) < 2:
        return np.full(len(xyz), 0.01, dtype=np.float32)
    kk = min(k, len(xyz) - 1)
    dist, _ = cKDTree(xyz).query(xyz, k=kk + 1)
    d = dist[:, 1:].mean(axis=1)
    return np.maximum(d, 1e-7).astype(np.float32)


def check_primitive(primitive: str) -> str:
    if primitive not in PRIMITIVES:
        raise ReconError(f"unknown primitive {primitive!r}; choose from {', '.join(PRIMITIVES)}")
    return primitive


def render_inputs_of(params, primitive: str = "gaussian3d") -> dict:
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


def file_log_scales_of(log_scales: torch.Tensor, primitive: str) -> torch.Tensor:
    """[N,3] float32 CPU log scales as a 3D-Gaussian file or viewer shows them: the parameters, except that a
    surfel's third scale is SURFEL_THICKNESS × its smaller in-plane one (the stored one is ignored by the surfel
    kernel), so every surfel is a flat 3D Gaussian whatever training did to its in-plane scales."""
    log_s = log_scales.detach().cpu().float().clone()
    if primitive == "surfel2d":
        log_s[:, 2] = log_s[:, :2].min(dim=1).values + math.log(SURFEL_THICKNESS)
    return log_s


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[N,3,3] Σ = R·diag(s)²·Rᵀ from raw quaternions (normalised here) and activated scales."""
    r = quat_to_rotmat(quats)
    m = r * scales[:, None, :]
    return m @ m.transpose(1, 2)


class GaussianModel:
    """A set of N 3D Gaussians (or 2D surfels, ``primitive="surfel2d"``) with SH colour of degree up to
    ``sh_degree``."""

    PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")

    def __init__(self, params: dict[str, torch.Tensor], sh_degree: int, primitive: str = "gaussian3d"):
        self.params = torch.nn.ParameterDict(
            {k: v if isinstance(v, torch.nn.Parameter) else torch.nn.Parameter(v) for k, v in params.items()}
        )
        self.sh_degree = sh_degree
        self.primitive = check_primitive(primitive)

    # ----- construction -----
    @classmethod
    def from_points(
        cls,
        xyz: np.ndarray,
        rgb: np.ndarray,
        sh_degree: int = 3,
        init_opacity: float = 0.1,
        init_scale: float = 1.0,
        primitive: str = "gaussian3d",
        seed: int = 0,
    ) -> GaussianModel:
        """3DGS initialisation: isotropic scale from the 3 nearest neighbours, identity rotation, SH DC from colour.

        Surfels (2DGS): the same in-plane scale, the third scale SURFEL_THICKNESS times it, and a uniformly random
        orientation (seeded): a disc's normal is a real choice, and identity would start every surfel facing +z.
        """
        check_primitive(primitive)
        xyz = np.asarray(xyz, dtype=np.float32)
        rgb = np.asarray(rgb)
        rgb = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
        n = len(xyz)
        scale = knn_mean_distance(xyz) * init_scale
        log_scales = torch.from_numpy(np.log(scale))[:, None].repeat(1, 3)
        if primitive == "surfel2d":
            log_scales[:, 2] += math.log(SURFEL_THICKNESS)
            quats = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
            quats = quats / quats.norm(dim=-1, keepdim=True)
        else:
            quats = torch.zeros(n, 4)
            quats[:, 0] = 1.0
        k = num_sh_bases(sh_degree)
        params = {
            "means": torch.from_numpy(xyz).clone(),
            "scales": log_scales,
            "quats": quats,
            "opacities": torch.full((n,), math.log(init_opacity / (1 - init_opacity))),
            "sh0": rgb_to_sh0(torch.from_numpy(rgb))[:, None, :].clone(),
            "shN": torch.zeros(n, k - 1, 3),
        }
        return cls(params, sh_degree, primitive)

    @classmethod
    def random_in_box(cls, lo: np.ndarray, hi: np.ndarray, n: int, seed: int = 0, **kwargs) -> GaussianModel:
        """Gaussians uniformly in an axis-aligned box with random colours (for scenes without sparse points)."""
        rng = np.random.default_rng(seed)
        xyz = rng.uniform(lo, hi, size=(n, 3)).astype(np.float32)
        rgb = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
        return cls.from_points(xyz, rgb, seed=seed, **kwargs)

    # ----- access -----
    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def render_inputs(self) -> dict:
        """`recon.render.rasterize` keyword arguments: activated tensors (colors are SH coefficients [N,K,3]) and
        the primitive type."""
        return render_inputs_of(self.params, self.primitive)

    def file_log_scales(self) -> torch.Tensor:
        """[N,3] float32 log scales as splat files store them (``file_log_scales_of``)."""
        return file_log_scales_of(self.params["scales"], self.primitive)

    # ----- PLY in the standard 3DGS layout -----
    def ply_attributes(self) -> list[str]:
        k_rest = self.params["shN"].shape[1]
        names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        names += [f"f_rest_{i}" for i in range(3 * k_rest)]
        names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
        return names

    def save_ply(self, path: str | Path) -> None:
        """Write the 3DGS PLY (binary): f_rest is channel-major (all R coefficients, then G, then B) as 3DGS does;
        scales from ``file_log_scales``; the header names the primitive type in a comment."""
        p = {k: v.detach().cpu().float().numpy() for k, v in self.params.items()}
        p["scales"] = self.file_log_scales().numpy()
        n = len(self)
        f_rest = p["shN"].transpose(0, 2, 1).reshape(n, -1)  # [N,K-1,3] -> [N,3,K-1] -> channel-major
        cols = [
            p["means"],
            np.zeros((n, 3), np.float32),
            p["sh0"].reshape(n, 3),
            f_rest,
            p["opacities"][:, None],
            p["scales"],
            p["quats"],
        ]
        data = np.concatenate(cols, axis=1).astype(np.float32)
        dtype = [(name, "f4") for name in self.ply_attributes()]
        rec = np.empty(n, dtype=dtype)
        for i, (name, _) in enumerate(dtype):
            rec[name] = data[:, i]
        header = [_PLY_COMMENT + self.primitive]
        with atomic_path(path) as tmp:
            PlyData([PlyElement.describe(rec, "vertex")], comments=header).write(str(tmp))

    @classmethod
    def load_ply(cls, path: str | Path, primitive: str | None = None) -> GaussianModel:
        """Read a 3DGS-layout PLY; ``primitive`` None takes it from recon's header comment (3D Gaussians when the
        file has none, as in files from other tools)."""
        path = Path(path)
        try:
            ply = PlyData.read(str(path))
            v = ply["vertex"]
        except Exception as e:
            raise ReconError(
                f"{path} is not a readable PLY file ({e}); pass a splat PLY written by 3DGS or recon"
            ) from None
        names = v.data.dtype.names
        needed = ["x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"]
        if any(n not in names for n in needed):
            raise ReconError(
                f"{path} is not a Gaussian splat PLY (no {', '.join(needed)}); pass a 3DGS-layout PLY"
            )
        n_rest = sum(1 for n in names if n.startswith("f_rest_"))
        k_rest = n_rest // 3
        degree = int(round(math.sqrt(k_rest + 1))) - 1
        if num_sh_bases(degree) - 1 != k_rest:
            raise ReconError(f"{path}: {n_rest} f_rest values is not a whole SH degree")

        def col(*keys):
            return torch.from_numpy(np.stack([np.asarray(v[k], np.float32) for k in keys], axis=1))

        n = len(v.data)
        rest = col(*[f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(n, 0)
        params = {
            "means": col("x", "y", "z"),
            "scales": col("scale_0", "scale_1", "scale_2"),
            "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
            "opacities": col("opacity")[:, 0],
            "sh0": col("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :],
            "shN": rest.reshape(n, 3, k_rest).transpose(1, 2).contiguous(),
        }
        if primitive is None:
            tagged = [c[len(_PLY_COMMENT) :].strip() for c in ply.comments if c.startswith(_PLY_COMMENT)]
            primitive = tagged[0] if tagged else "gaussian3d"
        return cls(params, degree, primitive)
