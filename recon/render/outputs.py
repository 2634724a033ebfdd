"""The ``RenderOutputs`` contract (METHODS.md §2.1): every map a consumer may ask the rasterizer for."""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import Tensor

# Names accepted in ``rasterize(..., outputs=...)``. Definitions, with w_i = alpha_i T_i, T_i = prod_{j<i}(1-alpha_j),
# primitives composited front to back in order of view-space centre depth z_i:
#   rgb           [C,H,W,D]  sum_i w_i c_i + T_final * background
#   alpha         [C,H,W,1]  1 - T_final
#   depth_exp     [C,H,W,1]  sum_i w_i z_i   (un-normalised: divide by alpha where a metric depth is needed)
#                            (z_i: a Gaussian's centre depth; a surfel's per-pixel ray-splat depth, in every map)
#   depth_median  [C,H,W,1]  z_i of the last primitive composited while T_i > 0.5 (0 where none)
#   normal        [C,H,W,3]  sum_i w_i n_i, n_i the shortest Gaussian axis (a surfel's normal) in camera space
#                            flipped to face the camera
#   distort_l1    [C,H,W,1]  sum_{i!=j} w_i w_j |z_i - z_j|
#   distort_ndc2  [C,H,W,1]  sum_{j<i} w_i w_j (m_i - m_j)^2, m = f/(f-n) (1 - n/z), n=0.2, f=100, skip z < n
OUTPUT_NAMES = ("rgb", "alpha", "depth_exp", "depth_median", "normal", "distort_l1", "distort_ndc2")

# Constants shared by every backend (3DGS / gsplat values).
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_EPS = 1e-4
NDC_NEAR = 0.2
NDC_FAR = 100.0


@dataclass
class RenderOutputs:
    """Rendered maps for a batch of C cameras; a field is None unless it was asked for."""

    rgb: Tensor | None = None
    alpha: Tensor | None = None
    depth_exp: Tensor | None = None
    depth_median: Tensor | None = None
    normal: Tensor | None = None
    distort_l1: Tensor | None = None
    distort_ndc2: Tensor | None = None

    def asdict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def normalize_outputs(outputs) -> tuple[str, ...]:
    """Validate the requested map names; 'rgb' is always rendered first."""
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = [o for o in outputs if o not in OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"unknown render output(s) {unknown}; choose from {list(OUTPUT_NAMES)}")
    return tuple(o for o in OUTPUT_NAMES if o in outputs)
