"""`recon export RUN --mesh OUT`: the model and cameras of a trained run folder, meshed into a file."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.data.run_folder import RunFolder
from recon.models.registry import load_model_file, model_file_name

from .extract import extract_mesh
from .options import MeshOptions
from .write import check_mesh_suffix, write_mesh


def run_cameras(run: RunFolder) -> Cameras:
    """The cameras a run was trained with (its scene, at the run's image downscale)."""
    from recon.data.scene import load_scene

    return load_scene(run.scene_dir(), downscale=float(run.setting("data", "downscale", 1.0))).cameras


def export_run_mesh(
    run: str | Path, out: str | Path, opts: MeshOptions, console: Console | None = None
) -> dict:
    """`recon export RUN --mesh OUT`: mesh a trained run into OUT (.ply, .obj or .glb); returns a summary."""
    folder = RunFolder(run)
    check_mesh_suffix(out)
    if not folder.path.is_dir():
        raise ReconError(f"run folder {run} does not exist; pass a folder written by `recon train`")
    model_file = model_file_name(
        folder.setting("model", "kind", "splats"), folder.setting("model", "primitive", None)
    )
    if not folder.model_path(model_file).exists():
        raise ReconError(
            f"{run} has no {model_file}; finish training it with `recon train SCENE --out {run}`"
        )
    t0 = time.perf_counter()
    # the run's representation as its config says (surfels render as surfels); without one, the file's own header
    model = load_model_file(folder.model_path(model_file), **_model_hints(folder))
    cameras = run_cameras(folder)
    mesh, info = extract_mesh(model, cameras, opts, console)
    if len(mesh.faces) == 0:
        raise ReconError(f"the {opts.method} mesh of {run} is empty; check --bounds / --depth-trunc")
    write_mesh(mesh, out)
    info.update(
        out=str(out),
        vertices=len(mesh.vertices),
        primitives=len(model),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return info


def _model_hints(folder: RunFolder) -> dict:
    """The run's saved model settings as ``load_model_file`` arguments (kind plus what the file may not say)."""
    settings = dict(folder.config_dict().get("model") or {})
    return {"kind": settings.pop("kind", "splats"), **settings}
