"""Mesh files: PLY (binary), OBJ or GLB by suffix, with vertex colours, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d
import trimesh

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError

MESH_SUFFIXES = (".ply", ".obj", ".glb")


def check_mesh_suffix(path: str | Path) -> None:
    """Refuse a file name that does not end in one of MESH_SUFFIXES (any case)."""
    if Path(path).suffix.lower() not in MESH_SUFFIXES:
        raise ReconError(f"mesh file {path} must end in {', '.join(MESH_SUFFIXES)}")


def to_trimesh(mesh: o3d.geometry.TriangleMesh) -> trimesh.Trimesh:
    verts = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.triangles)
    colors = None
    if mesh.has_vertex_colors():
        rgb = np.clip(np.asarray(mesh.vertex_colors) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(verts, faces, vertex_colors=colors, process=False)


def write_mesh(mesh: trimesh.Trimesh, path: str | Path) -> None:
    """PLY (binary), OBJ or GLB by suffix, with vertex colours, written atomically."""
    path = Path(path)
    check_mesh_suffix(path)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lower()[1:])
