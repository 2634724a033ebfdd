"""The representation contract (``recon.models.base.Representation``), checked for every registered model: what
the trainer, eval, export and the viewer rely on. A new representation or primitive gets these tests by being
registered."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recon.data.scene import load_scene
from recon.models import create_model, load_model_file, model_from_state
from recon.models.registry import CLASSES, model_traits
from recon.train.config import ModelConfig, OptimConfig
from tests.train.conftest import make_tiny_scene

# Every model configuration the registry offers: each class, with each primitive it holds.
CONFIGS = [
    ModelConfig(kind=cls.kind, primitive=primitive, sh_degree=1, init_random_points=300)
    for cls in CLASSES
    for primitive in (cls.primitives or [ModelConfig.primitive])
]
IDS = [f"{c.kind}-{c.primitive}" for c in CONFIGS]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return load_scene(make_tiny_scene(tmp_path_factory.mktemp("contract") / "scene"))


@pytest.fixture(params=CONFIGS, ids=IDS)
def model_cfg(request) -> ModelConfig:
    return request.param


def _render(model, scene, outputs=("rgb", "alpha", "depth_exp", "depth_median", "normal")):
    if "normals" not in model.capabilities:
        outputs = tuple(o for o in outputs if o != "normal")
    cams = scene.cameras[[0, 1]]
    viewmats, Ks = cams.torch()
    with torch.no_grad():
        out, info = model.render(
            viewmats, Ks, int(cams.widths[0]), int(cams.heights[0]), outputs, backgrounds=torch.ones(2, 3)
        )
    return out, info


def test_builds_renders_and_describes_itself(scene, model_cfg):
    model = create_model(scene, model_cfg, seed=0)
    traits = model_traits(model_cfg)
    assert model.kind == model_cfg.kind and len(model) > 0
    assert traits.capabilities == model.capabilities and traits.label == model.label
    assert traits.resolve_backend("auto") in model.backends()
    out, info = _render(model, scene)
    h, w = int(scene.cameras.heights[0]), int(scene.cameras.widths[0])
    assert out.rgb.shape == (2, h, w, 3) and out.alpha.shape == (2, h, w, 1)
    if "normals" in model.capabilities:
        assert out.normal.shape == (2, h, w, 3)
    else:  # asked for anyway: refused in one line, not a wrong map
        viewmats, Ks = scene.cameras[[0]].torch()
        with pytest.raises(ValueError, match="no normal map"):
            model.render(viewmats, Ks, w, h, ("rgb", "normal"))
    assert (out.alpha > 0.5).any() and (out.depth_median > 0).any()  # the model is in front of the cameras
    assert {"means2d", "radii", "width", "height", "n_cameras"} <= set(info)
    assert set(model.learning_rates(OptimConfig(), extent=2.0)) == set(model.params)


def test_state_round_trip_renders_the_same(scene, model_cfg):
    model = create_model(scene, model_cfg, seed=0)
    with torch.no_grad():
        for p in model.params.values():
            p.add_(0.01 * torch.randn_like(p))
    back = model_from_state(model.state_dict())
    assert type(back) is type(model) and back.label == model.label
    a, _ = _render(model, scene, ("rgb", "depth_exp"))
    b, _ = _render(back, scene, ("rgb", "depth_exp"))
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth_exp, b.depth_exp)


def test_file_round_trip_keeps_what_it_is(scene, model_cfg, tmp_path):
    model = create_model(scene, model_cfg, seed=0)
    path = tmp_path / model.file_name
    model.save(path)
    back = load_model_file(path, model_cfg.kind)  # no hints: the file alone says what it holds
    assert back.label == model.label and len(back) == len(model)
    a, _ = _render(model, scene, ("rgb",))
    b, _ = _render(back, scene, ("rgb",))
    assert (a.rgb - b.rgb).abs().max() < 1e-3


def test_preview_and_snapshot(scene, model_cfg):
    model = create_model(scene, model_cfg, seed=0)
    g = model.preview()
    n = len(g)
    assert n > 0 and g.means.shape == (n, 3) and g.quats.shape == (n, 4) and g.scales.shape == (n, 3)
    assert np.allclose(np.linalg.norm(g.quats, axis=1), 1.0, atol=1e-5)
    assert (g.scales > 0).all() and ((g.opacities >= 0) & (g.opacities <= 1)).all()
    assert ((g.rgb >= 0) & (g.rgb <= 1)).all()
    cov = g.covariances()
    assert np.allclose(cov, cov.transpose(0, 2, 1), atol=1e-6)
    snap = model.snapshot()
    before, _ = _render(snap, scene, ("rgb",))
    with torch.no_grad():
        for p in model.params.values():
            p.add_(1.0)
    after, _ = _render(snap, scene, ("rgb",))
    assert torch.equal(before.rgb, after.rgb)  # the copy does not follow the original
    assert all(not p.requires_grad or p.grad is None for p in snap.params.values())


def test_capabilities_are_known_to_the_regularizers(model_cfg):
    from recon.regularizers.base import CAPABILITIES

    assert model_traits(model_cfg).capabilities <= set(CAPABILITIES)


def test_unknown_kind_and_primitive_are_one_line_errors(scene):
    from recon.data.errors import ReconError

    with pytest.raises(ReconError, match="unknown model.kind 'nope'; choose from splats"):
        create_model(scene, replace(ModelConfig(), kind="nope"), seed=0)
    with pytest.raises(ReconError, match="unknown primitive 'nope'"):
        create_model(scene, replace(ModelConfig(), primitive="nope"), seed=0)
