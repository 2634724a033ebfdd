"""`recon view` in a real headless Chromium: the page connects, lists the scene, draws it, and renders on demand."""

from __future__ import annotations

import base64
import io
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from recon.models.splats import SH_C0, SplatModel
from recon.render import rasterize
from tests.viewer.conftest import close_scene_tree, open_page, open_scene_tree, wait_for
from viewer.app import start_viewer
from viewer.camera import intrinsics_from_fov, viewmat_from_pose
from viewer.scene_nodes import fly_to_camera
from viewer.snapshot import ModelSnapshot
from viewer.targets import load_target

# Overlays the page draws over the 3D canvas; their pixels say nothing about the scene.
OVERLAY_BOXES_JS = """texts => {
  const boxes = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.children.length || !texts.some(t => (el.textContent || '').includes(t))) continue;
    let e = el;
    while (e && !['fixed', 'absolute'].includes(getComputedStyle(e).position)) e = e.parentElement;
    if (e) { const r = e.getBoundingClientRect(); boxes.push([r.left, r.top, r.right, r.bottom]); }
  }
  return boxes;
}"""


@pytest.fixture(scope="module")
def viewer(viewer_run):
    v = start_viewer("127.0.0.1", 8300, backend="reference")
    v.show(load_target(viewer_run))
    yield v
    v.close()


@pytest.fixture(scope="module")
def page(browser, viewer):
    page, client = open_page(browser, viewer.url, viewer.server)
    yield page, client
    page.close()


def test_page_loads_connects_and_shows_statistics(page, viewer, viewer_run):
    pg, client = page
    assert client is not None and len(viewer.server.get_clients()) == 1
    assert pg.locator("canvas").first.is_visible()
    n = len(SplatModel.load_ply(viewer_run / "splats.ply"))
    body = pg.inner_text("body")
    assert f"Gaussians: {n}" in body and "Cameras: 8 (" in body, body


def test_scene_tree_lists_the_expected_nodes(page):
    pg, _ = page
    open_scene_tree(pg)
    try:
        for name in ("/splats", "/cameras", "/points", "/axes"):
            pg.get_by_label(f"Edit props for {name}", exact=True).wait_for(timeout=10_000)
        tree = pg.get_by_text("Scene tree", exact=True).locator("xpath=..").inner_text()
        for name in ("splats", "cameras", "points", "axes"):
            assert name in tree, tree
    finally:
        close_scene_tree(pg)
    pg.get_by_role("button", name="Render view").wait_for(timeout=10_000)


def _settle(client, position: np.ndarray) -> None:
    """Wait until the page reports its camera at ``position`` and has stopped moving (no update for 0.6 s)."""

    def settled() -> bool:
        stamp = client.camera.update_timestamp
        time.sleep(0.6)
        return stamp == client.camera.update_timestamp and np.allclose(
            client.camera.position, position, atol=1e-4
        )

    wait_for(settled, what="the browser camera to settle")


def _look_from_beside_camera(viewer, client, i: int) -> None:
    """Put the browser at scene camera ``i`` shifted sideways, so the scene sits left of the image centre."""
    fly_to_camera(client, viewer.scene, i, viewer.frame)
    center = viewer.scene.cameras.centers[i]
    _settle(client, center)
    right = viewer.scene.cameras.camtoworlds[i][:3, 0]
    depth = float(np.linalg.norm(viewer.frame.look_at - viewer.frame.position))
    shifted = center + 0.2 * depth * right  # moves the camera right: the content moves left in the image
    client.camera.position = shifted
    _settle(client, shifted)


def test_screenshot_shows_the_scene_where_rasterize_puts_it(page, viewer, viewer_run):
    pg, client = page
    i = int(viewer.scene.train_ids[1])
    _look_from_beside_camera(viewer, client, i)
    viewer.set_visible("/cameras", False)  # the frusta's photos show the scene too: look at the splats alone
    try:
        time.sleep(1.0)  # software WebGL: let a few frames land
        stamp = client.camera.update_timestamp
        shot = np.asarray(Image.open(io.BytesIO(pg.screenshot())).convert("RGB")).astype(np.int16)
        assert client.camera.update_timestamp == stamp, "the camera moved during the screenshot"
    finally:
        viewer.set_visible("/cameras", True)
    h, w = shot.shape[:2]
    cam = client.camera
    # The page may draw at a reduced resolution (viser adapts it to the frame rate), never another aspect.
    assert cam.image_width / cam.image_height == pytest.approx(w / h, rel=0.01)
    model = SplatModel.load_ply(viewer_run / "splats.ply")
    with torch.no_grad():
        out, _ = rasterize(
            **model.render_inputs(),
            viewmats=torch.tensor(viewmat_from_pose(cam.wxyz, cam.position), dtype=torch.float32)[None],
            Ks=torch.tensor(intrinsics_from_fov(cam.fov, w, h), dtype=torch.float32)[None],
            width=w,
            height=h,
            sh_degree=model.sh_degree,
            outputs=("alpha",),
            backend="reference",
        )
    alpha = out.alpha[0, ..., 0].numpy()
    usable = np.ones((h, w), bool)
    for x0, y0, x1, y1 in pg.evaluate(OVERLAY_BOXES_JS, ["Render view", "WebGL"]):
        usable[max(0, int(y0)) : int(math.ceil(y1)), max(0, int(x0)) : int(math.ceil(x1))] = False
    background = np.median(shot[usable & (alpha < 0.005)], axis=0)
    differs = usable & (np.abs(shot - background).max(-1) > 40)
    inside, outside = usable & (alpha > 0.6), usable & (alpha < 0.005)
    assert inside.sum() > 2000 and outside.sum() > 2000, (inside.sum(), outside.sum())
    assert differs[inside].mean() > 0.7, differs[inside].mean()
    assert differs[outside].mean() < 0.25 * differs[inside].mean(), (
        differs[outside].mean(),
        differs[inside].mean(),
    )
    # Where the page draws the scene is where rasterize puts it: the scene is off-centre, so a mirrored or
    # shifted camera conversion would move one centroid away from the other.
    ys, xs = np.nonzero(inside)
    yd, xd = np.nonzero(differs & (alpha > 0.05))
    assert xs.mean() < 0.45 * w, xs.mean()
    assert abs(xd.mean() - xs.mean()) < 0.04 * w and abs(yd.mean() - ys.mean()) < 0.04 * h, (
        xd.mean(),
        xs.mean(),
    )


def _panel_image(pg, width: int, height: int) -> np.ndarray | None:
    """The render panel's <img> as the page holds it (PNG bytes fetched inside the page)."""
    b64 = pg.evaluate(
        """async ([w, h]) => {
          const img = [...document.querySelectorAll('img')].find(i => i.naturalWidth === w && i.naturalHeight === h);
          if (!img) return null;
          const buf = await (await fetch(img.src)).arrayBuffer();
          let s = ''; for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
          return btoa(s);
        }""",
        [width, height],
    )
    if not b64:
        return None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_render_panel_image_equals_rasterize(page, viewer, viewer_run):
    pg, client = page
    viewer.render_panel.resolution.value = "320x240"
    viewer.render_panel.mode.value = "RGB"
    before = viewer.render_panel.last
    pg.get_by_role("button", name="Render view").click()
    wait_for(lambda: viewer.render_panel.last is not before, timeout=60, what="the render")
    pg.get_by_text("RGB, 320x240").first.wait_for(timeout=10_000)
    shown = wait_for(lambda: _panel_image(pg, 320, 240), what="the image in the page")
    cam = client.camera
    model = SplatModel.load_ply(viewer_run / "splats.ply")
    with torch.no_grad():
        out, _ = rasterize(
            **model.render_inputs(),
            viewmats=torch.tensor(viewmat_from_pose(cam.wxyz, cam.position), dtype=torch.float32)[None],
            Ks=torch.tensor(intrinsics_from_fov(cam.fov, 320, 240), dtype=torch.float32)[None],
            width=320,
            height=240,
            sh_degree=model.sh_degree,
            backgrounds=torch.ones(1, 3),
            backend="reference",
        )
    expected = out.rgb[0].clamp(0, 1).numpy() * 255
    diff = np.abs(shown.astype(np.float64) - expected)
    assert diff.max() <= 1.0, diff.max()  # PNG is lossless: only the rounding to 8 bits remains
    assert shown.std() > 10  # the scene is in view, not a blank image


def test_render_modes_show_different_images(page, viewer):
    _, client = page
    panel = viewer.render_panel
    panel.resolution.value = "320x240"
    images = {}
    for mode in ("RGB", "Depth", "Normal", "Alpha", "Distortion"):
        panel.mode.value = mode
        images[mode] = panel.render_for(client).image
        assert images[mode].shape == (240, 320, 3)
    modes = list(images)
    for a in range(len(modes)):
        for b in range(a + 1, len(modes)):
            assert np.abs(images[modes[a]].astype(int) - images[modes[b]]).mean() > 1, (modes[a], modes[b])


def _red_fraction(pg) -> float:
    shot = np.asarray(Image.open(io.BytesIO(pg.screenshot())).convert("RGB")).astype(int)
    return float(((shot[..., 0] > 180) & (shot[..., 1] < 100) & (shot[..., 2] < 100)).mean())


def test_new_splats_reach_the_open_page(page, viewer):
    """What live training relies on: replacing the Gaussians redraws a page that is already open."""
    pg, _ = page
    original = viewer.snapshot()
    before = _red_fraction(pg)
    params = {k: v.detach() for k, v in original.model.params.items()}
    params["sh0"] = torch.tensor([0.5, -0.5, -0.5]).expand_as(params["sh0"]) / SH_C0  # every splat pure red
    viewer.set_visible("/cameras", False)
    red = SplatModel(params, original.model.max_sh_degree, original.model.primitive)
    viewer.set_splats(ModelSnapshot(red, original.sh_degree, step=1))
    try:
        wait_for(lambda: _red_fraction(pg) > before + 0.05, timeout=20, what="red splats in the page")
    finally:
        viewer.set_splats(original)
        viewer.set_visible("/cameras", True)


def test_follow_camera_renders_each_new_view(page, viewer):
    _, client = page
    panel = viewer.render_panel
    panel.resolution.value = "320x240"
    panel.mode.value = "Alpha"
    panel.follow.value = True
    try:
        for k in (1, 2):
            target = client.camera.position + 0.2 * k * viewer.frame.radius * viewer.frame.up
            client.camera.position = target
            _settle(client, target)
            now = viewmat_from_pose(client.camera.wxyz, client.camera.position)
            wait_for(
                lambda now=now: (
                    panel.last is not None
                    and panel.last.mode == "Alpha"
                    and np.allclose(panel.last.viewmat, now, atol=1e-6)
                ),
                timeout=30,
                what=f"a render of view {k}",
            )
    finally:
        panel.follow.value = False
        panel.mode.value = "RGB"
