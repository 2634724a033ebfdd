"""Every kind of `recon view` target builds its scene nodes and statistics (no browser needed)."""

from __future__ import annotations

import trimesh

from viewer.app import start_viewer, stats_markdown
from viewer.ports import find_free_port
from viewer.targets import load_target


def test_every_target_kind_gets_its_nodes(viewer_run, viewer_scene, tmp_path):
    box = trimesh.creation.box()
    box.export(tmp_path / "box.glb")
    expected = {
        viewer_run: {"/splats", "/cameras/00000", "/points", "/axes"},
        viewer_run / "splats.ply": {"/splats", "/axes"},
        viewer_scene: {"/cameras/00000", "/points", "/axes"},
        viewer_scene / "points3D.ply": {"/points", "/axes"},
        tmp_path / "box.glb": {"/mesh", "/axes"},
    }
    viewer = start_viewer("127.0.0.1", find_free_port("127.0.0.1", 8900), backend="reference")
    try:
        for path, names in expected.items():
            for handle in list(viewer.nodes.values()):
                handle.remove()
            viewer.nodes.clear()
            target = load_target(path)
            viewer.show(target)
            assert names <= set(viewer.nodes), (path, sorted(viewer.nodes))
            for name in ("/splats", "/points", "/mesh"):  # nothing shown that the target does not hold
                assert (name in viewer.nodes) == (name in names), (path, name)
            assert target.kind in viewer.stats.content
    finally:
        viewer.close()
    md = stats_markdown(load_target(tmp_path / "box.glb"), None)
    assert "Mesh: 8 vertices, 12 faces" in md
