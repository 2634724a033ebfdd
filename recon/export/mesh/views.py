"""One camera's rendered maps, and the pixel geometry the mesh methods read from them.

``render_view`` is the one place the mesh export renders a model: colour, alpha and surface depth of one camera.
Pixels covered less than alpha 0.5 carry no depth; surface depth is the median depth (2DGS's ``depth_ratio`` 1, its
bounded-scene setting; ``depth_ratio`` blends in expected depth / alpha). On the sample scene the median cut the
Chamfer distance of both a plain-3DGS and a surfel run by about a quarter against expected depth, which a
semi-transparent layer pulls off the surface.

Methods that need only rendered maps (TSDF fusion) take a ``RenderFn``: camera index -> ``ViewMaps``, so they
serve any representation that renders depth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recon.data.cameras import Cameras
from recon.models import Representation

from .options import MeshOptions


@dataclass
class ViewMaps:
    """One camera's rendered maps as float32 numpy arrays (H×W or H×W×3)."""

    rgb: np.ndarray  # colour un-premultiplied by alpha
    alpha: np.ndarray
    depth: np.ndarray  # surface depth (z, not ray length); 0 where alpha < alpha_min
    depth_median: np.ndarray


RenderFn = Callable[[int], ViewMaps]
"""``render(i)``: the maps of camera ``i`` (an index into the cameras the mesh method is given)."""


@torch.no_grad()
def render_view(model: Representation, cameras: Cameras, i: int, opts: MeshOptions) -> ViewMaps:
    viewmats, Ks = cameras[[i]].torch()
    out, _ = model.render(
        viewmats.float(), Ks.float(), int(cameras.widths[i]), int(cameras.heights[i]),
        ("rgb", "alpha", "depth_exp", "depth_median"), backend=opts.backend,
    )  # fmt: skip
    alpha = out.alpha[0, ..., 0].clamp(0, 1)
    safe = alpha.clamp_min(1e-6)
    rgb = (out.rgb[0] / safe[..., None]).clamp(0, 1)
    median = out.depth_median[0, ..., 0]
    depth = (1 - opts.depth_ratio) * out.depth_exp[0, ..., 0] / safe + opts.depth_ratio * median
    depth = torch.where(alpha >= opts.alpha_min, depth, torch.zeros_like(depth))
    return ViewMaps(
        rgb=rgb.numpy().astype(np.float32),
        alpha=alpha.numpy().astype(np.float32),
        depth=depth.numpy().astype(np.float32),
        depth_median=torch.where(alpha >= opts.alpha_min, median, torch.zeros_like(median)).numpy(),
    )


def upsample_factor(width: int, height: int, opts: MeshOptions) -> int:
    """The integer factor a view's maps are upsampled by before fusion: ``depth_upsample``, lowered until the
    upsampled view holds at most ``upsample_max_pixels`` (never below 1)."""
    factor = max(1, int(opts.depth_upsample))
    while factor > 1 and width * height * factor * factor > opts.upsample_max_pixels:
        factor -= 1
    return factor


EDGE_SPAN = 0.05  # depths within this fraction of each other are one surface and interpolate


def upsample_maps(depth: np.ndarray, rgb: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth [fH,fW], rgb [fH,fW,3]) upsampled ``factor`` times with pixel centres kept in place: bilinear where
    the source pixel's 3×3 neighbourhood holds depth everywhere and spans at most EDGE_SPAN of its nearest depth,
    nearest pixel elsewhere, so depth edges stay sharp and no depth appears between a surface and the background."""
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    padded = torch.nn.functional.pad(d, (1, 1, 1, 1), mode="replicate")
    hi = torch.nn.functional.max_pool2d(padded, 3, stride=1)
    lo = -torch.nn.functional.max_pool2d(-padded, 3, stride=1)
    smooth = (lo > 0) & (hi - lo <= EDGE_SPAN * lo)

    def up(x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "nearest":
            return torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
        return torch.nn.functional.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    smooth_up = up(smooth.float(), "nearest") > 0.5
    depth_up = torch.where(smooth_up, up(d, "bilinear"), up(d, "nearest"))
    c = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    rgb_up = up(c, "bilinear").clamp(0, 1)[0].permute(1, 2, 0)
    return depth_up[0, 0].numpy(), np.ascontiguousarray(rgb_up.numpy())


def pixel_rays(cameras: Cameras, i: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(camera centre [3], world directions [P,3] with camera-z component 1) through the given pixel centres."""
    kinv = np.linalg.inv(cameras.Ks[i])
    pix = np.stack([cols + 0.5, rows + 0.5, np.ones_like(cols, dtype=np.float64)], -1)
    rot = cameras.viewmats[i, :3, :3]
    return cameras.centers[i], (pix @ kinv.T) @ rot  # R^T d for each row d


def depth_points(cameras: Cameras, i: int, depth: np.ndarray, stride: int = 1) -> np.ndarray:
    """World points [P,3] of the pixels with depth > 0 (every ``stride``-th pixel in each direction)."""
    rows, cols = np.nonzero(depth[::stride, ::stride] > 0)
    rows, cols = rows * stride, cols * stride
    origin, dirs = pixel_rays(cameras, i, rows, cols)
    return origin + dirs * depth[rows, cols, None]
