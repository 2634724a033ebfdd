"""A model's mesh: the chosen method's raw mesh, cropped to the bounds (by default the robust extent of the
observed surface points inside the cameras' sphere) and cleaned. Everything is in the scene's world frame, so
meshes line up with the input cameras.
"""

from __future__ import annotations

import trimesh
from rich.console import Console

from recon.data.cameras import Cameras
from recon.data.errors import ReconError
from recon.models import Representation

from .bounds import crop_bounds
from .cleanup import clean_mesh
from .options import MeshOptions
from .sugar import sugar_mesh
from .tsdf import tsdf_mesh
from .views import render_view
from .write import to_trimesh


def extract_mesh(
    model: Representation, cameras: Cameras, opts: MeshOptions, console: Console | None = None
) -> tuple[trimesh.Trimesh, dict]:
    """Mesh the model seen from ``cameras``; returns the mesh and a summary of the parameters used. TSDF fusion
    serves any representation that renders depth; SuGaR's level set reads per-primitive Gaussians."""
    if len(model) == 0:
        raise ReconError(f"the model has no {model.noun} to mesh")
    if opts.method == "tsdf":
        raw, surface, info = tsdf_mesh(lambda i: render_view(model, cameras, i, opts), cameras, opts, console)
    elif opts.method == "sugar":
        if "primitives" not in model.capabilities:
            raise ReconError(
                f"--method sugar reads Gaussian primitives, which {model.label} lacks; use --method tsdf"
            )
        raw, surface, info = sugar_mesh(model, cameras, opts, console)
    else:
        raise ReconError(f"unknown mesh method {opts.method!r}; choose tsdf or sugar")
    lo, hi = crop_bounds(surface, cameras, opts)
    mesh = clean_mesh(raw, lo, hi, opts)
    info.update(method=opts.method, bounds=[lo.tolist(), hi.tolist()], triangles=len(mesh.triangles))
    return to_trimesh(mesh), info
