"""Niantic's open `.spz` splat format (versions 1–3, the gzip ones): the layout and its reader.

Why here: ``.spz`` is a model file recon reads back (``recon view``, ``recon eval --model``, the registry's loader),
so its reader lives with the other model codecs; the writer is in ``recon/export/compress/spz.py``.

Layout: gzip of a 16-byte header (magic "NGSP" 0x5053474e, version, point count: uint32; SH degree, fractional
bits, flags, reserved: uint8) then attribute-major arrays: positions (24-bit signed fixed point, x y z per point;
version 1: float16), alphas (uint8 sigmoid·255), colours (uint8 f_dc·0.15·255 + 127.5), scales (uint8
(log s + 10)·16), rotations (version 2: x y z as uint8 q·127.5 + 127.5, w ≥ 0 implied; version 3: 32-bit
smallest-three, 2 bits index of the largest + 3 × (sign bit + 9 bits of |q|/√½)), SH (uint8 q·128 + 128,
[N, coefficient, RGB]). Stored frame: RUB (x right, y up, z back); 3DGS PLYs (and recon's world frame) are RDF, so
y and z flip on the way in and out, with the matching quaternion and SH sign flips.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from recon.data.errors import ReconError

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_HEADER = struct.Struct(
    "<IIIBBBB"
)  # magic, version, num_points, sh_degree, fractional_bits, flags, reserved
SPZ_COLOR_SCALE = 0.15
SPZ_FLAG_ANTIALIASED = 0x1
SQRT1_2 = math.sqrt(0.5)
# RDF (3DGS PLY) <-> RUB (spz): x stays, y and z flip. Per quaternion xyz and per SH coefficient of degrees 1–3
# (x=1, y=z=−1 in the sign rules y, z, x, xy, yz, 1, xz, 1, y, xyz, y, z, x, z, x).
FLIP_POSITION = np.array([1.0, -1.0, -1.0], np.float32)
FLIP_QUAT_XYZ = np.array([1.0, -1.0, -1.0], np.float32)
FLIP_SH = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)


def sh_dim(degree: int) -> int:
    """SH coefficients beyond the DC term per channel."""
    return (degree + 1) ** 2 - 1


def is_spz(path: str | Path) -> bool:
    """Whether ``path`` is gzip data (how every spz of versions 1–3 starts)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _fixed24(raw: np.ndarray, frac_bits: int) -> np.ndarray:
    """[N*3*3] bytes of little-endian 24-bit two's complement -> [N,3] float32."""
    b = raw.reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    v = np.where(v & 0x800000, v - (1 << 24), v)
    return (v.astype(np.float64) / (1 << frac_bits)).astype(np.float32).reshape(-1, 3)


def _quats_first_three(raw: np.ndarray) -> np.ndarray:
    xyz = raw.reshape(-1, 3).astype(np.float32) / 127.5 - 1.0
    w = np.sqrt(np.clip(1.0 - (xyz**2).sum(1), 0.0, None))
    return np.concatenate([xyz, w[:, None]], axis=1)  # xyzw


def _quats_smallest_three(raw: np.ndarray) -> np.ndarray:
    comp = raw.reshape(-1, 4).astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(comp), 4), np.float32)
    mask = (1 << 9) - 1
    rest = comp.copy()
    for i in (3, 2, 1, 0):  # the last component written sits in the lowest bits
        here = largest != i
        mag = (rest & mask).astype(np.float32) / mask * SQRT1_2
        neg = ((rest >> 9) & 1).astype(bool)
        q[here, i] = np.where(neg, -mag, mag)[here]
        rest = np.where(here, rest >> 10, rest)
    q[np.arange(len(q)), largest] = np.sqrt(np.clip(1.0 - (q**2).sum(1), 0.0, None))
    return q  # xyzw


def decode_spz(data: bytes, where: str = "spz data") -> tuple[dict[str, torch.Tensor], int]:
    """(raw parameters in recon's layout and RDF frame, SH degree) of spz bytes (gzip-compressed or not)."""
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ReconError(
            f"{where} is not a readable .spz file ({e}); pass a file written by spz tools or recon"
        ) from None
    if len(raw) < SPZ_HEADER.size:
        raise ReconError(f"{where} is too short for a .spz header; pass a complete .spz file")
    magic, version, n, degree, frac, _flags, _ = SPZ_HEADER.unpack_from(raw)
    if magic != SPZ_MAGIC:
        raise ReconError(f"{where} is not a .spz file (no NGSP header); pass a .spz splat file")
    if version not in (1, 2, 3):
        raise ReconError(
            f"{where} is .spz version {version}; recon reads versions 1-3 (gzip), re-save it as version 3"
        )
    if degree > 3:
        raise ReconError(f"{where} has SH degree {degree}; recon reads degrees 0-3")
    k = sh_dim(degree)
    pos_bytes = n * 3 * (2 if version == 1 else 3)
    rot_bytes = n * (4 if version == 3 else 3)
    sizes = [pos_bytes, n, 3 * n, 3 * n, rot_bytes, 3 * k * n]
    if len(raw) < SPZ_HEADER.size + sum(sizes):
        raise ReconError(f"{where} is truncated: its header promises {n} splats; pass a complete .spz file")
    buf = np.frombuffer(raw, np.uint8, offset=SPZ_HEADER.size)
    parts, off = [], 0
    for s in sizes:
        parts.append(buf[off : off + s])
        off += s
    pos_raw, alpha, color, scale, rot, sh = parts
    if version == 1:
        means = pos_raw.view(np.float16).astype(np.float32).reshape(-1, 3)
    else:
        means = _fixed24(pos_raw, frac)
    xyzw = _quats_smallest_three(rot) if version == 3 else _quats_first_three(rot)
    a = np.clip(alpha.astype(np.float32) / 255.0, 1e-6, 1 - 1e-6)
    params = {
        "means": means * FLIP_POSITION,
        "scales": scale.reshape(-1, 3).astype(np.float32) / 16.0 - 10.0,
        "quats": np.concatenate([xyzw[:, 3:], xyzw[:, :3] * FLIP_QUAT_XYZ], axis=1),  # wxyz, back to RDF
        "opacities": np.log(a / (1 - a)),
        "sh0": ((color.reshape(-1, 1, 3).astype(np.float32) / 255.0 - 0.5) / SPZ_COLOR_SCALE),
        "shN": (sh.reshape(n, k, 3).astype(np.float32) - 128.0) / 128.0 * FLIP_SH[:k, None],
    }
    return {key: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for key, v in params.items()}, degree


def read_spz(path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """(raw parameters, SH degree) of a .spz file; a ReconError naming the file for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReconError(f"cannot read {path} ({e.strerror or e}); check the path") from None
    return decode_spz(data, str(path))
