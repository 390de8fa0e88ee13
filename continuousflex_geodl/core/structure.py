"""Structures as Gaussian pseudo-atom clouds: atomic models, coarse-graining,
fitting to maps, PDB output, elastic-network normal modes, a built-in molecule.

Positions are in A in the frame of the model file (for maps: about the box
centre, core convention); amplitudes are masses in Da (atomic models) or
density integrals (maps); ``sigma`` is the Gaussian width in A.
"""
import os
from dataclasses import dataclass

import numpy as np

_MASS = {'H': 1.008, 'C': 12.011, 'N': 14.007, 'O': 15.999, 'S': 32.06, 'P': 30.974,
         'SE': 78.97, 'MG': 24.305, 'ZN': 65.38, 'FE': 55.845, 'CA': 40.078,
         'NA': 22.99, 'K': 39.098, 'CL': 35.45, 'MN': 54.938}


@dataclass
class Structure:
    positions: np.ndarray                 # (N, 3) A
    amplitudes: np.ndarray                # (N,)
    sigma: float = 2.0                    # A
    residues: np.ndarray = None           # (N,) residue keys 'chain:seqid' (atomic models)
    domains: np.ndarray = None            # (N,) integer domain labels (built-in molecule)

    def __len__(self):
        return len(self.positions)


# ------------------------------------------------------------------ atomic models

def read_atomic_model(path, model_index=0):
    """Heavy atoms (no H, no water) of a PDB/mmCIF file -> Structure (amplitude = mass)."""
    import gemmi
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError('Atomic model not found: %s' % path)
    try:
        st = gemmi.read_structure(path)
    except Exception as exc:
        raise ValueError('Cannot read the atomic model %s (%s)' % (path, exc)) from None
    st.remove_hydrogens()
    st.remove_waters()
    if len(st) == 0:
        raise ValueError('The atomic model %s has no model/atoms' % path)
    pos, mass, res = [], [], []
    for ch in st[model_index]:
        for r in ch:
            for a in r:
                pos.append((a.pos.x, a.pos.y, a.pos.z))
                mass.append(_MASS.get(a.element.name.upper(), a.element.weight or 12.0))
                res.append('%s:%d%s' % (ch.name, r.seqid.num, r.seqid.icode.strip()))
    if not pos:
        raise ValueError('The atomic model %s contains no (heavy) atoms' % path)
    return Structure(np.asarray(pos, float), np.asarray(mass, float), 1.5,
                     residues=np.asarray(res))


def coarse_grain(structure, mode='residue', n=None, seed=0):
    """Pseudo-atoms from atoms: one per residue (centre of mass, amplitude =
    mass), or ``n`` mass-weighted k-means centres (``mode='kmeans'``)."""
    pos, mass = np.asarray(structure.positions), np.asarray(structure.amplitudes)
    if mode == 'residue':
        if structure.residues is None:
            raise ValueError("coarse_grain(mode='residue') needs residue information")
        keys, inv = np.unique(structure.residues, return_inverse=True)
        order = np.argsort([np.min(np.nonzero(inv == k)[0]) for k in range(len(keys))])
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        inv = remap[inv]
        m = np.bincount(inv, weights=mass)
        centres = np.stack([np.bincount(inv, weights=mass * pos[:, d]) for d in range(3)], 1)
        centres /= m[:, None]
        sigma = 0.5 * _median_spacing(centres)
        return Structure(centres, m, sigma)
    if mode == 'kmeans':
        if not n or n < 1:
            raise ValueError("coarse_grain(mode='kmeans') needs n >= 1 pseudo-atoms")
        centres, amps = _weighted_kmeans(pos, mass, min(n, len(pos)), seed)
        return Structure(centres, amps, 0.5 * _median_spacing(centres))
    raise ValueError("Unknown coarse-graining mode '%s' (residue, kmeans)" % mode)


def _median_spacing(p):
    from scipy.spatial import cKDTree
    if len(p) < 2:
        return 2.0
    d, _ = cKDTree(p).query(p, k=2)
    return float(np.median(d[:, 1]))


def _weighted_kmeans(points, weights, n, seed):
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=n, n_init=1, random_state=seed, max_iter=100)
    km.fit(points, sample_weight=weights)
    amps = np.bincount(km.labels_, weights=weights, minlength=n)
    keep = amps > 0
    return km.cluster_centers_[keep], amps[keep]


def fit_to_map(volume, apix, n_atoms, threshold=None, max_voxels=200000, seed=0):
    """Quantise a density map into ``n_atoms`` Gaussian pseudo-atoms.

    Mass-weighted k-means over the voxels above ``threshold`` (default: the
    mean + 1 standard deviation of the positive voxels' halo is avoided by
    using the 0.9 quantile of |density| / 10).  Positions are in A about the
    box centre; amplitudes are the density integrals of each cell (sum to the
    thresholded map's integral); sigma is half the median nearest spacing.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError('fit_to_map needs a 3D map, got shape %s' % (vol.shape,))
    if threshold is None:
        threshold = 0.1 * np.quantile(np.abs(vol), 0.99)
    idx = np.argwhere(vol > threshold)
    if len(idx) < n_atoms:
        raise ValueError('The map has only %d voxels above the threshold %.3g: fewer '
                         'than the %d pseudo-atoms asked for (lower the threshold or '
                         'the number of pseudo-atoms)' % (len(idx), threshold, n_atoms))
    w = vol[tuple(idx.T)] * apix ** 3
    rng = np.random.default_rng(seed)
    if len(idx) > max_voxels:
        pick = rng.choice(len(idx), max_voxels, replace=False, p=w / w.sum())
        idx, w = idx[pick], np.full(max_voxels, w.sum() / max_voxels)
    centre = np.array(vol.shape) // 2
    pts = (idx - centre)[:, ::-1] * apix  # [iz, iy, ix] -> (x, y, z) A
    centres, amps = _weighted_kmeans(pts, w, n_atoms, seed)
    return Structure(centres, amps, 0.5 * _median_spacing(centres))


# ------------------------------------------------------------------ PDB output

def write_pdb(path, positions, amplitudes=None, chain='A'):
    """Pseudo-atoms as CA atoms of a PDB file; (M, N, 3) writes M models.

    The B-factor column carries the amplitude (scaled to fit the format).
    Written atomically.
    """
    from .fileio import atomic_write
    pos = np.asarray(positions, dtype=float)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError('write_pdb: positions must be (N, 3) or (M, N, 3), got %s'
                         % (pos.shape,))
    if np.abs(pos).max(initial=0) >= 1e4:
        raise ValueError('write_pdb: coordinates beyond the PDB format (|x| >= 10000 A)')
    b = np.zeros(pos.shape[1]) if amplitudes is None else np.asarray(amplitudes, float)
    if b.size and np.abs(b).max() >= 1000:
        b = b * (999.0 / np.abs(b).max())
    multi = len(pos) > 1
    lines = ['REMARK   1 continuousflex_geodl pseudo-atoms (Gaussian centres, A)']
    for m, p in enumerate(pos):
        if multi:
            lines.append('MODEL     %4d' % (m + 1))
        for i, (x, y, z) in enumerate(p):
            lines.append('ATOM  %5d  CA  ALA %s%4d    %8.3f%8.3f%8.3f  1.00%6.2f           C'
                         % ((i + 1) % 100000, chain, (i + 1) % 10000, x, y, z, b[i]))
        if multi:
            lines.append('ENDMDL')
    lines.append('END')
    with atomic_write(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    return path


def read_pdb(path):
    """All models' atom positions of a PDB/mmCIF file -> (M, N, 3) A."""
    import gemmi
    if not os.path.exists(path):
        raise FileNotFoundError('PDB file not found: %s' % path)
    st = gemmi.read_structure(os.fspath(path))
    models = [np.array([(a.pos.x, a.pos.y, a.pos.z) for ch in mdl for r in ch for a in r])
              for mdl in st]
    if not models or not len(models[0]):
        raise ValueError('The PDB file %s contains no atoms' % path)
    return np.stack(models)


def load_structure(path, n_atoms=None, apix=None):
    """Reference pseudo-atoms from a .pdb/.cif (one per residue, or ``n_atoms``
    k-means beads) or a map .mrc (``fit_to_map``)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in ('.mrc', '.map', '.mrcs'):
        from .io.mrc import read_mrc
        vol, file_apix = read_mrc(path)
        return fit_to_map(vol, apix or file_apix, n_atoms or 500)
    model = read_atomic_model(path)
    if n_atoms:
        return coarse_grain(model, 'kmeans', n=n_atoms)
    if len(np.unique(model.residues)) == len(model):  # already one bead per residue
        return Structure(model.positions, np.ones(len(model)),
                         0.5 * _median_spacing(model.positions))
    return coarse_grain(model, 'residue')


# ------------------------------------------------------------------ normal modes

def elastic_network_modes(positions, cutoff=15.0, n_modes=10, gamma=1.0,
                          return_eigenvalues=False):
    """Lowest non-rigid modes of the anisotropic network model (ANM).

    Springs of stiffness ``gamma`` between pseudo-atoms closer than
    ``cutoff`` A.  Returns (n_modes, N, 3) modes, each of unit norm over the
    3N coordinates and orthogonal to the 6 rigid-body motions (which are
    skipped), ordered by increasing eigenvalue.
    """
    from scipy.spatial import cKDTree
    pos = np.asarray(positions, dtype=np.float64)
    N = len(pos)
    if 3 * N - 6 < n_modes:
        raise ValueError('Too few pseudo-atoms (%d) for %d normal modes' % (N, n_modes))
    pairs = np.array(sorted(cKDTree(pos).query_pairs(cutoff)), dtype=np.int64).reshape(-1, 2)
    d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    k = -gamma * d[:, :, None] * d[:, None, :] / np.sum(d ** 2, 1)[:, None, None]
    n_eig = n_modes + 6
    if N <= 1500:
        H = np.zeros((3 * N, 3 * N))
        for a, b in ((0, 1), (1, 0)):
            ia, ib = pairs[:, a], pairs[:, b]
            for r in range(3):
                for c in range(3):
                    np.add.at(H, (3 * ia + r, 3 * ib + c), k[:, r, c])
                    np.add.at(H, (3 * ia + r, 3 * ia + c), -k[:, r, c])
        from scipy.linalg import eigh
        w, v = eigh(H, subset_by_index=[0, n_eig - 1])
    else:
        import scipy.sparse as sp
        from scipy.sparse.linalg import eigsh
        rows, cols, vals = [], [], []
        for a, b in ((0, 1), (1, 0)):
            ia, ib = pairs[:, a], pairs[:, b]
            for r in range(3):
                for c in range(3):
                    rows += [3 * ia + r, 3 * ia + r]
                    cols += [3 * ib + c, 3 * ia + c]
                    vals += [k[:, r, c], -k[:, r, c]]
        H = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(3 * N, 3 * N))
        w, v = eigsh(H, k=n_eig, sigma=-1e-3, which='LM')
        order = np.argsort(w)
        w, v = w[order], v[:, order]
    # project out the rigid-body space explicitly (robust to degenerate zeros)
    rigid = _rigid_body_basis(pos)
    v = v[:, 6:n_eig]
    v = v - rigid @ (rigid.T @ v)
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    modes = v.T.reshape(n_modes, N, 3)
    return (modes, w[6:n_eig]) if return_eigenvalues else modes


def _rigid_body_basis(pos):
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


# ------------------------------------------------------------------ built-in molecule

def builtin_molecule(seed=7):
    """A deterministic two-domain protein-like pseudo-atom model (no download).

    A CA-trace-like chain (3.8 A steps, no two beads closer than 3.6 A) of
    200 + 150 residues folded into two compact ellipsoidal domains joined by
    a short linker; extent about 60 A (fits a 64 px box at 2 A/px).
    ``domains`` labels the beads 0 (large domain) and 1 (small domain);
    amplitudes are a residue mass of 110 Da; sigma 2.5 A.
    """
    rng = np.random.default_rng(seed)
    domains = [  # (n residues, centre, radii)
        (200, np.array([-13.0, 0.0, 0.0]), np.array([15.0, 13.0, 12.0])),
        (150, np.array([15.0, 2.0, 0.0]), np.array([12.0, 11.0, 10.0])),
    ]
    chain, labels = [], []
    for lab, (n, centre, radii) in enumerate(domains):
        start = centre - np.array([radii[0] * 0.6, 0, 0]) if lab == 0 else \
            chain[-1] + np.array([3.8, 0.0, 0.0])
        pts = _confined_walk(n, start, centre, radii, chain, rng)
        chain.extend(pts)
        labels += [lab] * n
    pos = np.asarray(chain)
    pos -= pos.mean(0)
    return Structure(pos, np.full(len(pos), 110.0), 2.5, domains=np.asarray(labels))


def _confined_walk(n, start, centre, radii, previous, rng, step=3.8, min_dist=3.6):
    pts = []
    cur = np.asarray(start, float)
    allp = list(previous)
    for _ in range(n):
        for attempt in range(200):
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            # bias towards the domain centre when near the surface
            inside = np.sum(((cur - centre) / radii) ** 2)
            d = d - 0.6 * max(0.0, inside - 0.5) * (cur - centre) / (np.linalg.norm(cur - centre) + 1e-9)
            d /= np.linalg.norm(d)
            cand = cur + step * d
            if np.sum(((cand - centre) / radii) ** 2) > 1.0 and attempt < 150:
                continue
            if allp and np.min(np.linalg.norm(np.asarray(allp[-400:]) - cand, axis=1)) < min_dist \
                    and attempt < 190:
                continue
            break
        cur = cand
        pts.append(cur)
        allp.append(cur)
    return pts
