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
from recon.models.gaussians import GaussianModel, sh0_to_rgb

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def splat_records(model: GaussianModel) -> np.ndarray:
    p = {k: v.detach().cpu().float() for k, v in model.params.items()}
    log_s = model.file_log_scales()  # surfels: flat 3D Gaussians
    scales = torch.exp(log_s)
    opacity = torch.sigmoid(p["opacities"])
    order = torch.argsort(-(torch.exp(log_s.sum(1)) * opacity), stable=True)
    rgb = sh0_to_rgb(p["sh0"][:, 0, :])
    rgba = torch.cat([rgb, opacity[:, None]], dim=1).clamp(0, 1) * 255
    q = p["quats"] / p["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
    rec = np.empty(len(order), dtype=SPLAT_DTYPE)
    rec["position"] = p["means"][order].numpy()
    rec["scale"] = scales[order].numpy()
    rec["rgba"] = np.round(rgba[order].numpy()).astype(np.uint8)
    rec["rot"] = np.clip(np.round(q[order].numpy() * 128 + 128), 0, 255).astype(np.uint8)
    return rec


def write_splat(model: GaussianModel, path: str | Path) -> int:
    """Write ``path`` atomically; returns the number of splats."""
    rec = splat_records(model)
    with atomic_path(path) as tmp:
        tmp.write_bytes(rec.tobytes())
    return len(rec)


def read_splat(path: str | Path) -> np.ndarray:
    return np.frombuffer(Path(path).read_bytes(), dtype=SPLAT_DTYPE)
