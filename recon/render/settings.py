"""What every backend takes besides the cameras: ``RasterSettings`` (image and culling settings, also taken by
every primitive's projection), ``Splats`` (the activated primitives) and ``RenderRequest`` (maps, colours,
primitive).

Why one object: the same seven values (image size, near/far planes, radius clip, low-pass, tile size) used to be
repeated as keyword lists through the dispatcher, each backend and each projection; now ``rasterize`` builds them
once and everything below passes one value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

from torch import Tensor


@dataclass(frozen=True)
class RasterSettings:
    width: int  # image width in pixels
    height: int  # image height in pixels
    near_plane: float = 0.01  # primitives whose centre is nearer than this are culled
    far_plane: float = 1e10  # ... or farther than this
    radius_clip: float = 0.0  # primitives whose screen radius is at most this many pixels are culled
    eps2d: float = 0.3  # low-pass added to a 3D Gaussian's 2D covariance (unused by surfels)
    tile_size: int = 16  # side of the square compositing tiles in pixels

    def __post_init__(self) -> None:
        for name in ("width", "height", "tile_size"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("near_plane", "far_plane", "radius_clip", "eps2d"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def tile_width(self) -> int:
        return math.ceil(self.width / self.tile_size)

    @property
    def tile_height(self) -> int:
        return math.ceil(self.height / self.tile_size)

    def projection_tuple(self) -> tuple[int, int, float, float, float, float]:
        """(width, height, eps2d, near, far, radius_clip): the C++ projections' argument order."""
        return (self.width, self.height, self.eps2d, self.near_plane, self.far_plane, self.radius_clip)

    def as_kwargs(self) -> dict:
        """gsplat's keyword names (``rasterization(width=..., near_plane=..., ...)``)."""
        return asdict(self)


class Splats(NamedTuple):
    """The activated primitives a backend renders (``rasterize``'s first five arguments, and ``shape``)."""

    means: Tensor  # [N,3] centres: where SH colours are evaluated
    quats: Tensor | None  # [N,4] wxyz (Gaussians, surfels; None for primitives shaped by ``shape``)
    scales: Tensor | None  # [N,3] (activated)
    opacities: Tensor  # [N] (activated)
    colors: Tensor | None = None  # features or SH coefficients; None when no colour is rendered
    shape: tuple[Tensor, ...] | None = None  # the geometry of primitives not shaped by quats and scales
    # (convexes: points [N,K,3], δ [N], σ [N]); the primitive's descriptor says which it reads


class RenderRequest(NamedTuple):
    """What a backend is asked for besides the settings: the maps, how colours are read, the primitive."""

    outputs: tuple[str, ...] = ("rgb",)
    sh_degree: int | None = None  # colors are SH coefficients of this degree; None: plain features
    backgrounds: Tensor | None = None  # [C,D]
    absgrad: bool = False  # accumulate |dL/dmeans2d| per pixel into means2d.absgrad
    primitive: str = "gaussian3d"  # one of PRIMITIVES
