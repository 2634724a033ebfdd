"""The 3D content of the page: splats, meshes, sparse points, camera frusta with thumbnails, axes, and the frame.

A scene's world frame is whatever its source used (COLMAP frames often have an arbitrary up vector), so the
viewer takes "up" from the cameras (the mean of their -y axes: photographers hold cameras roughly level) and
starts at the first training camera's pose.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import viser

from recon.data.scene import Scene

from .camera import fov_from_intrinsics, pose_from_viewmat
from .snapshot import ModelSnapshot

log = logging.getLogger("recon")

SPLATS = "/splats"
MESH = "/mesh"
POINTS = "/points"
CAMERAS = "/cameras"
AXES = "/axes"

THUMB_PX = 96  # long side of the image shown in each frustum
MAX_THUMBS = 400  # beyond this many cameras the frusta are drawn without images (page weight)
TRAIN_COLOR = (40, 40, 40)
TEST_COLOR = (230, 110, 20)


@dataclass
class Frame:
    """Where the content is: a centre, a radius, an up direction, and a first view."""

    center: np.ndarray
    radius: float
    up: np.ndarray
    position: np.ndarray
    look_at: np.ndarray
    fov: float

    @classmethod
    def of(cls, scene: Scene | None, xyz: np.ndarray | None) -> Frame:
        center, radius = _bounds(scene, xyz)
        if scene is not None and len(scene) > 0:
            up = scene_up(scene)
            i = int(scene.train_ids[0]) if len(scene.train_ids) else 0
            c2w = scene.cameras.camtoworlds[i]
            forward = c2w[:3, 2]
            depth = max(float((center - c2w[:3, 3]) @ forward), 0.1 * radius)
            look_at = c2w[:3, 3] + depth * forward
            # Start a little behind and above the first training camera, looking where it looks: from the camera
            # itself its own frustum's photo would fill the view and hide the splats.
            position = c2w[:3, 3] - 0.4 * depth * forward + 0.15 * depth * up
            fov = fov_from_intrinsics(scene.cameras.Ks[i], int(scene.cameras.heights[i]))
            return cls(center, radius, up, position, look_at, fov)
        up = np.array([0.0, 0.0, 1.0])
        direction = np.array([1.0, -1.0, 0.6])
        position = center + 2.2 * radius * direction / np.linalg.norm(direction)
        return cls(center, radius, up, position, center, math.radians(50.0))


def scene_up(scene: Scene) -> np.ndarray:
    """Unit "up" of a scene: the mean of its cameras' -y axes (OpenCV y points down in the image)."""
    up = -scene.cameras.camtoworlds[:, :3, 1].mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-8 else np.array([0.0, 0.0, 1.0])


def _bounds(scene: Scene | None, xyz: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Centre and radius of the content, robust to the far-away floaters splat scenes always have."""
    pts = []
    if xyz is not None and len(xyz):
        pts.append(np.asarray(xyz, np.float64))
    if scene is not None and len(scene):
        pts.append(scene.cameras.centers)
    if not pts:
        return np.zeros(3), 1.0
    p = np.concatenate(pts)
    lo, hi = np.percentile(p, 5, axis=0), np.percentile(p, 95, axis=0)
    center = 0.5 * (lo + hi)
    radius = float(0.5 * np.linalg.norm(hi - lo))
    return center, radius if radius > 1e-6 else 1.0


def show_splats(server: viser.ViserServer, snapshot: ModelSnapshot, handle=None):
    """Show Gaussians with viser's own splat renderer; with ``handle``, update that node in place.

    Updating in place is what makes an open page redraw: re-adding a node under the same name leaves the browser
    showing the old splats.
    """
    centers, covs, rgbs, opacities = snapshot.splat_arrays()
    if handle is not None:
        handle.set_gaussians(centers, covs, rgbs, opacities)
        return handle
    return server.scene.add_gaussian_splats(
        SPLATS, centers=centers, covariances=covs, rgbs=rgbs, opacities=opacities
    )


def add_mesh(server: viser.ViserServer, mesh):
    return server.scene.add_mesh_trimesh(MESH, mesh)


def add_points(
    server: viser.ViserServer, xyz: np.ndarray, rgb: np.ndarray | None, radius: float, visible: bool
):
    colors = rgb if rgb is not None else (150, 150, 150)
    return server.scene.add_point_cloud(
        POINTS, points=np.asarray(xyz, np.float32), colors=colors, point_size=0.004 * radius, visible=visible
    )


def add_axes(server: viser.ViserServer, radius: float):
    return server.scene.add_frame(AXES, axes_length=0.15 * radius, axes_radius=0.006 * radius)


def thumbnail(path: Path, size: int = THUMB_PX) -> np.ndarray | None:
    """A small RGB copy of a photo (JPEG draft mode decodes at reduced size, so this stays fast)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im)
    except OSError as e:
        log.debug("no thumbnail for %s: %s", path, e)
        return None


def add_cameras(server: viser.ViserServer, scene: Scene, radius: float, on_pick=None) -> list:
    """One frustum per camera (test cameras in orange), with the photo inside; clicking one flies there."""
    cams = scene.cameras
    test = set(int(i) for i in scene.test_ids)
    with_thumbs = len(cams) <= MAX_THUMBS
    handles = []
    for i in range(len(cams)):
        wxyz, position = pose_from_viewmat(cams.viewmats[i])
        h, w = int(cams.heights[i]), int(cams.widths[i])
        image = thumbnail(scene.image_paths[i]) if with_thumbs else None
        handle = server.scene.add_camera_frustum(
            f"{CAMERAS}/{i:05d}",
            fov=fov_from_intrinsics(cams.Ks[i], h),
            aspect=w / h,
            scale=0.06 * radius,
            thickness=1.5,
            thickness_units="screen",  # thin from anywhere, even when the view sits at a camera's apex
            color=TEST_COLOR if i in test else TRAIN_COLOR,
            image=image,
            wxyz=wxyz,
            position=position,
        )
        if on_pick is not None:
            handle.on_click(lambda event, i=i: on_pick(event.client, i))
        handles.append(handle)
    return handles


def fly_to_camera(client, scene: Scene, i: int, frame: Frame) -> None:
    """Put a browser's camera at scene camera ``i`` (its pose and vertical field of view)."""
    c2w = scene.cameras.camtoworlds[i]
    position, forward = c2w[:3, 3], c2w[:3, 2]
    depth = max(float((frame.center - position) @ forward), 0.1 * frame.radius)
    with client.atomic():
        client.camera.up_direction = frame.up
        client.camera.position = position
        client.camera.look_at = position + depth * forward
        client.camera.fov = fov_from_intrinsics(scene.cameras.Ks[i], int(scene.cameras.heights[i]))


def move_camera(client, frame: Frame) -> None:
    """Put an already open page at the frame's first view (the initial camera only reaches new pages)."""
    with client.atomic():
        client.camera.up_direction = frame.up
        client.camera.position = frame.position
        client.camera.look_at = frame.look_at
        client.camera.fov = frame.fov


def set_frame(server: viser.ViserServer, frame: Frame) -> None:
    """Up direction and the first view of every browser that connects from now on."""
    server.scene.set_up_direction(tuple(float(v) for v in frame.up))
    cam = server.initial_camera
    cam.up = tuple(float(v) for v in frame.up)
    cam.position = tuple(float(v) for v in frame.position)
    cam.look_at = tuple(float(v) for v in frame.look_at)
    cam.fov = float(frame.fov)
    cam.near = max(1e-3, 1e-3 * frame.radius)
    cam.far = 1e3 * frame.radius
