"""The project's own sample scene: textured objects on a textured ground, photographed from known cameras.

Why it exists: structure from motion, training and meshing need a scene whose true cameras and true surface are
known, that anyone can regenerate offline in seconds. Everything here serves three later checks:

* SfM must register every view accurately, so every surface in view carries strong, non-repetitive texture at
  many scales (a "dead leaves" pattern: random coloured shapes of log-distributed sizes, painted in random order,
  over smooth colour noise) and the ground fills every image (no textureless sky);
* splatting must reach a good held-out PSNR quickly, so shading is smooth (Lambertian + ambient, one directional
  light, hard shadows antialiased by supersampling) and images are small;
* meshing is scored against ``gt/mesh.ply``, which is exactly the surface that was ray cast.

The object texture is solid (a function of the 3-D point, no UV mapping), baked once into a voxel shell around
each object's surface and looked up trilinearly; the ground texture is a 2-D image with a mip pyramid, so far,
grazing ground is prefiltered instead of aliasing. Same seed and parameters -> byte-identical PNGs.

World frame: z up, ground plane z = 0, the objects centred on the origin. Cameras use recon's convention (OpenCV
axes, pixel centres at +0.5).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import trimesh
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh
from scipy import ndimage

from recon.data.atomic import atomic_write_text
from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
from recon.data.errors import ReconError

# Bump when the generated pixels or geometry change, so old scenes on disk are not mistaken for current ones.
VERSION = 2

DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 240
SUPERSAMPLE = 3  # rays per pixel along each axis; odd, so the centre ray passes through the pixel centre

# Camera rig: two rings looking at TARGET; FOV_DEG spans the longer image side.
FOV_DEG = 48.0
CAMERA_DISTANCE = 5.6
ELEVATIONS_DEG = (38.0, 60.0)
TARGET = np.array([0.0, 0.0, 0.5])

# Light: one distant sun plus ambient; no specular term, so a surface looks the same from every view.
LIGHT_AZIMUTH_DEG = 35.0
LIGHT_ELEVATION_DEG = 52.0
AMBIENT = 0.42
# Colour where a ray misses everything; ground_half_size keeps that from happening inside the rig's views.
BACKGROUND = np.array([0.8, 0.86, 0.95])

# Texture scales in world units.
VOXEL = 0.01  # solid-texture voxel: about a quarter of the smallest spot diameter
SPOT_CELLS = tuple(0.6 * 0.75**k for k in range(7))  # 0.6 ... 0.107: one candidate spot per cell and level
SPOT_FILL = 0.7  # fraction of cells that hold a spot
GROUND_TEXEL = 0.004
GROUND_MAX_TEXELS = 4096
GROUND_MIN_SHAPE = 0.035  # radius of the smallest ground shapes
GRAIN = 0.08  # spacing of the brightness noise inside shapes (both textures)
GRAIN_DEPTH = 0.5  # brightness varies by +-GRAIN_DEPTH/2

SMOOTH_ANGLE_DEG = 45.0  # edges sharper than this keep a crease in the shading normals


# ----------------------------------------------------------------------------------------------------------------
# Geometry


def _blob(rng: np.random.Generator) -> trimesh.Trimesh:
    """A lumpy, dented sphere: real 3-D shape with concavities and self-shadowing, still one smooth surface."""
    sphere = trimesh.creation.icosphere(subdivisions=5)
    u = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    radius = np.ones(len(u))
    dirs = rng.normal(size=(8, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    amps = rng.uniform(0.12, 0.3, 8) * np.where(np.arange(8) % 3 == 2, -1.0, 1.0)
    widths = rng.uniform(0.05, 0.16, 8)
    for d, a, w in zip(dirs, amps, widths):
        radius += a * np.exp(-(1.0 - u @ d) / w)
    verts = u * radius[:, None] * np.array([0.95, 0.8, 0.78])
    return trimesh.Trimesh(verts, sphere.faces, process=False)


def _sliced(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The part with z >= 0; the cut is left open because the ground closes it.

    Triangles crossing the plane are clipped and fanned; new vertices on a shared edge are shared, so the surface
    stays connected (trimesh's own slicer needs shapely, which recon does not depend on).
    """
    verts = [*mesh.vertices]
    above = mesh.vertices[:, 2] >= 0
    n_above = above[mesh.faces].sum(axis=1)
    faces = [*mesh.faces[n_above == 3]]
    on_edge: dict[tuple[int, int], int] = {}

    def cut(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in on_edge:
            pa, pb = mesh.vertices[a], mesh.vertices[b]
            p = pa + (pb - pa) * (pa[2] / (pa[2] - pb[2]))
            p[2] = 0.0
            on_edge[key] = len(verts)
            verts.append(p)
        return on_edge[key]

    for face in mesh.faces[(n_above > 0) & (n_above < 3)]:
        poly = []
        for a, b in zip(face, np.roll(face, -1)):
            if above[a]:
                poly.append(a)
            if above[a] != above[b]:
                poly.append(cut(a, b))
        faces += [[poly[0], poly[i], poly[i + 1]] for i in range(1, len(poly) - 1)]
    out = trimesh.Trimesh(np.array(verts), np.array(faces), process=False)
    out.remove_unreferenced_vertices()
    return out


def _xy_radius(mesh: trimesh.Trimesh) -> float:
    """Radius of the vertical cylinder about the z axis that holds the mesh."""
    return float(np.max(np.linalg.norm(mesh.vertices[:, :2], axis=1)))


def build_objects(seed: int) -> list[trimesh.Trimesh]:
    """A blob, a box and a cylinder standing on z = 0, disjoint, the group centred on the origin in x and y."""
    rng = np.random.default_rng([seed, 1])
    blob = _blob(rng)
    blob.apply_translation([0.0, 0.0, 0.55])
    box = trimesh.creation.box(extents=[0.55, 0.5, 0.85])
    box.apply_transform(trimesh.transformations.rotation_matrix(rng.uniform(0, np.pi / 2), [0, 0, 1]))
    box.apply_translation([0.0, 0.0, 0.425 - 0.12])
    cyl = trimesh.creation.cylinder(radius=0.27, height=1.1, sections=64)
    cyl.apply_translation([0.0, 0.0, 0.55 - 0.1])
    blob_r = _xy_radius(blob)
    for mesh, az in ((box, -40.0 + rng.uniform(-10, 10)), (cyl, 55.0 + rng.uniform(-10, 10))):
        dist = blob_r + _xy_radius(mesh) + 0.15
        a = math.radians(az)
        mesh.apply_translation([dist * math.cos(a), dist * math.sin(a), 0.0])
    parts = [_sliced(m) for m in (blob, box, cyl)]
    lo = np.min([p.bounds[0] for p in parts], axis=0)
    hi = np.max([p.bounds[1] for p in parts], axis=0)
    shift = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, 0.0])
    for p in parts:
        p.apply_translation(shift)
    return parts


def ground_mesh(half_size: float, cells: int = 40) -> trimesh.Trimesh:
    """The square ground [-g, g]^2 at z = 0 as a regular grid (even vertex density for vertex-based metrics)."""
    t = np.linspace(-half_size, half_size, cells + 1)
    x, y = np.meshgrid(t, t, indexing="xy")
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    idx = np.arange((cells + 1) ** 2).reshape(cells + 1, cells + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])  # counter-clockwise from above
    return trimesh.Trimesh(verts, faces, process=False)


def corner_normals(mesh: trimesh.Trimesh, angle_deg: float = SMOOTH_ANGLE_DEG) -> np.ndarray:
    """[F,3,3] shading normal at each face corner: area-weighted mean of the normals of the faces around that
    vertex that bend less than ``angle_deg`` from this face, so curved parts shade smoothly and creases stay."""
    fn = mesh.face_normals
    area = mesh.area_faces
    vf = mesh.vertex_faces  # [V, max degree], padded with -1
    around = vf[mesh.faces]  # [F,3,D]
    valid = around >= 0
    g = np.where(valid, around, 0)
    same_side = np.einsum("fk,fcdk->fcd", fn, fn[g]) > math.cos(math.radians(angle_deg))
    w = (valid & same_side) * area[g]
    n = np.einsum("fcd,fcdk->fck", w, fn[g])
    return n / np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Textures


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[..., None]) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_colors(
    rng: np.random.Generator, n: int, saturation: tuple[float, float] = (0.3, 0.95)
) -> np.ndarray:
    """Not-too-dark colours of any hue, so shapes differ in hue and brightness under any lighting."""
    return _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(*saturation, n), rng.uniform(0.4, 1.0, n))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _lattice_noise(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, spacing: float, channels: int):
    """Smooth value noise on [lo, hi]: random values on a lattice, read with cubic B-spline weights.

    The lattice covers the box exactly once (no wrap-around), so the pattern never repeats.
    Returns a function points [N,d] -> [N,channels] with values roughly in [0, 1].
    """
    shape = tuple(int(np.ceil((h - l) / spacing)) + 4 for l, h in zip(lo, hi))
    grids = rng.uniform(0.0, 1.0, (channels, *shape))
    origin = lo - 2 * spacing

    def sample(points: np.ndarray) -> np.ndarray:
        coords = ((points - origin) / spacing).T
        out = [ndimage.map_coordinates(g, coords, order=3, prefilter=False, mode="nearest") for g in grids]
        return np.stack(out, axis=1)

    return sample


@dataclass
class _SpotLevel:
    """One level of the solid dead leaves: a rotated grid of cells, each with at most one spot."""

    to_cells: np.ndarray  # [3,3] world -> cell coordinates (a rotation divided by the cell size)
    offset: np.ndarray  # [3] grid offset in cells
    cmin: np.ndarray  # [3] index of the first cell covering the texture's box
    dims: np.ndarray  # [3] number of cells per axis
    table: np.ndarray  # [cells, 9]: centre (3, in the cell), radius (< 0: no spot), shape, priority, rgb


@dataclass
class SolidTexture:
    """Dead leaves in 3-D: per level, a randomly rotated grid with at most one spot (ball, cube or octahedron,
    each with its own colour and priority) per cell; a point takes the colour of the highest-priority spot that
    covers it, else the smooth base colour. Brightness is then modulated by fine noise so no area is flat."""

    levels: list[_SpotLevel]
    base: Callable[[np.ndarray], np.ndarray]
    grain: Callable[[np.ndarray], np.ndarray]

    @staticmethod
    def create(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> SolidTexture:
        levels = []
        corners = np.array(
            [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        for cell in SPOT_CELLS:
            to_cells = _random_rotation(rng) / cell
            offset = rng.uniform(0, 1, 3)
            u = corners @ to_cells.T + offset
            cmin = np.floor(u.min(0)).astype(np.int64)
            dims = np.floor(u.max(0)).astype(np.int64) - cmin + 1
            n = int(np.prod(dims))
            radius = rng.uniform(0.2, 0.48, n)
            center = rng.uniform(0, 1, (n, 3)) * (1 - 2 * radius[:, None]) + radius[:, None]
            radius[rng.uniform(0, 1, n) > SPOT_FILL] = -1.0
            table = np.column_stack(
                [center, radius, rng.integers(0, 3, n), rng.uniform(0, 1, n), _random_colors(rng, n)]
            )
            levels.append(_SpotLevel(to_cells, offset, cmin, dims, table))
        base = _lattice_noise(rng, lo, hi, 0.35, 3)
        grain = _lattice_noise(rng, lo, hi, GRAIN, 1)
        return SolidTexture(levels, base, grain)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Albedo [N,3] in [0,1] at world points [N,3]."""
        color = 0.3 + 0.6 * self.base(points)
        best = np.full(len(points), -1.0)
        for lv in self.levels:
            u = points @ lv.to_cells.T + lv.offset
            cell = np.floor(u)
            idx = np.ravel_multi_index((cell.astype(np.int64) - lv.cmin).T, lv.dims, mode="clip")
            row = lv.table[idx]
            a = np.abs(u - cell - row[:, :3])
            shape = row[:, 4]
            dist = np.where(
                shape == 0, np.sqrt((a * a).sum(1)), np.where(shape == 1, a.max(1), 0.6 * a.sum(1))
            )
            win = (dist < row[:, 3]) & (row[:, 5] > best)
            best[win] = row[win, 5]
            color[win] = row[win, 6:]
        return np.clip(color * (1 - GRAIN_DEPTH / 2 + GRAIN_DEPTH * self.grain(points)), 0.0, 1.0)


def _surface_points(mesh: trimesh.Trimesh, spacing: float) -> np.ndarray:
    """Points on every face such that each surface point lies within ``2 * spacing`` of one: a grid along two
    edges of each triangle with steps at most ``spacing`` (sliver triangles get few points across)."""
    tri = mesh.triangles
    shortest = np.argmin(np.linalg.norm(tri - np.roll(tri, -1, axis=1), axis=2), axis=1)  # edge v_s -> v_s+1
    tri = tri[np.arange(len(tri))[:, None], (shortest[:, None] + np.arange(3)) % 3]
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    k1 = np.maximum(1, np.ceil(np.linalg.norm(e1, axis=1) / spacing)).astype(np.int64)
    k2 = np.maximum(1, np.ceil(np.linalg.norm(e2, axis=1) / spacing)).astype(np.int64)
    out = []
    for a, b in np.unique(np.stack([k1, k2], 1), axis=0):
        i, j = np.meshgrid(np.arange(a + 1) / a, np.arange(b + 1) / b, indexing="ij")
        keep = i + j <= 1 + 1e-9
        sel = (k1 == a) & (k2 == b)
        out.append(
            (
                tri[sel, None, 0]
                + i[keep][None, :, None] * e1[sel, None]
                + j[keep][None, :, None] * e2[sel, None]
            ).reshape(-1, 3)
        )
    return np.concatenate(out)


@dataclass
class ShellVolume:
    """A solid texture baked into the voxels near one object's surface (the only ones a lookup ever reads)."""

    origin: np.ndarray
    volume: np.ndarray  # [3, X, Y, Z] uint8

    @staticmethod
    def bake(mesh: trimesh.Trimesh, texture: SolidTexture) -> ShellVolume:
        origin = mesh.bounds[0] - 2 * VOXEL
        dims = np.ceil((mesh.bounds[1] - origin) / VOXEL).astype(np.int64) + 3
        q = np.floor((_surface_points(mesh, VOXEL / 2) - origin) / VOXEL).astype(np.int64)
        mask = np.zeros(dims, dtype=bool)
        for corner in np.ndindex(2, 2, 2):
            c = q + np.array(corner)
            mask[c[:, 0], c[:, 1], c[:, 2]] = True
        mask = ndimage.binary_dilation(mask, iterations=1)
        ijk = np.argwhere(mask)
        rgb = texture(origin + ijk * VOXEL)
        volume = np.zeros((3, *dims), dtype=np.uint8)
        volume[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = np.round(rgb.T * 255).astype(np.uint8)
        return ShellVolume(origin, volume)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        coords = ((points - self.origin) / VOXEL).T
        out = [
            ndimage.map_coordinates(ch, coords, order=1, mode="nearest", output=np.float32)
            for ch in self.volume
        ]
        return np.stack(out, axis=1) / 255.0


@dataclass
class GroundTexture:
    """2-D dead leaves on [-g, g]^2 with a mip pyramid (level k has texels 2^k times larger)."""

    half_size: float
    pyramid: list[np.ndarray]  # uint8 [N/2^k, N/2^k, 3], row = y, column = x

    @property
    def texel(self) -> float:
        return 2 * self.half_size / self.pyramid[0].shape[1]

    @staticmethod
    def create(rng: np.random.Generator, half_size: float) -> GroundTexture:
        n = GROUND_MAX_TEXELS
        while n > 512 and 2 * half_size / (n // 2) <= GROUND_TEXEL:
            n //= 2
        texel = 2 * half_size / n
        img = _ground_base(rng, half_size, n)
        _paint_dead_leaves(img, rng, half_size, texel)
        grain = cv2.resize(
            rng.uniform(0, 1, (int(2 * half_size / GRAIN), int(2 * half_size / GRAIN))),
            (n, n),
            interpolation=cv2.INTER_CUBIC,
        ).astype(np.float32)
        for r0 in range(0, n, 512):  # in row blocks: the float copy of a 4096^2 image would be 200 MB
            block = img[r0 : r0 + 512].astype(np.float32) * (
                1 - GRAIN_DEPTH / 2 + GRAIN_DEPTH * grain[r0 : r0 + 512, :, None]
            )
            img[r0 : r0 + 512] = np.clip(np.round(block), 0, 255).astype(np.uint8)
        pyramid = [img]
        while pyramid[-1].shape[0] > 16:
            pyramid.append(cv2.pyrDown(pyramid[-1]))
        return GroundTexture(half_size, pyramid)

    def __call__(self, xy: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Albedo [N,3] at ground points [N,2], prefiltered to ``footprint`` (world units per sample)."""
        level = np.clip(np.log2(np.maximum(footprint, 1e-12) / self.texel), 0, len(self.pyramid) - 1)
        lo = np.minimum(np.floor(level).astype(np.int64), len(self.pyramid) - 2)
        frac = (level - lo)[:, None]
        out = np.zeros((len(xy), 3))
        for k in np.unique(lo):
            sel = np.flatnonzero(lo == k)
            a = self._sample(int(k), xy[sel])
            b = self._sample(int(k) + 1, xy[sel])
            out[sel] = a + (b - a) * frac[sel]
        return out / 255.0

    def _sample(self, k: int, xy: np.ndarray) -> np.ndarray:
        img = self.pyramid[k]
        scale = img.shape[1] / (2 * self.half_size)
        m = ((xy + self.half_size) * scale - 0.5).astype(np.float32)
        n = len(m)
        cols = 1024
        rows = -(-n // cols)
        pad = np.zeros((rows * cols, 2), np.float32)
        pad[:n] = m
        pad = pad.reshape(rows, cols, 2)
        got = cv2.remap(img, pad[..., 0], pad[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return got.reshape(-1, 3)[:n].astype(np.float64)


def _ground_base(rng: np.random.Generator, half_size: float, n: int) -> np.ndarray:
    """Smooth colour noise at two scales: what shows between the shapes."""
    small = min(n, 1024)  # the finest noise spans 0.5 world units: 1024 texels are plenty, then upsample
    img = np.zeros((small, small, 3), np.float32)
    for spacing, weight in ((2.0, 0.6), (0.5, 0.4)):
        m = max(2, int(2 * half_size / spacing))
        lattice = rng.uniform(0.25, 0.9, (m, m, 3)).astype(np.float32)
        img += weight * cv2.resize(lattice, (small, small), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    return cv2.resize(img, (n, n), interpolation=cv2.INTER_LINEAR)


def _paint_dead_leaves(img: np.ndarray, rng: np.random.Generator, half_size: float, texel: float) -> None:
    """Random polygons (triangles to near-discs, some stretched) with radii from 1.2 down to GROUND_MIN_SHAPE,
    painted in random order. Small ones only near the middle, where cameras see the ground up close."""
    shapes = []
    r = 1.2
    while r >= GROUND_MIN_SHAPE:
        region = float(np.clip(r * 70.0, 2.5, half_size * math.sqrt(2)))
        cover = 0.5 * (r / 1.2) ** 0.3  # fewer small shapes: texture at every scale, yet not confetti
        count = int(cover * min(math.pi * region**2, (2 * half_size) ** 2) / (math.pi * r * r))
        rho = region * np.sqrt(rng.uniform(0, 1, count))
        phi = rng.uniform(0, 2 * np.pi, count)
        xy = np.stack([rho * np.cos(phi), rho * np.sin(phi)], 1)
        keep = np.all(np.abs(xy) < half_size + r, axis=1)
        for p in xy[keep]:
            shapes.append((p, r * rng.uniform(0.7, 1.3)))
        r *= 0.72
    order = rng.permutation(len(shapes))
    colors = np.round(_random_colors(rng, len(shapes), (0.15, 0.7)) * 255).astype(np.int64)
    sides = rng.choice([3, 4, 5, 6, 24], len(shapes))
    stretch = rng.uniform(0.45, 1.0, len(shapes))
    turn = rng.uniform(0, 2 * np.pi, len(shapes))
    jitter = rng.uniform(0.75, 1.0, (len(shapes), 24))
    shift = 4  # cv2 fixed-point bits: sub-texel vertex positions
    for j, i in enumerate(order):
        center, radius = shapes[i]
        k = sides[j]
        ang = turn[j] + 2 * np.pi * np.arange(k) / k
        rr = radius * (jitter[j, :k] if k < 24 else 1.0)
        local = np.stack([rr * np.cos(ang), rr * np.sin(ang) * stretch[j]], 1)
        c, s = math.cos(turn[j]), math.sin(turn[j])
        world = center + local @ np.array([[c, s], [-s, c]])
        pix = np.round(((world + half_size) / texel - 0.5) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(img, [pix], tuple(int(v) for v in colors[j]), lineType=cv2.LINE_AA, shift=shift)


# ----------------------------------------------------------------------------------------------------------------
# Scene and renderer


def light_direction() -> np.ndarray:
    a, e = math.radians(LIGHT_AZIMUTH_DEG), math.radians(LIGHT_ELEVATION_DEG)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def rig_cameras(n_views: int, width: int, height: int) -> Cameras:
    """Two rings around TARGET (the lower one first), the upper ring offset by half a step in azimuth."""
    if n_views < 1:
        raise ValueError(f"rig_cameras: n_views must be positive, got {n_views}")
    f = 0.5 * max(width, height) / math.tan(math.radians(FOV_DEG) / 2)
    k = intrinsics_matrix(f, f, width / 2, height / 2)
    rings = ((n_views + 1) // 2, n_views // 2)
    viewmats = []
    for ring, (count, elev) in enumerate(zip(rings, ELEVATIONS_DEG)):
        e = math.radians(elev)
        for i in range(count):
            a = 2 * math.pi * (i + 0.5 * ring) / count
            eye = TARGET + CAMERA_DISTANCE * np.array(
                [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]
            )
            viewmats.append(look_at_viewmat(eye, TARGET))
    names = [f"view_{i:03d}.png" for i in range(n_views)]
    return Cameras(np.stack(viewmats), np.repeat(k[None], n_views, 0), width, height, names=names)


def ground_half_size(width: int, height: int) -> float:
    """Half side of the ground square that fills every view of the rig: where the image corners' rays of the
    lower ring land, plus a margin. Raises if a corner would see the horizon (the sky must stay out of view)."""
    cams = rig_cameras(2, width, height)[:1]
    kinv = np.linalg.inv(cams.Ks[0])
    rot = cams.viewmats[0, :3, :3]
    eye = cams.centers[0]
    reach = 0.0
    for x, y in ((0, 0), (width, 0), (0, height), (width, height)):
        d = rot.T @ kinv @ np.array([x, y, 1.0])
        d /= np.linalg.norm(d)
        if d[2] > -0.1:
            raise ValueError(
                f"image corner ({x}, {y}) looks at the horizon; lower FOV_DEG or raise the cameras"
            )
        hit = eye - eye[2] / d[2] * d
        reach = max(reach, float(np.hypot(hit[0], hit[1])))
    return float(math.ceil(reach + 0.5))


@dataclass
class SampleScene:
    """Everything needed to render the sample scene: geometry, per-object solid textures, ground texture, light."""

    objects: list[trimesh.Trimesh]
    textures: list[ShellVolume]
    ground: GroundTexture
    light: np.ndarray

    @staticmethod
    def build(seed: int, ground_half: float) -> SampleScene:
        objects = build_objects(seed)
        rng = np.random.default_rng([seed, 2])
        lo = np.min([o.bounds[0] for o in objects], axis=0) - 0.1
        hi = np.max([o.bounds[1] for o in objects], axis=0) + 0.1
        solid = SolidTexture.create(rng, lo, hi)
        textures = [ShellVolume.bake(o, solid) for o in objects]
        ground = GroundTexture.create(np.random.default_rng([seed, 3]), ground_half)
        return SampleScene(objects, textures, ground, light_direction())

    @property
    def object_mesh(self) -> trimesh.Trimesh:
        return trimesh.util.concatenate(self.objects)

    @property
    def mesh(self) -> trimesh.Trimesh:
        """The exact rendered surface: objects plus the ground square."""
        return trimesh.util.concatenate([*self.objects, ground_mesh(self.ground.half_size)])

    @property
    def size(self) -> float:
        """Bounding-box diagonal of the objects: the yardstick for pose and mesh errors."""
        return float(np.linalg.norm(np.subtract(*self.object_mesh.bounds[::-1])))


class Renderer:
    """Ray casts a SampleScene with embree: objects are triangles, the ground is the analytic plane z = 0
    (identical to its triangulated square), shadows come from one occlusion ray per sample."""

    def __init__(self, scene: SampleScene):
        self.scene = scene
        mesh = scene.object_mesh
        self.triangles = mesh.triangles
        self.face_normals = mesh.face_normals
        self.corner_normals = np.concatenate([corner_normals(o) for o in scene.objects])
        self.face_object = np.repeat(np.arange(len(scene.objects)), [len(o.faces) for o in scene.objects])
        self.bounds = mesh.bounds
        self.embree = rtcore_scene.EmbreeScene()
        TriangleMesh(self.embree, self.triangles.astype(np.float32))
        self.eps = 1e-4 * CAMERA_DISTANCE

    def render(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, textured: bool = True):
        """(rgb uint8 [H,W,3], depth [H,W]): the supersampled image and the z-depth of each pixel-centre ray."""
        ss = SUPERSAMPLE
        sub = (np.arange(ss) + 0.5) / ss
        xs = (np.arange(width)[:, None] + sub[None]).ravel()
        ys = (np.arange(height)[:, None] + sub[None]).ravel()
        px, py = np.meshgrid(xs, ys, indexing="xy")  # [H*ss, W*ss]
        if abs(K[0, 1]) > 0:
            raise ValueError("the sample-scene renderer takes pinhole cameras without skew")
        a = ((px - K[0, 2]) / K[0, 0]).ravel()  # camera-frame direction (a, b, 1)
        b = ((py - K[1, 2]) / K[1, 1]).ravel()
        rot = viewmat[:3, :3]
        eye = -rot.T @ viewmat[:3, 3]
        z_per_t = 1.0 / np.sqrt(a * a + b * b + 1.0)  # camera z of a unit-length step
        dirs = (a[:, None] * rot[0] + b[:, None] * rot[1] + rot[2]) * z_per_t[:, None]  # R^T (a, b, 1), unit
        radiance, t = self._shade(eye, dirs, footprint=1.0 / (K[0, 0] * ss), textured=textured)
        img = radiance.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
        rgb = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
        depth = (t * z_per_t).reshape(height, ss, width, ss)[:, ss // 2, :, ss // 2]
        return rgb, depth

    def _shade(self, eye: np.ndarray, dirs: np.ndarray, footprint: float, textured: bool):
        """(radiance [N,3], distance [N]) along unit rays from ``eye``; ``footprint`` is the spacing of
        neighbouring rays per unit distance, which picks the ground's mip level."""
        n = len(dirs)
        origins = np.broadcast_to(eye.astype(np.float32), (n, 3))
        hit = self.embree.run(origins, dirs.astype(np.float32), output=1)
        prim = hit["primID"]
        t_obj = np.where(prim >= 0, hit["tfar"].astype(np.float64), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to or away from the ground
            t_gnd = np.where(dirs[:, 2] < 0, -eye[2] / dirs[:, 2], np.inf)
            gxy = eye[:2] + t_gnd[:, None] * dirs[:, :2]
        t_gnd = np.where(np.all(np.abs(gxy) <= self.scene.ground.half_size, axis=1), t_gnd, np.inf)
        on_obj = (prim >= 0) & (t_obj <= t_gnd)
        on_gnd = ~on_obj & np.isfinite(t_gnd)
        t = np.where(on_obj, t_obj, t_gnd)

        albedo = np.tile(BACKGROUND, (n, 1))
        normal = np.zeros((n, 3))
        lift = np.zeros((n, 3))  # offset of shadow-ray origins off the surface, towards the viewer
        io = np.flatnonzero(on_obj)
        ig = np.flatnonzero(on_gnd)
        p_obj = eye + t[io, None] * dirs[io]
        f = prim[io]
        u = hit["u"][io].astype(np.float64)[:, None]
        v = hit["v"][io].astype(np.float64)[:, None]
        cn = self.corner_normals[f]
        ns = (1 - u - v) * cn[:, 0] + u * cn[:, 1] + v * cn[:, 2]
        ng = self.face_normals[f]
        facing = np.where(np.sum(ng * dirs[io], axis=1, keepdims=True) > 0, -1.0, 1.0)
        normal[io] = ns / np.linalg.norm(ns, axis=1, keepdims=True) * facing
        lift[io] = ng * facing
        normal[ig] = (0.0, 0.0, 1.0)
        lift[ig] = (0.0, 0.0, 1.0)
        if textured:
            obj = self.face_object[f]
            for k, tex in enumerate(self.scene.textures):
                sel = obj == k
                albedo[io[sel]] = tex(p_obj[sel])
            cos_in = np.maximum(np.abs(dirs[ig, 2]), 0.05)
            albedo[ig] = self.scene.ground(gxy[ig], t[ig] * footprint / np.sqrt(cos_in))
        else:
            albedo[io] = 0.7
            albedo[ig] = 0.7

        light = self.scene.light
        lambert = np.maximum(np.sum(normal * light, axis=1), 0.0)
        lit = np.flatnonzero((on_obj | on_gnd) & (lambert > 0))
        points = eye + t[lit, None] * dirs[lit]
        candidates = lit[self._may_be_shadowed(points)]
        if len(candidates):
            origins = eye + t[candidates, None] * dirs[candidates] + self.eps * lift[candidates]
            dirs_l = np.broadcast_to(light.astype(np.float32), (len(candidates), 3))
            blocked = self.embree.run(origins.astype(np.float32), dirs_l, query="OCCLUDED") >= 0
            lambert[candidates[blocked]] = 0.0
        shade = np.where(on_obj | on_gnd, AMBIENT + (1 - AMBIENT) * lambert, 1.0)
        return albedo * shade[:, None], t

    def _may_be_shadowed(self, points: np.ndarray) -> np.ndarray:
        """Rays towards the light that pass through the objects' bounding box (slab test): the only ones worth
        an occlusion query."""
        light = self.scene.light
        inv = 1.0 / np.where(np.abs(light) < 1e-12, 1e-12, light)
        t0 = (self.bounds[0] - points) * inv
        t1 = (self.bounds[1] - points) * inv
        near = np.minimum(t0, t1).max(axis=1)
        far = np.maximum(t0, t1).min(axis=1)
        return far >= np.maximum(near, 0.0)


def render_views(
    scene: SampleScene, cameras: Cameras, textured: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rgb, depth) per camera, in order."""
    renderer = Renderer(scene)
    for i in range(len(cameras)):
        yield renderer.render(
            cameras.viewmats[i], cameras.Ks[i], int(cameras.widths[i]), int(cameras.heights[i]), textured
        )


# ----------------------------------------------------------------------------------------------------------------
# The scene folder


def _params(n_views: int, width: int, height: int, seed: int) -> dict:
    return {"n_views": n_views, "width": width, "height": height, "seed": seed, "supersample": SUPERSAMPLE}


def _check_params(n_views: int, width: int, height: int) -> None:
    if n_views < 2:
        raise ReconError(f"the sample scene needs at least 2 views, got {n_views}; pass --views 2 or more")
    if min(width, height) < 8 or max(width, height) > 4096:
        raise ReconError(
            f"image size {width}x{height} is out of range; pass --width/--height between 8 and 4096"
        )


def _read_scene_json(out: Path) -> dict | None:
    try:
        data = json.loads((out / "scene.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(out_dir: str | Path, n_views: int, width: int, height: int, seed: int) -> bool:
    """True when ``out_dir`` holds a complete scene made by this VERSION with exactly these parameters."""
    out = Path(out_dir)
    meta = _read_scene_json(out)
    if (
        meta is None
        or meta.get("version") != VERSION
        or meta.get("params") != _params(n_views, width, height, seed)
    ):
        return False
    images = out / "images"
    expected = {f"view_{i:03d}.png" for i in range(n_views)}
    have = {p.name for p in images.iterdir()} if images.is_dir() else set()
    return (
        have == expected
        and (out / "gt" / "transforms.json").is_file()
        and (out / "gt" / "mesh.ply").is_file()
    )


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """Serialise generators of one folder (parallel test sessions share the sample scene); POSIX only."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent generation of one folder is then unsupported
        yield
        return
    with open(out / ".synthetic.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_sample_scene(
    out_dir: str | Path,
    n_views: int = 48,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    seed: int = 0,
    overwrite: bool = False,
    on_view: Callable[[int, int], None] | None = None,
) -> Path:
    """Render the sample scene into ``out_dir`` (``images/``, ``gt/transforms.json``, ``gt/mesh.ply``,
    ``gt/object.ply``, ``scene.json``) and return ``out_dir``.

    Does nothing when the folder already holds this scene. A folder holding anything else under those names is
    only replaced with ``overwrite=True``. Everything is rendered into a hidden staging folder first and moved in
    at the end, ``scene.json`` last, so an interrupted run never leaves a scene that looks complete.
    ``on_view(done, total)`` is called after each image (for progress bars).
    """
    _check_params(n_views, width, height)
    out = Path(out_dir)
    if is_current(out, n_views, width, height, seed):
        return out
    if not overwrite:
        _refuse_existing(out, n_views, width, height, seed)  # before creating anything in a foreign folder
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        if is_current(out, n_views, width, height, seed):  # another process finished it while we waited
            return out
        if not overwrite:
            _refuse_existing(out, n_views, width, height, seed)
        staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out))
        try:
            meta = _render_scene(staging, n_views, width, height, seed, on_view)
            (out / "scene.json").unlink(missing_ok=True)
            for name in ("images", "gt"):
                if (out / name).exists():
                    shutil.rmtree(out / name)
                (staging / name).rename(out / name)
            atomic_write_text(out / "scene.json", json.dumps(meta, indent=2) + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _refuse_existing(out: Path, n_views: int, width: int, height: int, seed: int) -> None:
    meta = _read_scene_json(out)
    taken = [name for name in ("images", "gt", "scene.json") if (out / name).exists()]
    if not taken:
        return
    if meta is not None and isinstance(meta.get("params"), dict):
        old = meta["params"]
        what = (
            f"a sample scene with other parameters (version {meta.get('version')}, {old.get('n_views')} views "
            f"{old.get('width')}x{old.get('height')}, seed {old.get('seed')}; asked: version {VERSION}, "
            f"{n_views} views {width}x{height}, seed {seed})"
        )
    else:
        what = f"{', '.join(taken)} but no complete sample scene"
    raise ReconError(
        f"{out} already holds {what}; pass --overwrite (overwrite=True) to replace it, or use another folder"
    )


def _render_scene(
    staging: Path,
    n_views: int,
    width: int,
    height: int,
    seed: int,
    on_view: Callable[[int, int], None] | None,
) -> dict:
    """Write images/ and gt/ into ``staging``; return the scene.json contents."""
    from recon.data.formats.nerfstudio import write_transforms

    scene = SampleScene.build(seed, ground_half_size(width, height))
    cameras = rig_cameras(n_views, width, height)
    images = staging / "images"
    images.mkdir()
    paths = []
    for i, (rgb, _) in enumerate(render_views(scene, cameras)):
        path = images / cameras.names[i]
        if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise OSError(f"could not write {path}")
        paths.append(path)
        if on_view is not None:
            on_view(i + 1, n_views)
    gt = staging / "gt"
    gt.mkdir()
    write_transforms(gt / "transforms.json", cameras, paths)
    scene.mesh.export(gt / "mesh.ply")
    scene.object_mesh.export(gt / "object.ply")
    bounds = scene.object_mesh.bounds
    return {
        "version": VERSION,
        "params": _params(n_views, width, height, seed),
        "n_views": n_views,
        "seed": seed,
        "scene_size": scene.size,
        "object_bounds": bounds.tolist(),
        "ground_half_size": scene.ground.half_size,
        "light_direction": scene.light.tolist(),
        "camera_target": TARGET.tolist(),
        "camera_distance": CAMERA_DISTANCE,
        "camera_elevations_deg": list(ELEVATIONS_DEG),
        "files": {
            "images": "images",
            "cameras": "gt/transforms.json",
            "mesh": "gt/mesh.ply",
            "object_mesh": "gt/object.ply",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recon.data.synthetic",
        description="Render the recon sample scene: photos, ground-truth cameras and mesh.",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--views", type=int, default=48, help="number of photos (default 48)")
    parser.add_argument(
        "--width", type=int, default=DEFAULT_WIDTH, help=f"image width (default {DEFAULT_WIDTH})"
    )
    parser.add_argument(
        "--height", type=int, default=DEFAULT_HEIGHT, help=f"image height (default {DEFAULT_HEIGHT})"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of shapes and textures (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different scene already in OUT")
    args = parser.parse_args(argv)
    what = f"{args.views} views {args.width}x{args.height}, seed {args.seed}"
    try:
        if is_current(args.out, args.views, args.width, args.height, args.seed):
            print(f"{args.out} already holds the sample scene ({what}); nothing to do")
            return 0
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        start = time.perf_counter()
        console = Console(stderr=True)
        with Progress(
            TextColumn("rendering"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            task = bar.add_task("render", total=args.views)
            make_sample_scene(
                args.out,
                args.views,
                args.width,
                args.height,
                args.seed,
                args.overwrite,
                on_view=lambda done, total: bar.update(task, completed=done),
            )
        print(f"wrote the sample scene ({what}) to {args.out} in {time.perf_counter() - start:.1f} s")
    except ReconError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
