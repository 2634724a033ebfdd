"""A tiny scene rendered from a known set of Gaussians: fast enough for real training runs in tests."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from recon.data.cameras import Cameras, intrinsics_matrix, look_at_viewmat
from recon.data.formats.nerfstudio import write_transforms
from recon.data.ply import write_points_ply
from recon.render import rasterize


def make_tiny_scene(
    folder: Path, n_views: int = 10, size: int = 32, n_gaussians: int = 60, seed: int = 0
) -> Path:
    """Cameras on a circle around random coloured Gaussians; images rendered by the reference rasterizer."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-0.6, 0.6, (n_gaussians, 3)).astype(np.float32)
    colors = rng.uniform(0, 1, (n_gaussians, 3)).astype(np.float32)
    angles = np.linspace(0, 2 * np.pi, n_views, endpoint=False)
    eyes = [(3 * np.cos(a), 3 * np.sin(a), 1.0 + 0.3 * np.sin(3 * a)) for a in angles]
    viewmats = np.stack([look_at_viewmat(e, (0, 0, 0)) for e in eyes])
    K = intrinsics_matrix(size * 1.2, size * 1.2, size / 2, size / 2)
    cams = Cameras(
        viewmats, np.repeat(K[None], n_views, 0), size, size, names=[f"v{i:02d}.png" for i in range(n_views)]
    )
    vm, ks = cams.torch()
    quats = torch.zeros(n_gaussians, 4)
    quats[:, 0] = 1
    with torch.no_grad():
        out, _ = rasterize(
            torch.from_numpy(means),
            quats,
            torch.full((n_gaussians, 3), 0.12),
            torch.full((n_gaussians,), 0.8),
            torch.from_numpy(colors),
            vm,
            ks,
            size,
            size,
            backgrounds=torch.ones(n_views, 3),
            backend="reference",
        )
    images = folder / "images"
    images.mkdir(parents=True)
    paths = []
    for i in range(n_views):
        p = images / cams.names[i]
        iio.imwrite(p, (out.rgb[i].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
        paths.append(p)
    noisy = means + rng.normal(0, 0.05, means.shape).astype(np.float32)
    write_points_ply(folder / "points3D.ply", noisy, (colors * 255).astype(np.uint8))
    write_transforms(folder / "transforms.json", cams, paths, ply_file_path="points3D.ply")
    return folder


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    return make_tiny_scene(tmp_path_factory.mktemp("tiny") / "scene")
