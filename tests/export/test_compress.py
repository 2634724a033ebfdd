"""recon compress (issue 17, deliverable 4): .spz and compressed PLY round trips within their quantisation, the
group envelope's known answers (METHODS.md §4.6), the loader and viewer reading compressed files, CLI errors, and
a tiny scene compressed end to end."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from plyfile import PlyData
from scipy.optimize import minimize

from recon.cli import main
from recon.export.compress.compressed_ply import encode_compressed_ply, write_compressed_ply
from recon.export.compress.envelope import band_masks, band_norms, prox_bands, prox_gates
from recon.export.compress.gsplat_png import gsplat_png_size, parts_available
from recon.export.compress.order import morton_order
from recon.export.compress.params import SplatArrays
from recon.export.compress.spz import encode_spz, quantize_sh, write_spz
from recon.models.compressed_ply import CHUNK_COLOR_PROPS, CHUNK_PROPS, VERTEX_PROPS
from recon.models.registry import load_model_file
from recon.models.spz import decode_spz
from recon.sparsity import group_scale, ksupport_norm_sq, prox_sef, sef, top_k_mask
from tests.train.conftest import make_tiny_scene


def random_splats(n: int = 700, degree: int = 3, seed: int = 0, primitive: str = "gaussian3d") -> SplatArrays:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1
    return SplatArrays(
        means=rng.uniform(-5, 5, (n, 3)).astype(np.float32),
        scales=rng.uniform(-6, 1, (n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacities=rng.uniform(-4, 4, n).astype(np.float32),
        sh0=rng.uniform(-1.5, 1.5, (n, 1, 3)).astype(np.float32),
        shN=rng.uniform(-0.9, 0.9, (n, k, 3)).astype(np.float32),
        primitive=primitive,
    )


def in_file_order(s: SplatArrays) -> SplatArrays:
    """``s`` in the order both writers store splats (Morton order of the positions)."""
    return s.take(morton_order(s.means))


def unit(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def assert_close_splats(back: dict, ref: SplatArrays, tol: dict) -> None:
    b = {k: v.numpy() for k, v in back.items()}
    assert np.abs(b["means"] - ref.means).max() <= tol["means"]
    assert np.abs(b["scales"] - ref.scales).max() <= tol["scales"]
    assert np.abs(np.abs((unit(b["quats"]) * unit(ref.quats)).sum(1)) - 1).max() <= tol["quats"]
    assert np.abs(sigmoid(b["opacities"]) - sigmoid(ref.opacities)).max() <= 0.5 / 255 + 1e-6
    assert np.abs(b["sh0"] - ref.sh0).max() <= tol["sh0"]
    assert b["shN"].shape == ref.shN.shape
    assert np.abs(b["shN"] - ref.shN).max(initial=0.0) <= tol["shN"]


# ----- .spz -----


@pytest.mark.parametrize(
    "version, quat_tol, sh_degree", [(2, 6e-3, 3), (3, 2e-5, 3), (2, 6e-3, 0)]
)  # v2 stores x y z and derives w: coarse near w = 0
def test_spz_round_trip_within_its_quantisation(version, quat_tol, sh_degree):
    s = random_splats(degree=sh_degree)
    params, degree = decode_spz(encode_spz(s, version))
    assert degree == sh_degree
    tol = {
        "means": 0.5 / 4096 + 1e-6,  # 12 fractional bits
        "scales": 0.5 / 16 + 1e-6,  # (log s + 10)·16 in a byte
        "quats": quat_tol,
        "sh0": 0.5 / (0.15 * 255) + 1e-6,
        "shN": 8 / 128 + 0.5 / 128 + 1e-6,  # degree ≥ 2 on 4 bits: half a bucket of 16 codes
    }
    assert_close_splats(params, in_file_order(s), tol)


def test_spz_header_frame_and_bytes_follow_the_published_layout():
    s = random_splats(n=3, degree=1)
    raw = gzip.decompress(encode_spz(s, 2))
    magic, version, n, degree, frac, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, n, degree, frac, flags) == (0x5053474E, 2, 3, 1, 12, 0)
    assert len(raw) == 16 + 3 * (9 + 1 + 3 + 3 + 3 + 9)
    ref = in_file_order(s)
    b = np.frombuffer(raw, np.uint8, count=9, offset=16).astype(np.int64)  # first splat's position
    fixed = [int(b[3 * j] | (b[3 * j + 1] << 8) | (b[3 * j + 2] << 16)) for j in range(3)]
    fixed = [v - (1 << 24) if v & 0x800000 else v for v in fixed]
    # stored right-up-back: y and z flip from the PLY's right-down-front
    assert np.allclose(np.array(fixed) / 4096, ref.means[0] * [1, -1, -1], atol=1 / 4096)
    assert raw[16 + 27] == round(sigmoid(ref.opacities[0]) * 255)


def test_spz_sh_quantisation_snaps_to_bucket_centres():
    x = np.array([0.0, 0.01, -0.2, 0.5, 2.0])
    assert list(quantize_sh(x, 8)) == [128, 129, 102, 192, 255]
    assert list(quantize_sh(x, 4)) == [128, 128, 96, 192, 255]  # bucket centres, clamped at the top


def test_spz_errors_name_the_file(tmp_path):
    from recon.data.errors import ReconError

    with pytest.raises(ReconError, match="truncated"):
        decode_spz(gzip.compress(gzip.decompress(encode_spz(random_splats(50)))[:200]), "x.spz")
    with pytest.raises(ReconError, match="not a .spz file"):
        decode_spz(gzip.compress(b"\0" * 32), "y.spz")


# ----- compressed PLY -----


def test_compressed_ply_round_trip_within_chunk_quantisation(tmp_path):
    s = random_splats(n=600)
    path = tmp_path / "c.ply"
    write_compressed_ply(path, s)
    model = load_model_file(path, "splats")
    ref = in_file_order(s)
    params = {k: v.detach() for k, v in model.params.items()}
    # positions and log scales: half a step of 11 (10 for y) bits of their chunk's range
    n = len(ref)
    ranges = np.zeros((n, 3))
    for c in range(0, n, 256):
        block = ref.means[c : c + 256]
        ranges[c : c + 256] = block.max(0) - block.min(0)
    err = np.abs(params["means"].numpy() - ref.means)
    assert (err <= ranges / np.array([2047, 1023, 2047]) * 0.5 + 1e-5).all()
    tol = {
        "means": np.inf,
        "scales": 7 / 1023 * 0.5 + 1e-5,
        "quats": 1e-5,
        "sh0": 3.0 / 255 / 0.2821 * 0.5 + 1e-5,
    }
    tol["shN"] = 8 / 256 + 1e-6
    assert_close_splats(params, ref, tol)


def test_compressed_ply_header_is_the_playcanvas_layout(tmp_path):
    path = tmp_path / "c.ply"
    write_compressed_ply(path, random_splats(n=300, degree=1, primitive="surfel2d"))
    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["chunk", "vertex", "sh"]
    assert ply["chunk"].data.dtype.names == CHUNK_PROPS + CHUNK_COLOR_PROPS and len(ply["chunk"].data) == 2
    assert ply["vertex"].data.dtype.names == VERTEX_PROPS
    assert all(ply["vertex"].data.dtype[p] == np.dtype("<u4") for p in VERTEX_PROPS)
    assert len(ply["sh"].data.dtype.names) == 9
    assert load_model_file(path, "splats").primitive == "surfel2d"  # recon's header comment
    assert (
        len(encode_compressed_ply(random_splats(n=300, degree=0)).split(b"end_header\n")[1])
        == 2 * 72 + 300 * 16
    )


def test_view_opens_compressed_files(tmp_path):
    from viewer.targets import load_target

    write_spz(tmp_path / "a.spz", random_splats(n=50, degree=1))
    write_compressed_ply(tmp_path / "b.ply", random_splats(n=50, degree=0))
    for name in ("a.spz", "b.ply"):
        target = load_target(tmp_path / name)
        assert target.kind == "splats" and len(target.model) == 50


# ----- METHODS.md §4.6: the sparse envelope and its prox -----


def test_ksupport_norm_limits():
    x = torch.tensor([0.5, -2.0, 1.0, 0.25, -0.75], dtype=torch.float64)
    assert float(ksupport_norm_sq(x, 1)) == pytest.approx(float(x.abs().sum() ** 2))
    assert float(ksupport_norm_sq(x, 5)) == pytest.approx(float((x**2).sum()))
    e = torch.zeros(5, dtype=torch.float64)
    e[[1, 3]] = torch.tensor([0.6, -0.8], dtype=torch.float64)  # a 2-sparse unit vector
    assert float(ksupport_norm_sq(e, 2)) == pytest.approx(1.0)
    f = torch.zeros(5, dtype=torch.float64)
    f[[0, 2]] = torch.tensor([0.8, 0.6], dtype=torch.float64)
    assert float(ksupport_norm_sq(0.5 * e + 0.5 * f, 2)) <= 1.0 + 1e-12  # convex combinations stay inside


def test_prox_for_k_equal_d_is_the_ridge():
    v = torch.randn(9, dtype=torch.float64)
    assert torch.allclose(prox_sef(v, 9, 0.3), v / 1.3, atol=1e-15)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("lam", [0.1, 0.7, 3.0])
def test_prox_satisfies_moreau_through_fenchel_young(k, lam):
    """v − p ∈ λ∂f(p) exactly when f(p) + f*(y) = ⟨p, y⟩ with y = (v − p)/λ, f* = ½ Σ top-k y²."""
    v = (
        torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(k * 10 + int(lam * 10)))
        * 2
    )
    p = prox_sef(v, k, lam)
    y = (v - p) / lam
    f_star = 0.5 * float((torch.sort(y.abs(), descending=True).values[:k] ** 2).sum())
    assert float(sef(p, k)) + f_star - float(p @ y) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("k, lam, seed", [(1, 0.5, 0), (2, 1.0, 1), (3, 0.2, 2), (4, 2.0, 3)])
def test_prox_agrees_with_slsqp(k, lam, seed):
    """Oracle: ‖w‖²_(k) = min over 0 < θ ≤ 1, Σθ ≤ k of Σ w_i²/θ_i, so the prox is w_i = v_i θ_i/(θ_i + λ) at the θ
    minimising Σ ½ v_i² λ/(θ_i + λ): a smooth problem for SLSQP (d = 6)."""
    v = np.random.default_rng(seed).normal(size=6) * 2
    res = minimize(
        lambda t: 0.5 * np.sum(v**2 * lam / (t + lam)),
        np.full(6, k / 6),
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * 6,
        constraints=[{"type": "ineq", "fun": lambda t: k - t.sum()}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    w = v * res.x / (res.x + lam)
    assert np.abs(prox_sef(torch.from_numpy(v), k, lam).numpy() - w).max() < 1e-6


def test_toy_group_sparse_regression_recovers_the_support():
    """20 groups of 3, 3 of them true: proximal gradient on least squares + λ·SEF_3 of the group norms."""
    rng = np.random.default_rng(0)
    groups, size, true = 20, 3, [2, 7, 15]
    a = torch.from_numpy(rng.normal(size=(120, groups * size)))
    x_true = torch.zeros(groups, size, dtype=torch.float64)
    x_true[true] = torch.from_numpy(rng.normal(size=(3, size))) + 2.0
    b = a @ x_true.flatten() + 0.01 * torch.from_numpy(rng.normal(size=120))
    x = torch.zeros(groups * size, dtype=torch.float64)
    step = 1.0 / float(torch.linalg.matrix_norm(a, 2) ** 2)
    for _ in range(500):
        x = x - step * (a.T @ (a @ x - b))
        g = x.reshape(groups, size)
        x = (g * group_scale(g.norm(dim=1), 3, step * 5.0)[:, None]).flatten()
    norms = x.reshape(groups, size).norm(dim=1)
    assert sorted(top_k_mask(norms, 3).nonzero()[:, 0].tolist()) == true
    assert int((norms > 1e-9).sum()) <= 5


def test_envelope_steps_on_gates_and_bands():
    gates = torch.tensor([1.0, 0.9, 0.2, 0.1, 0.05, 0.8])
    for _ in range(50):
        prox_gates(gates, 3, 0.05)
    assert int((gates > 0).sum()) <= 4 and set(top_k_mask(gates, 3).nonzero()[:, 0].tolist()) == {0, 1, 5}
    shN = torch.randn(40, 15, 3)
    shN[:5] *= 10  # five strong primitives in every band
    for _ in range(30):
        prox_bands(shN, 3, [5, 5, 5], 0.2)
    masks = band_masks(shN, 3, [5, 5, 5])
    assert masks[:5].all() and not masks[5:].any()
    assert (band_norms(shN, 3)[5:] < band_norms(shN, 3)[:5].min()).all()


# ----- gsplat's PNG compression, the library baseline -----


def test_gsplat_png_runs_on_the_cpu_without_its_cuda_parts():
    assert parts_available()["png_quantisation"]
    s = random_splats(n=144, degree=1)
    size, back = gsplat_png_size(s, sh="drop")
    assert size > 0 and len(back) == 144 and back.sh_degree == 0
    assert np.abs(np.sort(back.means[:, 0]) - np.sort(s.means[:, 0])).max() < 1e-3


# ----- the command line -----


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run trained for a few steps on the tiny scene (SH degree 1)."""
    root = tmp_path_factory.mktemp("compress")
    scene = make_tiny_scene(root / "scene")
    run = root / "run"
    sets = ["train.backend=cpu", "model.sh_degree=1", "data.split_every=5", "train.steps=60"]
    assert main(["train", str(scene), "--out", str(run), *sum((["--set", s] for s in sets), [])]) == 0
    return run


def _one_line_error(capsys, code: int, expected: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("recon: error:"), err
    assert expected in err, err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--out", "{tmp}/x.txt"], ".spz or .ply"),
        (["--out", "{tmp}/missing/x.spz"], "does not exist"),
        (["--out", "{tmp}/x.spz", "--target-mb", "-1"], "--target-mb"),
        (["--out", "{tmp}/x.spz", "--sh-degree", "4"], "--sh-degree"),
        (["--out", "{tmp}/x.spz", "--target-mb", "0.00001"], "even one splat"),
    ],
)
def test_compress_refuses_bad_input_in_one_line(args, expected, tiny_run, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    _one_line_error(capsys, main(["compress", str(tiny_run), *args]), expected)
    assert not (tmp_path / "x.spz").exists()


def test_compress_and_eval_refuse_a_missing_run_or_file(tmp_path, tiny_run, capsys):
    _one_line_error(
        capsys, main(["compress", str(tmp_path / "nope"), "--out", str(tmp_path / "x.spz")]), "nope"
    )
    _one_line_error(capsys, main(["eval", str(tiny_run), "--model", str(tmp_path / "no.spz")]), "no.spz")
    (tmp_path / "bad.spz").write_bytes(gzip.compress(b"NGSP" + b"\0" * 8))
    _one_line_error(capsys, main(["eval", str(tiny_run), "--model", str(tmp_path / "bad.spz")]), "bad.spz")


@pytest.mark.parametrize("suffix", [".spz", ".ply"])
def test_tiny_scene_compressed_end_to_end(suffix, tiny_run, tmp_path, capsys):
    out = tmp_path / f"small{suffix}"
    assert main(["eval", str(tiny_run), "--model", str(tiny_run / "splats.ply")]) == 0
    before = json.loads(capsys.readouterr().out)
    code = main(["compress", str(tiny_run), "--out", str(out), "--target-mb", "0.002", "--steps", "15"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert out.stat().st_size == summary["bytes"] <= 2000
    assert summary["splats_out"] <= summary["splats_in"] and summary["ratio"] > 1
    assert main(["eval", str(tiny_run), "--model", str(out)]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["num_primitives"] == summary["splats_out"]
    assert after["psnr"] > before["psnr"] - 3.0  # a tiny, lightly trained scene: only sanity here
