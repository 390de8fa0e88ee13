"""Euler angles and rotation matrices (core.geometry) against Xmipp and SO(3) facts."""
import numpy as np
import pytest

from continuousflex_geodl.core import geometry


def _random_angles(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n))


def _wrap(deg):
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


def test_euler_to_matrix_matches_xmipp_bindings():
    xmippLib = pytest.importorskip(
        'xmippLib', reason='xmippLib (pyxmipp3, installed with scipion-em) is not importable')
    rot, tilt, psi = _random_angles(200, 0)
    ours = geometry.euler_to_matrix(rot, tilt, psi)
    for k in range(200):
        ref = np.asarray(xmippLib.Euler_angles2matrix(float(rot[k]), float(tilt[k]),
                                                      float(psi[k])))
        np.testing.assert_allclose(ours[k], ref, atol=1e-6)


def test_matrix_to_euler_matches_xmipp_bindings():
    xmippLib = pytest.importorskip(
        'xmippLib', reason='xmippLib (pyxmipp3, installed with scipion-em) is not importable')
    R = geometry.random_rotations(100, 1)
    rot, tilt, psi = geometry.matrix_to_euler(R)
    for k in range(100):
        ref = xmippLib.Euler_matrix2angles(np.ascontiguousarray(R[k]))
        np.testing.assert_allclose(_wrap(np.array([rot[k], tilt[k], psi[k]]) - np.array(ref)),
                                   0.0, atol=1e-6)


def test_matrices_are_proper_rotations():
    R1 = geometry.euler_to_matrix(*_random_angles(500, 2))
    R2 = geometry.random_rotations(500, 3)
    for R in (R1, R2):
        eye = np.einsum('nij,nkj->nik', R, R)
        np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_matrix_euler_matrix_round_trip_random():
    R = geometry.random_rotations(1000, 4)
    back = geometry.euler_to_matrix(*geometry.matrix_to_euler(R))
    np.testing.assert_allclose(back, R, atol=1e-10)


def test_euler_matrix_euler_round_trip_regular_angles():
    rot, tilt, psi = _random_angles(1000, 5)
    tilt = np.clip(tilt, 0.01, 179.99)           # away from gimbal lock: angles are unique
    r2, t2, p2 = geometry.matrix_to_euler(geometry.euler_to_matrix(rot, tilt, psi))
    np.testing.assert_allclose(_wrap(r2 - rot), 0.0, atol=1e-7)
    np.testing.assert_allclose(t2, tilt, atol=1e-7)
    np.testing.assert_allclose(_wrap(p2 - psi), 0.0, atol=1e-7)


@pytest.mark.parametrize('tilt', [0.0, 180.0, 1e-9, 180.0 - 1e-9])
def test_gimbal_lock_round_trip(tilt):
    # at tilt 0 (180) only rot + psi (psi - rot) is defined: the matrix must survive
    rng = np.random.default_rng(6)
    rot, psi = rng.uniform(-180, 180, 50), rng.uniform(-180, 180, 50)
    R = geometry.euler_to_matrix(rot, np.full(50, tilt), psi)
    r2, t2, p2 = geometry.matrix_to_euler(R)
    np.testing.assert_allclose(t2, 0.0 if tilt < 90 else 180.0, atol=1e-6)
    np.testing.assert_allclose(geometry.euler_to_matrix(r2, t2, p2), R, atol=1e-9)
    combined = rot + psi if tilt < 90 else psi - rot
    np.testing.assert_allclose(
        _wrap((r2 + p2 if tilt < 90 else p2 - r2) - combined), 0.0, atol=1e-6)


def test_torch_version_matches_numpy_and_is_differentiable():
    torch = pytest.importorskip('torch')
    rot, tilt, psi = _random_angles(20, 7)
    ang = torch.tensor(np.stack([rot, tilt, psi], 1), requires_grad=True)
    Rt = geometry.euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
    np.testing.assert_allclose(Rt.detach().numpy(), geometry.euler_to_matrix(rot, tilt, psi),
                               atol=1e-12)
    small = ang[:2].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: geometry.euler_to_matrix(a[:, 0], a[:, 1], a[:, 2]), (small,))


def test_random_rotations_are_uniform_on_so3():
    from scipy import stats
    R = geometry.random_rotations(4000, 8)
    # Haar measure: E[R] = 0 and the rotation angle w has density (1 - cos w) / pi
    assert np.abs(R.mean(0)).max() < 4 / np.sqrt(4000)
    w = np.deg2rad(geometry.rotation_angle_deg(R, np.eye(3)))
    cdf = lambda x: (x - np.sin(x)) / np.pi  # noqa: E731
    assert stats.kstest(w, cdf).pvalue > 1e-3


def test_rotation_angle_of_known_rotation():
    R1 = geometry.random_rotations(10, 9)
    theta = np.linspace(5, 175, 10)
    Rz = geometry.euler_to_matrix(theta, np.zeros(10), np.zeros(10))   # rotation by theta
    np.testing.assert_allclose(geometry.rotation_angle_deg(R1, Rz @ R1), theta, atol=1e-6)
