"""Elastic-network (anisotropic network model) normal modes of a pseudo-atom
cloud, orthogonal to the rigid-body motions (``models.nma`` computes them)."""
import numpy as np

from .models.nma import anm_hessian, anm_modes, default_cutoff


def elastic_network_modes(positions, cutoff=None, n_modes=10, gamma=1.0,
                          return_eigenvalues=False):
    """Lowest non-rigid modes of the anisotropic network model (ANM).

    Springs of stiffness ``gamma`` between pseudo-atoms closer than ``cutoff``
    A (default: ``models.nma.default_cutoff``).  Returns (n_modes, N, 3)
    modes, orthonormal over the 3N coordinates and orthogonal to the 6
    rigid-body motions, ordered by increasing frequency (computed by
    ``models.nma.anm_modes``: dense or sparse eigensolver, subsampled and
    interpolated for very large clouds).  ``return_eigenvalues`` adds the
    Rayleigh quotients of the returned modes.
    """
    pos = np.asarray(positions, dtype=np.float64)
    N = len(pos)
    if 3 * N - 6 < n_modes:
        raise ValueError('Too few pseudo-atoms (%d) for %d normal modes' % (N, n_modes))
    cutoff = cutoff or default_cutoff(pos)
    res = anm_modes(pos, n_modes=n_modes, cutoff=cutoff, gamma=gamma)
    v = np.asarray(res[0] if isinstance(res, tuple) else res, dtype=np.float64)
    v = v.reshape(3 * N, n_modes)  # (N, 3, M) -> (3N, M)
    rigid = rigid_body_basis(pos)
    v = v - rigid @ (rigid.T @ v)
    q, _ = np.linalg.qr(v)  # exactly orthonormal in float64 (the solver gives float32)
    v = q * np.sign(np.sum(q * v, axis=0))[None, :]  # keep the solver's signs
    modes = v.T.reshape(n_modes, N, 3)
    if not return_eigenvalues:
        return modes
    H = anm_hessian(pos, cutoff, gamma)
    return modes, np.einsum('im,im->m', v, H @ v)


def rigid_body_basis(pos):
    """(3N, 6) orthonormal basis of rigid translations and rotations."""
    c = pos - pos.mean(0)
    N = len(pos)
    B = np.zeros((N, 3, 6))
    for i in range(3):
        B[:, i, i] = 1.0
    for i, axis in enumerate(np.eye(3)):
        B[:, :, 3 + i] = np.cross(axis, c)
    q, _ = np.linalg.qr(B.reshape(3 * N, 6))
    return q
