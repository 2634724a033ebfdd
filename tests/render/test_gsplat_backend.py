"""The gsplat adapter: argument mapping and errors everywhere; parity with the reference on an NVIDIA GPU."""

from __future__ import annotations

import pytest
import torch

from recon.render import rasterize
from recon.render.gsplat_backend import GSPLAT_OUTPUTS, gsplat_available

needs_gsplat = pytest.mark.skipif(
    not gsplat_available(), reason="gsplat's CUDA kernels need an NVIDIA GPU with CUDA (not available here)"
)


@pytest.mark.parametrize("name", ["depth_median", "normal", "distort_l1", "distort_ndc2"])
def test_maps_gsplat_cannot_give_raise_a_clear_error(random_scene, name):
    scene = random_scene(20, 1, 8, 8, seed=0)
    with pytest.raises(ValueError, match=rf"cannot render {name}.*backend='cpu'"):
        rasterize(**scene, outputs=("rgb", name), backend="gsplat")


def test_available_is_false_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert gsplat_available() is False


def _cuda(scene: dict) -> dict:
    return {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in scene.items()}


def _parity_scene(random_scene, sh_degree):
    scene = random_scene(400, 2, 48, 64, seed=3, sh_degree=sh_degree)
    # Opacity <= 0.35 keeps α below both backends' clip (0.99 here, 0.999 in gsplat) and puts every pixel with
    # α >= 1/255 inside our 3·sqrt(λmax) box as well as gsplat's opacity-aware box, so the pixels must agree.
    scene["opacities"] = scene["opacities"] * 0.35
    return scene


@needs_gsplat
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_gsplat_matches_reference_values_and_gradients(random_scene, sh_degree):
    scene = _parity_scene(random_scene, sh_degree)
    names = ("means", "quats", "scales", "opacities", "colors", "backgrounds")
    gen = torch.Generator().manual_seed(0)
    w_rgb, w_alpha, w_depth = (torch.randn(2, 48, 64, d, generator=gen) for d in (3, 1, 1))

    results = {}
    for backend, sc in (("reference", scene), ("gsplat", _cuda(scene))):
        leaves = {k: sc[k].detach().clone().requires_grad_(True) for k in names}
        args = {**sc, **leaves}
        out, info = rasterize(**args, outputs=("rgb", "alpha", "depth_exp"), absgrad=True, backend=backend)
        dev = out.rgb.device
        loss = (
            (out.rgb * w_rgb.to(dev)).sum()
            + (out.alpha * w_alpha.to(dev)).sum()
            + 0.1 * (out.depth_exp * w_depth.to(dev)).sum()
        )
        loss.backward()
        results[backend] = dict(
            maps={k: v.detach().cpu() for k, v in out.asdict().items()},
            grads={k: leaves[k].grad.detach().cpu() for k in names},
            means2d_grad=info["means2d"].grad.detach().cpu(),
            absgrad=info["means2d"].absgrad.detach().cpu(),
        )
        assert info["means2d"].shape == (2, 400, 2) and info["radii"].shape == (2, 400, 2)
        for key in (
            "width",
            "height",
            "n_cameras",
            "tile_size",
            "tile_width",
            "tile_height",
            "n_isects",
            "depths",
        ):
            assert key in info, key

    ref, gs = results["reference"], results["gsplat"]
    assert ref["maps"]["alpha"].mean() > 0.2
    torch.testing.assert_close(gs["maps"]["rgb"], ref["maps"]["rgb"], rtol=0, atol=1e-4)
    torch.testing.assert_close(gs["maps"]["alpha"], ref["maps"]["alpha"], rtol=0, atol=1e-4)
    torch.testing.assert_close(gs["maps"]["depth_exp"], ref["maps"]["depth_exp"], rtol=0, atol=1e-3)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    for k in names:
        assert rel(gs["grads"][k], ref["grads"][k]) <= 1e-3, k
    assert rel(gs["means2d_grad"], ref["means2d_grad"]) <= 1e-3
    assert rel(gs["absgrad"], ref["absgrad"]) <= 1e-3


@needs_gsplat
def test_auto_picks_gsplat_for_cuda_tensors_and_depth_only_mode(random_scene):
    scene = _cuda(_parity_scene(random_scene, None))
    out_auto, info = rasterize(**scene, outputs=("depth_exp",), backend="auto")
    out_rgbd, _ = rasterize(**scene, outputs=("rgb", "depth_exp"), backend="gsplat")
    assert "isect_ids" in info  # gsplat's own meta came back
    assert out_auto.rgb is None and out_auto.depth_exp.shape == (2, 48, 64, 1)
    torch.testing.assert_close(out_auto.depth_exp, out_rgbd.depth_exp)
    assert set(GSPLAT_OUTPUTS) == {"rgb", "alpha", "depth_exp"}
