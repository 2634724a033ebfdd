"""Camera pose error after similarity alignment (SfM recovers poses only up to scale, rotation and translation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ≈ s·R·src + t (Umeyama 1991), for [N,3] point sets, N ≥ 3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    r = u @ sign @ vt
    var_s = (xs**2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_s)
    t = mu_d - s * r @ mu_s
    return s, r, t


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
