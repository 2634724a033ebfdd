"""Register a point set to a reference under an unknown similarity and partial overlap, without a starting pose.

A reconstruction from photos lives in SfM's arbitrary frame and scale; before it can be scored against a scan or
merged with another capture it must be brought into the reference's frame. The pipeline (issue 17):

1. **Normalise** both clouds: centre on the mean, divide by the RMS radius. What is left is a rotation, a scale
   near 1 (off by what the partial overlap moves the RMS radius) and a small shift (what it moves the mean).
2. **Rotation hypotheses**: the 24 proper rotations that map the source's principal axes onto the reference's
   (every permutation and sign choice with determinant +1), good where the shape is elongated and the overlap
   keeps its principal axes, plus 144 rotations spread evenly over SO(3) (a super-Fibonacci spiral), so that one
   hypothesis lies within about 25° of the answer whatever the crop does to the principal axes (with 72, one
   case in 40 had its nearest 37° off, outside the basin of the first stage).
3. **OT soft correspondences + weighted Umeyama**, all hypotheses at once on a small subsample: an unbalanced
   (KL-relaxed, `recon.ot.sinkhorn_unbalanced`) entropic plan P between the moved source and the reference gives
   each source point a target (its row's barycentre P Y / P1) and a weight (its row mass P1: points with no
   counterpart keep little). The weighted similarity (Umeyama 1991) of those pairs moves the source, and the loop
   repeats while ε shrinks (coarse to fine; rigid in the first stage, where the plan's blur would shrink the
   scale). Relaxing the reference's marginal is what makes partial overlap work: balanced OT would stretch the
   source over the reference's parts that the source lacks. After each stage the hypotheses with the lowest
   transport cost (⟨C,P⟩ + ρ KL terms) that differ by more than 15° go on to the next, on more points at
   smaller ε; the last keeps one.
4. **Finish**: a robust point-to-plane *similarity* (Gauss–Newton, scale included) against the reference's
   normals; a noise-aware scale by EM on the reference blurred by the estimated noise (`_gmm_similarity`: the
   nearest-surface fit of noisy points shrinks the source); open3d's rigid point-to-plane ICP.

Everything runs in the normalised frames; the result is mapped back to the clouds' own units at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import open3d as o3d
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from scipy.special import logsumexp

from recon.data.errors import ReconError
from recon.eval.pose import umeyama_batch
from recon.ot.unbalanced import sinkhorn_unbalanced, unbalanced_cost


@dataclass
class OTStage:
    """One coarse-to-fine stage of OT + weighted Umeyama iterations (distances in normalised units, RMS radius 1)."""

    points: int  # subsample of each cloud
    eps: tuple[float, ...]  # ε of each outer iteration (squared distance; the plan's blur is about √ε)
    keep: int  # distinct hypotheses (lowest transport cost) passed on to the next stage
    sweeps: int = 10  # Sinkhorn sweeps per outer iteration (warm-started from the previous one)
    scale: bool = True  # estimate the scale here (at large ε the plan's blur shrinks the barycentres)


def _default_stages() -> tuple[OTStage, ...]:
    return (
        OTStage(points=96, eps=(0.5, 0.3, 0.2, 0.14, 0.1, 0.08), keep=8, sweeps=4, scale=False),
        OTStage(points=160, eps=(0.06, 0.045, 0.035, 0.03), keep=3),
        OTStage(points=400, eps=(0.02, 0.012, 0.008, 0.005), keep=1),
    )


@dataclass
class AlignConfig:
    with_scale: bool = True  # estimate the scale (similarity); False: rigid, scale 1
    uniform_hypotheses: int = 144  # spread over SO(3) (super-Fibonacci), beside the 24 principal-axis ones
    stages: tuple[OTStage, ...] = field(default_factory=_default_stages)
    distinct_deg: float = 15.0  # hypotheses closer than this (rotation angle) count as one
    # KL relaxation ρ of each marginal (None: exact). The reference's is small, so parts of it that the source
    # lacks stay unmatched; the source's is looser (stray source points lose weight, not the fit).
    rho_src: float | None = 1.0
    rho_ref: float | None = 0.1
    scale_range: tuple[float, float] = (1 / 3, 3.0)  # bounds of the normalised scale (stops a collapse)
    icp_points: int = 5000  # subsample of each cloud for the finishing steps and the quality figures
    fit_points: int = 2500  # of which the source's point-to-plane and EM steps use this many
    icp_iterations: int = 10  # Gauss–Newton steps of the point-to-plane similarity
    em_iterations: int = 6  # EM steps of the noise-aware similarity (`_gmm_similarity`)
    em_neighbours: int = 8  # reference points each source point is softly assigned to
    em_outliers: float = 0.1  # prior share of source points with no counterpart
    o3d_iterations: int = 30  # open3d point-to-plane ICP iterations at the end
    seed: int = 0


@dataclass
class Alignment:
    """ref ≈ scale · R · src + t, i.e. ``transform @ [src; 1]`` (4×4, in the clouds' own units)."""

    transform: np.ndarray  # [4,4] similarity
    scale: float
    residual: float  # RMS point-to-plane distance of the inliers, in reference units
    inlier_fraction: float  # share of source points within `inlier_threshold` of the reference's surface
    overlap: float  # share of reference points with an aligned source point within 3 × `inlier_threshold`
    confidence: float  # in [0,1]: inlier fraction × how clearly the best rotation beat the best different one
    inlier_threshold: float  # 3 robust σ of the point-to-plane residuals, in reference units
    hypotheses: int
    seconds: float

    @property
    def rotation(self) -> np.ndarray:
        return self.transform[:3, :3] / self.scale

    @property
    def translation(self) -> np.ndarray:
        return self.transform[:3, 3]

    def asdict(self) -> dict:
        d = asdict(self)
        d["transform"] = [[float(x) for x in row] for row in self.transform]

        def short(v):  # 6 significant digits; JSON has no inf
            if not isinstance(v, float):
                return v
            return float(f"{v:.6g}") if np.isfinite(v) else None

        return {k: short(v) for k, v in d.items()}


def similarity_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = t
    return T


def apply_similarity(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle of rotation matrices [..., 3, 3] in degrees."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def octahedral_rotations() -> np.ndarray:
    """The 24 signed permutation matrices with determinant +1 (the rotations of a cube), [24, 3, 3]."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            G = np.zeros((3, 3))
            G[range(3), perm] = signs
            if np.linalg.det(G) > 0:
                out.append(G)
    return np.stack(out)


def uniform_rotations(n: int) -> np.ndarray:
    """``n`` rotations spread evenly over SO(3): the super-Fibonacci spiral of unit quaternions (Alexa 2022)."""
    if n <= 0:
        return np.zeros((0, 3, 3))
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r, R = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), R * np.sin(beta), R * np.cos(beta)], axis=1)
    return Rotation.from_quat(q).as_matrix()


def _normalise(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centre = points.mean(0)
    scale = float(np.sqrt(((points - centre) ** 2).sum(1).mean()))
    if not scale > 0:
        raise ReconError("the point set has no extent (all points coincide); pass a cloud or a mesh")
    return (points - centre) / scale, centre, scale


def _principal_axes(points: np.ndarray) -> np.ndarray:
    """Columns: principal axes (largest variance first) of centred points, as a proper rotation."""
    _, vecs = np.linalg.eigh(points.T @ points / len(points))
    axes = vecs[:, ::-1].copy()
    if np.linalg.det(axes) < 0:
        axes[:, 2] *= -1
    return axes


def _subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]


def _ot_stage(
    X: np.ndarray,
    Y: np.ndarray,
    s: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    stage: OTStage,
    cfg: AlignConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run a stage for a batch of poses (s [B], R [B,3,3], t [B,3]); returns the poses and their final costs [B]."""
    Xt_ = torch.from_numpy(X)
    Yt_ = torch.from_numpy(Y)
    a = torch.full((len(X),), 1.0 / len(X), dtype=torch.float64)
    b = torch.full((len(Y),), 1.0 / len(Y), dtype=torch.float64)
    lo, hi = cfg.scale_range
    rho_a, rho_b = cfg.rho_src, cfg.rho_ref
    init, prev_eps = None, None

    y2 = Yt_.square().sum(-1)

    def cost() -> (
        torch.Tensor
    ):  # ‖x − y‖² as ‖x‖² + ‖y‖² − 2xᵀy: costs are O(1) here, no cancellation worth fearing
        A = torch.from_numpy(s[:, None, None] * R)
        x = Xt_ @ A.transpose(1, 2) + torch.from_numpy(t)[:, None, :]
        return torch.baddbmm(
            x.square().sum(-1, keepdim=True) + y2, x, Yt_.T.expand(len(x), 3, -1), alpha=-2.0
        )

    for eps in stage.eps:
        C = cost()
        if init is not None:
            init = (init[0] * (prev_eps / eps), init[1] * (prev_eps / eps))
        res = sinkhorn_unbalanced(a, b, C, eps, rho_a, rho_b, stage.sweeps, init)
        init, prev_eps = (res.u, res.v), eps
        P = res.plan
        w = P.sum(-1)  # [B, n] row mass: how much of each source point found a counterpart
        target = (P @ Yt_) / w.clamp_min(1e-30).unsqueeze(-1)
        if cfg.with_scale and stage.scale:
            s, R, t = umeyama_batch(X[None], target.double().numpy(), w.double().numpy())
            s = np.clip(
                s, lo, hi
            )  # a runaway scale (collapse onto a patch) is pulled back; t follows next round
        else:  # keep the scale: a rigid fit of the scaled source
            _, R, t = umeyama_batch(s[:, None, None] * X, target.double().numpy(), w.double().numpy(), False)
    C = cost()
    res = sinkhorn_unbalanced(a, b, C, prev_eps, rho_a, rho_b, stage.sweeps, init)
    cost = unbalanced_cost(res, a, b, C, rho_a, rho_b).double().numpy()
    return s, R, t, cost


def _distinct(order: np.ndarray, R: np.ndarray, k: int, min_deg: float) -> list[int]:
    """Up to k indices from `order` whose rotations differ pairwise by more than `min_deg`."""
    picked: list[int] = []
    for i in order:
        if all(rotation_angle_deg(R[i] @ R[j].T) > min_deg for j in picked):
            picked.append(int(i))
        if len(picked) == k:
            break
    return picked


def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = w / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def _robust_sigma(r: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(r))) if len(r) else 0.0


def _point_to_plane_similarity(
    X: np.ndarray,
    Y: np.ndarray,
    N: np.ndarray,
    tree: cKDTree,
    s: float,
    R: np.ndarray,
    t: np.ndarray,
    cap: float,
    cfg: AlignConfig,
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Gauss–Newton on Σ w_i (n_j·(s R x_i + t − y_j))² over (log s, rotation, t), nearest neighbours re-found
    every step, Tukey-style weights at 3 robust σ of the residuals; returns (s, R, t, inlier threshold)."""
    thr = cap
    for _ in range(cfg.icp_iterations):
        P = s * X @ R.T + t
        d, j = tree.query(P, distance_upper_bound=cap)
        ok = np.isfinite(d)
        if ok.sum() < 10:
            break
        Pk, q, n = P[ok], Y[j[ok]], N[j[ok]]
        r = ((Pk - q) * n).sum(1)
        sigma = _robust_sigma(r)
        thr = max(3.0 * sigma, 1e-6)
        w = (1.0 - np.minimum(np.abs(r) / thr, 1.0) ** 2) ** 2  # Tukey's biweight
        c = (w[:, None] * Pk).sum(0) / max(w.sum(), 1e-30)
        pc = Pk - c
        cols = [np.cross(pc, n), n]
        if cfg.with_scale:
            cols.insert(0, (pc * n).sum(1, keepdims=True))
        J = np.concatenate(cols, axis=1)
        H = J.T @ (w[:, None] * J) + 1e-9 * np.eye(J.shape[1])
        delta = np.linalg.solve(H, -J.T @ (w * r))
        ds = float(np.exp(delta[0])) if cfg.with_scale else 1.0
        off = 1 if cfg.with_scale else 0
        dR = _rodrigues(delta[off : off + 3])
        dt = delta[off + 3 : off + 6]
        # x ↦ c + ds · dR (s R x + t − c) + dt
        s, R, t = ds * s, dR @ R, c + ds * dR @ (t - c) + dt
        cap = min(cap, max(4.0 * thr, 1e-3))
        if np.abs(delta).max() < 1e-7:
            break
    return s, R, t, thr


def _gmm_similarity(
    X: np.ndarray,
    Y: np.ndarray,
    tree: cKDTree,
    s: float,
    R: np.ndarray,
    t: np.ndarray,
    sigma: float,
    cfg: AlignConfig,
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Maximum likelihood of the moved source under the reference blurred by isotropic noise: EM on a Gaussian
    mixture centred on the reference points (σ estimated too) plus a uniform outlier term, as Coherent Point
    Drift (Myronenko & Song 2010) with the roles swapped (the clean reference holds the components).

    The E-step is a soft assignment of each source point over its k nearest reference points (the semi-relaxed
    OT plan with a free reference marginal at ε = 2σ²). The M-step is the weighted Umeyama rotation and
    translation, and a scale that keeps the density's Jacobian: the moved source's density in its own frame
    is s³·p(sRx + t), so maximising Σ P log N(sRx + t; y, σ²) + 3 N log s gives
    s = (b + √(b² + 12 a σ²)) / 2a with b/a Umeyama's scale (a the weighted variance of x). Without that term
    the fit of noisy points to a curved or creased surface shrinks the source (by ~0.5% at 1% noise).
    """
    k = min(cfg.em_neighbours, len(Y))
    # below about the reference's sample spacing the mixture is a set of spikes, not a blurred surface
    spacing = float(np.median(tree.query(Y, k=2)[0][:, 1]))
    sigma = max(sigma, 0.5 * spacing)
    volume = float(np.prod(np.ptp(Y, axis=0) + 1e-9))
    w_out = cfg.em_outliers
    for _ in range(cfg.em_iterations):
        moved = s * X @ R.T + t
        d, j = tree.query(moved, k=k)
        logits = -(d**2) / (2 * sigma**2)
        # posterior of each component against the outlier term c = (2πσ²)^{3/2} · w/(1−w) · M/V
        log_c = 1.5 * np.log(2 * np.pi * sigma**2) + np.log(w_out / (1 - w_out) * len(Y) / volume)
        P = np.exp(logits - np.logaddexp(logsumexp(logits, axis=1), log_c)[:, None])
        w_i = P.sum(1)
        n_p = max(float(w_i.sum()), 1e-12)
        mu_x = (w_i[:, None] * X).sum(0) / n_p
        Yj = Y[j]  # [n,k,3]
        mu_y = (P[..., None] * Yj).sum((0, 1)) / n_p
        xc, yc = X - mu_x, Yj - mu_y
        cov = np.einsum("nk,nki,nj->ij", P, yc, xc) / n_p
        u, dsv, vt = np.linalg.svd(cov)
        sign = np.ones(3)
        sign[2] = 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0
        R = u @ (sign[:, None] * vt)
        a = float((w_i * (xc**2).sum(1)).sum() / n_p)
        b = float((dsv * sign).sum())
        if cfg.with_scale:
            s = (b + np.sqrt(b * b + 12.0 * a * sigma**2)) / (2.0 * a)
        t = mu_y - s * R @ mu_x
        res = Yj - (s * X @ R.T + t)[:, None, :]
        sigma = max(float(np.sqrt((P * (res**2).sum(-1)).sum() / (3.0 * n_p))), 0.5 * spacing)
    return s, R, t, sigma


def estimate_normals(points: np.ndarray, k: int = 20) -> np.ndarray:
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    return np.asarray(pcd.normals).copy()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """The OT matrices here are small (≤ 1M entries): torch's threads cost more in waiting than they save
    (0.36 s a case on one thread against 0.5–1.4 s on two, with the variation of any other load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def align_points(
    src: np.ndarray,
    ref: np.ndarray,
    ref_normals: np.ndarray | None = None,
    config: AlignConfig | None = None,
) -> Alignment:
    """Similarity (or rigid, ``config.with_scale=False``) that maps ``src`` [N,3] onto ``ref`` [M,3].

    ``ref_normals`` [M,3] (unit) serve the point-to-plane steps; estimated from the points when None.
    """
    with _one_thread():
        return _align_points(src, ref, ref_normals, config)


def _align_points(
    src: np.ndarray, ref: np.ndarray, ref_normals: np.ndarray | None, config: AlignConfig | None
) -> Alignment:
    cfg = config or AlignConfig()
    start = time.perf_counter()
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 3)
    for name, pts in (("source", src), ("reference", ref)):
        if len(pts) < 10 or not np.isfinite(pts).all():
            raise ReconError(
                f"the {name} has {len(pts)} usable points; alignment needs at least 10 finite ones"
            )
    if ref_normals is not None:
        ref_normals = np.asarray(ref_normals, dtype=np.float64).reshape(-1, 3)
        if len(ref_normals) != len(ref):
            raise ValueError(f"{len(ref_normals)} reference normals for {len(ref)} points")
    rng = np.random.default_rng(cfg.seed)
    keep_ref = rng.choice(len(ref), cfg.icp_points, replace=False) if len(ref) > cfg.icp_points else None
    if keep_ref is not None:
        ref = ref[keep_ref]
        ref_normals = None if ref_normals is None else ref_normals[keep_ref]
    src = _subsample(src, cfg.icp_points, rng)
    Xn, cx, sx = _normalise(src)
    Yn, cy, sy = _normalise(ref)
    if not cfg.with_scale:  # rigid: both clouds share one unit, the reference's RMS radius
        Xn, sx = (src - cx) / sy, sy

    # 2–3: hypotheses, all screened together, the best few refined on more points at smaller ε
    G = octahedral_rotations()
    R = np.concatenate(
        [_principal_axes(Yn) @ G @ _principal_axes(Xn).T, uniform_rotations(cfg.uniform_hypotheses)]
    )
    B = len(R)
    s, t = np.ones(B), np.zeros((B, 3))
    separation = 1.0
    for stage in cfg.stages:
        Xs, Ys = _subsample(Xn, stage.points, rng), _subsample(Yn, stage.points, rng)
        s, R, t, cost = _ot_stage(Xs, Ys, s, R, t, stage, cfg)
        order = np.argsort(cost)
        picked = _distinct(order, R, max(stage.keep, 2), cfg.distinct_deg)
        if len(picked) > 1:  # how clearly the best beat the best different rotation
            separation = float(np.clip(1.0 - cost[picked[0]] / cost[picked[1]], 0.0, 1.0))
        picked = picked[: stage.keep]
        s, R, t = s[picked], R[picked], t[picked]
    s_i, R_i, t_i = float(s[0]), R[0], t[0]

    # 4: point-to-plane similarity, then open3d's rigid point-to-plane ICP
    N = estimate_normals(Yn) if ref_normals is None else np.asarray(ref_normals, dtype=np.float64)
    tree = cKDTree(Yn)
    cap = 4.0 * float(np.sqrt(cfg.stages[-1].eps[-1]))
    Xf = _subsample(Xn, cfg.fit_points, rng)
    s_i, R_i, t_i, thr = _point_to_plane_similarity(Xf, Yn, N, tree, s_i, R_i, t_i, cap, cfg)
    s_i, R_i, t_i, _ = _gmm_similarity(Xf, Yn, tree, s_i, R_i, t_i, thr / 3.0, cfg)
    src_pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(s_i * Xn))
    ref_pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(Yn))
    ref_pcd.normals = o3d.utility.Vector3dVector(N)
    icp = o3d.pipelines.registration.registration_icp(
        src_pcd,
        ref_pcd,
        3.0 * thr,
        similarity_matrix(1.0, R_i, t_i),
        o3d.pipelines.registration.TransformationEstimationPointToPlane(
            o3d.pipelines.registration.TukeyLoss(k=thr)
        ),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=cfg.o3d_iterations),
    )
    if icp.fitness > 0:
        R_i, t_i = np.asarray(icp.transformation)[:3, :3], np.asarray(icp.transformation)[:3, 3]

    # quality, in the normalised frame, then back to the clouds' units
    moved = s_i * Xn @ R_i.T + t_i
    d, j = tree.query(moved)
    r = ((moved - Yn[j]) * N[j]).sum(1)
    near = d < 4.0 * thr
    thr = max(3.0 * _robust_sigma(r[near]), 1e-6) if near.any() else thr
    # inlier: within 3σ of the reference's tangent plane, and near a reference point (not beyond an edge)
    inliers = (np.abs(r) < thr) & (d < 3.0 * thr)
    residual = float(np.sqrt((r[inliers] ** 2).mean())) if inliers.any() else float("inf")
    d_ref, _ = cKDTree(moved).query(Yn, distance_upper_bound=3.0 * thr)
    inlier_fraction = float(inliers.mean())

    # Yn = s R Xn + t with Xn = (x − cx)/sx, Yn = (y − cy)/sy  ⇒  y = (sy s/sx) R x + sy t + cy − (sy s/sx) R cx
    scale = sy * s_i / sx if cfg.with_scale else 1.0
    T = similarity_matrix(scale, R_i, sy * t_i + cy - scale * R_i @ cx)
    return Alignment(
        transform=T,
        scale=float(scale),
        residual=residual * sy,
        inlier_fraction=inlier_fraction,
        overlap=float(np.isfinite(d_ref).mean()),
        confidence=float(inlier_fraction * separation),
        inlier_threshold=float(thr * sy),
        hypotheses=B,
        seconds=time.perf_counter() - start,
    )
