"""Cameras in the one convention used everywhere inside recon.

OpenCV axes (x right, y down, z forward), world-to-camera ``viewmats [C,4,4]``, pinhole ``Ks [C,3,3]`` with pixel
centres at +0.5 (as gsplat). Readers convert at the boundary; nothing else in the code base needs to know about
OpenGL axes or camera-to-world matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Flip of the y and z axes: OpenGL camera axes (x right, y up, z backward) <-> OpenCV (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class Cameras:
    """A batch of C pinhole cameras, stored in float64 so format round trips are exact to 1e-6.

    ``dist`` holds OpenCV distortion ``k1 k2 p1 p2`` per camera when the source had any; readers undistort images
    at load and then drop it (``dist`` is None for every camera the renderer sees).
    """

    viewmats: np.ndarray  # [C,4,4] world-to-camera, OpenCV axes
    Ks: np.ndarray  # [C,3,3] pinhole intrinsics, pixel centres at +0.5
    widths: np.ndarray  # [C] int
    heights: np.ndarray  # [C] int
    dist: np.ndarray | None = None  # [C,4] k1 k2 p1 p2, or None when undistorted
    names: list[str] = field(default_factory=list)  # one label per camera (usually the image file name)

    def __post_init__(self) -> None:
        self.viewmats = np.asarray(self.viewmats, dtype=np.float64).reshape(-1, 4, 4)
        self.Ks = np.asarray(self.Ks, dtype=np.float64).reshape(-1, 3, 3)
        c = len(self.viewmats)
        self.widths = np.broadcast_to(np.asarray(self.widths, dtype=np.int64), (c,)).copy()
        self.heights = np.broadcast_to(np.asarray(self.heights, dtype=np.int64), (c,)).copy()
        if self.dist is not None:
            self.dist = np.asarray(self.dist, dtype=np.float64).reshape(c, -1)
        if len(self.Ks) != c:
            raise ValueError(f"Cameras: {c} viewmats but {len(self.Ks)} Ks")
        if not self.names:
            self.names = [f"{i:05d}" for i in range(c)]
        if len(self.names) != c:
            raise ValueError(f"Cameras: {c} viewmats but {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.viewmats)

    def __getitem__(self, idx) -> Cameras:
        """Select cameras by index, slice, boolean mask or index list; always returns a Cameras batch."""
        ids = np.arange(len(self))[idx]
        ids = np.atleast_1d(ids)
        return Cameras(
            viewmats=self.viewmats[ids],
            Ks=self.Ks[ids],
            widths=self.widths[ids],
            heights=self.heights[ids],
            dist=None if self.dist is None else self.dist[ids],
            names=[self.names[i] for i in ids],
        )

    @property
    def camtoworlds(self) -> np.ndarray:
        """[C,4,4] camera-to-world matrices in OpenCV axes."""
        return np.linalg.inv(self.viewmats)

    @property
    def centers(self) -> np.ndarray:
        """[C,3] camera centres in world coordinates."""
        r = self.viewmats[:, :3, :3]
        t = self.viewmats[:, :3, 3]
        return -np.einsum("cji,cj->ci", r, t)

    @property
    def has_distortion(self) -> bool:
        return self.dist is not None and bool(np.any(np.abs(self.dist) > 0))

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by ``1/factor`` (downscale factor ``factor``), keeping pixel-centre convention."""
        w = np.maximum(1, np.round(self.widths / factor)).astype(np.int64)
        h = np.maximum(1, np.round(self.heights / factor)).astype(np.int64)
        sx = w / self.widths
        sy = h / self.heights
        ks = self.Ks.copy()
        ks[:, 0, :] *= sx[:, None]
        ks[:, 1, :] *= sy[:, None]
        return Cameras(
            self.viewmats.copy(), ks, w, h, None if self.dist is None else self.dist.copy(), list(self.names)
        )

    def torch(self, device="cpu", dtype=None):
        """(viewmats, Ks) as float32 torch tensors, ready for ``recon.render.rasterize``."""
        import torch

        dtype = dtype or torch.float32
        return (
            torch.as_tensor(self.viewmats, dtype=dtype, device=device),
            torch.as_tensor(self.Ks, dtype=dtype, device=device),
        )

    @staticmethod
    def concat(parts: list[Cameras]) -> Cameras:
        dists = [p.dist for p in parts]
        dist = None
        if any(d is not None for d in dists):
            dist = np.concatenate(
                [d if d is not None else np.zeros((len(p), 4)) for d, p in zip(dists, parts)]
            )
        return Cameras(
            np.concatenate([p.viewmats for p in parts]),
            np.concatenate([p.Ks for p in parts]),
            np.concatenate([p.widths for p in parts]),
            np.concatenate([p.heights for p in parts]),
            dist,
            sum((p.names for p in parts), []),
        )


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def c2w_opengl_to_viewmat(c2w_gl: np.ndarray) -> np.ndarray:
    """Camera-to-world in OpenGL axes (nerfstudio, Blender) -> world-to-camera in OpenCV axes."""
    c2w_gl = np.asarray(c2w_gl, dtype=np.float64).reshape(-1, 4, 4)
    return np.linalg.inv(c2w_gl @ GL_TO_CV)


def viewmat_to_c2w_opengl(viewmats: np.ndarray) -> np.ndarray:
    """World-to-camera in OpenCV axes -> camera-to-world in OpenGL axes (the inverse of the above)."""
    viewmats = np.asarray(viewmats, dtype=np.float64).reshape(-1, 4, 4)
    return np.linalg.inv(viewmats) @ GL_TO_CV


def look_at_viewmat(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera (OpenCV axes) of a camera at ``eye`` looking at ``target`` with world ``up`` pointing up."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    r = np.stack([x, y, z])  # rows: camera axes in world coordinates
    vm = np.eye(4)
    vm[:3, :3] = r
    vm[:3, 3] = -r @ eye
    return vm
