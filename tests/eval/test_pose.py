import numpy as np
from scipy.spatial.transform import Rotation

from recon.data.cameras import look_at_viewmat
from recon.eval.pose import pose_error, umeyama


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    r = Rotation.from_euler("xyz", [0.3, -0.7, 1.1]).as_matrix()
    dst = 2.5 * src @ r.T + np.array([1.0, -2.0, 0.5])
    s, r_est, t = umeyama(src, dst)
    assert abs(s - 2.5) < 1e-9
    np.testing.assert_allclose(r_est, r, atol=1e-9)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-9)


def test_pose_error_is_zero_for_a_similar_copy_and_sees_a_rotated_camera():
    eyes = [(4 * np.cos(a), 4 * np.sin(a), 1.5) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    true = np.stack([look_at_viewmat(e, (0, 0, 0)) for e in eyes])
    # The same rig in another frame: world points x' = s R x + t, so viewmat' = viewmat @ inv(similarity) up to scale.
    sim = np.eye(4)
    sim[:3, :3] = 0.3 * Rotation.from_euler("z", 40, degrees=True).as_matrix()
    sim[:3, 3] = [5, 1, -2]
    est = []
    for vm in true:
        c2w = np.linalg.inv(vm)
        c2w_new = sim @ c2w
        c2w_new[:3, :3] /= 0.3  # keep a pure rotation in the camera axes
        est.append(np.linalg.inv(c2w_new))
    err = pose_error(np.stack(est), true)
    assert err.max_center_error < 1e-9
    assert err.median_rotation_error_deg < 1e-6
    tilted = np.stack(est).copy()
    tilted[0, :3, :3] = Rotation.from_euler("x", 5, degrees=True).as_matrix() @ tilted[0, :3, :3]
    tilted[0, :3, 3] = Rotation.from_euler("x", 5, degrees=True).as_matrix() @ tilted[0, :3, 3]
    assert abs(pose_error(tilted, true).rotation_errors_deg[0] - 5.0) < 1e-6
