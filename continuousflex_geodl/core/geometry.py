"""Rotations: ZYZ Euler angles (rot, tilt, psi, degrees) <-> 3x3 matrices.

The matrix is Xmipp's ``Euler_angles2matrix`` (identical to RELION's): a
point ``x`` of the volume lands at image position ``(R @ x)[:2]``.  Functions
accept numpy arrays or torch tensors (batched over leading axes) and return
the same type; the torch versions are differentiable.
"""
import math

import numpy as np

_EPS = 1e-6


def _lib(x):
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return np
    import torch
    return torch


def euler_to_matrix(rot, tilt, psi):
    """ZYZ Euler angles in degrees (arrays of equal shape S) -> (S, 3, 3)."""
    lib = _lib(rot)
    if lib is np:
        rot, tilt, psi = (np.asarray(a, dtype=np.float64) for a in (rot, tilt, psi))
        deg = np.pi / 180.0
    else:
        deg = math.pi / 180.0
    a, b, g = rot * deg, tilt * deg, psi * deg
    ca, sa, cb, sb, cg, sg = (lib.cos(a), lib.sin(a), lib.cos(b), lib.sin(b),
                              lib.cos(g), lib.sin(g))
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    if lib is np:
        return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)
    return lib.stack([lib.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_euler(R):
    """(S, 3, 3) rotation matrices -> (rot, tilt, psi) in degrees (numpy).

    Xmipp's ``Euler_matrix2angles``; tilt is returned in [0, 180].
    """
    R = np.asarray(R, dtype=np.float64)
    abs_sb = np.sqrt(R[..., 0, 2] ** 2 + R[..., 1, 2] ** 2)
    regular = abs_sb > 16 * 1.1920929e-07  # 16 FLT_EPSILON, as Xmipp
    psi = np.arctan2(R[..., 1, 2], -R[..., 0, 2])
    rot = np.arctan2(R[..., 2, 1], R[..., 2, 0])
    tilt = np.arctan2(abs_sb, R[..., 2, 2])
    # gimbal lock: tilt 0 or 180, only rot+psi (or rot-psi) is defined
    up = R[..., 2, 2] > 0
    psi_lock = np.where(up, np.arctan2(-R[..., 1, 0], R[..., 0, 0]),
                        np.arctan2(R[..., 1, 0], -R[..., 0, 0]))
    rot = np.where(regular, rot, 0.0)
    psi = np.where(regular, psi, psi_lock)
    tilt = np.where(regular, tilt, np.where(up, 0.0, np.pi))
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def random_rotations(n, rng=None):
    """``n`` rotation matrices uniform on SO(3) (numpy, float64)."""
    rng = np.random.default_rng(rng)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], axis=-2)


def rotation_angle_deg(R1, R2):
    """Geodesic angle (degrees) between rotation matrices (numpy, batched)."""
    M = np.einsum('...ij,...kj->...ik', np.asarray(R1), np.asarray(R2))
    c = (np.trace(M, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.rad2deg(np.arccos(np.clip(c, -1.0, 1.0)))
