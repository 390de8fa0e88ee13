"""Elastic-network normal modes of a pseudo-atom cloud (anisotropic network model).

Hessian of ``E = sum_{|x_i - x_j| < cutoff} (gamma / 2) (|r_ij| - |r0_ij|)^2``
(Atilgan et al. 2001); the lowest non-rigid eigenvectors are the collective
motions HEMNMA / DeepHEMNMA fit to images.  Dense ``eigh`` up to 1,500 atoms,
sparse shift-invert ``eigsh`` above.  Clouds larger than ``max_atoms`` get
modes computed on a farthest-point subsample and interpolated (Gaussian
weights on the 8 nearest subsample atoms), which keeps modes smooth.

Returned modes have shape (N, 3, M), ordered by frequency, each normalised to
unit RMS displacement per atom (``sum |v|^2 = N``): an amplitude of 1 moves
atoms by 1 A RMS.
"""
import os

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from scipy.spatial import cKDTree


def default_cutoff(positions, k=12):
    """Distance (A) reaching about ``k`` neighbours per atom (median), >= 8 A."""
    pos = np.asarray(positions, dtype=np.float64)
    k = min(k, len(pos) - 1)
    d, _ = cKDTree(pos, compact_nodes=False).query(pos, k=k + 1)
    return float(max(8.0, 1.2 * np.median(d[:, -1])))


def anm_hessian(positions, cutoff, gamma=1.0):
    """Sparse (3N, 3N) ANM Hessian (scipy.sparse CSR)."""
    pos = np.asarray(positions, dtype=np.float64)
    n = len(pos)
    pairs = np.array(sorted(cKDTree(pos, compact_nodes=False).query_pairs(cutoff)), dtype=np.int64)
    if len(pairs) == 0:
        raise ValueError("No atom pairs closer than the elastic-network cutoff "
                         "(%.1f A): use a larger cutoff." % cutoff)
    i, j = pairs[:, 0], pairs[:, 1]
    d = pos[j] - pos[i]
    blocks = -gamma * d[:, :, None] * d[:, None, :] / (d ** 2).sum(1)[:, None, None]
    rows, cols, vals = [], [], []
    a, b = np.meshgrid(np.arange(3), np.arange(3), indexing='ij')
    for (p, q, sgn) in ((i, j, 1), (j, i, 1), (i, i, -1), (j, j, -1)):
        rows.append((3 * p[:, None, None] + a).ravel())
        cols.append((3 * q[:, None, None] + b).ravel())
        vals.append((sgn * blocks).ravel())
    H = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(3 * n, 3 * n)).tocsr()
    return H


def farthest_point_subsample(positions, m, seed=0):
    """Indices of ``m`` points chosen by farthest-point sampling."""
    pos = np.asarray(positions, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = [int(rng.integers(len(pos)))]
    d = ((pos - pos[idx[0]]) ** 2).sum(1)
    for _ in range(1, m):
        k = int(np.argmax(d))
        idx.append(k)
        d = np.minimum(d, ((pos - pos[k]) ** 2).sum(1))
    return np.array(idx)


def anm_modes(positions, n_modes=16, cutoff=None, gamma=1.0, max_atoms=3000):
    """Lowest ``n_modes`` non-rigid ANM modes (N, 3, M) and eigenvalues (M,).

    ``cutoff`` in A (default ``default_cutoff``).  Raises ValueError if the
    network falls apart (more than 6 zero modes) even at twice the cutoff.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = len(pos)
    if n > max_atoms:
        sub = farthest_point_subsample(pos, max_atoms)
        v_sub, lam = anm_modes(pos[sub], n_modes, cutoff, gamma, max_atoms)
        return _interpolate_modes(pos[sub], v_sub, pos), lam
    if 3 * n - 6 < n_modes:
        raise ValueError("A cloud of %d pseudo-atoms has only %d non-rigid modes; "
                         "ask for fewer modes." % (n, 3 * n - 6))
    cutoff = default_cutoff(pos) if cutoff is None else float(cutoff)
    for attempt in range(4):
        H = anm_hessian(pos, cutoff, gamma)
        if n <= 1500:
            w, v = np.linalg.eigh(H.toarray())
            w, v = w[:n_modes + 12], v[:, :n_modes + 12]
        else:
            w, v = eigsh(H, k=n_modes + 12, sigma=-1e-3 * gamma, which='LM')
            o = np.argsort(w)
            w, v = w[o], v[:, o]
        scale = max(abs(w[-1]), 1e-12)
        n_zero = int(np.sum(w < 1e-6 * scale))
        if n_zero <= 6:
            break
        cutoff *= 1.25
    else:
        raise ValueError("The elastic network of this cloud is disconnected "
                         "(%d zero modes): pass a larger cutoff." % n_zero)
    w, v = w[6:6 + n_modes], v[:, 6:6 + n_modes]
    modes = v.reshape(n, 3, n_modes)
    modes = modes / np.sqrt((modes ** 2).sum((0, 1)) / n)
    return modes.astype(np.float32), w


def _interpolate_modes(src, modes, dst, k=8):
    d, idx = cKDTree(src, compact_nodes=False).query(dst, k=k)
    h = np.median(d[:, 1]) + 1e-6
    w = np.exp(-(d / h) ** 2)
    w /= w.sum(1, keepdims=True)
    out = (modes[idx] * w[:, :, None, None]).sum(1)
    return (out / np.sqrt((out ** 2).sum((0, 1)) / len(dst))).astype(np.float32)


def modes_on_cloud(path, positions, max_gap=None):
    """Normal modes from a file, interpolated onto a pseudo-atom cloud.

    ``path``: ``.npz`` with ``positions`` (P, 3) A and ``modes`` (P, 3, M)
    (ContinuousFlex NMA modes as written by the Scipion layer's
    ``normalModesToNpz``), in the same frame as the reference.  Returns
    modes (N, 3, M) on ``positions`` (N, 3), each normalised to unit RMS
    displacement per atom.  Raises ValueError when the file is malformed or
    when the modes' structure does not overlap the cloud (median distance
    from a pseudo-atom to the nearest mode atom above ``max_gap`` A,
    default 10 A): a sign of different frames.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("Normal-mode file not found: '%s'" % path)
    try:
        with np.load(path) as d:
            src = np.asarray(d['positions'], dtype=np.float64)
            modes = np.asarray(d['modes'], dtype=np.float64)
    except (KeyError, ValueError, OSError) as e:
        raise ValueError("'%s' is not a normal-mode file: it must be an .npz with "
                         "'positions' (N, 3) and 'modes' (N, 3, M) (%s)." % (path, e))
    if src.ndim != 2 or src.shape[1] != 3 or modes.ndim != 3 or \
            modes.shape[:2] != src.shape or modes.shape[2] < 1:
        raise ValueError("'%s': positions %s and modes %s do not match; expected (N, 3) "
                         "and (N, 3, M)." % (path, src.shape, modes.shape))
    if not (np.isfinite(src).all() and np.isfinite(modes).all()):
        raise ValueError("'%s' holds NaN or infinite values." % path)
    norms = np.sqrt((modes ** 2).sum((0, 1)))
    if (norms == 0).any():
        raise ValueError("'%s' holds an all-zero mode (number %s)."
                         % (path, ', '.join(str(i + 1) for i in np.nonzero(norms == 0)[0])))
    modes = modes / (norms / np.sqrt(len(src)))
    dst = np.asarray(positions, dtype=np.float64)
    gap = float(np.median(cKDTree(src, compact_nodes=False).query(dst)[0]))
    max_gap = 10.0 if max_gap is None else float(max_gap)
    if gap > max_gap:
        raise ValueError("The normal modes' structure does not overlap the reference (median "
                         "distance %.1f A from a pseudo-atom to the nearest mode atom): they "
                         "must be computed on the reference, in the same frame." % gap)
    if len(src) == len(dst) and np.allclose(src, dst, atol=1e-3):
        return modes.astype(np.float32)
    return _interpolate_modes(src, modes, dst, k=min(8, len(src)))
