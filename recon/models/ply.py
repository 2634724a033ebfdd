"""The standard 3DGS PLY layout (what 3DGS, gsplat and the web splat viewers read and write).

Per vertex, float32: x y z, nx ny nz (zeros), f_dc_0..2 (degree-0 SH), f_rest_* channel-major (all R coefficients,
then G, then B, as 3DGS writes them), opacity (logit), scale_0..2 (log), rot_0..3 (wxyz quaternion). recon adds a
header comment naming the primitive, so it reads its own files back as what they are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError

from .compressed_ply import decode_compressed_ply, is_compressed_ply
from .spz import is_spz, read_spz

PLY_COMMENT = "recon primitive "  # + the primitive name, in the PLY header of every model recon writes


def ply_attributes(k_rest: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * k_rest)]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def write_3dgs_ply(path: str | Path, p: dict[str, np.ndarray], comments: list[str]) -> None:
    """Write raw parameters (numpy float32: means, scales (log), quats, opacities (logit), sh0 [N,1,3],
    shN [N,K-1,3]) as a binary 3DGS PLY, atomically."""
    n = len(p["means"])
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
    dtype = [(name, "f4") for name in ply_attributes(p["shN"].shape[1])]
    rec = np.empty(n, dtype=dtype)
    for i, (name, _) in enumerate(dtype):
        rec[name] = data[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(rec, "vertex")], comments=comments).write(str(tmp))


def read_3dgs_ply(path: str | Path) -> tuple[dict[str, torch.Tensor], int, list[str]]:
    """(raw parameters, SH degree, header comments) of a 3DGS-layout PLY, or of a compressed splat file (``.spz``,
    compressed PLY: ``spz.py``, ``compressed_ply.py``) so every loader reads those too; a ReconError for anything
    else."""
    path = Path(path)
    if path.is_file() and is_spz(path):  # compressed splat files read through the same door
        params, degree = read_spz(path)
        return params, degree, []
    try:
        ply = PlyData.read(str(path))
        if is_compressed_ply(ply):
            params, degree = decode_compressed_ply(ply, str(path))
            return params, degree, list(ply.comments)
        v = ply["vertex"]
    except ReconError:
        raise
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
    if (degree + 1) ** 2 - 1 != k_rest:
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
    return params, degree, list(ply.comments)


def ply_primitive(path: str | Path) -> str | None:
    """The primitive named by recon's header comment of a PLY file (None: no such comment, or unreadable; the
    reader then reports what is wrong). Reads only the header."""
    try:
        with open(path, "rb") as f:
            for _ in range(10_000):
                line = f.readline()
                if not line or line.startswith(b"end_header"):
                    break
                text = line.decode("ascii", "replace").strip()
                if text.startswith("comment " + PLY_COMMENT):
                    return text[len("comment " + PLY_COMMENT) :].strip() or None
    except OSError:
        return None
    return None
