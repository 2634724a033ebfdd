"""PlayCanvas / SuperSplat "compressed PLY": the layout and its reader.

Why here: recon reads these files back as models (``recon view``, ``recon eval --model``, the registry's loader),
beside the plain 3DGS PLY codec; the writer is in ``recon/export/compress/compressed_ply.py``.

Layout (binary little-endian PLY, two or three elements, in this order):
- ``chunk`` (one per 256 splats), float32: min_x min_y min_z max_x max_y max_z, min_scale_x.. max_scale_z (log
  scales), and optionally min_r min_g min_b max_r max_g max_b (colour = f_dc·SH_C0 + 0.5);
- ``vertex``, uint32 each: packed_position and packed_scale (11-10-11 bits, each value normalised into its chunk's
  range), packed_rotation (2 bits: index of the largest of rot_0..rot_3, made positive; 3 × 10 bits: the others
  as q·√½ + ½), packed_color (8-8-8-8: r g b normalised into the chunk's colour range, or absolute without one,
  then sigmoid(opacity));
- ``sh`` (optional), uchar f_rest_0..f_rest_{9,24,45}: trunc((v/8 + ½)·256), channel-major as in 3DGS PLYs.
"""

from __future__ import annotations

import numpy as np
import torch
from plyfile import PlyData

from recon.data.errors import ReconError

CHUNK_SIZE = 256
CHUNK_PROPS = (
    "min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
    "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
)  # fmt: skip
CHUNK_COLOR_PROPS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
SH_COUNTS = {0: 0, 9: 1, 24: 2, 45: 3}  # f_rest values -> SH degree
SH_C0 = 0.28209479177387814


def is_compressed_ply(ply: PlyData) -> bool:
    """Whether a parsed PLY has the compressed layout (a chunk element and packed vertices)."""
    names = [el.name for el in ply.elements]
    if "chunk" not in names or "vertex" not in names:
        return False
    props = set(ply["vertex"].data.dtype.names or ())
    return set(VERTEX_PROPS) <= props


def unpack_unorm(value: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """The ``bits``-bit field at ``shift`` of uint32 values, as a float in [0, 1]."""
    top = (1 << bits) - 1
    return ((value >> np.uint32(shift)) & np.uint32(top)).astype(np.float32) / top


def _unpack_111011(v: np.ndarray) -> np.ndarray:
    return np.stack([unpack_unorm(v, 21, 11), unpack_unorm(v, 11, 10), unpack_unorm(v, 0, 11)], axis=1)


def _unpack_rotation(v: np.ndarray) -> np.ndarray:
    """[N] uint32 -> [N,4] in rot_0..rot_3 order (recon's wxyz)."""
    others = np.stack([unpack_unorm(v, s, 10) for s in (20, 10, 0)], axis=1)
    others = (others - 0.5) / np.sqrt(0.5)
    largest = (v >> np.uint32(30)).astype(np.int64)
    m = np.sqrt(np.clip(1.0 - (others**2).sum(1), 0.0, None))
    q = np.empty((len(v), 4), np.float32)
    slots = np.array([[j for j in range(4) if j != i] for i in range(4)])  # where the three others go
    rows = np.arange(len(v))
    q[rows, largest] = m
    for c in range(3):
        q[rows, slots[largest, c]] = others[:, c]
    return q


def decode_compressed_ply(ply: PlyData, where: str) -> tuple[dict[str, torch.Tensor], int]:
    """(raw parameters, SH degree) of a parsed compressed PLY."""
    chunk, vertex = ply["chunk"].data, ply["vertex"].data
    names = chunk.dtype.names or ()
    if any(p not in names for p in CHUNK_PROPS):
        raise ReconError(
            f"{where}: its chunk element lacks {', '.join(CHUNK_PROPS)}; not a compressed splat PLY"
        )
    n = len(vertex)
    if len(chunk) != -(-n // CHUNK_SIZE):
        raise ReconError(f"{where}: {len(chunk)} chunks for {n} splats (expected one per {CHUNK_SIZE})")
    c = {p: np.asarray(chunk[p], np.float32) for p in names}
    ci = np.arange(n) // CHUNK_SIZE

    def lerp(lo: str, hi: str, t: np.ndarray) -> np.ndarray:
        return c[lo][ci] * (1 - t) + c[hi][ci] * t

    packed = {p: np.asarray(vertex[p]).astype(np.uint32) for p in VERTEX_PROPS}
    p = _unpack_111011(packed["packed_position"])
    s = _unpack_111011(packed["packed_scale"])
    col = packed["packed_color"]
    rgba = np.stack([unpack_unorm(col, sh, 8) for sh in (24, 16, 8, 0)], axis=1)
    means = np.stack([lerp(f"min_{a}", f"max_{a}", p[:, i]) for i, a in enumerate("xyz")], axis=1)
    scales = np.stack(
        [lerp(f"min_scale_{a}", f"max_scale_{a}", s[:, i]) for i, a in enumerate("xyz")], axis=1
    )
    if all(k in names for k in CHUNK_COLOR_PROPS):
        rgb = np.stack([lerp(f"min_{a}", f"max_{a}", rgba[:, i]) for i, a in enumerate("rgb")], axis=1)
    else:
        rgb = rgba[:, :3]
    alpha = np.clip(rgba[:, 3], 1e-6, 1 - 1e-6)
    sh_rest = np.zeros((n, 0), np.float32)
    degree = 0
    if "sh" in [el.name for el in ply.elements]:
        sh = ply["sh"].data
        cols = [f"f_rest_{i}" for i in range(len(sh.dtype.names or ()))]
        if len(cols) not in SH_COUNTS or len(sh) != n or any(k not in sh.dtype.names for k in cols):
            raise ReconError(f"{where}: its sh element is not 9, 24 or 45 f_rest values per splat")
        degree = SH_COUNTS[len(cols)]
        q = np.stack([np.asarray(sh[k]).astype(np.float32) for k in cols], axis=1)
        t = np.where(q == 0, 0.0, np.where(q == 255, 1.0, (q + 0.5) / 256.0))
        sh_rest = ((t - 0.5) * 8.0).astype(np.float32)
    k_rest = sh_rest.shape[1] // 3
    params = {
        "means": means,
        "scales": scales,
        "quats": _unpack_rotation(packed["packed_rotation"]),
        "opacities": np.log(alpha / (1 - alpha)),
        "sh0": ((rgb - 0.5) / SH_C0)[:, None, :],
        "shN": sh_rest.reshape(n, 3, k_rest).transpose(0, 2, 1),
    }
    return {key: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for key, v in params.items()}, degree
