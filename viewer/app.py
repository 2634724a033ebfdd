"""The viser app behind `recon view TARGET` and `recon train --viewer`.

``start_viewer`` binds a server (the asked-for port or the next free one) with the render panel; ``Viewer.show``
adds a target's content and statistics. ``serve`` is the whole of `recon view`: read the target (user errors
come out before anything is bound), serve it, print the URL, wait for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from pathlib import Path

import numpy as np
import viser

from recon.data.scene import Scene

from . import scene_nodes as nodes
from .ports import find_free_port, url_for
from .render_panel import RenderPanel
from .snapshot import ModelSnapshot
from .targets import ViewTarget, load_target


class Viewer:
    """A running viser server showing one scene; safe to update from any thread."""

    def __init__(self, server: viser.ViserServer, host: str, backend: str = "auto"):
        self.server = server
        self.host = host
        self.port = server.get_port()
        self.url = url_for(host, self.port)
        self._lock = threading.Lock()
        self._snapshot: ModelSnapshot | None = None
        self.scene: Scene | None = None
        self.frame: nodes.Frame | None = None
        self.nodes: dict[str, object] = {}  # scene-node handles by name (frusta under /cameras/NNNNN)
        with server.gui.add_folder("Scene", expand_by_default=True):
            self.stats = server.gui.add_markdown("Loading...")
            self.toggles = {
                name: server.gui.add_checkbox(label, initial_value=True)
                for name, label in (
                    (nodes.SPLATS, "Splats"),
                    (nodes.CAMERAS, "Cameras"),
                    (nodes.POINTS, "Sparse points"),
                )
            }
        for name, box in self.toggles.items():
            box.on_update(lambda _, name=name: self.set_visible(name, self.toggles[name].value))
        self.render_panel = RenderPanel(server, self.snapshot, backend)

    # ----- content -----
    def snapshot(self) -> ModelSnapshot | None:
        with self._lock:
            return self._snapshot

    def set_splats(self, snapshot: ModelSnapshot) -> None:
        """Show (or replace) the Gaussians; the render panel renders this copy from now on."""
        with self._lock:
            self._snapshot = snapshot
        self.nodes[nodes.SPLATS] = nodes.show_splats(self.server, snapshot, self.nodes.get(nodes.SPLATS))

    def set_visible(self, prefix: str, visible: bool) -> None:
        """Show or hide every node whose name starts with ``prefix`` (e.g. all the frusta under /cameras)."""
        for name, handle in list(self.nodes.items()):
            if name == prefix or name.startswith(prefix + "/"):
                handle.visible = visible

    def show_scene(
        self,
        scene: Scene | None,
        points: np.ndarray | None = None,
        rgb: np.ndarray | None = None,
        points_visible: bool = True,
        extent_of: np.ndarray | None = None,
    ) -> None:
        """Cameras, sparse points, axes, up direction and the first view (each may be absent).

        ``points`` default to the scene's sparse points; ``extent_of`` (e.g. Gaussian centres) sizes the view when
        there are neither points nor cameras.
        """
        if points is None and scene is not None:
            points, rgb = scene.points, scene.points_rgb
        frame = nodes.Frame.of(scene, points if points is not None and len(points) else extent_of)
        self.scene, self.frame = scene, frame
        nodes.set_frame(self.server, frame)
        for client in self.server.get_clients().values():  # pages opened before the scene was known
            nodes.move_camera(client, frame)
        self.nodes[nodes.AXES] = nodes.add_axes(self.server, frame.radius)
        if points is not None and len(points):
            self.nodes[nodes.POINTS] = nodes.add_points(
                self.server, points, rgb, frame.radius, points_visible
            )
            self.toggles[nodes.POINTS].value = points_visible
        if scene is not None and len(scene):
            for handle in nodes.add_cameras(self.server, scene, frame.radius, on_pick=self.fly_to):
                self.nodes[handle.name] = handle

    def show(self, target: ViewTarget) -> None:
        """Everything a `recon view` target holds, and its statistics."""
        means = None if target.model is None else target.model.preview().means
        vertices = None if target.mesh is None else np.asarray(target.mesh.vertices)
        self.show_scene(
            target.scene,
            target.points,
            target.points_rgb,
            points_visible=target.model is None,  # with splats, the SfM points only clutter the view
            extent_of=means if means is not None else vertices,
        )
        if target.model is not None:
            self.set_splats(ModelSnapshot.of(target.model, step=target.step))
        if target.mesh is not None:
            self.nodes[nodes.MESH] = nodes.add_mesh(self.server, target.mesh)
        self.stats.content = stats_markdown(target, self.frame)

    def fly_to(self, client: viser.ClientHandle, i: int) -> None:
        if self.scene is not None and self.frame is not None:
            nodes.fly_to_camera(client, self.scene, i, self.frame)

    def close(self) -> None:
        self.render_panel.close()
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints "Server stopped"
            self.server.stop()


def stats_markdown(target: ViewTarget, frame: nodes.Frame | None) -> str:
    rows = [f"**{target.kind}** `{target.path.name or target.path}`"]
    if target.model is not None:
        noun = target.model.noun
        rows.append(
            f"{noun[:1].upper() + noun[1:]}: {len(target.model):,} (SH degree {target.model.max_sh_degree})"
        )
    if target.step is not None:
        rows.append(f"Step: {target.step:,}")
    if target.scene is not None:
        s = target.scene
        rows.append(f"Cameras: {len(s)} ({len(s.train_ids)} train, {len(s.test_ids)} test, {s.format})")
    if target.points is not None:
        rows.append(f"Sparse points: {len(target.points):,}")
    if target.mesh is not None:
        rows.append(f"Mesh: {len(target.mesh.vertices):,} vertices, {len(target.mesh.faces):,} faces")
    if frame is not None:
        rows.append(f"Radius: {frame.radius:.3g} (centre {', '.join(f'{v:.3g}' for v in frame.center)})")
    rows += [f"*{note}*" for note in target.notes]
    return "  \n".join(rows)


def start_viewer(host: str = "127.0.0.1", port: int = 8080, backend: str = "auto") -> Viewer:
    """Bind a viser server on ``host`` at ``port`` or the next free port, with the scene and render panels."""
    chosen = find_free_port(host, port)
    with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: we print our own one-line URL
        server = viser.ViserServer(host=host, port=chosen, label="recon", verbose=False)
    server.gui.configure_theme(show_share_button=False, control_width="medium")
    return Viewer(server, host, backend)


def serve(
    target_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    backend: str = "auto",
    until: threading.Event | None = None,
) -> int:
    """`recon view`: show ``target_path`` until Ctrl-C (or until ``until`` is set)."""
    target = load_target(target_path)
    viewer = start_viewer(host, port, backend)
    try:
        viewer.show(target)
        moved = "" if viewer.port == port else f" (port {port} was busy)"
        print(f"recon view: {target.describe()}", file=sys.stderr)
        print(f"recon view: open {viewer.url}{moved}; Ctrl-C to stop", flush=True)
        until = until or threading.Event()
        try:
            while not until.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        viewer.close()
    return 0
