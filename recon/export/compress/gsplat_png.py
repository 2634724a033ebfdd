"""gsplat's PNG compression (``gsplat.compression.PngCompression``, Self-Organizing Gaussians) as the library
baseline, run on the CPU.

What runs without CUDA: its 8/16-bit quantisation into PNG images (torch, numpy, imageio) runs; its two optional
parts do not: the PLAS sort needs the ``plas`` package (GitHub only, not on PyPI), and the K-means of the SH
coefficients needs ``torchpq``, which needs CuPy and a CUDA GPU. So the baseline here is unsorted
(``use_sort=False``), and its higher SH is either kept by gsplat's own NPZ writer (``sh="npz"``) or dropped
(``sh="drop"``, degree 0). gsplat also drops the least opaque splats down to a square number.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from .params import SplatArrays


def parts_available() -> dict[str, bool]:
    """Which parts of gsplat's PNG compression can run here."""
    return {
        "png_quantisation": importlib.util.find_spec("imageio") is not None,
        "plas_sort": importlib.util.find_spec("plas") is not None,
        "kmeans_sh": importlib.util.find_spec("torchpq") is not None and torch.cuda.is_available(),
    }


def _compressor(sh: str):
    from gsplat.compression import PngCompression
    from gsplat.compression.png_compression import _compress_npz, _decompress_npz

    class CpuPngCompression(PngCompression):
        """gsplat's compressor with the SH codec swapped for its NPZ one (its K-means needs CUDA)."""

        def _get_compress_fn(self, name: str):
            return _compress_npz if name == "shN" else super()._get_compress_fn(name)

        def _get_decompress_fn(self, name: str):
            return _decompress_npz if name == "shN" else super()._get_decompress_fn(name)

    if sh not in ("npz", "drop"):
        raise ValueError(f"sh must be 'npz' or 'drop', got {sh!r}")
    return CpuPngCompression(use_sort=False, verbose=False)


def write_gsplat_png(s: SplatArrays, out_dir: str | Path, sh: str = "npz") -> int:
    """Compress ``s`` into ``out_dir`` (created) with gsplat's PNG compression; returns the bytes written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splats = {k: v.clone() for k, v in s.torch_params().items()}
    if sh == "drop" or splats["shN"].shape[1] == 0:
        splats.pop("shN")
    with contextlib.redirect_stdout(sys.stderr):  # gsplat prints its warnings
        _compressor(sh).compress(str(out_dir), splats)
    return sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())


def read_gsplat_png(out_dir: str | Path, primitive: str = "gaussian3d") -> SplatArrays:
    """The splats of a folder written by ``write_gsplat_png``."""
    p = _compressor("npz").decompress(str(out_dir))
    n = len(p["means"])
    p.setdefault("shN", torch.zeros(n, 0, 3))
    return SplatArrays.from_params({k: v.float() for k, v in p.items()}, primitive)


def gsplat_png_size(s: SplatArrays, sh: str = "npz") -> tuple[int, SplatArrays]:
    """(bytes, the splats read back) of gsplat's PNG compression of ``s``, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        size = write_gsplat_png(s, tmp, sh)
        back = read_gsplat_png(tmp, s.primitive)
    return size, back


__all__ = ["gsplat_png_size", "parts_available", "read_gsplat_png", "write_gsplat_png"]
