"""`recon export RUN --mesh OUT`: the model and cameras of a trained run folder, meshed into a file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.models.splats import SplatModel

from .extract import extract_mesh
from .options import MeshOptions
from .write import check_mesh_suffix, write_mesh

RUN_FILE = "run.json"


def _run_setting(run: Path, section: str, key: str, default):
    """One value of a run's saved config.yaml (``default`` when the file or the key is absent)."""
    import yaml

    cfg_path = run / "config.yaml"
    if not cfg_path.exists():
        return default
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    return (cfg.get(section) or {}).get(key, default)


def run_cameras(run: Path) -> Cameras:
    """The cameras a run was trained with (its scene, at the run's image downscale)."""
    from recon.data.scene import load_scene

    meta = run / RUN_FILE
    if not meta.exists():
        raise ReconError(f"{run} has no {RUN_FILE} naming its scene; it was not written by `recon train`")
    scene_dir = Path(json.loads(meta.read_text())["scene"])
    downscale = float(_run_setting(run, "data", "downscale", 1.0))
    return load_scene(scene_dir, downscale=downscale).cameras


def export_run_mesh(
    run: str | Path, out: str | Path, opts: MeshOptions, console: Console | None = None
) -> dict:
    """`recon export RUN --mesh OUT`: mesh a trained run into OUT (.ply, .obj or .glb); returns a summary."""
    run = Path(run)
    check_mesh_suffix(out)
    if not run.is_dir():
        raise ReconError(f"run folder {run} does not exist; pass a folder written by `recon train`")
    splats = run / "splats.ply"
    if not splats.exists():
        raise ReconError(f"{run} has no splats.ply; finish training it with `recon train SCENE --out {run}`")
    t0 = time.perf_counter()
    # the run's primitive type (surfels render as surfels); without a config, the PLY's own header says
    model = SplatModel.load_ply(splats, _run_setting(run, "model", "primitive", None))
    cameras = run_cameras(run)
    mesh, info = extract_mesh(model, cameras, opts, console)
    if len(mesh.faces) == 0:
        raise ReconError(f"the {opts.method} mesh of {run} is empty; check --bounds / --depth-trunc")
    write_mesh(mesh, out)
    info.update(
        out=str(out),
        vertices=len(mesh.vertices),
        gaussians=len(model),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return info
