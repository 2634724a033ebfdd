"""Checks at the boundary of every scene reader: what a camera file says must be usable before anything uses it.

Why one place: a NaN, a negative focal length or a singular pose read from a hand-edited or damaged file would
otherwise surface far away, as a traceback in the rasterizer or a misleading "try a lower learning rate". Each
reader parses its syntax and reports what it cannot parse; the camera values it produced are then checked here,
and the first bad one is reported in one line naming the file, the frame and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .cameras import Cameras
from .errors import ReconError

MAX_IMAGE_SIDE = 100_000  # pixels; larger is a damaged file, not a photo
_LARGE = 1e30  # a camera value beyond this overflows float32 arithmetic in the renderer
_SINGULAR = 1e-9  # |det| of a pose's 3x3 block below this: not invertible


def number(value: Any, what: str, where: str, fix: str) -> float:
    """``value`` as a finite float, or a ReconError ``where: what is VALUE, not a finite number; fix``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ReconError(f"{where}: {what} is {_show(value)}, not a number; {fix}") from None
    if not math.isfinite(x):
        raise ReconError(f"{where}: {what} is {_show(value)}, not a finite number; {fix}")
    return x


def positive(value: Any, what: str, where: str, fix: str) -> float:
    x = number(value, what, where, fix)
    if x <= 0:
        raise ReconError(f"{where}: {what} is {_show(value)}; it must be positive; {fix}")
    return x


def image_side(value: Any, what: str, where: str, fix: str) -> int:
    """A width or height in pixels: a whole number from 1 to MAX_IMAGE_SIDE."""
    x = number(value, what, where, fix)
    if x != int(x) or not 1 <= x <= MAX_IMAGE_SIDE:
        raise ReconError(f"{where}: {what} is {_show(value)}; use a whole number of pixels from 1 up; {fix}")
    return int(x)


def matrix(value: Any, shapes: tuple[tuple[int, ...], ...], what: str, where: str, fix: str) -> np.ndarray:
    """``value`` as a float64 array of one of ``shapes``, every entry finite."""
    try:
        if _has_bool(value):
            raise TypeError
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ReconError(f"{where}: {what} is not a matrix of numbers; {fix}") from None
    if a.shape not in shapes:
        want = " or ".join("x".join(map(str, s)) for s in shapes)
        raise ReconError(f"{where}: {what} has shape {list(a.shape)}, not {want}; {fix}")
    if not np.isfinite(a).all():
        raise ReconError(f"{where}: {what} holds NaN or Infinity; {fix}")
    return a


def check_cameras(cams: Cameras, source: str | Path, fix: str, labels: list[str] | None = None) -> Cameras:
    """``cams`` when every camera has a usable size, intrinsics and pose; else a ReconError naming ``source``, the
    frame (``labels[i]``, default ``frame i (name)``) and ``fix``."""
    for i in range(len(cams)):
        where = f"{source}: {labels[i] if labels else f'frame {i} ({cams.names[i]})'}"
        w, h = int(cams.widths[i]), int(cams.heights[i])
        if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
            raise ReconError(f"{where}: image size {w}x{h} is not a usable size in pixels; {fix}")
        k = cams.Ks[i]
        if not _finite32(k):
            raise ReconError(f"{where}: the intrinsics hold NaN, Infinity or a value beyond 1e30; {fix}")
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise ReconError(f"{where}: focal length {k[0, 0]:g}, {k[1, 1]:g} px; it must be positive; {fix}")
        if cams.dist is not None and not np.isfinite(cams.dist[i]).all():
            raise ReconError(f"{where}: the distortion coefficients hold NaN or Infinity; {fix}")
        check_pose(cams.viewmats[i], where, fix)
    return cams


def check_pose(pose: np.ndarray, where: str, fix: str) -> np.ndarray:
    """``pose`` (4x4, world-to-camera or its inverse) when finite, with last row 0 0 0 1 and an invertible 3x3
    block; else a ReconError. Readers call it before inverting a camera-to-world matrix."""
    if not _finite32(pose):
        raise ReconError(f"{where}: the pose holds NaN, Infinity or a value beyond 1e30; {fix}")
    if not np.allclose(pose[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6):
        raise ReconError(f"{where}: the pose's last row is not 0 0 0 1; {fix}")
    r = pose[:3, :3]
    with np.errstate(all="ignore"):
        det = np.linalg.det(r)
    if not (abs(det) > _SINGULAR * max(1.0, np.abs(r).max() ** 3)):
        raise ReconError(f"{where}: the pose's rotation is singular (not invertible); {fix}")
    return pose


def _finite32(a: np.ndarray) -> bool:
    """Finite, and still finite once the renderer converts it to float32 (and squares it)."""
    return bool(np.isfinite(a).all() and (np.abs(a) < _LARGE).all())


def _has_bool(value: Any, depth: int = 0) -> bool:
    """Whether a (nested, at most 3 deep: deeper is refused by the shape check) list holds a JSON true/false."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)) and depth < 3:
        return any(_has_bool(v, depth + 1) for v in value)
    return False


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
