"""Fixtures for the viewer tests: a tiny scene and run, a headless Chromium (Playwright), and page helpers.

The browser tests drive Debian's /usr/bin/chromium (installed by `make setup`) through Playwright; they skip with
the reason when it or the playwright package is absent. viser renders there through software WebGL.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from recon.train.config import Config
from recon.train.overrides import build_config
from recon.train.trainer import train
from tests.train.conftest import make_tiny_scene

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1000, "height": 700}
FAST = ["train.backend=reference", "model.sh_degree=1", "data.split_every=4", "train.eval_at_end=false"]


def tiny_config(*sets: str) -> Config:
    return build_config(Config, sets=[*FAST, *sets])


@pytest.fixture(scope="session")
def viewer_scene(tmp_path_factory) -> Path:
    return make_tiny_scene(tmp_path_factory.mktemp("viewer") / "scene", n_views=8, size=48, n_gaussians=80)


@pytest.fixture(scope="session")
def viewer_run(viewer_scene, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("viewer") / "run"
    train(viewer_scene, run, tiny_config("train.steps=25"))
    return run


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A Playwright browser context on Debian's Chromium with a fresh profile."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (make setup installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if isinstance(value, np.ndarray) or value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def open_page(browser, url: str, server=None):
    """Load ``url``, wait for viser's canvas and (with ``server``) for the page's connection; (page, client)."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("canvas", timeout=30_000)
    client = None
    if server is not None:
        clients = wait_for(lambda: server.get_clients(), what="the page to connect")
        client = next(iter(clients.values()))
    return page, client


def open_scene_tree(page) -> None:
    """Show viser's scene tree: it lives behind the panel's "Configuration & diagnostics" button."""
    toggle_settings(page, "Configuration & diagnostics")


def close_scene_tree(page) -> None:
    toggle_settings(page, "Return to GUI")


def toggle_settings(page, tooltip_text: str) -> None:
    """Click the panel's icon button whose tooltip reads ``tooltip_text`` (the settings toggle)."""
    tooltip = page.get_by_text(tooltip_text).first
    for button in page.locator("button.mantine-ActionIcon-root").all():
        if not button.is_visible():
            continue
        button.hover()
        try:
            tooltip.wait_for(timeout=3_000)
        except Exception:  # Playwright's TimeoutError: not this button
            continue
        button.click()
        page.mouse.move(1, 1)  # let the tooltip go
        return
    raise AssertionError(f"no panel button with the tooltip {tooltip_text!r}")
