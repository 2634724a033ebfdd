"""A scene: cameras, their images (loaded lazily), optional masks, sparse points and the train/test split.

``load_scene`` finds the format of a folder, reads it through the matching reader, orders the images by name,
undistorts and downscales the cameras (``ImageStore`` does the same to the pixels, once, cached on disk), and
applies the split. Everything downstream sees pinhole cameras in OpenCV axes that match the images it is
handed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.data.formats.blender import read_blender
from recon.data.formats.colmap import read_colmap
from recon.data.formats.nerfstudio import read_transforms
from recon.data.images import DEFAULT_RAM_BUDGET_MB, ImageStore
from recon.data.split import SplitConfig, make_split

log = logging.getLogger("recon")

MASK_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Scene:
    """Cameras (undistorted, at the loaded resolution) and everything that goes with them, index-aligned."""

    cameras: Cameras
    image_paths: list[Path]  # the original image files
    mask_paths: list[Path] | None
    points: np.ndarray | None  # [P,3] float32 sparse points (SfM or the format's point cloud), world frame
    points_rgb: np.ndarray | None  # [P,3] uint8
    train_ids: np.ndarray  # int64 indices into cameras
    test_ids: np.ndarray
    root: Path
    images: ImageStore
    format: str = "colmap"  # "colmap", "transforms" or "blender"
    background: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def names(self) -> list[str]:
        return self.cameras.names

    def image(self, i: int) -> np.ndarray:
        """float32 HxWx3 in [0,1] at ``cameras[i]``'s size (undistorted, downscaled, composited)."""
        return self.images.image(i)

    def mask(self, i: int) -> np.ndarray | None:
        """float32 HxW in [0,1] (1 = use the pixel), or None when the scene has no masks."""
        return self.images.mask(i)

    def train_cameras(self) -> Cameras:
        return self.cameras[self.train_ids]

    def test_cameras(self) -> Cameras:
        return self.cameras[self.test_ids]


def _is_colmap_model(folder: Path) -> bool:
    return any(
        (folder / f"cameras{s}").is_file() and (folder / f"images{s}").is_file() for s in (".bin", ".txt")
    )


def find_scene(path: Path) -> tuple[str, Path, Path]:
    """(format, scene root, model location): the sparse folder, the transforms.json, or the Blender folder."""
    if path.is_file():
        if path.name == "transforms_train.json":
            return "blender", path.parent, path.parent
        if path.suffix == ".json":
            return "transforms", path.parent, path
    if path.is_dir():
        for cand in (path / "sparse" / "0", path / "sparse", path / "colmap" / "sparse" / "0"):
            if _is_colmap_model(cand):
                return "colmap", path, cand
        if _is_colmap_model(path):  # given the model folder itself: the scene root is the one holding images/
            for root in (path.parent.parent, path.parent, path.parent.parent.parent):
                if (root / "images").is_dir():
                    return "colmap", root, path
        if (path / "transforms.json").is_file():
            return "transforms", path, path / "transforms.json"
        if (path / "transforms_train.json").is_file():
            return "blender", path, path
    if not path.exists():
        raise ReconError(
            f"scene {path} does not exist; give a scene folder or run `recon process PHOTOS --out X`"
        )
    raise ReconError(
        f"no scene found in {path}: expected sparse/0 (COLMAP), transforms.json or transforms_train.json; "
        f"run `recon process PHOTOS --out {path}` first"
    )


def _colmap_masks(root: Path, names: list[str]) -> list[Path] | None:
    """``masks/<name>.png`` (COLMAP's convention), ``masks/<name>`` or ``masks/<stem>.png`` per image."""
    mask_dir = root / "masks"
    if not mask_dir.is_dir():
        return None
    found = []
    for n in names:
        cands = [mask_dir / f"{n}.png", mask_dir / n] + [
            mask_dir / Path(n).with_suffix(s) for s in MASK_SUFFIXES
        ]
        found.append(next((c for c in cands if c.is_file()), None))
    n_found = sum(f is not None for f in found)
    if n_found < len(names):
        log.warning("masks/ holds masks for only %d of %d images; ignoring masks", n_found, len(names))
        return None
    return found


def _read_colmap_scene(root: Path, model: Path):
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise ReconError(f"COLMAP model {model} found but no images/ folder in {root}; put the photos there")
    cams, names, xyz, rgb = read_colmap(model)
    paths = [images_dir / n for n in names]
    keep = np.array([p.is_file() for p in paths], dtype=bool)
    if not keep.any():
        raise ReconError(
            f"none of the {len(paths)} images of {model} is in {images_dir}; check the images folder"
        )
    if not keep.all():
        log.warning(
            "skipped %d of %d frames whose image file is missing (%s)", int((~keep).sum()), len(paths), model
        )
        cams = cams[np.flatnonzero(keep)]
        paths = [p for p, k in zip(paths, keep) if k]
    points = (xyz, rgb) if len(xyz) else None
    return cams, paths, _colmap_masks(root, cams.names), points


def load_scene(
    path: str | os.PathLike,
    downscale: float = 1.0,
    split: SplitConfig | None = None,
    background=(1.0, 1.0, 1.0),
    ram_budget_mb: float = DEFAULT_RAM_BUDGET_MB,
) -> Scene:
    """Load a COLMAP, nerfstudio/instant-ngp or Blender scene (auto-detected) with lazily loaded images.

    COLMAP is looked for in ``sparse/0``, ``sparse`` and ``colmap/sparse/0`` with photos in ``images/``; it
    wins over a ``transforms.json`` in the same folder because it is the original SfM output, points included.
    ``downscale`` divides the image size; ``background`` is the RGB in [0,1] that RGBA images are composited
    on.
    """
    split = split or SplitConfig()
    bg = np.asarray(background, dtype=np.float32).reshape(-1)
    if bg.shape != (3,) or np.any(bg < 0) or np.any(bg > 1):
        raise ReconError(
            f"background {tuple(background)} must be three values in [0,1], e.g. (1, 1, 1) for white"
        )
    kind, root, model = find_scene(Path(path))
    default_split = None
    if kind == "colmap":
        cams, paths, masks, points = _read_colmap_scene(root, model)
    elif kind == "transforms":
        cams, paths, points, extra = read_transforms(model)
        masks = extra["mask_paths"]
        order = np.argsort(np.asarray(cams.names, dtype=object), kind="stable")
        cams = cams[order]
        paths = [paths[i] for i in order]
        masks = None if masks is None else [masks[i] for i in order]
    else:
        cams, paths, train_ids, test_ids = read_blender(model)
        masks, points, default_split = None, None, (train_ids, test_ids)
    train_ids, test_ids = make_split(cams.names, split, root, default_split)
    store = ImageStore(paths, cams, root, downscale, bg, ram_budget_mb, masks)
    return Scene(
        cameras=store.cameras,
        image_paths=paths,
        mask_paths=masks,
        points=None if points is None else points[0],
        points_rgb=None if points is None else points[1],
        train_ids=train_ids,
        test_ids=test_ids,
        root=root,
        images=store,
        format=kind,
        background=bg,
    )
