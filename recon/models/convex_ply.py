"""The convex PLY: one vertex per convex, float32, binary little-endian.

Columns: x y z (the centre, so point-cloud tools show the scene), f_dc_0..2 and f_rest_* (channel-major as in 3DGS
files), opacity (logit), mask (raw), delta (log δ), sigma (log σ), then the K points p{i}_x p{i}_y p{i}_z. The header
carries the comment ``recon primitive convex``. Raw values are stored, so a model reads back bit for bit.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError

from .ply import PLY_COMMENT

_POINT = re.compile(r"p(\d+)_x")


def write_convex_ply(path: str | Path, p: dict[str, np.ndarray]) -> None:
    """Write raw convex parameters (numpy float32, ``ConvexModel.PARAM_NAMES``) atomically."""
    n, k = p["points"].shape[:2]
    k_rest = p["shN"].shape[1]
    centre = p["points"].mean(1)
    cols = {"x": centre[:, 0], "y": centre[:, 1], "z": centre[:, 2]}
    for c in range(3):
        cols[f"f_dc_{c}"] = p["sh0"][:, 0, c]
    rest = p["shN"].transpose(0, 2, 1).reshape(n, -1)
    for i in range(3 * k_rest):
        cols[f"f_rest_{i}"] = rest[:, i]
    cols.update(opacity=p["opacities"], mask=p["mask"], delta=p["delta"], sigma=p["sigma"])
    for i in range(k):
        for a, axis in enumerate("xyz"):
            cols[f"p{i}_{axis}"] = p["points"][:, i, a]
    rec = np.empty(n, dtype=[(name, "f4") for name in cols])
    for name, values in cols.items():
        rec[name] = values
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(rec, "vertex")], comments=[PLY_COMMENT + "convex"]).write(str(tmp))


def read_convex_ply(path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """(raw parameters, SH degree) of a convex PLY; a ReconError naming the file for anything else."""
    path = Path(path)
    try:
        v = PlyData.read(str(path))["vertex"]
    except Exception as e:
        raise ReconError(
            f"{path} is not a readable PLY file ({e}); pass a convex PLY written by recon"
        ) from None
    names = v.data.dtype.names
    k = sum(1 for name in names if _POINT.fullmatch(name))
    needed = ["f_dc_0", "opacity", "mask", "delta", "sigma"] + [f"p{i}_{a}" for i in range(k) for a in "xyz"]
    if k < 3 or any(name not in names for name in needed):
        raise ReconError(f"{path} is not a convex PLY (it needs {', '.join(needed[:5])} and p0_x.. columns)")
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    k_rest = n_rest // 3
    degree = int(round(math.sqrt(k_rest + 1))) - 1
    if (degree + 1) ** 2 - 1 != k_rest or 3 * k_rest != n_rest:
        raise ReconError(f"{path}: {n_rest} f_rest values is not a whole SH degree")

    def col(*keys: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(v[key], np.float32) for key in keys], axis=1))

    n = len(v.data)
    rest = col(*[f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(n, 0)
    params = {
        "points": col(*[f"p{i}_{a}" for i in range(k) for a in "xyz"]).reshape(n, k, 3),
        "delta": col("delta")[:, 0],
        "sigma": col("sigma")[:, 0],
        "opacities": col("opacity")[:, 0],
        "mask": col("mask")[:, 0],
        "sh0": col("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :],
        "shN": rest.reshape(n, 3, k_rest).transpose(1, 2).contiguous(),
    }
    bad = [name for name, t in params.items() if not torch.isfinite(t).all()]
    if bad:
        raise ReconError(
            f"{path}: non-finite values in {', '.join(bad)}; the file is damaged, export it again"
        )
    return params, degree
