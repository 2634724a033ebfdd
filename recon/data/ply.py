"""Coloured point clouds as PLY: binary little-endian, vertex properties x y z (float) red green blue (uchar).

That layout is what COLMAP exports and what nerfstudio's ``ply_file_path``, MeshLab and CloudCompare read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError


def write_points_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """Write ``xyz [P,3]`` and ``rgb [P,3] uint8`` (grey when None) atomically."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    if rgb is None:
        rgb = np.full_like(xyz, 128, dtype=np.uint8)
    rgb = np.asarray(rgb).reshape(-1, 3)
    if rgb.dtype != np.uint8:
        # Float colours in [0,1] are accepted for convenience; anything else is taken as 0..255 values.
        rgb = np.clip(
            np.round(rgb * 255.0 if rgb.dtype.kind == "f" and rgb.max(initial=0) <= 1.0 else rgb), 0, 255
        )
        rgb = rgb.astype(np.uint8)
    if len(rgb) != len(xyz):
        raise ValueError(f"write_points_ply: {len(xyz)} points but {len(rgb)} colours")
    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(xyz), dtype=dtype)
    for i, k in enumerate("xyz"):
        vertex[k] = xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        vertex[k] = rgb[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(tmp))


def read_points_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(xyz float32 [P,3], rgb uint8 [P,3]) from any PLY with vertices; grey when it has no colours."""
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except FileNotFoundError as e:
        raise ReconError(f"point cloud {path} not found; check the path or regenerate it") from e
    except Exception as e:  # plyfile raises several types for corrupt files
        raise ReconError(f"cannot read point cloud {path} ({e}); is it a PLY file?") from e
    if "vertex" not in ply:
        raise ReconError(f"point cloud {path} has no vertex element; write x y z vertices")
    v = ply["vertex"].data
    names = v.dtype.names or ()
    if not all(k in names for k in "xyz"):
        raise ReconError(f"point cloud {path} has no x y z vertex properties")
    try:
        with np.errstate(invalid="ignore", over="ignore"):  # what does not convert is refused just below
            xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    except (TypeError, ValueError):  # list properties, or values that are not numbers
        raise ReconError(
            f"point cloud {path}: x y z are not plain numbers; write float x y z vertices"
        ) from None
    bad = ~(np.isfinite(xyz).all(axis=1) & (np.abs(xyz) < 1e30).all(axis=1))
    if bad.any():
        raise ReconError(
            f"point cloud {path}: {int(bad.sum())} of {len(xyz)} points have NaN, Infinity or huge coordinates "
            f"(first: vertex {int(np.flatnonzero(bad)[0])}); remove them or regenerate the file"
        )
    xyz = xyz.astype(np.float32)
    if all(k in names for k in ("red", "green", "blue")):
        rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1)
        if rgb.dtype.kind not in "fiub":
            raise ReconError(f"point cloud {path}: red green blue are not plain numbers; write uchar colours")
        if rgb.dtype.kind == "f":
            rgb = np.round(np.clip(np.nan_to_num(rgb), 0.0, 1.0) * 255.0)
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    else:
        rgb = np.full((len(xyz), 3), 128, dtype=np.uint8)
    return xyz, rgb
