"""Blender synthetic scenes (the NeRF dataset layout): ``transforms_{train,val,test}.json``.

Each file has a ``camera_angle_x`` and frames with an OpenGL camera-to-world ``transform_matrix`` and a
``file_path`` usually without extension (``./train/r_0`` -> ``train/r_0.png``). Images are RGBA; the alpha is
composited on the scene background when pixels are loaded (``ImageStore``), not here, so one reader serves any
background. The dataset's own files define the split: train from ``transforms_train.json``, test from
``transforms_test.json`` (or ``transforms_val.json`` when there is no test file, as 3DGS ignores val).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.data.formats.nerfstudio import frames_to_cameras, load_json, warn_skipped


def read_blender(folder: str | os.PathLike) -> tuple[Cameras, list[Path], np.ndarray, np.ndarray]:
    """(cameras, image paths, train_ids, test_ids): train frames first, then test frames, in file order."""
    folder = Path(folder)
    train_json = folder / "transforms_train.json"
    if not train_json.is_file():
        raise ReconError(f"no transforms_train.json in {folder}; is it a Blender synthetic scene?")
    test_json = next(
        (p for p in (folder / "transforms_test.json", folder / "transforms_val.json") if p.is_file()), None
    )
    parts, paths, counts = [], [], []
    skipped, total = 0, 0
    for json_path in (train_json, test_json):
        if json_path is None:
            counts.append(0)
            continue
        data = load_json(json_path)
        if "camera_angle_x" not in data and "fl_x" not in data:
            raise ReconError(f"{json_path} has no camera_angle_x; is it a Blender synthetic scene?")
        cams, p, _, n_skip = frames_to_cameras(data, json_path)
        # Names relative to the scene folder, so "train/r_0.png" and "test/r_0.png" stay distinct.
        cams.names = [q.relative_to(folder).as_posix() for q in p]
        parts.append(cams)
        paths += p
        counts.append(len(cams))
        skipped += n_skip
        total += len(data["frames"])
    warn_skipped(skipped, total, folder)
    cameras = Cameras.concat(parts)
    train_ids = np.arange(counts[0], dtype=np.int64)
    test_ids = np.arange(counts[0], counts[0] + counts[1], dtype=np.int64)
    return cameras, paths, train_ids, test_ids
