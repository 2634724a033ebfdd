"""What `recon view TARGET` shows: read a run folder, a scene folder, a splat PLY, a mesh or a point cloud.

Every failure to find or read the target is a ``ReconError`` (one line, exit code 2) raised before any server
starts, so a typo never leaves a port bound or a browser tab pointing at an empty page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from plyfile import PlyData

from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder
from recon.data.scene import Scene, find_scene, load_scene
from recon.models import Representation
from recon.models.compressed_ply import is_compressed_ply
from recon.models.registry import load_model_file

log = logging.getLogger("recon")

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")
WHAT = "a run folder, a scene folder, a splat .ply or .spz, or a mesh (.ply, .obj, .glb)"


@dataclass
class ViewTarget:
    """Everything the viewer can show for one target; fields that do not apply are None."""

    path: Path
    kind: str  # "run", "scene", "splats", "mesh" or "points"
    model: Representation | None = None
    scene: Scene | None = None
    mesh: object | None = None  # trimesh.Trimesh
    points: np.ndarray | None = None  # [P,3] float32
    points_rgb: np.ndarray | None = None  # [P,3] uint8
    step: int | None = None
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why

    def describe(self) -> str:
        parts = [f"{self.kind} {self.path}"]
        if self.model is not None:
            parts.append(f"{len(self.model):,} {self.model.noun}")
        if self.scene is not None:
            parts.append(f"{len(self.scene)} cameras")
        if self.mesh is not None:
            parts.append(f"{len(self.mesh.vertices):,} vertices, {len(self.mesh.faces):,} faces")
        if self.points is not None and self.kind == "points":
            parts.append(f"{len(self.points):,} points")
        return ", ".join(parts)


def load_target(path: str | Path) -> ViewTarget:
    """Read ``path`` into a ``ViewTarget``; a ``ReconError`` naming the problem when it cannot be shown."""
    path = Path(path)
    if not path.exists():
        raise ReconError(f"{path} does not exist; pass {WHAT}")
    try:
        if path.is_dir():
            return _load_folder(path)
        return _load_file(path)
    except PermissionError as e:
        raise ReconError(f"cannot read {e.filename or path}: permission denied") from None


def _load_folder(path: Path) -> ViewTarget:
    from recon.models.registry import model_file_name
    from recon.train.runs import load_run_model

    folder = RunFolder(path)
    model_file = model_file_name(
        folder.setting("model", "kind", "splats"), folder.setting("model", "primitive")
    )
    if folder.model_path(model_file).is_file() or (folder.latest_checkpoint() is not None):
        try:
            model, step, _ = load_run_model(path)
        except ReconError:
            raise
        except Exception as e:  # a truncated or foreign checkpoint: say which file and why, in one line
            raise ReconError(f"cannot read the model of run {path} ({type(e).__name__}: {e})") from None
        target = ViewTarget(path, "run", model=model, step=step)
        _attach_run_scene(target)
        return target
    try:
        find_scene(path)
    except ReconError:
        raise ReconError(f"{path} holds no run (splats.ply or ckpt/) and no scene; pass {WHAT}") from None
    scene = load_scene(path)
    return ViewTarget(path, "scene", scene=scene, points=scene.points, points_rgb=scene.points_rgb)


def _attach_run_scene(target: ViewTarget) -> None:
    """Cameras and sparse points of the scene a run was trained on, when that scene is still where it was."""
    folder = RunFolder(target.path)
    if not folder.meta_path.is_file():
        target.notes.append(f"{folder.META} missing: cameras not shown")
        return
    from recon.train.run_setup import load_training_scene
    from recon.train.runs import load_run_config

    try:
        scene_dir = folder.scene_dir()
        scene = load_training_scene(scene_dir, load_run_config(target.path))  # the run's split and downscale
    except (ReconError, KeyError, ValueError, OSError) as e:
        target.notes.append(f"scene not loaded ({e}): cameras not shown")
        log.warning("%s: cameras not shown (%s)", target.path, e)
        return
    target.scene, target.points, target.points_rgb = scene, scene.points, scene.points_rgb


def _load_file(path: Path) -> ViewTarget:
    suffix = path.suffix.lower()
    if suffix == ".spz":
        return ViewTarget(path, "splats", model=load_model_file(path, "splats"))
    if suffix == ".ply":
        return _load_ply(path)
    if suffix in MESH_SUFFIXES:
        return ViewTarget(path, "mesh", mesh=_load_mesh(path))
    raise ReconError(f"{path}: cannot show a {suffix or 'suffix-less'} file; pass {WHAT}")


def _load_ply(path: Path) -> ViewTarget:
    """A PLY is splats (3DGS attributes), a mesh (it has faces) or a point cloud (only vertices)."""
    try:
        ply = PlyData.read(str(path))
    except Exception as e:
        raise ReconError(f"{path} is not a readable PLY file ({e})") from None
    names = {el.name: el for el in ply.elements}
    if "vertex" not in names or len(names["vertex"].data) == 0:
        raise ReconError(f"{path} has no vertices; pass a splat PLY, a mesh or a point cloud")
    if is_compressed_ply(ply):  # SuperSplat's compressed splats
        return ViewTarget(path, "splats", model=load_model_file(path, "splats"))
    props = set(names["vertex"].data.dtype.names)
    if "face" in names and len(names["face"].data) > 0:
        return ViewTarget(path, "mesh", mesh=_load_mesh(path))
    shaped = {"scale_0", "rot_0"} <= props or {"delta", "sigma", "p0_x"} <= props  # Gaussians or convexes
    if {"f_dc_0", "opacity"} <= props and shaped:
        return ViewTarget(path, "splats", model=load_model_file(path, "splats"))
    if not {"x", "y", "z"} <= props:
        raise ReconError(
            f"{path} has no x, y, z vertex properties; pass a splat PLY, a mesh or a point cloud"
        )
    v = names["vertex"].data
    xyz = np.stack([np.asarray(v[k], np.float32) for k in "xyz"], axis=1)
    rgb = None
    if {"red", "green", "blue"} <= props:
        rgb = np.stack([np.asarray(v[k]) for k in ("red", "green", "blue")], axis=1)
        rgb = rgb.astype(np.uint8) if rgb.dtype == np.uint8 else np.clip(rgb * 255, 0, 255).astype(np.uint8)
    return ViewTarget(path, "points", points=xyz, points_rgb=rgb)


def _load_mesh(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as e:
        raise ReconError(f"{path} is not a readable mesh ({type(e).__name__}: {e})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ReconError(f"{path} holds no triangles; pass a mesh with faces")
    return mesh
