"""nerfstudio and instant-ngp ``transforms.json``.

Both store camera-to-world matrices in OpenGL axes (``transform_matrix``) and intrinsics either once at the
top level or per frame (a frame's keys override the global ones). nerfstudio writes ``fl_x fl_y cx cy w h``
and OPENCV distortion ``k1 k2 p1 p2``; instant-ngp may give only ``camera_angle_x`` (and ``camera_angle_y``)
and omit the image size, which is then read from the image header. Pixel centres are at +0.5 in both, as in
recon.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from recon.data.atomic import atomic_write_text
from recon.data.cameras import Cameras, c2w_opengl_to_viewmat, intrinsics_matrix, viewmat_to_c2w_opengl
from recon.data.errors import ReconError
from recon.data.ply import read_points_ply
from recon.data.validate import check_cameras, check_pose, image_side, matrix, number, positive

log = logging.getLogger("recon")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
PINHOLE_MODELS = {None, "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"}
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2", "camera_model")
ANGLE_KEYS = ("camera_angle_x", "camera_angle_y")


FIX = "fix the value or regenerate the file (e.g. with `recon process`)"


def is_file(path: Path) -> bool:
    """``path.is_file()``, False for names no file can have (a NUL byte, too long) instead of an exception."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def resolve_image(base: Path, file_path: str) -> Path | None:
    """The image ``file_path`` names relative to ``base``; Blender/NeRF-style paths may omit the extension."""
    p = base / file_path
    if is_file(p):
        return p
    if not p.suffix or p.suffix.lower() not in {s.lower() for s in IMAGE_SUFFIXES}:
        for s in IMAGE_SUFFIXES:
            q = p.with_name(p.name + s)
            if is_file(q):
                return q
    return None


def image_size(path: Path, where: str = "") -> tuple[int, int]:
    """(width, height) from the header, without decoding (and without EXIF rotation, as COLMAP)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # PIL raises several types for files that are not images
        raise ReconError(
            f"{where or path}: cannot read the size of image {path}; replace the image or give w and h"
        ) from None


def _frame_intrinsics(meta: dict, path: Path, where: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K, [k1 k2 p1 p2], w, h) of one frame whose keys already include the global ones; ``where`` names the file
    and the frame in errors."""
    model = meta.get("camera_model")
    if not isinstance(model, (str, type(None))) or model not in PINHOLE_MODELS:
        raise ReconError(
            f"{where}: camera_model {model} is not supported; use OPENCV or PINHOLE cameras "
            "(undistort fisheye/equirectangular images first)"
        )
    extra = [k for k in ("k3", "k4") if number(meta.get(k) or 0.0, k, where, FIX) != 0.0]
    if extra:
        raise ReconError(f"{where}: distortion {', '.join(extra)} is not supported; only k1 k2 p1 p2 are")
    if "w" in meta and "h" in meta:
        w, h = (image_side(meta[k], k, where, FIX) for k in ("w", "h"))
    else:
        w, h = image_size(path, where)
    if "fl_x" in meta:
        fx = positive(meta["fl_x"], "fl_x", where, FIX)
    elif "camera_angle_x" in meta:
        fx = _focal_from_angle(meta["camera_angle_x"], "camera_angle_x", w, where)
    else:
        raise ReconError(f"{where}: no focal length; give fl_x (or camera_angle_x)")
    if "fl_y" in meta:
        fy = positive(meta["fl_y"], "fl_y", where, FIX)
    elif "camera_angle_y" in meta and "fl_x" not in meta:
        fy = _focal_from_angle(meta["camera_angle_y"], "camera_angle_y", h, where)
    else:
        fy = fx
    cx = number(meta.get("cx", 0.5 * w), "cx", where, FIX)
    cy = number(meta.get("cy", 0.5 * h), "cy", where, FIX)
    dist = np.array([number(meta.get(k) or 0.0, k, where, FIX) for k in ("k1", "k2", "p1", "p2")])
    return intrinsics_matrix(fx, fy, cx, cy), dist, w, h


def _focal_from_angle(value, key: str, size: int, where: str) -> float:
    """Focal length in pixels from a field of view in radians, which must lie strictly between 0 and pi."""
    angle = number(value, key, where, FIX)
    if not 0.0 < angle < math.pi:
        raise ReconError(f"{where}: {key} is {angle:g}; use a field of view in radians between 0 and pi")
    return 0.5 * size / math.tan(0.5 * angle)


def load_json(json_path: Path) -> dict:
    try:
        data = json.loads(Path(json_path).read_text())
    except FileNotFoundError as e:
        raise ReconError(f"{json_path} not found; check the scene path") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReconError(f"{json_path} is not valid JSON ({e}); fix or regenerate it") from e
    except RecursionError:
        raise ReconError(
            f"{json_path} is nested too deeply to be a transforms file; fix or regenerate it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise ReconError(f'{json_path} has no "frames" list; is it a nerfstudio/instant-ngp transforms.json?')
    return data


def _pose(frame: dict, where: str) -> np.ndarray:
    """The frame's camera-to-world matrix (OpenGL axes) as 4x4; a 3x4 gets the row 0 0 0 1."""
    c2w = matrix(frame["transform_matrix"], ((4, 4), (3, 4)), "transform_matrix", where, FIX)
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    return check_pose(c2w, where + ": transform_matrix", FIX)


def frames_to_cameras(
    data: dict, json_path: Path, what: str = "frames"
) -> tuple[Cameras, list[Path], list[dict], int]:
    """(cameras, image paths, the kept frame dicts, number skipped) for the frames of one transforms file.

    Frames whose image file is missing are skipped and counted; the caller warns once. Every value a kept
    frame uses is checked (``recon.data.validate``): the first unusable one is a ReconError naming the file,
    the frame and the fix.
    """
    base = json_path.parent
    glob = {k: data[k] for k in INTRINSIC_KEYS + ANGLE_KEYS if k in data}
    viewmats, ks, dists, widths, heights, paths, names, kept, labels = [], [], [], [], [], [], [], [], []
    for i, frame in enumerate(data["frames"]):
        where = f"{json_path}: frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise ReconError(f"{where} lacks file_path or transform_matrix; {FIX}")
        if not isinstance(frame["file_path"], str):
            raise ReconError(f"{where}: file_path is not a string; {FIX}")
        path = resolve_image(base, frame["file_path"])
        if path is None:
            continue
        where = f"{where} ({frame['file_path']})"
        k, d, w, h = _frame_intrinsics({**glob, **frame}, path, where)
        viewmats.append(c2w_opengl_to_viewmat(_pose(frame, where))[0])
        ks.append(k)
        dists.append(d)
        widths.append(w)
        heights.append(h)
        paths.append(path)
        names.append(path.relative_to(base).as_posix())
        kept.append(frame)
        labels.append(f"frame {i} ({frame['file_path']})")
    skipped = len(data["frames"]) - len(kept)
    if not kept:
        raise ReconError(
            f"none of the {len(data['frames'])} {what} in {json_path} has its image file; "
            "check that file_path is relative to the json's folder"
        )
    dist = np.stack(dists)
    cams = Cameras(np.stack(viewmats), np.stack(ks), widths, heights, dist if np.any(dist) else None, names)
    check_cameras(cams, json_path, FIX, labels)
    return cams, paths, kept, skipped


def warn_skipped(skipped: int, total: int, json_path: Path) -> None:
    if skipped:
        log.warning("skipped %d of %d frames whose image file is missing (%s)", skipped, total, json_path)


def read_transforms(
    json_path: str | os.PathLike,
) -> tuple[Cameras, list[Path], tuple[np.ndarray, np.ndarray] | None, dict]:
    """(cameras, image paths, (xyz, rgb) from ``ply_file_path`` or None, extra).

    ``extra`` holds ``mask_paths`` (list of Paths when every kept frame has a ``mask_path``, else None) and
    ``skipped`` (frames dropped because their image file is missing; one warning counts them).
    """
    json_path = Path(json_path)
    data = load_json(json_path)
    cams, paths, frames, skipped = frames_to_cameras(data, json_path)
    warn_skipped(skipped, len(data["frames"]), json_path)
    mask_paths = None
    if all("mask_path" in f for f in frames):
        if not all(isinstance(f["mask_path"], str) for f in frames):
            raise ReconError(f"{json_path}: a mask_path is not a string; {FIX}")
        mask_paths = [json_path.parent / f["mask_path"] for f in frames]
    points = None
    if data.get("ply_file_path"):
        if not isinstance(data["ply_file_path"], str):
            raise ReconError(f"{json_path}: ply_file_path is not a string; {FIX}")
        ply = json_path.parent / data["ply_file_path"]
        if is_file(ply):
            points = read_points_ply(ply)
        else:
            log.warning("ply_file_path %s in %s does not exist; continuing without points", ply, json_path)
    return cams, paths, points, {"mask_paths": mask_paths, "skipped": skipped}


def _intrinsics_dict(cameras: Cameras, i: int, with_dist: bool) -> dict:
    k = cameras.Ks[i]
    out = {
        "fl_x": float(k[0, 0]),
        "fl_y": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
        "w": int(cameras.widths[i]),
        "h": int(cameras.heights[i]),
    }
    if with_dist:
        out.update({n: float(v) for n, v in zip(("k1", "k2", "p1", "p2"), cameras.dist[i][:4])})
    return out


def write_transforms(
    json_path: str | os.PathLike,
    cameras: Cameras,
    image_paths: list[str | os.PathLike],
    ply_file_path: str | os.PathLike | None = None,
) -> None:
    """Write a nerfstudio ``transforms.json`` (also read by instant-ngp) atomically.

    Intrinsics go at the top level when all cameras share them, otherwise into every frame. Image paths are
    written relative to the json's folder; ``ply_file_path`` too when absolute, and as given when relative (it
    is then taken to be relative to the json's folder already, as it will be read).
    """
    json_path = Path(json_path)
    if len(image_paths) != len(cameras):
        raise ValueError(f"write_transforms: {len(cameras)} cameras but {len(image_paths)} image paths")
    if np.any(np.abs(cameras.Ks[:, 0, 1]) > 1e-12):
        raise ValueError("write_transforms: transforms.json has no skew; K[0,1] must be 0")
    base = json_path.parent.resolve()
    with_dist = cameras.has_distortion
    per_frame = [_intrinsics_dict(cameras, i, with_dist) for i in range(len(cameras))]
    shared = all(p == per_frame[0] for p in per_frame)
    out: dict = {"camera_model": "OPENCV"}
    if shared and per_frame:
        out.update(per_frame[0])
    c2ws = viewmat_to_c2w_opengl(cameras.viewmats)
    frames = []
    for i, p in enumerate(image_paths):
        frame = {"file_path": Path(os.path.relpath(Path(p).resolve(), base)).as_posix()}
        if not shared:
            frame.update(per_frame[i])
        frame["transform_matrix"] = c2ws[i].tolist()
        frames.append(frame)
    out["frames"] = frames
    if ply_file_path is not None:
        ply = Path(ply_file_path)
        out["ply_file_path"] = (
            Path(os.path.relpath(ply.resolve(), base)) if ply.is_absolute() else ply
        ).as_posix()
    atomic_write_text(json_path, json.dumps(out, indent=2) + "\n")
