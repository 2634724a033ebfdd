import numpy as np
import torch

from recon.export.splat import read_splat, write_splat
from recon.models.splats import SplatModel


def test_splat_file_layout_and_values(tmp_path):
    xyz = np.array([[0, 0, 0], [1, 2, 3]], np.float32)
    m = SplatModel.from_points(xyz, np.array([[255, 0, 0], [0, 255, 0]], np.uint8), sh_degree=0)
    with torch.no_grad():
        m.params["scales"][0] = -5.0
        m.params["scales"][1] = torch.log(torch.tensor([1.0, 2.0, 3.0]))  # the bigger splat must come first
        m.params["opacities"][:] = 0.0  # sigmoid -> 0.5
        m.params["quats"][1] = torch.tensor([0.0, 0.0, 2.0, 0.0])  # unnormalised
    path = tmp_path / "scene.splat"
    assert write_splat(m, path) == 2
    assert path.stat().st_size == 64
    rec = read_splat(path)
    assert np.allclose(rec["position"][0], [1, 2, 3])
    assert np.allclose(rec["scale"][0], [1, 2, 3], rtol=1e-6)
    assert list(rec["rgba"][0]) == [0, 255, 0, 128]
    assert list(rec["rot"][0]) == [128, 128, 255, 128]
