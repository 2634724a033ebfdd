"""Random registration problems with a known answer, for the alignment tests and `scripts/bench_align.py`.

The shape is a union of boxes and cylinders with no symmetry. A case samples it twice: the reference (clean, with
face normals) and the source, which loses a share of its points to a random plane cut, gets Gaussian noise, and is
then moved by the inverse of a random similarity (any rotation, log-uniform scale), so that the true answer
ref ≈ s·R·src + t is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation


def asymmetric_shape() -> trimesh.Trimesh:
    """About one unit across; no rotation maps it onto itself (parts of different sizes at different places)."""
    parts = []

    def add(mesh: trimesh.Trimesh, at, rot=None) -> None:
        if rot is not None:
            mesh.apply_transform(rot)
        mesh.apply_translation(at)
        parts.append(mesh)

    add(trimesh.creation.box(extents=[1.0, 0.6, 0.4]), [0.0, 0.0, 0.0])
    add(trimesh.creation.cylinder(radius=0.15, height=0.8, sections=24), [0.3, 0.12, 0.45])
    add(trimesh.creation.box(extents=[0.3, 0.25, 0.35]), [-0.45, -0.22, 0.35])
    add(
        trimesh.creation.cylinder(radius=0.08, height=0.6, sections=16),
        [0.15, -0.45, -0.05],
        trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]),
    )
    add(trimesh.creation.box(extents=[0.2, 0.15, 0.25]), [-0.25, 0.32, -0.2])
    return trimesh.util.concatenate(parts)


@dataclass
class Case:
    src: np.ndarray  # [N,3] cropped, noisy, moved
    ref: np.ndarray  # [M,3]
    ref_normals: np.ndarray  # [M,3]
    scale: float  # truth: ref ≈ scale · R · src + t
    R: np.ndarray
    t: np.ndarray


def random_case(
    mesh: trimesh.Trimesh,
    seed: int,
    n_src: int = 5000,
    n_ref: int = 5000,
    crop: float = 0.3,
    noise: float = 0.01,
    scale_range: tuple[float, float] = (0.2, 5.0),
) -> Case:
    """``crop``: share of the source removed by a plane with a random normal; ``noise``: σ of the Gaussian noise
    per coordinate as a share of the shape's bounding-box diagonal."""
    rng = np.random.default_rng(seed)
    ref, face = trimesh.sample.sample_surface(mesh, n_ref, seed=int(rng.integers(2**31)))
    ref_normals = mesh.face_normals[face]
    pts, _ = trimesh.sample.sample_surface(
        mesh, int(round(n_src / (1.0 - crop))), seed=int(rng.integers(2**31))
    )
    u = rng.normal(size=3)
    h = pts @ (u / np.linalg.norm(u))
    pts = pts[h <= np.quantile(h, 1.0 - crop)]
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    pts = pts + rng.normal(scale=noise * diag, size=pts.shape)
    R = Rotation.random(random_state=rng).as_matrix()
    s = float(np.exp(rng.uniform(*np.log(scale_range))))
    t = rng.normal(scale=2.0, size=3)
    src = (pts - t) @ R / s  # inverse of y = s R x + t
    return Case(src=src, ref=np.asarray(ref), ref_normals=np.asarray(ref_normals), scale=s, R=R, t=t)


def alignment_errors(case: Case, scale: float, R: np.ndarray) -> tuple[float, float]:
    """(rotation error in degrees, relative scale error) of an estimate against the case's truth."""
    cos = (np.trace(R @ case.R.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))), abs(scale / case.scale - 1.0)
