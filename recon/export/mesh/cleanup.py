"""Clean-up of a raw mesh: crop to the bounds, drop degenerate triangles and small connected components, and
optionally decimate to a triangle budget. Numpy does the cropping and clustering: open3d's own take tens of seconds
on the multi-million-triangle meshes of a scene.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .options import MeshOptions


def keep_triangles(mesh: o3d.geometry.TriangleMesh, keep: np.ndarray) -> o3d.geometry.TriangleMesh:
    """The triangles where ``keep`` is true and the vertices they use (numpy: open3d's own crop and clustering
    take tens of seconds on the multi-million-triangle meshes of a scene)."""
    faces = np.asarray(mesh.triangles)[keep]
    used, inverse = np.unique(faces, return_inverse=True)
    out = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices)[used]),
        o3d.utility.Vector3iVector(inverse.reshape(-1, 3).astype(np.int32)),
    )
    if mesh.has_vertex_colors():
        out.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors)[used])
    return out


def crop(mesh: o3d.geometry.TriangleMesh, lo, hi) -> o3d.geometry.TriangleMesh:
    """The triangles with all three vertices inside the box [lo, hi]."""
    verts = np.asarray(mesh.vertices)
    inside = np.all((verts >= np.asarray(lo)) & (verts <= np.asarray(hi)), axis=1)
    return keep_triangles(mesh, inside[np.asarray(mesh.triangles)].all(axis=1))


def remove_small_components(
    mesh: o3d.geometry.TriangleMesh, keep: int, min_triangles: int
) -> o3d.geometry.TriangleMesh:
    """Keep the ``keep`` largest connected components (sharing vertices), none smaller than ``min_triangles``
    triangles (unless even the largest is)."""
    faces = np.asarray(mesh.triangles)
    if len(faces) == 0:
        return mesh
    n = len(mesh.vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, vertex_label = connected_components(graph, directed=False)
    labels = vertex_label[faces[:, 0]]
    counts = np.bincount(labels)
    order = np.argsort(counts)[::-1][:keep]
    wanted = order[counts[order] >= min(min_triangles, counts.max())]
    return keep_triangles(mesh, np.isin(labels, wanted))


def clean_mesh(mesh: o3d.geometry.TriangleMesh, lo, hi, opts: MeshOptions) -> o3d.geometry.TriangleMesh:
    """Crop, drop degenerate triangles and small components, decimate to the triangle budget."""
    mesh = crop(mesh, lo, hi)
    mesh.remove_degenerate_triangles()
    mesh = remove_small_components(mesh, opts.keep_components, opts.min_component_triangles)
    if opts.decimate > 0 and len(mesh.triangles) > opts.decimate:
        mesh = mesh.simplify_quadric_decimation(target_number_of_triangles=int(opts.decimate))
        mesh.remove_unreferenced_vertices()
    return mesh
