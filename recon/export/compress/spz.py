"""Writer of Niantic's ``.spz`` (gzip versions 2 and 3; layout in ``recon/models/spz.py``, which reads it back).

Why our own: the PyPI packages for spz (``spz`` 0.0.1, a Rust build; ``alspz``, Cython bindings) ship as sources
only and are not maintained releases, while the gzip layout is small and published. Quantisation follows the
reference encoder: 12 fractional bits of position (fewer when the scene is too large for 24 bits), 8-bit alpha,
colour, log scale and rotation, SH degree 1 on 5 bits and higher degrees on 4 (bucket centres of the 8-bit code,
so gzip sees fewer distinct bytes). Splats are written in Morton order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from recon.data.atomic import atomic_path
from recon.models.spz import (
    FLIP_POSITION,
    FLIP_QUAT_XYZ,
    FLIP_SH,
    SPZ_COLOR_SCALE,
    SPZ_HEADER,
    SPZ_MAGIC,
    SQRT1_2,
    sh_dim,
)

from .order import morton_order
from .params import SplatArrays

SH1_BITS, SH_REST_BITS = 5, 4


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    """The reference encoder's SH code: round(x·128 + 128), snapped to the centre of a 2^(8−bits) bucket."""
    bucket = 1 << (8 - bits)
    q = np.round(x * 128.0).astype(np.int64) + 128
    return np.clip((q + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)


def fractional_bits(means: np.ndarray) -> int:
    """12 (the reference's ¼ mm at metre scale) unless the positions need more of the 24 bits for range."""
    extent = float(np.abs(means).max(initial=0.0))
    bits = 12
    while bits > 0 and extent * (1 << bits) >= (1 << 23) - 1:
        bits -= 1
    return bits


def _pack_positions(means: np.ndarray, bits: int) -> np.ndarray:
    fixed = np.round(means.astype(np.float64) * (1 << bits)).astype(np.int64).reshape(-1)
    fixed &= 0xFFFFFF
    return np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=1).astype(np.uint8)


def _unit_xyzw(quats_wxyz: np.ndarray) -> np.ndarray:
    """Normalised quaternions in spz's x y z w order and RUB frame."""
    q = quats_wxyz / np.maximum(np.linalg.norm(quats_wxyz, axis=1, keepdims=True), 1e-12)
    return np.concatenate([q[:, 1:] * FLIP_QUAT_XYZ, q[:, :1]], axis=1)


def _pack_first_three(q: np.ndarray) -> np.ndarray:
    q = q * np.where(q[:, 3:] < 0, -1.0, 1.0)
    return _u8(q[:, :3] * 127.5 + 127.5)


def _pack_smallest_three(q: np.ndarray) -> np.ndarray:
    largest = np.abs(q).argmax(1)
    rows = np.arange(len(q))
    negate = q[rows, largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        here = largest != i
        neg = (q[:, i] < 0) ^ negate
        mag = np.floor(511.0 * (np.abs(q[:, i]) / SQRT1_2) + 0.5).astype(np.uint32)
        packed = (comp << np.uint32(10)) | (neg.astype(np.uint32) << np.uint32(9)) | np.minimum(mag, 511)
        comp = np.where(here, packed, comp)
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def encode_spz(s: SplatArrays, version: int = 2) -> bytes:
    """The ``.spz`` bytes of ``s`` (version 2: 3-byte rotations every viewer reads; 3: 4-byte smallest-three)."""
    if version not in (2, 3):
        raise ValueError(f"spz version {version}: recon writes versions 2 and 3")
    order = morton_order(s.means)
    s = s.take(order)
    n, k = len(s), sh_dim(s.sh_degree)
    bits = fractional_bits(s.means)
    q = _unit_xyzw(s.quats)
    sh = s.shN[:, :k] * FLIP_SH[:k, None]
    sh_bytes = np.concatenate(
        [
            quantize_sh(sh[:, :3], SH1_BITS).reshape(n, -1),
            quantize_sh(sh[:, 3:], SH_REST_BITS).reshape(n, -1),
        ],
        axis=1,
    )
    body = [
        SPZ_HEADER.pack(SPZ_MAGIC, version, n, s.sh_degree, bits, 0, 0),
        _pack_positions(s.means * FLIP_POSITION, bits).tobytes(),
        _u8(1.0 / (1.0 + np.exp(-s.opacities)) * 255.0).tobytes(),
        _u8(s.sh0.reshape(n, 3) * (SPZ_COLOR_SCALE * 255.0) + 127.5).tobytes(),
        _u8((s.scales + 10.0) * 16.0).tobytes(),
        (_pack_first_three(q) if version == 2 else _pack_smallest_three(q)).tobytes(),
        sh_bytes.tobytes(),
    ]
    return gzip.compress(b"".join(body), compresslevel=9, mtime=0)


def write_spz(path: str | Path, s: SplatArrays, version: int = 2) -> int:
    """Write ``path`` atomically; returns its size in bytes."""
    data = encode_spz(s, version)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)
