"""Orientation grids for the pose search (torch, float32/64).

* ``so3_grid(step_deg)``: quasi-uniform directions (a Fibonacci / golden
  spiral on the sphere, one point per ``step^2`` steradian, like a HEALPix
  grid of that resolution) times in-plane angles every ``step`` degrees.  The
  direction (rot, tilt) is the projection direction in the volume frame
  (third row of the Xmipp / RELION matrix), so uniform directions times uniform
  psi are uniform on SO(3).
* ``local_offsets(step_deg)``: the 27 small rotations ``exp([w]x)``,
  ``w`` in ``{-h, 0, h}^3`` (image frame, as ``models.pose.PoseCorrection``)
  used to refine a candidate.
* ``shift_grid(max_shift, step)``: shifts (A) on a square lattice inside a
  disk.
"""
import math

import numpy as np


def fibonacci_directions(n):
    """(n, 2) (rot, tilt) in degrees of ``n`` quasi-uniform unit vectors."""
    k = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = math.pi * (3.0 - math.sqrt(5.0)) * k
    tilt = np.degrees(np.arccos(np.clip(z, -1.0, 1.0)))
    rot = np.degrees(np.mod(phi, 2 * math.pi))
    return np.stack([rot, tilt], 1)


def so3_grid(step_deg):
    """(M, 3) Euler angles (rot, tilt, psi) deg of a grid of angular step ``step_deg``."""
    step = math.radians(float(step_deg))
    n_dir = max(2, int(math.ceil(4 * math.pi / step ** 2)))
    n_psi = max(1, int(math.ceil(360.0 / float(step_deg))))
    d = fibonacci_directions(n_dir)
    psi = np.arange(n_psi) * (360.0 / n_psi)
    e = np.concatenate([np.repeat(d, n_psi, 0), np.tile(psi, n_dir)[:, None]], 1)
    return e


def local_offsets(step_deg, dtype=None, device=None):
    """(27, 3, 3) rotations exp([w]x), w in {-h, 0, h}^3 with h = ``step_deg``."""
    import torch
    from ..models.pose import axis_angle_to_matrix
    h = math.radians(float(step_deg))
    g = torch.tensor([-h, 0.0, h], dtype=torch.float64)
    w = torch.stack(torch.meshgrid(g, g, g, indexing='ij'), -1).reshape(-1, 3)
    R = axis_angle_to_matrix(w)
    R[13] = torch.eye(3, dtype=torch.float64)  # exact identity for w = 0
    return R.to(dtype=dtype or torch.float32, device=device)


def shift_grid(max_shift, step):
    """(S, 2) shifts (A): lattice points ``step * (i, j)`` with norm <= ``max_shift``."""
    if max_shift <= 0 or step <= 0:
        return np.zeros((1, 2))
    n = int(math.floor(max_shift / step + 1e-6))
    k = np.arange(-n, n + 1) * step
    g = np.stack(np.meshgrid(k, k, indexing='xy'), -1).reshape(-1, 2)
    return g[np.linalg.norm(g, axis=1) <= max_shift + 1e-6 * step]


def geodesic_deg(R1, R2):
    """Geodesic angle (deg) between batched torch rotations (..., 3, 3)."""
    import torch
    tr = (R1 * R2).sum((-1, -2))  # trace(R1 R2^T)
    return torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1.0, 1.0)))
