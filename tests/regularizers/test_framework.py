"""The regularizer framework: off by default, built from config, one render with the union of needs, named terms."""

from __future__ import annotations

import pytest
import torch

from recon.regularizers import (
    RegContext,
    RegularizersConfig,
    build_regularizers,
    needed_outputs,
    regularization_terms,
)
from recon.regularizers.base import Regularizer, RegularizerConfig
from recon.render.outputs import OUTPUT_NAMES, RenderOutputs
from recon.train.overrides import merge, parse_set

from .helpers import camera, context, params_of, plane_grid


def test_everything_off_by_default():
    assert build_regularizers(RegularizersConfig()) == []


def test_built_from_dotted_overrides_and_needs_follow_the_schedule():
    cfg = RegularizersConfig()
    for item in (
        "dist.weight=100", "dist.kind=l1", "dist.start_step=10", "normal.weight=0.05", "normal.depth_ratio=1",
        "normal.start_step=20", "normal.end_step=30", "sugar.entropy_weight=0.1", "tlog.weight=0.01",
        "nearfar.weight=0.01",
    ):  # fmt: skip
        cfg = merge(cfg, parse_set(item))
    regs = build_regularizers(cfg)
    assert [r.name for r in regs] == ["dist", "normal", "sugar", "nearfar", "tlog"]
    assert needed_outputs(regs, 0) == ("alpha",)
    assert needed_outputs(regs, 10) == ("alpha", "distort_l1")
    assert needed_outputs(regs, 25) == ("alpha", "depth_exp", "depth_median", "normal", "distort_l1")
    assert needed_outputs(regs, 30) == ("alpha", "distort_l1")
    assert all(n in OUTPUT_NAMES for n in needed_outputs(regs, 25))


def test_sugar_is_built_when_any_of_its_weights_is_positive():
    assert [
        r.name for r in build_regularizers(merge(RegularizersConfig(), parse_set("sugar.normal_weight=0.2")))
    ] == ["sugar"]
    assert build_regularizers(merge(RegularizersConfig(), parse_set("sugar.weight=0"))) == []


def test_unknown_keys_and_bad_kinds_are_errors():
    from recon.data.errors import ReconError

    with pytest.raises(ReconError, match="dist.kind"):
        merge(RegularizersConfig(), parse_set("dist.kind=cubic"))
    with pytest.raises(ReconError, match="unknown config key"):
        merge(RegularizersConfig(), parse_set("dist.wieght=1"))


def test_terms_are_named_weighted_and_only_active_ones_run():
    vm, K = camera(16)
    params = params_of(*plane_grid(z=3.0, half=3.0, spacing=0.3, opacity=0.5))
    cfg = merge(RegularizersConfig(), {"dist": {"weight": 10.0}, "tlog": {"weight": 0.5, "start_step": 5}})
    regs = build_regularizers(cfg)
    ctx = context(params, vm, K, 16, needed_outputs(regs, 5), step=5)
    terms = regularization_terms(regs, ctx)
    assert set(terms) == {"dist", "tlog"}
    assert float(terms["dist"].detach()) == pytest.approx(
        10.0 * float(ctx.outputs.distort_ndc2.detach().mean())
    )
    ctx.step = 4
    assert set(regularization_terms(regs, ctx)) == {"dist"}


def test_duplicate_term_names_are_refused():
    class Twice(Regularizer):
        name = "x"

        def loss(self, ctx):
            return {"x": torch.zeros(())}

    regs = [Twice(RegularizerConfig(weight=1.0)), Twice(RegularizerConfig(weight=1.0))]
    ctx = RegContext(RenderOutputs(), {}, {}, 0, torch.eye(4)[None], torch.eye(3)[None], 1, 1)
    with pytest.raises(ValueError, match="'x'"):
        regularization_terms(regs, ctx)


def test_presets_resolve_against_the_training_config():
    from recon.train.config import Config
    from recon.train.overrides import build_config
    from tests.paths import REPO

    geo = build_config(Config, preset=REPO / "configs" / "geometry.yaml")
    assert [r.name for r in build_regularizers(geo.reg)] == ["dist", "normal", "flat"]
    assert (geo.reg.dist.kind, geo.reg.dist.start_step, geo.reg.normal.start_step) == ("l1", 3000, 7000)
    # flattening waits for densification to have spread the Gaussians (from step 0 it cost the mesh 60%)
    assert geo.reg.flat.start_step >= geo.reg.dist.start_step
    sugar = build_config(Config, preset=REPO / "configs" / "sugar.yaml")
    assert [r.name for r in build_regularizers(sugar.reg)] == ["sugar"]
    window = sugar.reg.sugar.entropy_window
    assert window[0] < window[1] <= sugar.reg.sugar.start_step  # entropy first, then alignment
    assert window[0] >= sugar.strategy.default.refine_stop * 30000  # after densification
