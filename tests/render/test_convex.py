"""Smooth convexes (3DCS, METHODS.md §3.1): the known answers of the pure-torch twin (``recon.render.convex``),
which is the oracle of the C++ kernel and the reference backend's path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.render import rasterize
from recon.render.convex import (
    EDGES_MAX,
    REACH,
    convex_kernel,
    hull_edges,
    project_convexes,
)
from recon.render.settings import RasterSettings

F64 = torch.float64


def _camera(size: int = 64, f: float = 60.0, dtype=torch.float32):
    vm = torch.eye(4, dtype=dtype)[None]
    Ks = torch.tensor([[[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]], dtype=dtype)
    return vm, Ks


def _rotation(ax: float, ay: float) -> torch.Tensor:
    cx, sx, cy, sy = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=F64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=F64)
    return ry @ rx


def _cube(centre=(0.05, -0.03, 3.0), half=0.4) -> torch.Tensor:
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=F64) * half
    return (corners @ _rotation(0.4, 0.7).T + torch.tensor(centre, dtype=F64))[None]  # [1,8,3]


def _payload(points, delta, sigma, size=64, f=60.0):
    vm, Ks = _camera(size, f, points.dtype)
    return project_convexes(points, delta, sigma, vm, Ks, RasterSettings(size, size))


def test_hull_lines_are_negative_inside_and_positive_outside():
    proj = _payload(_cube(), torch.tensor([1.0], dtype=F64), torch.tensor([1.0], dtype=F64))
    n = int(proj.payload[0, 0, 3 * EDGES_MAX + 2])
    assert n == 6  # a generic view of a cube: a hexagon
    lines = proj.payload[0, 0, : 3 * n].reshape(n, 3)
    centroid = proj.means2d[0, 0]
    d_in = lines[:, 0] * centroid[0] + lines[:, 1] * centroid[1] + lines[:, 2]
    assert (d_in < 0).all()
    for far in ([500.0, 32.0], [-400.0, -300.0], [32.0, 900.0]):
        d_out = lines[:, 0] * far[0] + lines[:, 1] * far[1] + lines[:, 2]
        assert (d_out > 0).any()


def test_hull_edge_set_matches_a_monotone_chain():
    """The vectorised hull test gives the edges of Andrew's monotone chain (collinear points dropped)."""
    gen = np.random.default_rng(0)
    for trial in range(200):
        k = int(gen.integers(3, 9))
        # small integers: duplicates and collinear triples are common, and every cross product is exact
        v = gen.integers(-3, 4, size=(k, 2)).astype(np.float64)
        edges = hull_edges(torch.from_numpy(v))
        expected = set(_monotone_chain_edges(v))
        got = {(int(i), int(j)) for i, j in zip(*np.nonzero(edges.numpy()), strict=True)}
        got = {tuple(map(tuple, (v[i], v[j]))) for i, j in got}
        assert got == expected, (trial, v)


def _monotone_chain_edges(v: np.ndarray) -> list[tuple]:
    pts = sorted(set(map(tuple, v)))
    if len(pts) < 2:
        return []

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    if len(hull) < 2:
        return []
    if len(hull) == 2:  # all collinear: the segment both ways
        return [(hull[0], hull[1]), (hull[1], hull[0])]
    return [(hull[i], hull[(i + 1) % len(hull)]) for i in range(len(hull))]


def test_sharp_limit_is_the_hard_polygon():
    """Large z·δ and z·σ: C(p) on a 64×64 grid is the polygon's indicator (IoU > 0.99 against shapely)."""
    shapely = pytest.importorskip("shapely")
    from shapely.geometry import MultiPoint, Point

    pts = _cube()
    proj = _payload(pts, torch.tensor([1e3], dtype=F64), torch.tensor([1e3], dtype=F64))
    ys, xs = torch.meshgrid(
        torch.arange(64, dtype=F64) + 0.5, torch.arange(64, dtype=F64) + 0.5, indexing="ij"
    )
    c = convex_kernel(proj.payload[0, 0], xs, ys)
    mine = (c > 0.5).numpy()
    q = pts[0].numpy()
    image = np.stack([60.0 * q[:, 0] / q[:, 2] + 32, 60.0 * q[:, 1] / q[:, 2] + 32], 1)
    poly = MultiPoint([tuple(p) for p in image]).convex_hull
    truth = np.array([[poly.contains(Point(x, y)) for x in xs[0].numpy()] for y in ys[:, 0].numpy()])
    iou = (mine & truth).sum() / (mine | truth).sum()
    assert iou > 0.99 and shapely.__version__
    assert ((c < 1e-3) | (c > 1 - 1e-3)).float().mean() > 0.9  # sharp: almost every pixel is 0 or 1


def test_smooth_kernel_is_monotone_along_rays_from_its_peak():
    """φ is a log-sum-exp of affine functions, so convex: C falls along every ray from its maximum (which is
    near, not at, the centroid of an irregular hull)."""
    proj = _payload(_cube(), torch.tensor([0.05], dtype=F64), torch.tensor([0.05], dtype=F64))
    ys, xs = torch.meshgrid(
        torch.linspace(0, 64, 257, dtype=F64), torch.linspace(0, 64, 257, dtype=F64), indexing="ij"
    )
    grid = convex_kernel(proj.payload[0, 0], xs, ys)
    peak = int(grid.argmax())
    centre = (xs.flatten()[peak], ys.flatten()[peak])
    assert (centre[0] - proj.means2d[0, 0, 0]).abs() < 8 and (centre[1] - proj.means2d[0, 0, 1]).abs() < 8
    t = torch.linspace(0.25, 60, 400, dtype=F64)
    for angle in np.linspace(0, 2 * math.pi, 16, endpoint=False):
        px = centre[0] + t * math.cos(angle)
        py = centre[1] + t * math.sin(angle)
        c = convex_kernel(proj.payload[0, 0], px, py)
        assert (c.diff() <= 1e-12).all() and 0.0 < c[-1] < c[0] < 1.0


def test_log_sum_exp_is_stable_and_exact():
    """φ with the max shift equals torch.logsumexp and stays finite for line values up to 1e4."""
    gen = torch.Generator().manual_seed(0)
    lines = torch.randn(EDGES_MAX, 3, generator=gen, dtype=F64) * 100.0
    for a in (1e-3, 1.0, 50.0):
        payload = torch.zeros(3 * EDGES_MAX + 5, dtype=F64)
        payload[: 3 * EDGES_MAX] = lines.flatten()
        payload[3 * EDGES_MAX : 3 * EDGES_MAX + 3] = torch.tensor([a, 1.0, EDGES_MAX])
        px = torch.linspace(-50, 50, 101, dtype=F64)
        py = torch.linspace(30, -30, 101, dtype=F64)
        c = convex_kernel(payload, px, py)
        d = lines[:, 0] * px[:, None] + lines[:, 1] * py[:, None] + lines[:, 2]
        assert d.abs().max() > 1e4  # the test reaches the range it claims
        phi = torch.logsumexp(a * d, dim=-1)
        assert torch.isfinite(c).all()
        assert torch.allclose(c, torch.sigmoid(-phi), rtol=1e-6, atol=1e-12)


def test_reach_covers_every_pixel_the_kernel_composites():
    """Outside the radius the kernel is below ALPHA_MIN at opacity 1 (the binning never drops a contribution)."""
    gen = torch.Generator().manual_seed(1)
    pts = torch.randn(30, 6, 3, generator=gen, dtype=F64) * 0.3 + torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    delta = torch.exp(torch.randn(30, generator=gen, dtype=F64))
    sigma = torch.exp(torch.randn(30, generator=gen, dtype=F64)) * 0.3
    proj = _payload(pts, delta, sigma, size=256, f=200.0)
    ys, xs = torch.meshgrid(
        torch.arange(-300, 556, 2.0, dtype=F64), torch.arange(-300, 556, 2.0, dtype=F64), indexing="ij"
    )
    for n in torch.nonzero(proj.radii[0] > 0)[:, 0].tolist():
        c = convex_kernel(proj.payload[0, n], xs, ys)
        m = proj.means2d[0, n]
        r = float(proj.radii[0, n])
        outside = ((xs - m[0]).abs() > r) | ((ys - m[1]).abs() > r)
        worst = float(c[outside].max()) if bool(outside.any()) else 0.0
        assert worst < 1.0 / 255.0 * 1.001, (n, worst)
        assert r > 0 and math.isfinite(REACH)


def test_gradcheck_of_the_reference_path():
    """Finite differences of the rendered image w.r.t. points, δ, σ, opacities and colours (float64, 8×8)."""
    gen = torch.Generator().manual_seed(2)
    pts = (
        torch.randn(2, 5, 3, generator=gen, dtype=F64) * 0.25
        + torch.tensor([[0.05, 0.0, 2.5], [-0.1, 0.05, 3.0]], dtype=F64)[:, None]
    )
    delta = torch.tensor([0.6, 0.9], dtype=F64)
    sigma = torch.tensor([0.25, 0.4], dtype=F64)
    opac = torch.tensor([0.7, 0.6], dtype=F64)
    colors = torch.tensor([[0.8, 0.2, 0.1], [0.1, 0.5, 0.9]], dtype=F64)
    vm, Ks = _camera(8, 9.0, F64)

    def f(p, d, s, o, c):
        out, _ = rasterize(
            p.mean(1), None, None, o, c, vm, Ks, 8, 8, primitive="convex", shape=(p, d, s), backend="reference",
            outputs=("rgb", "alpha", "depth_exp"), backgrounds=torch.tensor([[0.2, 0.3, 0.4]], dtype=F64),
        )  # fmt: skip
        return out.rgb, out.alpha, out.depth_exp

    inputs = tuple(t.clone().requires_grad_(True) for t in (pts, delta, sigma, opac, colors))
    out = f(*inputs)
    assert (out[1] > 0.05).float().mean() > 0.5  # the convexes cover the image
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_degenerate_and_unreachable_convexes_are_culled():
    pts = torch.tensor(
        [
            [[0.0, 0.0, 3.0], [0.1, 0.1, 3.0], [0.2, 0.2, 3.0], [0.3, 0.3, 3.0]],  # collinear in the image
            [[0.0, 0.0, -3.0], [0.1, 0.0, -3.0], [0.0, 0.1, -3.0], [0.1, 0.1, -3.2]],  # behind the camera
            [[0.0, 0.0, 3.0], [0.3, 0.0, 3.0], [0.0, 0.3, 3.0], [0.3, 0.3, 3.2]],  # fine
        ],
        dtype=F64,
    )
    proj = _payload(pts, torch.ones(3, dtype=F64) * 3, torch.ones(3, dtype=F64))
    assert proj.radii[0].tolist()[:2] == [0, 0] and proj.radii[0, 2] > 0
    assert torch.isfinite(proj.payload).all()
