"""The registry: one table of regularizers, no import cycle, capabilities checked in one line, MCMC's L1 terms."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
from dataclasses import dataclass, fields

import pytest
import torch

from recon.data.errors import ReconError
from recon.regularizers import RegularizersConfig, build_regularizers, check_supported, regularization_terms
from recon.regularizers.base import CAPABILITIES, RegContext, Regularizer, RegularizerConfig
from recon.regularizers.mcmc_l1 import OpacityL1, OpacityL1Config, ScaleL1, ScaleL1Config
from recon.regularizers.registry import REGULARIZERS, _table, entry
from recon.render.outputs import RenderOutputs
from recon.train.overrides import merge, parse_set
from tests.paths import REPO

PACKAGE = REPO / "recon" / "regularizers"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
ALL = frozenset(CAPABILITIES)


def _package_imports(path) -> set[str]:
    """Modules of this package that ``path`` imports (relative or absolute, at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("recon.regularizers"):
                rest = node.module[len("recon.regularizers") :].lstrip(".")
                found |= {rest.split(".")[0]} if rest else {"__init__"}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("recon.regularizers"):
                    rest = a.name[len("recon.regularizers") :].lstrip(".")
                    found.add(rest.split(".")[0] if rest else "__init__")
    return found


def test_the_package_import_graph_has_no_cycle_and_base_imports_no_regularizer():
    graph = {m: _package_imports(PACKAGE / f"{m}.py") for m in [*MODULES, "__init__"]}
    assert graph["base"] == set()
    assert all("__init__" not in deps for deps in graph.values())  # nothing imports the package from inside
    assert graph["registry"] == set(MODULES) - {"registry"}  # the one place that lists every regularizer
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m not in done:
            for dep in graph[m]:
                visit(dep, (*path, m))
            done.add(m)

    for m in graph:
        visit(m, ())


# Each module first imported on its own, with the package's __init__ bypassed (so no import order set up by
# __init__ can hide a cycle), then the ordinary way, in a fresh interpreter.
_ALONE = """
import importlib, sys, types
import recon
stub = types.ModuleType("recon.regularizers")
stub.__path__ = [{path!r}]
sys.modules["recon.regularizers"] = stub
importlib.import_module({module!r})
for name in [n for n in sys.modules if n == "recon.regularizers" or n.startswith("recon.regularizers.")]:
    del sys.modules[name]
importlib.import_module({module!r})
"""


def test_each_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    procs = {}
    for m in ["recon.regularizers", *(f"recon.regularizers.{m}" for m in MODULES)]:
        code = _ALONE.format(path=str(PACKAGE), module=m)
        procs[m] = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    failed = {}
    for m, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed[m] = out.decode(errors="replace").strip().splitlines()[-1:]
    assert not failed


def test_registry_order_names_and_config_keys():
    keys = ["dist", "normal", "sugar", "nearfar", "tlog", "flat", "opacity_l1", "scale_l1", "mask"]
    assert list(REGULARIZERS) == keys
    assert [f.name for f in fields(RegularizersConfig)] == keys
    hints = typing.get_type_hints(RegularizersConfig)  # what the config validation reads
    for key, cls in REGULARIZERS.items():
        assert cls.name == key
        assert hints[key] is cls.config_class
        assert type(getattr(RegularizersConfig(), key)) is cls.config_class
    assert build_regularizers(RegularizersConfig()) == []
    cfg = merge(RegularizersConfig(), parse_set("opacity_l1.weight=0.01"))
    cfg = merge(cfg, parse_set("scale_l1.weight=0.02"))
    assert [(r.name, r.cfg.weight) for r in build_regularizers(cfg)] == [
        ("opacity_l1", 0.01),
        ("scale_l1", 0.02),
    ]
    with pytest.raises(
        ReconError, match="valid keys here: dist, normal, sugar, nearfar, tlog, flat, opacity_l1"
    ):
        merge(RegularizersConfig(), parse_set("opacity.weight=1"))


def test_the_field_comments_stay_in_the_source():
    source = (PACKAGE / "registry.py").read_text()
    for key in REGULARIZERS:
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{key}: "))
        assert "= entry(" in line and "  # " in line, line


def test_a_mismatched_entry_is_refused_at_import():
    @dataclass
    class Wrong:
        tlog: OpacityL1Config = entry(OpacityL1)

    with pytest.raises(TypeError, match="Wrong.tlog"):
        _table(Wrong)


def test_requires_are_declared_from_the_vocabulary():
    assert set(CAPABILITIES) == {"primitives", "volumetric", "contributors", "normals", "mask", "hulls"}
    expected = {
        "dist": set(),
        "normal": {"normals"},
        "tlog": set(),
        "sugar": {"primitives"},
        "nearfar": {"primitives", "contributors"},
        "flat": {"primitives", "volumetric"},
        "opacity_l1": {"primitives"},
        "scale_l1": {"primitives"},
        "mask": {"mask"},
    }
    assert {k: set(c.requires) for k, c in REGULARIZERS.items()} == expected
    assert all(isinstance(c.requires, frozenset) for c in REGULARIZERS.values())
    with pytest.raises(TypeError, match="unknown capabilities"):

        class Typo(Regularizer):
            requires = frozenset({"volumetirc"})


def _cfg(*items: str) -> RegularizersConfig:
    cfg = RegularizersConfig()
    for item in items:
        cfg = merge(cfg, parse_set(item))
    return cfg


def test_check_supported_refuses_flat_without_volumetric_in_one_line():
    cfg = _cfg("dist.weight=100", "flat.weight=0.1")
    with pytest.raises(ReconError) as e:
        check_supported(cfg, frozenset({"primitives", "contributors"}), "model.primitive=surfel2d")
    assert str(e.value) == (
        "reg.flat needs volumetric primitives, which model.primitive=surfel2d lacks; set reg.flat.weight=0"
    )
    check_supported(cfg, frozenset({"primitives", "volumetric"}), "model.primitive=gaussian3d")
    check_supported(
        _cfg("dist.weight=100"), frozenset({"primitives"}), "model.primitive=surfel2d"
    )  # flat off


def test_check_supported_refuses_nearfar_without_contributors_in_one_line():
    cfg = _cfg("nearfar.weight=0.01")
    with pytest.raises(ReconError) as e:
        check_supported(cfg, frozenset({"primitives", "volumetric"}), "train.backend=gsplat")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("reg.nearfar needs the per-pixel contributor query")
    assert "train.backend=gsplat lacks" in message and message.endswith("set reg.nearfar.weight=0")
    check_supported(cfg, ALL, "train.backend=cpu")


def test_check_supported_names_the_first_enabled_regularizer_and_ignores_render_map_terms():
    cfg = _cfg(
        "dist.weight=1", "normal.weight=1", "tlog.weight=1", "sugar.entropy_weight=0.1", "flat.weight=1"
    )
    check_supported(_cfg("dist.weight=1", "tlog.weight=1"), frozenset(), "model.kind=field")
    with pytest.raises(ReconError, match=r"^reg\.normal needs a rendered normal map, which model\.kind=field"):
        check_supported(cfg, frozenset(), "model.kind=field")
    with pytest.raises(
        ReconError, match=r"^reg\.sugar needs per-primitive parameters, which model\.primitive=convex"
    ):
        check_supported(cfg, {"normals", "contributors", "mask"}, "model.primitive=convex")
    with pytest.raises(ReconError, match="^reg.flat needs volumetric"):
        check_supported(cfg, {"primitives", "normals"}, "model.primitive=surfel2d")  # any iterable of names
    check_supported(cfg, ALL, "model.primitive=gaussian3d")


# ---- MCMC's opacity and scale L1 terms ----


def _l1_context(params) -> RegContext:
    return RegContext(RenderOutputs(), {}, params, 0, torch.eye(4)[None], torch.eye(3)[None], 1, 1)


def _l1_params():
    logits = torch.tensor(
        [[0.0], [2.0], [-1.0], [4.0]], requires_grad=True
    )  # [N,1], as the models store them
    log_scales = torch.tensor(
        [[0.0, -1.0, -2.0], [0.5, 0.0, -3.0], [-0.2, -0.2, -0.2], [1.0, 0.0, -1.0]], requires_grad=True
    )
    return {"opacities": logits, "scales": log_scales}


def test_opacity_l1_is_the_mean_opacity_times_the_weight():
    p = _l1_params()
    sig = [1 / (1 + torch.e ** (-x)) for x in (0.0, 2.0, -1.0, 4.0)]
    term = OpacityL1(OpacityL1Config(weight=0.01)).loss(_l1_context(p))
    assert list(term) == ["opacity_reg"]
    assert float(term["opacity_reg"].detach()) == pytest.approx(0.01 * sum(sig) / 4, rel=1e-6)
    # exactly the trainer's former MCMC branch
    assert torch.equal(term["opacity_reg"], 0.01 * torch.sigmoid(p["opacities"]).abs().mean())
    term["opacity_reg"].backward()
    grads = [0.01 * s * (1 - s) / 4 for s in sig]
    assert p["opacities"].grad.flatten().tolist() == pytest.approx(grads, rel=1e-5)


def test_scale_l1_is_the_mean_scale_times_the_weight():
    p = _l1_params()
    logs = p["scales"].detach().flatten().tolist()
    term = ScaleL1(ScaleL1Config(weight=0.02)).loss(_l1_context(p))
    assert list(term) == ["scale_reg"]
    assert float(term["scale_reg"].detach()) == pytest.approx(
        0.02 * sum(torch.e**x for x in logs) / 12, rel=1e-6
    )
    assert torch.equal(term["scale_reg"], 0.02 * torch.exp(p["scales"]).abs().mean())


def test_l1_terms_come_through_the_framework_under_their_logged_names():
    p = _l1_params()
    regs = build_regularizers(_cfg("opacity_l1.weight=0.01", "scale_l1.weight=0.01", "scale_l1.start_step=5"))
    assert set(regularization_terms(regs, _l1_context(p))) == {"opacity_reg"}
    ctx = _l1_context(p)
    ctx.step = 5
    terms = regularization_terms(regs, ctx)
    assert list(terms) == ["opacity_reg", "scale_reg"]
    assert torch.equal(terms["scale_reg"], 0.01 * torch.exp(p["scales"]).abs().mean())
    assert RegularizerConfig().weight == 0.0  # off by default, like every regularizer
