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

log = logging.getLogger("recon")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")
PINHOLE_MODELS = {None, "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"}
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2", "camera_model")
ANGLE_KEYS = ("camera_angle_x", "camera_angle_y")


def resolve_image(base: Path, file_path: str) -> Path | None:
    """The image ``file_path`` names relative to ``base``; Blender/NeRF-style paths may omit the extension."""
    p = base / file_path
    if p.is_file():
        return p
    if not p.suffix or p.suffix.lower() not in {s.lower() for s in IMAGE_SUFFIXES}:
        for s in IMAGE_SUFFIXES:
            q = p.with_name(p.name + s)
            if q.is_file():
                return q
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, without decoding (and without EXIF rotation, as COLMAP)."""
    with Image.open(path) as im:
        return im.size


def _frame_intrinsics(meta: dict, path: Path, json_path: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K, [k1 k2 p1 p2], w, h) of one frame whose keys already include the global ones."""
    model = meta.get("camera_model")
    if model not in PINHOLE_MODELS:
        raise ReconError(
            f"{json_path}: camera_model {model} is not supported; use OPENCV or PINHOLE cameras "
            "(undistort fisheye/equirectangular images first)"
        )
    extra = [k for k in ("k3", "k4") if float(meta.get(k, 0.0) or 0.0) != 0.0]
    if extra:
        raise ReconError(f"{json_path}: distortion {', '.join(extra)} is not supported; only k1 k2 p1 p2 are")
    if "w" in meta and "h" in meta:
        w, h = int(meta["w"]), int(meta["h"])
    else:
        w, h = image_size(path)
    if "fl_x" in meta:
        fx = float(meta["fl_x"])
    elif "camera_angle_x" in meta:
        fx = 0.5 * w / math.tan(0.5 * float(meta["camera_angle_x"]))
    else:
        raise ReconError(f"{json_path}: no focal length for {path.name}; give fl_x (or camera_angle_x)")
    if "fl_y" in meta:
        fy = float(meta["fl_y"])
    elif "camera_angle_y" in meta and "fl_x" not in meta:
        fy = 0.5 * h / math.tan(0.5 * float(meta["camera_angle_y"]))
    else:
        fy = fx
    cx = float(meta.get("cx", 0.5 * w))
    cy = float(meta.get("cy", 0.5 * h))
    dist = np.array([float(meta.get(k, 0.0) or 0.0) for k in ("k1", "k2", "p1", "p2")])
    return intrinsics_matrix(fx, fy, cx, cy), dist, w, h


def load_json(json_path: Path) -> dict:
    try:
        data = json.loads(Path(json_path).read_text())
    except FileNotFoundError as e:
        raise ReconError(f"{json_path} not found; check the scene path") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReconError(f"{json_path} is not valid JSON ({e}); fix or regenerate it") from e
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise ReconError(f'{json_path} has no "frames" list; is it a nerfstudio/instant-ngp transforms.json?')
    return data


def frames_to_cameras(
    data: dict, json_path: Path, what: str = "frames"
) -> tuple[Cameras, list[Path], list[dict], int]:
    """(cameras, image paths, the kept frame dicts, number skipped) for the frames of one transforms file.

    Frames whose image file is missing are skipped and counted; the caller warns once.
    """
    base = json_path.parent
    glob = {k: data[k] for k in INTRINSIC_KEYS + ANGLE_KEYS if k in data}
    viewmats, ks, dists, widths, heights, paths, names, kept = [], [], [], [], [], [], [], []
    for i, frame in enumerate(data["frames"]):
        if "file_path" not in frame or "transform_matrix" not in frame:
            raise ReconError(f"{json_path}: frame {i} lacks file_path or transform_matrix")
        path = resolve_image(base, str(frame["file_path"]))
        if path is None:
            continue
        k, d, w, h = _frame_intrinsics({**glob, **frame}, path, json_path)
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
        if c2w.shape != (4, 4):
            raise ReconError(f"{json_path}: frame {i} transform_matrix is not 4x4")
        viewmats.append(c2w_opengl_to_viewmat(c2w)[0])
        ks.append(k)
        dists.append(d)
        widths.append(w)
        heights.append(h)
        paths.append(path)
        names.append(path.relative_to(base).as_posix())
        kept.append(frame)
    skipped = len(data["frames"]) - len(kept)
    if not kept:
        raise ReconError(
            f"none of the {len(data['frames'])} {what} in {json_path} has its image file; "
            "check that file_path is relative to the json's folder"
        )
    dist = np.stack(dists)
    cams = Cameras(np.stack(viewmats), np.stack(ks), widths, heights, dist if np.any(dist) else None, names)
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
        mask_paths = [json_path.parent / str(f["mask_path"]) for f in frames]
    points = None
    if data.get("ply_file_path"):
        ply = json_path.parent / str(data["ply_file_path"])
        if ply.is_file():
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
