"""Lazy image loading under a RAM budget, with downscaled and undistorted copies cached on disk.

Training touches every image many times, but a large capture does not fit in memory at full size.
``ImageStore`` therefore decodes on demand and keeps an LRU cache of decoded pixels whose total size stays
under ``ram_budget_mb``. Anything that costs more than a decode (undistortion, resizing) is done once per
image and written atomically as a lossless PNG under ``<scene>/.cache/images_<factor>[_undistorted]/``, reused
on the next run while it is newer than its source. A folder of pre-downscaled images beside the originals
(``images_2/`` next to ``images/``, the COLMAP/nerfstudio convention) is used instead when the camera has no
distortion and the sizes match. Masks go through the same path with nearest-neighbour sampling so they stay
binary.

Pixels are cached as decoded (uint8 or uint16, RGB or RGBA); RGBA is composited on the background when an
image is handed out, so the cache does not depend on the background and keeps 1/4 of the float32 size.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from recon.data.atomic import atomic_path
from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.data.undistort import undistort_cameras, undistort_image, undistort_maps

DEFAULT_RAM_BUDGET_MB = 2048.0  # decoded pixels kept in memory; about 170 full 12-MP RGB photos
_READ_FLAGS = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION  # raw pixel layout, as COLMAP sees it


def factor_name(factor: float) -> str:
    """``2.0 -> "2"``, ``1.5 -> "1.5"``: the suffix of cache and ``images_<factor>`` folders."""
    return f"{float(factor):g}"


def read_raw(path: Path, mask: bool = False) -> np.ndarray:
    """Decoded pixels, RGB or RGBA (HxWx3|4) for images and HxW for masks, in the file's own dtype."""
    img = cv2.imread(str(path), _READ_FLAGS)
    if img is None:
        raise ReconError(f"cannot read image {path}; check that it exists and is a PNG or JPEG file")
    if mask:
        return img if img.ndim == 2 else img[..., 0]
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 2:  # grey + alpha
        return np.concatenate([np.repeat(img[..., :1], 3, axis=2), img[..., 1:]], axis=2)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def write_raw(path: Path, img: np.ndarray) -> None:
    """Write decoded pixels as a PNG atomically (fast compression: the cache is written once, read often)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"cv2 could not write {tmp}")


def to_float(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    """float32 HxWx3 in [0,1]; RGBA is composited over ``background``."""
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    x = img.astype(np.float32) * np.float32(1.0 / scale)
    if x.shape[2] == 4:
        a = x[..., 3:4]
        x = x[..., :3] * a + background[None, None, :] * (1.0 - a)
    return np.ascontiguousarray(x[..., :3])


class ImageStore:
    """Images (and optional masks) of a scene at the cameras' final resolution, loaded lazily.

    ``cameras`` are the source cameras (full size, possibly distorted); ``self.cameras`` are the ones the
    images handed out match: undistorted and scaled by ``1 / downscale``.
    """

    def __init__(
        self,
        paths: list[Path],
        cameras: Cameras,
        root: Path,
        downscale: float = 1.0,
        background=(1.0, 1.0, 1.0),
        ram_budget_mb: float = DEFAULT_RAM_BUDGET_MB,
        mask_paths: list[Path] | None = None,
    ) -> None:
        if len(paths) != len(cameras):
            raise ValueError(f"ImageStore: {len(cameras)} cameras but {len(paths)} images")
        if mask_paths is not None and len(mask_paths) != len(paths):
            raise ValueError(f"ImageStore: {len(paths)} images but {len(mask_paths)} masks")
        if not downscale > 0:
            raise ReconError(f"downscale {downscale} must be positive, e.g. 1, 2 or 4")
        self.paths = [Path(p) for p in paths]
        self.mask_paths = None if mask_paths is None else [Path(p) for p in mask_paths]
        self.root = Path(root)
        self.downscale = float(downscale)
        self.background = np.asarray(background, dtype=np.float32).reshape(3)
        self.budget_bytes = int(ram_budget_mb * 2**20)
        self.source_cameras = cameras
        self._undistorted = undistort_cameras(cameras)
        cams = self._undistorted
        self.cameras = cams.scaled(self.downscale) if self.downscale != 1.0 else cams
        self._distorted = (
            np.zeros(len(cameras), dtype=bool) if cameras.dist is None else np.any(cameras.dist != 0, axis=1)
        )
        self._lru: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._maps: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._sources: dict[tuple[str, int], Path | None] = {}
        self._cache_root: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def cached_bytes(self) -> int:
        """Bytes of decoded pixels held in memory now (always <= ``budget_bytes``)."""
        return self._bytes

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None

    def image(self, i: int) -> np.ndarray:
        """float32 HxWx3 in [0,1] of image ``i``, RGBA composited on the background."""
        return to_float(self._get("image", int(i)), self.background)

    def image_on(self, i: int, background: np.ndarray) -> np.ndarray:
        """Image ``i`` composited on another background (random-background training); RGB images are unchanged."""
        return to_float(self._get("image", int(i)), np.asarray(background, dtype=np.float32).reshape(3))

    def has_alpha(self, i: int) -> bool:
        return self._get("image", int(i)).shape[2] == 4

    def mask(self, i: int) -> np.ndarray | None:
        """float32 HxW in [0,1] of mask ``i`` (1 = keep), or None when the scene has no masks."""
        if self.mask_paths is None:
            return None
        m = self._get("mask", int(i))
        return m.astype(np.float32) * np.float32(1.0 / (65535.0 if m.dtype == np.uint16 else 255.0))

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self._bytes = 0

    # -- cache in memory -------------------------------------------------------------------------------------

    def _get(self, kind: str, i: int) -> np.ndarray:
        key = (kind, i)
        with self._lock:
            if key in self._lru:
                self._lru.move_to_end(key)
                return self._lru[key]
        img = self._load(kind, i)
        img.setflags(write=False)  # shared with later callers: nobody may edit it in place
        with self._lock:
            if key not in self._lru and img.nbytes <= self.budget_bytes:
                while self._lru and self._bytes + img.nbytes > self.budget_bytes:
                    _, old = self._lru.popitem(last=False)
                    self._bytes -= old.nbytes
                self._lru[key] = img
                self._bytes += img.nbytes
        return img

    # -- decoding, processing and the disk cache -------------------------------------------------------------

    def _load(self, kind: str, i: int) -> np.ndarray:
        src = self.paths[i] if kind == "image" else self.mask_paths[i]
        is_mask = kind == "mask"
        w, h = int(self.cameras.widths[i]), int(self.cameras.heights[i])
        if self.downscale == 1.0 and not self._distorted[i]:
            return self._check(read_raw(src, is_mask), src, w, h)
        existing = self._existing_downscaled(kind, i, src, w, h)
        if existing is not None:
            return read_raw(existing, is_mask)
        cached = self._cache_file(kind, i, src)
        if cached.is_file() and cached.stat().st_mtime >= src.stat().st_mtime:
            img = read_raw(cached, is_mask)
            if img.shape[:2] == (h, w):
                return img
        sw, sh = int(self.source_cameras.widths[i]), int(self.source_cameras.heights[i])
        img = self._check(read_raw(src, is_mask), src, sw, sh)
        interp = cv2.INTER_NEAREST if is_mask else cv2.INTER_LINEAR
        if self._distorted[i]:
            k, d = self.source_cameras.Ks[i], self.source_cameras.dist[i]
            img = undistort_image(img, k, d, self._undistorted.Ks[i], interp, self._undistort_maps(i))
        if (w, h) != (sw, sh):
            shrink = cv2.INTER_AREA if w < sw else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST if is_mask else shrink)
        write_raw(cached, img)
        return img

    def _check(self, img: np.ndarray, path: Path, w: int, h: int) -> np.ndarray:
        if img.shape[:2] != (h, w):
            hint = " (rotated by EXIF orientation?)" if img.shape[:2] == (w, h) else ""
            raise ReconError(
                f"image {path} is {img.shape[1]}x{img.shape[0]} but its camera says {w}x{h}{hint}; "
                "fix the image or the camera file (w, h / COLMAP cameras)"
            )
        return img

    def _existing_downscaled(self, kind: str, i: int, src: Path, w: int, h: int) -> Path | None:
        """``<root>/images_<f>/<rest>`` for ``<root>/images/<rest>`` when it exists at the expected size."""
        key = (kind, i)
        if key in self._sources:
            return self._sources[key]
        found = None
        if not self._distorted[i] and float(self.downscale).is_integer() and self.downscale > 1:
            try:
                rel = src.relative_to(self.root)
            except ValueError:
                rel = None
            if rel is not None and len(rel.parts) >= 2:
                cand = self.root / f"{rel.parts[0]}_{factor_name(self.downscale)}" / Path(*rel.parts[1:])
                if cand.is_file():
                    with Image.open(cand) as im:
                        if im.size == (w, h):
                            found = cand
        self._sources[key] = found
        return found

    def _cache_file(self, kind: str, i: int, src: Path) -> Path:
        """Where the processed copy of ``src`` lives; undistorted copies carry a hash of their camera."""
        folder = f"{kind}s_{factor_name(self.downscale)}"
        try:
            rel = src.relative_to(self.root)
        except ValueError:
            rel = Path(hashlib.sha1(str(src.parent.resolve()).encode()).hexdigest()[:12]) / src.name
        name = rel.stem
        if self._distorted[i]:
            folder += "_undistorted"
            c = self.source_cameras
            h = hashlib.sha1(np.concatenate([c.Ks[i].ravel(), c.dist[i].ravel()]).tobytes()).hexdigest()[:8]
            name += f"-{h}"
        return self._cache_dir() / folder / rel.parent / f"{name}.png"

    def _cache_dir(self) -> Path:
        """``<root>/.cache``, or a per-scene folder under ``~/.cache/recon`` when the scene is read-only."""
        if self._cache_root is None:
            cand = self.root / ".cache"
            try:
                cand.mkdir(parents=True, exist_ok=True)
                probe = cand / ".write-test"
                probe.touch()
                probe.unlink()
            except OSError:
                digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:12]
                cand = Path.home() / ".cache" / "recon" / digest
                cand.mkdir(parents=True, exist_ok=True)
            self._cache_root = cand
        return self._cache_root

    def _undistort_maps(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Remap tables for camera ``i``, memoised for the few distinct cameras a capture usually has."""
        c = self.source_cameras
        key = np.concatenate([c.Ks[i].ravel(), c.dist[i].ravel(), [c.widths[i], c.heights[i]]]).tobytes()
        with self._lock:
            if key in self._maps:
                self._maps.move_to_end(key)
                return self._maps[key]
        maps = undistort_maps(
            c.Ks[i], c.dist[i], self._undistorted.Ks[i], int(c.widths[i]), int(c.heights[i])
        )
        with self._lock:
            self._maps[key] = maps
            while len(self._maps) > 4:
                self._maps.popitem(last=False)
        return maps
