"""The render panel: render the browser's current view through the model's own renderer and show it in the page.

This is the renderer the model was trained with (full SH colour, exact compositing), unlike viser's WebGL
splats, and it shows the maps the regularizers act on: expected depth, normals, alpha and depth distortion. Models
without normals of their own (convexes) show the normal of their depth map in the Normal mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import viser

from recon.regularizers.normal_consistency import surface_normals
from recon.render import RenderOutputs

from .camera import viewer_camera
from .snapshot import ModelSnapshot
from .worker import LatestWorker

# Display name -> maps to render. Every mode but RGB composites its colour map over the background with alpha.
MODES: dict[str, tuple[str, ...]] = {
    "RGB": ("rgb",),
    "Depth": ("alpha", "depth_exp"),
    "Normal": ("alpha", "normal"),
    "Alpha": ("alpha",),
    "Distortion": ("alpha", "distort_l1"),
}
WINDOW = "browser window"
RESOLUTIONS = ("640x480", "320x240", "960x720", "1280x720", "1920x1080", WINDOW)


@dataclass
class RenderResult:
    """The last image the panel showed, with the camera it was rendered from (tests and benchmarks read it)."""

    image: np.ndarray  # [H,W,3] uint8
    viewmat: np.ndarray
    K: np.ndarray
    mode: str
    seconds: float  # render + colour mapping + hand-over to the page
    snapshot: ModelSnapshot


def render_view(
    snapshot: ModelSnapshot,
    viewmat: np.ndarray,
    K: np.ndarray,
    width: int,
    height: int,
    mode: str = "RGB",
    backend: str = "auto",
    background=(1.0, 1.0, 1.0),
) -> np.ndarray:
    """[H,W,3] uint8 image of ``mode`` seen from (``viewmat``, ``K``)."""
    if mode not in MODES:
        raise ValueError(f"unknown render mode {mode!r}; choose from {list(MODES)}")
    maps = MODES[mode]
    from_depth = mode == "Normal" and "normals" not in snapshot.model.capabilities
    if from_depth:  # a representation without normals of its own (convexes): the normal of the depth map
        maps = ("alpha", "depth_exp")
    out = snapshot.render(viewmat, K, width, height, maps, background, backend)
    if from_depth:
        Ks = torch.as_tensor(np.asarray(K, np.float32))[None]
        out.normal = surface_normals(out.depth_exp, out.alpha, None, Ks)
    return colorize(out, mode, np.asarray(background, np.float32))


def colorize(out: RenderOutputs, mode: str, background: np.ndarray) -> np.ndarray:
    """Turn one camera's render outputs into a displayable uint8 RGB image."""
    if mode == "RGB":
        return to_uint8(out.rgb[0].numpy())
    alpha = out.alpha[0].numpy()
    if mode == "Alpha":
        return to_uint8(np.repeat(alpha, 3, axis=-1))
    a = np.maximum(alpha, 1e-6)
    covered = alpha[..., 0] > 0.05
    if mode == "Depth":
        color = colormap(out.depth_exp[0, ..., 0].numpy() / a[..., 0], covered)
    elif mode == "Normal":
        n = out.normal[0].numpy() / a
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-8)
        # OpenGL camera axes for display (x right, y up, z towards the viewer): a surface facing the camera is blue.
        color = 0.5 * (n * np.array([1.0, -1.0, -1.0], np.float32) + 1.0)
    elif mode == "Distortion":
        color = colormap(out.distort_l1[0, ..., 0].numpy(), covered, lo_q=0.0)
    else:
        raise ValueError(f"unknown render mode {mode!r}")
    return to_uint8(color * alpha + background * (1.0 - alpha))


def colormap(values: np.ndarray, valid: np.ndarray, lo_q: float = 1.0, hi_q: float = 99.0) -> np.ndarray:
    """[H,W,3] float turbo colours of ``values`` stretched between percentiles of its ``valid`` pixels."""
    if valid.any():
        lo, hi = np.percentile(values[valid], [lo_q, hi_q])
    else:
        lo, hi = 0.0, 1.0
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap((t * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_TURBO)
    return bgr[..., ::-1].astype(np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def parse_resolution(choice: str, window: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a resolution choice; the browser window's canvas size for ``WINDOW``."""
    if choice == WINDOW:
        return max(1, int(window[0])), max(1, int(window[1]))
    w, h = choice.split("x")
    return int(w), int(h)


class RenderPanel:
    """GUI folder with mode, resolution, a render button, 'follow camera', the image and its timing."""

    def __init__(
        self,
        server: viser.ViserServer,
        source: Callable[[], ModelSnapshot | None],
        backend: str = "auto",
        background=(1.0, 1.0, 1.0),
    ):
        self.server, self.source, self.backend = server, source, backend
        self.background = tuple(float(v) for v in background)
        self.last: RenderResult | None = None
        self._worker = LatestWorker("viewer-render")
        with server.gui.add_folder("Render", expand_by_default=True):
            self.mode = server.gui.add_dropdown("Mode", tuple(MODES), initial_value="RGB")
            self.resolution = server.gui.add_dropdown("Resolution", RESOLUTIONS, initial_value=RESOLUTIONS[0])
            self.button = server.gui.add_button("Render view")
            self.follow = server.gui.add_checkbox("Follow camera", initial_value=False)
            self.image = server.gui.add_image(np.full((12, 16, 3), 235, np.uint8), format="png")
            self.info = server.gui.add_markdown("Press *Render view* to render what the browser shows.")
        self.button.on_click(lambda event: self.request(event.client))
        self.mode.on_update(lambda event: self._rerender(event.client))
        self.resolution.on_update(lambda event: self._rerender(event.client))
        self.follow.on_update(lambda event: self._rerender(event.client))
        server.on_client_connect(self._watch_camera)

    def _watch_camera(self, client: viser.ClientHandle) -> None:
        client.camera.on_update(lambda camera: self._rerender(camera.client, follow_only=True))

    def _rerender(self, client, follow_only: bool = False) -> None:
        if client is not None and (self.follow.value or not follow_only and self.last is not None):
            self.request(client)

    def request(self, client: viser.ClientHandle) -> None:
        """Render ``client``'s view in the background (a request still waiting is replaced by this one)."""
        self._worker.submit(lambda: self.render_for(client))

    def render_for(self, client: viser.ClientHandle) -> RenderResult | None:
        """Render ``client``'s current view now at the chosen resolution, show it in the page and return it."""
        camera = client.camera
        width, height = parse_resolution(self.resolution.value, (camera.image_width, camera.image_height))
        viewmat, K = viewer_camera(camera, width, height)
        return self.show_render(viewmat, K, width, height)

    def show_render(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> RenderResult | None:
        """Render one camera in the panel's mode and put the image in the page."""
        snapshot = self.source()
        if snapshot is None or len(snapshot) == 0:
            self.info.content = "Nothing to render: this target has no Gaussians (yet)."
            return None
        mode = self.mode.value
        t0 = time.perf_counter()
        image = render_view(snapshot, viewmat, K, width, height, mode, self.backend, self.background)
        self.image.image = image
        seconds = time.perf_counter() - t0
        self.last = RenderResult(image, viewmat, K, mode, seconds, snapshot)
        step = "" if snapshot.step is None else f", step {snapshot.step:,}"
        self.info.content = (
            f"{mode}, {width}x{height}, {len(snapshot):,} {snapshot.noun}{step}: "
            f"{1000 * seconds:.0f} ms ({1 / seconds:.1f} fps, backend {self.backend})"
        )
        return self.last

    def close(self) -> None:
        self._worker.close()
