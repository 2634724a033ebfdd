"""Cameras: OpenGL <-> OpenCV known answers, look-at, scaling, selection."""

from __future__ import annotations

import numpy as np

from recon.data.cameras import (
    GL_TO_CV,
    Cameras,
    c2w_opengl_to_viewmat,
    intrinsics_matrix,
    look_at_viewmat,
    viewmat_to_c2w_opengl,
)


def _random_c2w(rng: np.random.Generator, n: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = q
    c2w[:, :3, 3] = rng.normal(size=(n, 3)) * 3
    return c2w


def test_opengl_camera_on_z_axis_known_answer():
    # OpenGL camera at (0,0,5), identity rotation: it looks down -z, i.e. at the origin.
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, 5.0]
    vm = c2w_opengl_to_viewmat(c2w)[0]
    np.testing.assert_allclose(vm[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(vm[:3, 3], [0.0, 0.0, 5.0], atol=1e-12)
    # The origin is 5 in front (OpenCV +z); a point above it (world +y = OpenGL up) is at image-up (camera -y).
    assert np.allclose(vm @ [0, 0, 0, 1], [0, 0, 5, 1])
    up = vm @ [0, 1, 0, 1]
    assert up[1] < 0 and up[2] == 5
    right = vm @ [1, 0, 0, 1]
    assert right[0] > 0


def test_opengl_opencv_conversion_twice_is_identity():
    rng = np.random.default_rng(0)
    c2w = _random_c2w(rng, 6)
    np.testing.assert_allclose(viewmat_to_c2w_opengl(c2w_opengl_to_viewmat(c2w)), c2w, atol=1e-12)
    vm = np.linalg.inv(c2w)
    np.testing.assert_allclose(c2w_opengl_to_viewmat(viewmat_to_c2w_opengl(vm)), vm, atol=1e-12)
    np.testing.assert_allclose(GL_TO_CV @ GL_TO_CV, np.eye(4))
    # The camera centre is the same in both conventions; only the axes flip.
    cams = Cameras(c2w_opengl_to_viewmat(c2w), np.tile(np.eye(3), (6, 1, 1)), 10, 10)
    np.testing.assert_allclose(cams.centers, c2w[:, :3, 3], atol=1e-12)
    np.testing.assert_allclose(cams.camtoworlds[:, :3, 0], c2w[:, :3, 0], atol=1e-12)
    np.testing.assert_allclose(cams.camtoworlds[:, :3, 1], -c2w[:, :3, 1], atol=1e-12)


def test_look_at_puts_target_on_optical_axis():
    rng = np.random.default_rng(1)
    for _ in range(10):
        eye = rng.normal(size=3) * 4
        target = rng.normal(size=3)
        vm = look_at_viewmat(eye, target)
        np.testing.assert_allclose(vm[:3, :3] @ vm[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(vm[:3, :3]) > 0
        p = vm @ np.append(target, 1.0)
        np.testing.assert_allclose(p[:2], 0.0, atol=1e-9)
        np.testing.assert_allclose(p[2], np.linalg.norm(target - eye), rtol=1e-12)
        # World up (+z) points to image-up (camera -y) for a camera that is not looking straight up or down.
        up = vm[:3, :3] @ np.array([0.0, 0.0, 1.0])
        assert up[1] < 0


def test_scaled_keeps_pixel_centre_convention():
    k = intrinsics_matrix(100.0, 120.0, 50.0, 40.0)
    cams = Cameras(np.eye(4)[None], k[None], 100, 80)
    half = cams.scaled(2.0)
    assert (half.widths[0], half.heights[0]) == (50, 40)
    np.testing.assert_allclose(half.Ks[0], intrinsics_matrix(50.0, 60.0, 25.0, 20.0))
    # A ray through the first pixel centre (0.5) at full size hits 0.25 at half size: pixel edges scale.
    x = (0.5 - 50.0) / 100.0
    assert np.isclose(half.Ks[0, 0, 0] * x + half.Ks[0, 0, 2], 0.25)


def test_select_and_concat():
    rng = np.random.default_rng(2)
    vms = np.linalg.inv(_random_c2w(rng, 5))
    ks = np.tile(intrinsics_matrix(10, 10, 5, 5), (5, 1, 1))
    a = Cameras(vms, ks, 10, 10, names=list("abcde"))
    sub = a[[3, 1]]
    assert sub.names == ["d", "b"] and len(sub) == 2
    np.testing.assert_array_equal(sub.viewmats, vms[[3, 1]])
    b = Cameras(vms[:2], ks[:2], 10, 10, dist=np.full((2, 4), 0.01), names=["f", "g"])
    both = Cameras.concat([a, b])
    assert len(both) == 7 and both.dist.shape == (7, 4)
    np.testing.assert_array_equal(both.dist[:5], 0.0)
    assert both.has_distortion and not a.has_distortion
