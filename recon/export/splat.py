"""The widely used 32-bytes-per-splat `.splat` format (antimatter15's web viewer and its many descendants).

Per splat, little-endian: position 3×float32, scale 3×float32 (linear, not log), colour RGBA 4×uint8 (DC colour and
opacity), rotation 4×uint8 (normalised quaternion w,x,y,z mapped from [-1,1] to [0,255]). Splats are sorted by
decreasing size × opacity, which is the order those viewers expect for progressive loading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.data.atomic import atomic_path
from recon.models import Representation

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def splat_records(model: Representation) -> np.ndarray:
    """The model's Gaussian preview (surfels as flat Gaussians) as sorted `.splat` records."""
    g = model.preview()
    scales = torch.from_numpy(g.scales)
    opacity = torch.from_numpy(g.opacities)
    order = torch.argsort(-(torch.exp(torch.log(scales).sum(1)) * opacity), stable=True).numpy()
    rgba = np.clip(np.concatenate([g.rgb, g.opacities[:, None]], axis=1), 0, 1) * 255
    rec = np.empty(len(order), dtype=SPLAT_DTYPE)
    rec["position"] = g.means[order]
    rec["scale"] = g.scales[order]
    rec["rgba"] = np.round(rgba[order]).astype(np.uint8)
    rec["rot"] = np.clip(np.round(g.quats[order] * 128 + 128), 0, 255).astype(np.uint8)
    return rec


def write_splat(model: Representation, path: str | Path) -> int:
    """Write ``path`` atomically; returns the number of splats."""
    rec = splat_records(model)
    with atomic_path(path) as tmp:
        tmp.write_bytes(rec.tobytes())
    return len(rec)


def read_splat(path: str | Path) -> np.ndarray:
    return np.frombuffer(Path(path).read_bytes(), dtype=SPLAT_DTYPE)
