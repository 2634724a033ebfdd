import numpy as np
import pytest
import torch
from plyfile import PlyData

from recon.data.errors import ReconError
from recon.models.splats import SplatModel, knn_mean_distance, sh0_to_rgb


def _model(n=50, degree=3, seed=0) -> SplatModel:
    rng = np.random.default_rng(seed)
    m = SplatModel.from_points(rng.normal(size=(n, 3)), rng.integers(0, 256, (n, 3), dtype=np.uint8), degree)
    with torch.no_grad():
        for p in m.params.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.1)
    return m


def test_init_follows_3dgs():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], np.float32)
    rgb = np.array([[255, 0, 0]] * 5, np.uint8)
    m = SplatModel.from_points(xyz, rgb, sh_degree=2, init_opacity=0.1)
    assert np.isclose(knn_mean_distance(xyz)[0], 2.0)  # neighbours of the origin at 1, 2, 3
    assert torch.allclose(torch.exp(m.params["scales"][0]), torch.full((3,), 2.0))
    assert torch.allclose(torch.sigmoid(m.params["opacities"]), torch.full((5,), 0.1))
    assert torch.allclose(
        sh0_to_rgb(m.params["sh0"][:, 0]), torch.tensor([1.0, 0.0, 0.0]).expand(5, 3), atol=1e-6
    )
    assert m.params["shN"].shape == (5, 8, 3)
    assert torch.equal(m.params["quats"][:, 0], torch.ones(5))


def test_ply_round_trip_with_plyfile(tmp_path):
    m = _model()
    path = tmp_path / "splats.ply"
    m.save_ply(path)
    v = PlyData.read(str(path))["vertex"]
    assert v.data.dtype.names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    assert "f_rest_44" in v.data.dtype.names and "rot_3" in v.data.dtype.names
    # 3DGS stores f_rest channel-major: f_rest_0..14 are the red coefficients of SH bases 1..15.
    assert np.allclose(v["f_rest_1"], m.params["shN"][:, 1, 0].detach().numpy())
    assert np.allclose(v["f_rest_15"], m.params["shN"][:, 0, 1].detach().numpy())
    back = SplatModel.load_ply(path)
    assert back.sh_degree == 3
    for k in SplatModel.PARAM_NAMES:
        assert torch.equal(back.params[k].data, m.params[k].data), k


def test_load_ply_rejects_a_point_cloud(tmp_path):
    from recon.data.ply import write_points_ply

    path = tmp_path / "points.ply"
    write_points_ply(path, np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8))
    with pytest.raises(ReconError, match="not a Gaussian splat PLY"):
        SplatModel.load_ply(path)
