"""Camera pose error after similarity alignment (SfM recovers poses only up to scale, rotation and translation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def umeyama_batch(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity dst ≈ s·R·src + t (Umeyama 1991) for [..., N, 3] pairs, batched.

    Minimises Σ_i w_i ‖dst_i − (s R src_i + t)‖² with w ≥ 0 ([..., N], uniform when None). With μ and Σ the
    weighted means and cross-covariance Σ = Σ_i w_i (dst_i − μ_d)(src_i − μ_s)ᵀ / Σw = U D Vᵀ:
    R = U S Vᵀ with S = diag(1, 1, det(U)det(V)) (a rotation, never a reflection), s = tr(D S) / σ²_src,
    t = μ_d − s R μ_s. ``with_scale=False`` fixes s = 1 (rigid). Returns s [...], R [..., 3, 3], t [..., 3].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if weights is None:
        src, dst = np.broadcast_arrays(src, dst)
        w = np.full(src.shape[:-1], 1.0 / src.shape[-2])
        mu_s, mu_d = src.mean(-2), dst.mean(-2)
        xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
        cov = np.swapaxes(xd, -1, -2) @ xs / src.shape[-2]
    else:
        w = np.asarray(weights, dtype=np.float64)
        w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
        mu_s = (w[..., None] * src).sum(-2)
        mu_d = (w[..., None] * dst).sum(-2)
        xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
        cov = np.einsum("...n,...ni,...nj->...ij", w, xd, xs)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(d.shape)
    sign[..., 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    sign[sign == 0] = 1.0
    r = u @ (sign[..., :, None] * vt)
    if with_scale:
        var_s = (w * (xs**2).sum(-1)).sum(-1) if weights is not None else (xs**2).sum((-1, -2)) / xs.shape[-2]
        s = (d * sign).sum(-1) / np.maximum(var_s, 1e-300)
    else:
        s = np.ones(d.shape[:-1])
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", r, mu_s)
    return s, r, t


def umeyama(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ≈ s·R·src + t (Umeyama 1991), for [N,3] point sets, N ≥ 3;
    optional per-pair weights [N] and a rigid variant (see `umeyama_batch`)."""
    s, r, t = umeyama_batch(src, dst, weights, with_scale)
    return float(s), r, t


@dataclass
class PoseError:
    center_errors: np.ndarray  # [C] distance between aligned estimated and true camera centres (true units)
    rotation_errors_deg: np.ndarray  # [C] angle of R_true · R_aligned_estᵀ in degrees
    scale: float  # similarity scale applied to the estimate

    @property
    def max_center_error(self) -> float:
        return float(self.center_errors.max())

    @property
    def median_rotation_error_deg(self) -> float:
        return float(np.median(self.rotation_errors_deg))


def pose_error(est_viewmats: np.ndarray, true_viewmats: np.ndarray) -> PoseError:
    """Align estimated cameras to the true ones by the similarity of their centres, then compare centres and axes."""
    est_c2w = np.linalg.inv(est_viewmats)
    true_c2w = np.linalg.inv(true_viewmats)
    s, r, t = umeyama(est_c2w[:, :3, 3], true_c2w[:, :3, 3])
    aligned_centres = s * est_c2w[:, :3, 3] @ r.T + t
    aligned_rot = r @ est_c2w[:, :3, :3]  # camera-to-world rotations in the true frame
    rel = np.einsum("cij,cik->cjk", true_c2w[:, :3, :3], aligned_rot)
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return PoseError(
        center_errors=np.linalg.norm(aligned_centres - true_c2w[:, :3, 3], axis=1),
        rotation_errors_deg=np.degrees(np.arccos(cos)),
        scale=s,
    )
