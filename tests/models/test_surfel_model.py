"""Surfel models (``primitive="surfel2d"``): initialisation, render inputs, and a PLY that stays a flat 3DGS file."""

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData

from recon.data.errors import ReconError
from recon.export.splat import splat_records
from recon.models.ply import ply_attributes
from recon.models.primitives.surfel2d import SURFEL_THICKNESS
from recon.models.splats import SplatModel
from recon.render import rasterize


def _points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3), dtype=np.uint8)


def test_surfel_init_is_flat_and_randomly_oriented():
    xyz, rgb = _points()
    g = SplatModel.from_points(xyz, rgb, sh_degree=1)
    s = SplatModel.from_points(xyz, rgb, sh_degree=1, primitive="surfel2d", seed=3)
    assert s.primitive == "surfel2d" and g.primitive == "gaussian3d"
    ls, lg = s.params["scales"].detach(), g.params["scales"].detach()
    assert torch.equal(ls[:, :2], lg[:, :2])  # the same 3DGS neighbour scale in the disc's plane
    torch.testing.assert_close(ls[:, 2], ls[:, 0] + math.log(SURFEL_THICKNESS))
    q = s.params["quats"].detach()
    torch.testing.assert_close(q.norm(dim=1), torch.ones(len(q)))
    assert (q[:, 0] < 0.9).sum() > len(q) // 2  # not the identity: normals point everywhere
    again = SplatModel.from_points(xyz, rgb, sh_degree=1, primitive="surfel2d", seed=3)
    assert torch.equal(again.params["quats"], s.params["quats"])  # seeded
    inputs = s.render_inputs()
    assert inputs["primitive"] == "surfel2d" and g.render_inputs()["primitive"] == "gaussian3d"
    with pytest.raises(ReconError, match="gaussian3d, surfel2d"):
        SplatModel(g.params, 1, "convex")


def test_surfel_ply_is_a_flat_3dgs_file_that_reads_back_as_surfels(tmp_path):
    xyz, rgb = _points()
    m = SplatModel.from_points(xyz, rgb, sh_degree=1, primitive="surfel2d")
    with torch.no_grad():  # training shrank some discs far below their initial third scale
        m.params["scales"][:5, 1] -= 12.0
    path = tmp_path / "splats.ply"
    m.save_ply(path)
    ply = PlyData.read(str(path))
    assert ply["vertex"].data.dtype.names == tuple(
        ply_attributes(m.params["shN"].shape[1])
    )  # the 3DGS layout
    log_s = np.stack([ply["vertex"][f"scale_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(log_s[:, 2], log_s[:, :2].min(1) + math.log(SURFEL_THICKNESS), rtol=1e-6)
    assert (log_s[:, 2] < log_s[:, :2].min(1) - 6).all()  # flat along the normal, every one of them

    back = SplatModel.load_ply(path)
    assert back.primitive == "surfel2d"
    for k in SplatModel.PARAM_NAMES:
        if k != "scales":
            assert torch.equal(back.params[k].data, m.params[k].data), k
    assert torch.equal(back.params["scales"][:, :2], m.params["scales"][:, :2].detach())
    assert SplatModel.load_ply(path, primitive="gaussian3d").primitive == "gaussian3d"  # caller decides

    # the third scale is ignored by the surfel kernel: the reloaded model renders the same image
    viewmats = torch.eye(4)[None]
    viewmats[0, 2, 3] = 4.0
    Ks = torch.tensor([[[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]])
    imgs = [
        rasterize(**x.render_inputs(), viewmats=viewmats, Ks=Ks, width=32, height=32, sh_degree=1,
                  backend="reference")[0].rgb
        for x in (m, back)
    ]  # fmt: skip
    assert torch.equal(imgs[0], imgs[1])


def test_gaussian_ply_without_recon_comment_reads_as_gaussians(tmp_path):
    xyz, rgb = _points(10)
    m = SplatModel.from_points(xyz, rgb, sh_degree=0)
    path = tmp_path / "splats.ply"
    m.save_ply(path)
    ply = PlyData.read(str(path))
    assert ply.comments == ["recon primitive gaussian3d"]
    ply.comments = []  # as other tools write it
    foreign = tmp_path / "foreign.ply"  # not over the file plyfile has memory-mapped
    ply.write(str(foreign))
    assert SplatModel.load_ply(foreign).primitive == "gaussian3d"


def test_splat_export_of_surfels_is_flat():
    xyz, rgb = _points(20)
    m = SplatModel.from_points(xyz, rgb, sh_degree=0, primitive="surfel2d")
    with torch.no_grad():
        m.params["scales"][:, 2] = 3.0  # whatever the stored third scale became
    rec = splat_records(m)
    assert (rec["scale"][:, 2] <= SURFEL_THICKNESS * rec["scale"][:, :2].min(1) * (1 + 1e-5)).all()
