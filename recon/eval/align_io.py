"""Files for `recon align`: read a mesh, point cloud or splat PLY as points to register; write it moved.

Reading: a mesh (.ply with faces, .obj, .glb, .gltf, .stl, .off) is sampled uniformly by area (with its face
normals), a point cloud PLY gives its vertices, a Gaussian splat PLY (3DGS layout) its centres. Writing keeps the
file's own format and every property: PLY files are edited in place (positions, normals; for splats also the
log-scales, the rotations and the view-dependent SH colour), other meshes go through trimesh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from recon.data.atomic import atomic_path
from recon.data.errors import ReconError
from recon.eval.align import AlignConfig, Alignment, align_points
from recon.eval.mesh_metrics import load_mesh
from recon.render.sh import sh_basis

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".stl", ".off")
SPLAT_FIELDS = ("f_dc_0", "opacity", "scale_0", "rot_0")


@dataclass
class Geometry:
    path: Path
    kind: str  # "mesh", "points" or "splats"
    points: np.ndarray  # [N,3] float64: what registration sees
    normals: np.ndarray | None  # [N,3] unit normals where the file gives them (mesh faces)


def _read_ply(path: Path) -> PlyData:
    try:
        return PlyData.read(str(path), mmap=False)
    except Exception as e:  # plyfile raises several types for corrupt files
        raise ReconError(f"{path} is not a readable PLY file ({e})") from None


def _vertex_xyz(ply: PlyData, path: Path) -> np.ndarray:
    if "vertex" not in ply:
        raise ReconError(f"{path} has no vertex element; pass a point cloud, mesh or splat PLY")
    v = ply["vertex"].data
    if not all(k in (v.dtype.names or ()) for k in "xyz"):
        raise ReconError(f"{path} has no x y z vertex properties")
    return np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)


def _ply_has_faces(ply: PlyData) -> bool:
    return any(el.name == "face" and el.count > 0 for el in ply.elements)


_ANY = "a mesh, a point cloud PLY or a splat PLY"


def _mesh_samples(mesh: trimesh.Trimesh, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts, dtype=np.float64), np.asarray(mesh.face_normals[face], dtype=np.float64)


def load_geometry(path: str | Path, n_samples: int = 20_000, seed: int = 0) -> Geometry:
    """The points (and normals when known) that stand for the file in registration."""
    path = Path(path)
    if not path.is_file():
        raise ReconError(f"{path} does not exist; pass a mesh, point cloud or splat file")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        ply = _read_ply(path)
        if _ply_has_faces(ply):
            pts, nrm = _mesh_samples(load_mesh(path, _ANY), n_samples, seed)
            return Geometry(path, "mesh", pts, nrm)
        xyz = _vertex_xyz(ply, path)
        names = ply["vertex"].data.dtype.names
        kind = "splats" if all(k in names for k in SPLAT_FIELDS) else "points"
        xyz = xyz[np.isfinite(xyz).all(1)]
        return Geometry(path, kind, xyz, None)
    if suffix in MESH_SUFFIXES:
        pts, nrm = _mesh_samples(load_mesh(path, _ANY), n_samples, seed)
        return Geometry(path, "mesh", pts, nrm)
    raise ReconError(f"{path}: unknown format {suffix!r}; pass .ply, .obj, .glb, .gltf, .stl or .off")


def sh_rotation(R: np.ndarray, degree: int) -> list[tuple[slice, np.ndarray]]:
    """Per SH band l ≥ 1: (the band's slice of the f_rest coefficients, M [2l+1, 2l+1]) with coef' = M coef.

    A colour c(d) = Σ_k coef_k Y_k(d) seen in the moved frame is c'(d) = c(Rᵀd); each band is closed under
    rotation, so Y_l(Rᵀd) = Y_l(d) M for one matrix M per band, found by least squares on many directions.
    """
    dirs = np.random.default_rng(0).normal(size=(512, 3))
    basis = sh_basis(degree, torch.from_numpy(dirs)).numpy()
    rotated = sh_basis(degree, torch.from_numpy(dirs @ R)).numpy()  # rows Rᵀd
    out = []
    for band in range(1, degree + 1):
        idx = slice(band * band, (band + 1) * (band + 1))
        M, *_ = np.linalg.lstsq(basis[:, idx], rotated[:, idx], rcond=None)  # B(d) M = B(Rᵀd)
        out.append((slice(idx.start - 1, idx.stop - 1), M))  # f_rest starts at basis index 1
    return out


def _move_splats(v: np.ndarray, s: float, R: np.ndarray) -> None:
    names = v.dtype.names
    for k in ("scale_0", "scale_1", "scale_2"):
        if k in names:
            v[k] = v[k] + np.float32(np.log(s))
    if all(f"rot_{i}" in names for i in range(4)):
        q = np.stack([v[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)  # w x y z
        qr = np.roll(Rotation.from_matrix(R).as_quat(), 1)  # x y z w -> w x y z
        w0, v0 = qr[0], qr[1:]
        w1, v1 = q[:, 0], q[:, 1:]
        out = np.concatenate([(w0 * w1 - v1 @ v0)[:, None], w0 * v1 + w1[:, None] * v0 + np.cross(v0, v1)], 1)
        for i in range(4):
            v[f"rot_{i}"] = out[:, i]
    n_rest = sum(1 for k in names if k.startswith("f_rest_"))
    k_rest = n_rest // 3
    degree = int(round(np.sqrt(k_rest + 1))) - 1
    if n_rest and (degree + 1) ** 2 - 1 == k_rest:
        rest = np.stack([v[f"f_rest_{i}"] for i in range(n_rest)], 1).astype(np.float64)
        rest = rest.reshape(len(v), 3, k_rest)  # channel-major, as 3DGS writes them
        for sl, M in sh_rotation(R, degree):
            rest[:, :, sl] = rest[:, :, sl] @ M.T
        rest = rest.reshape(len(v), n_rest)
        for i in range(n_rest):
            v[f"f_rest_{i}"] = rest[:, i]


def write_aligned(src: str | Path, out: str | Path, T: np.ndarray) -> None:
    """Write ``src`` moved by the similarity ``T`` (4×4) to ``out`` (same format), atomically."""
    src, out = Path(src), Path(out)
    if out.suffix.lower() != src.suffix.lower():
        raise ReconError(f"--out {out}: write the aligned file in the source's format ({src.suffix})")
    s = float(np.cbrt(np.linalg.det(T[:3, :3])))
    R = T[:3, :3] / s
    if src.suffix.lower() == ".ply":
        ply = _read_ply(src)
        v = ply["vertex"].data
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        for i, k in enumerate("xyz"):
            v[k] = xyz[:, i]
        if all(k in v.dtype.names for k in ("nx", "ny", "nz")):
            n = np.stack([v["nx"], v["ny"], v["nz"]], axis=1).astype(np.float64) @ R.T
            for i, k in enumerate(("nx", "ny", "nz")):
                v[k] = n[:, i]
        if all(k in v.dtype.names for k in SPLAT_FIELDS):
            _move_splats(v, s, R)
        with atomic_path(out) as tmp:
            ply.write(str(tmp))
        return
    try:
        loaded = trimesh.load(src, process=False)
    except Exception as e:
        raise ReconError(f"{src} is not a readable mesh ({e})") from None
    loaded.apply_transform(T)
    with atomic_path(out) as tmp:
        loaded.export(tmp, file_type=src.suffix.lower().lstrip("."))


def align_files(
    src: str | Path, ref: str | Path, out: str | Path | None = None, config: AlignConfig | None = None
) -> dict:
    """`recon align SRC REF [--out ALIGNED]`: the alignment as a dict (one JSON line on the command line)."""
    start = time.perf_counter()
    if out is not None and Path(out).suffix.lower() != Path(src).suffix.lower():
        raise ReconError(f"--out {out}: write the aligned file in the source's format ({Path(src).suffix})")
    a = load_geometry(src)
    b = load_geometry(ref, seed=1)
    result: Alignment = align_points(a.points, b.points, b.normals, config)
    if out is not None:
        write_aligned(src, out, result.transform)
    return {
        "source": str(src),
        "source_kind": a.kind,
        "reference": str(ref),
        "reference_kind": b.kind,
        **result.asdict(),
        "out": None if out is None else str(out),
        "total_seconds": round(time.perf_counter() - start, 3),
    }
