"""COLMAP's model files (``cameras``, ``images``, ``points3D`` as ``.bin`` or ``.txt``), parsed in Python.

Why not pycolmap's reader: it trusts the file. A truncated or damaged ``.bin`` makes it loop or allocate without
end (a count read from garbage), and it accepts NaN poses and negative focal lengths. This parser checks every
count against the bytes that are left, every token's type, and reports the first problem in one line naming the
file and the line (text) or byte (binary). Poses come from the images file (``cam_from_world`` per image, which
COLMAP writes for every registered image, rigs or not); ``rigs`` and ``frames`` files are not needed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.data.errors import ReconError

FIX = "re-export the model from COLMAP, or run `recon process` on the photos again"

# COLMAP's camera model ids, names and parameter counts (colmap/sensor/models.h)
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
    12: ("SIMPLE_DIVISION", 4),
    13: ("DIVISION", 5),
    14: ("SIMPLE_FISHEYE", 3),
    15: ("FISHEYE", 4),
    16: ("EUCM", 6),
    17: ("EQUIRECTANGULAR", 2),
}
MODEL_IDS = {name: (mid, n) for mid, (name, n) in CAMERA_MODELS.items()}


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # float64, as many as the model has


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] w x y z, normalised
    tvec: np.ndarray  # [3]
    camera_id: int
    name: str

    def viewmat(self) -> np.ndarray:
        """World-to-camera 4x4 (COLMAP's cam_from_world, OpenCV axes)."""
        vm = np.eye(4)
        vm[:3, :3] = quat_to_rotmat(self.qvec)
        vm[:3, 3] = self.tvec
        return vm


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: list[ColmapImage]  # in file order
    xyz: np.ndarray  # [P,3] float64
    rgb: np.ndarray  # [P,3] uint8


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def read_model_files(folder: Path) -> ColmapModel:
    """The model in ``folder``: binary when ``cameras.bin`` and ``images.bin`` are there, else text. A missing
    ``points3D`` file means no points."""
    ext = ".bin" if (folder / "cameras.bin").is_file() and (folder / "images.bin").is_file() else ".txt"
    read = _Binary if ext == ".bin" else _Text
    paths = {name: folder / f"{name}{ext}" for name in ("cameras", "images", "points3D")}
    for name in ("cameras", "images"):
        if not paths[name].is_file():
            raise ReconError(
                f"cannot read a COLMAP model in {folder}: {paths[name].name} not found (a model needs cameras and "
                f"images, as .bin or .txt); {FIX}"
            )
    cameras = read(paths["cameras"]).cameras()
    images = read(paths["images"]).images()
    for im in images:
        if im.camera_id not in cameras:
            raise ReconError(
                f"{paths['images']}: image {im.id} ({im.name}) uses camera {im.camera_id}, which "
                f"{paths['cameras']} does not define; {FIX}"
            )
    if paths["points3D"].is_file():
        xyz, rgb = read(paths["points3D"]).points()
    else:
        xyz, rgb = np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    return ColmapModel(cameras, images, xyz, rgb)


def _camera(
    path: Path, where: str, cid: int, model: str, w: float, h: float, params: list[float]
) -> ColmapCamera:
    if not (1 <= w <= 100_000 and 1 <= h <= 100_000 and w == int(w) and h == int(h)):
        raise ReconError(f"{path}: {where}: camera {cid} has image size {w:g}x{h:g}; {FIX}")
    if not all(math.isfinite(p) for p in params):
        raise ReconError(f"{path}: {where}: camera {cid} has NaN or Infinity among its parameters; {FIX}")
    return ColmapCamera(cid, model, int(w), int(h), np.array(params, dtype=np.float64))


def _image(
    path: Path, where: str, iid: int, q: list[float], t: list[float], cid: int, name: str
) -> ColmapImage:
    what = f"{path}: {where}: image {iid} ({name})"
    if not all(math.isfinite(v) for v in (*q, *t)):
        raise ReconError(f"{what}: the pose holds NaN or Infinity; {FIX}")
    qv = np.array(q, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(qv))
    if not (norm > 1e-12 and math.isfinite(norm)):
        raise ReconError(f"{what}: the rotation quaternion {q} is not a rotation; {FIX}")
    if not name:
        raise ReconError(f"{what}: the image has no file name; {FIX}")
    return ColmapImage(iid, qv / norm, np.array(t, dtype=np.float64), cid, name)


def _unique(items, key: str, path: Path) -> None:
    seen: set = set()
    for it in items:
        k = getattr(it, key)
        if k in seen:
            raise ReconError(f"{path}: {key} {k} appears twice; {FIX}")
        seen.add(k)


def _by_id(ids, xyz: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ordered by their id, as COLMAP's own reader hands them out."""
    order = np.argsort(np.asarray(ids), kind="stable")
    return xyz.reshape(-1, 3)[order], rgb.reshape(-1, 3)[order]


class _Text:
    """COLMAP's text files: one record per line (images: two lines), ``#`` comments."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ReconError(f"{path} is not a text file (bytes that are not UTF-8); {FIX}") from None

    def _records(self):
        for n, line in enumerate(self.lines, 1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield n, text.split()

    def _num(self, tok: str, n: int, what: str, integer: bool = False) -> float:
        try:
            return int(tok) if integer else float(tok)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ReconError(f"{self.path}: line {n}: {what} is {tok[:40]!r}, not {kind}; {FIX}") from None

    def cameras(self) -> dict[int, ColmapCamera]:
        cams = {}
        for n, tok in self._records():
            if len(tok) < 4 or tok[1] not in MODEL_IDS:
                raise ReconError(
                    f"{self.path}: line {n}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS with a COLMAP model "
                    f"name; {FIX}"
                )
            count = MODEL_IDS[tok[1]][1]
            if len(tok) != 4 + count:
                raise ReconError(f"{self.path}: line {n}: a {tok[1]} camera has {count} parameters; {FIX}")
            cid = self._num(tok[0], n, "CAMERA_ID", integer=True)
            w, h = (self._num(t, n, k) for t, k in zip(tok[2:4], ("WIDTH", "HEIGHT")))
            params = [self._num(t, n, "a parameter") for t in tok[4:]]
            if cid in cams:
                raise ReconError(f"{self.path}: line {n}: camera {cid} appears twice; {FIX}")
            cams[cid] = _camera(self.path, f"line {n}", cid, tok[1], w, h, params)
        return cams

    def images(self) -> list[ColmapImage]:
        images = []
        lines = self.lines
        n = 0
        while n < len(lines):
            text = lines[n].strip()
            n += 1
            if not text or text.startswith("#"):
                continue
            tok = text.split()
            if len(tok) != 10:
                raise ReconError(
                    f"{self.path}: line {n}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME (10 values), "
                    f"found {len(tok)}; {FIX}"
                )
            iid = self._num(tok[0], n, "IMAGE_ID", integer=True)
            q = [self._num(t, n, "a quaternion value") for t in tok[1:5]]
            t = [self._num(v, n, "a translation value") for v in tok[5:8]]
            cid = self._num(tok[8], n, "CAMERA_ID", integer=True)
            images.append(_image(self.path, f"line {n}", iid, q, t, cid, tok[9]))
            n += 1  # the POINTS2D line of this image (not needed)
        _unique(images, "id", self.path)
        _unique(images, "name", self.path)
        return images

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        ids, xyz, rgb = [], [], []
        for n, tok in self._records():
            if len(tok) < 8 or (len(tok) - 8) % 2:
                raise ReconError(
                    f"{self.path}: line {n}: expected POINT3D_ID X Y Z R G B ERROR TRACK[] (pairs); {FIX}"
                )
            p = [self._num(t, n, "a coordinate") for t in tok[1:4]]
            c = [self._num(t, n, "a colour", integer=True) for t in tok[4:7]]
            if not all(math.isfinite(v) and abs(v) < 1e30 for v in p):
                raise ReconError(
                    f"{self.path}: line {n}: point {tok[0]} has NaN, Infinity or huge coordinates; {FIX}"
                )
            if not all(0 <= v <= 255 for v in c):
                raise ReconError(f"{self.path}: line {n}: point {tok[0]} has a colour outside 0..255; {FIX}")
            ids.append(self._num(tok[0], n, "POINT3D_ID", integer=True))
            xyz.append(p)
            rgb.append(c)
        return _by_id(ids, np.array(xyz, dtype=np.float64), np.array(rgb, dtype=np.uint8))


class _Binary:
    """COLMAP's binary files: little-endian records after a uint64 count; every read is checked against the end."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def _take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ReconError(
                f"{self.path} is truncated or damaged (ends inside a record at byte {self.pos}); {FIX}"
            )
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def _count(self, min_record: int, what: str) -> int:
        (n,) = self._take("<Q")
        if n * min_record > len(self.data) - self.pos:
            raise ReconError(
                f"{self.path} is truncated or damaged: it says {n} {what}, more than its "
                f"{len(self.data)} bytes can hold; {FIX}"
            )
        return n

    def _end(self) -> None:
        if self.pos != len(self.data):
            raise ReconError(
                f"{self.path} is damaged: {len(self.data) - self.pos} bytes follow its last record; {FIX}"
            )

    def cameras(self) -> dict[int, ColmapCamera]:
        cams = {}
        for _ in range(self._count(24, "cameras")):
            at = f"byte {self.pos}"
            cid, mid, w, h = self._take("<IiQQ")
            if mid not in CAMERA_MODELS:
                raise ReconError(f"{self.path}: {at}: camera {cid} has an unknown model id {mid}; {FIX}")
            name, count = CAMERA_MODELS[mid]
            params = list(self._take(f"<{count}d"))
            if cid in cams:
                raise ReconError(f"{self.path}: {at}: camera {cid} appears twice; {FIX}")
            cams[cid] = _camera(self.path, at, cid, name, w, h, params)
        self._end()
        return cams

    def _name(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ReconError(f"{self.path} is truncated or damaged (an image name never ends); {FIX}")
        raw = self.data[self.pos : end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ReconError(f"{self.path}: an image name is not UTF-8 text; {FIX}") from None

    def images(self) -> list[ColmapImage]:
        images = []
        for _ in range(self._count(73, "images")):
            at = f"byte {self.pos}"
            iid, *qt, cid = self._take("<I7dI")
            name = self._name()
            (n2d,) = self._take("<Q")
            if n2d * 24 > len(self.data) - self.pos:
                raise ReconError(
                    f"{self.path}: {at}: image {iid} says {n2d} 2D points, past the file's end; {FIX}"
                )
            self.pos += 24 * n2d
            images.append(_image(self.path, at, iid, qt[:4], qt[4:], cid, name))
        self._end()
        _unique(images, "id", self.path)
        _unique(images, "name", self.path)
        return images

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        n = self._count(51, "points")
        ids = np.empty(n, dtype=np.uint64)
        xyz = np.empty((n, 3))
        rgb = np.empty((n, 3), dtype=np.uint8)
        for i in range(n):
            ids[i], x, y, z, r, g, b, _, track = self._take("<Q3d3BdQ")
            if track * 8 > len(self.data) - self.pos:
                raise ReconError(
                    f"{self.path}: point {i} says {track} observations, past the file's end; {FIX}"
                )
            self.pos += 8 * track
            xyz[i] = (x, y, z)
            rgb[i] = (r, g, b)
        self._end()
        ok = np.isfinite(xyz).all(axis=1) & (np.abs(xyz) < 1e30).all(axis=1)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise ReconError(f"{self.path}: point {bad} has NaN, Infinity or huge coordinates; {FIX}")
        return _by_id(ids, xyz, rgb)
