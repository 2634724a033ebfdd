"""``RasterSettings``: the image and culling settings every backend and every primitive projection takes.

Why one object: the same seven values (image size, near/far planes, radius clip, low-pass, tile size) used to be
repeated as keyword lists through the dispatcher, each backend and each projection; now ``rasterize`` builds them
once and everything below passes one value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


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
