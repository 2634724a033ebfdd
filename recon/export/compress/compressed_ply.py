"""Writer of the PlayCanvas / SuperSplat compressed PLY (layout in ``recon/models/compressed_ply.py``, which reads
it back).

Why: SuperSplat, PlayCanvas and splat-transform open it directly, at 16 bytes a splat plus one byte per SH value.
Each chunk of 256 splats (in Morton order, so a chunk is a small box) stores float ranges; positions and log
scales are 11-10-11-bit fractions of their chunk's range, colours 8-bit fractions of theirs, rotations the
smallest-three 2-10-10-10 code. recon's header comment names the primitive, so recon reads its surfels back as
surfels; other readers skip comments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon.data.atomic import atomic_path
from recon.models.compressed_ply import CHUNK_COLOR_PROPS, CHUNK_PROPS, CHUNK_SIZE, SH_C0, VERTEX_PROPS
from recon.models.ply import PLY_COMMENT

from .order import morton_order
from .params import SplatArrays


def pack_unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _chunk_fraction(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ci: np.ndarray) -> np.ndarray:
    span = hi[ci] - lo[ci]
    t = np.where(span < 1e-5, 0.0, (v - lo[ci]) / np.where(span < 1e-5, 1.0, span))
    return np.clip(t, 0.0, 1.0)


def _chunk_ranges(v: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk min and max of ``v`` [N,D] (the last chunk repeats its last splat, as the reference does)."""
    pad = n_chunks * CHUNK_SIZE - len(v)
    full = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) if pad else v
    blocks = full.reshape(n_chunks, CHUNK_SIZE, -1)
    return blocks.min(1), blocks.max(1)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (pack_unorm(t[:, 0], 11) << 21) | (pack_unorm(t[:, 1], 10) << 11) | pack_unorm(t[:, 2], 11)


def _pack_rotation(quats_wxyz: np.ndarray) -> np.ndarray:
    q = quats_wxyz / np.maximum(np.linalg.norm(quats_wxyz, axis=1, keepdims=True), 1e-12)
    largest = np.abs(q).argmax(1)
    q = q * np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    out = largest.astype(np.uint32)
    for c in range(3):  # the three others in rot_0..rot_3 order
        idx = np.array([[j for j in range(4) if j != i][c] for i in range(4)])[largest]
        out = (out << 10) | pack_unorm(q[np.arange(len(q)), idx] * np.sqrt(0.5) + 0.5, 10)
    return out


def encode_compressed_ply(s: SplatArrays) -> bytes:
    """The compressed PLY bytes of ``s`` (its SH degree kept; an SH element only when the degree is above 0)."""
    if len(s) == 0:
        raise ValueError("a compressed PLY needs at least one splat")
    s = s.take(morton_order(s.means))
    n = len(s)
    n_chunks = -(-n // CHUNK_SIZE)
    ci = np.arange(n) // CHUNK_SIZE
    rgb = s.sh0.reshape(n, 3) * SH_C0 + 0.5
    scales = np.clip(s.scales, -20.0, 20.0)
    pos_lo, pos_hi = _chunk_ranges(s.means, n_chunks)
    sc_lo, sc_hi = _chunk_ranges(scales, n_chunks)
    col_lo, col_hi = _chunk_ranges(rgb, n_chunks)
    chunk = np.concatenate([pos_lo, pos_hi, sc_lo, sc_hi, col_lo, col_hi], axis=1).astype("<f4")
    frac = lambda v, lo, hi: np.stack(  # noqa: E731
        [_chunk_fraction(v[:, i], lo[:, i], hi[:, i], ci) for i in range(v.shape[1])], axis=1
    )
    alpha = 1.0 / (1.0 + np.exp(-s.opacities))
    c = pack_unorm(frac(rgb, col_lo, col_hi), 8)
    color = (c[:, 0] << 24) | (c[:, 1] << 16) | (c[:, 2] << 8) | pack_unorm(alpha, 8)
    vertex = np.stack(
        [
            _pack_111011(frac(s.means, pos_lo, pos_hi)),
            _pack_rotation(s.quats),
            _pack_111011(frac(scales, sc_lo, sc_hi)),
            color,
        ],
        axis=1,
    ).astype("<u4")
    k = s.shN.shape[1]
    rest = s.shN.transpose(0, 2, 1).reshape(n, 3 * k)  # channel-major, as 3DGS PLYs
    sh = np.clip(np.trunc((rest / 8.0 + 0.5) * 256.0), 0, 255).astype(np.uint8)
    lines = ["ply", "format binary_little_endian 1.0", f"comment {PLY_COMMENT}{s.primitive}"]
    lines += [f"element chunk {n_chunks}"] + [f"property float {p}" for p in CHUNK_PROPS + CHUNK_COLOR_PROPS]
    lines += [f"element vertex {n}"] + [f"property uint {p}" for p in VERTEX_PROPS]
    if k:
        lines += [f"element sh {n}"] + [f"property uchar f_rest_{i}" for i in range(3 * k)]
    header = ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")
    return header + chunk.tobytes() + vertex.tobytes() + (sh.tobytes() if k else b"")


def write_compressed_ply(path: str | Path, s: SplatArrays) -> int:
    """Write ``path`` atomically; returns its size in bytes."""
    data = encode_compressed_ply(s)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return len(data)
