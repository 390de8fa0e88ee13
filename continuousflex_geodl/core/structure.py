"""Structures as Gaussian pseudo-atom clouds: atomic models, coarse-graining,
fitting to maps, PDB output, elastic-network normal modes, a built-in molecule.

Conventions: positions (N, 3) in A as (x, y, z) (for maps: about the box
centre, core convention, voxel ``D // 2`` at 0); amplitudes (N,) are masses
in Da (atomic models, coarse-graining) or density integrals (maps, in map
units * A^3); ``sigma`` is the Gaussian width in A
(``V(r) = sum_j a_j exp(-|r - x_j|^2 / 2 sigma^2)``).
"""
import functools
import os
from dataclasses import dataclass

import numpy as np

#: atomic masses (Da) of the common elements; others from gemmi
_MASS = {'H': 1.008, 'C': 12.011, 'N': 14.007, 'O': 15.999, 'S': 32.06, 'P': 30.974,
         'SE': 78.97, 'MG': 24.305, 'ZN': 65.38, 'FE': 55.845, 'CA': 40.078,
         'NA': 22.99, 'K': 39.098, 'CL': 35.45, 'MN': 54.938}

#: shipped files (``resources/``)
RESOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'resources')


@dataclass
class Structure:
    """A Gaussian pseudo-atom cloud (or the atoms of a model).

    ``residues``: (N,) residue keys ``'chain:seqid'`` (atomic models);
    ``domains``: (N,) integer domain labels; ``hinge_point`` (3,) A and
    ``hinge_axis`` (3,) unit vector: an axis about which domain 1 can rotate
    rigidly relative to domain 0 (built-in molecule).
    """
    positions: np.ndarray
    amplitudes: np.ndarray
    sigma: float = 2.0
    residues: np.ndarray = None
    domains: np.ndarray = None
    hinge_point: np.ndarray = None
    hinge_axis: np.ndarray = None

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise ValueError('Structure positions must be (N, 3) A, got shape %s'
                             % (self.positions.shape,))
        self.amplitudes = np.ones(len(self.positions)) if self.amplitudes is None else \
            np.asarray(self.amplitudes, dtype=np.float64)
        if self.amplitudes.shape != (len(self.positions),):
            raise ValueError('Structure: %d amplitudes for %d positions'
                             % (self.amplitudes.size, len(self.positions)))
        self.sigma = float(self.sigma)

    def __len__(self):
        return len(self.positions)

    @property
    def labels(self):
        """Alias of ``domains``."""
        return self.domains


# ------------------------------------------------------------------ atomic models

def _element_mass(el):
    name = el.name.upper()
    m = _MASS.get(name)
    if m is None:
        m = el.weight if el.weight > 0 else 12.011
    return float(m)


def read_atomic_model(path, model_index=0):
    """Heavy atoms (no hydrogens, no waters) of a PDB/mmCIF file -> ``Structure``.

    Amplitudes are the element masses (Da); ``residues`` holds
    ``'chain:seqid'`` keys; sigma 1.5 A (atomic).  Coordinates as in the file.
    """
    import gemmi
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError('Atomic model not found: %s' % path)
    try:
        st = gemmi.read_structure(path)
    except Exception as exc:
        raise ValueError('Cannot read the atomic model %s (%s): give a PDB or mmCIF file'
                         % (path, exc)) from None
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_alternative_conformations()  # keep the first of alternative locations
    if len(st) == 0:
        raise ValueError('The atomic model %s has no model (no atoms)' % path)
    if not 0 <= model_index < len(st):
        raise ValueError('The atomic model %s has %d model(s); model %d was asked for'
                         % (path, len(st), model_index))
    pos, mass, res = [], [], []
    for ch in st[model_index]:
        for r in ch:
            key = '%s:%d%s' % (ch.name, r.seqid.num, r.seqid.icode.strip())
            for a in r:
                pos.append((a.pos.x, a.pos.y, a.pos.z))
                mass.append(_element_mass(a.element))
                res.append(key)
    if not pos:
        raise ValueError('The atomic model %s contains no heavy atoms' % path)
    pos = np.asarray(pos, float)
    if not np.isfinite(pos).all():
        raise ValueError('The atomic model %s has atoms with NaN/Inf coordinates' % path)
    return Structure(pos, np.asarray(mass, float), 1.5, residues=np.asarray(res))


def check_in_box(positions, box, apix, source='The reference', warn_fraction=0.1):
    """Check that a structure (positions (N, 3) A about the box centre) lies in
    the particle box (``box`` px of ``apix`` A).

    Raises ValueError when no atom is inside the box (the model is not in
    the frame of the particles); warns on stderr when more than
    ``warn_fraction`` of the atoms are outside.  Returns the inside fraction.
    """
    import sys
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        raise ValueError('%s has no atoms.' % source)
    if not np.isfinite(pos).all():
        raise ValueError('%s has atoms with NaN/Inf coordinates.' % source)
    half = 0.5 * int(box) * float(apix)
    inside = np.all(np.abs(pos) <= half, axis=1)
    frac = float(inside.mean())
    centre = pos.mean(0)
    where = ('its atoms span x %.0f..%.0f, y %.0f..%.0f, z %.0f..%.0f A (centre %.0f, %.0f, '
             '%.0f A) but the box spans -%.0f..%.0f A about its centre'
             % (pos[:, 0].min(), pos[:, 0].max(), pos[:, 1].min(), pos[:, 1].max(),
                pos[:, 2].min(), pos[:, 2].max(), centre[0], centre[1], centre[2],
                half, half))
    fix = ('Coordinates must be in A about the centre of the particle box (the frame of '
           'the consensus map): fit the model into the map and save it relative to the map '
           '(ChimeraX: save ... relModel #map), or, if it was fitted into a map whose origin '
           'is its corner, subtract the map centre (%.1f A) from x, y and z.' % half)
    if frac == 0.0:
        raise ValueError('%s has no atom inside the particle box (%d px x %.3g A): %s. %s'
                         % (source, int(box), float(apix), where, fix))
    if 1.0 - frac > warn_fraction:
        print('WARNING: %s has %.0f%% of its atoms outside the particle box: %s. %s'
              % (source, 100 * (1 - frac), where, fix), file=sys.stderr)
    return frac


def coarse_grain(structure, mode='residue', n=None, atoms_per_bead=None, seed=0):
    """Pseudo-atoms from atoms.

    ``mode='residue'``: one bead per residue at its centre of mass,
    amplitude = residue mass.  ``mode='kmeans'``: ``n`` beads (or
    ``len / atoms_per_bead``) at mass-weighted k-means centres, amplitude =
    mass of the atoms in the cell.  Sigma = half the median nearest-bead
    spacing.  Total mass is conserved.
    """
    pos = np.asarray(structure.positions, float)
    mass = np.asarray(structure.amplitudes, float)
    if mode == 'residue':
        if structure.residues is None:
            raise ValueError("coarse_grain(mode='residue') needs residue information "
                             "(read the model with read_atomic_model)")
        _, first, inv = np.unique(structure.residues, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))  # keep the file's residue order
        inv = rank[inv]
        m = np.bincount(inv, weights=mass)
        centres = np.stack([np.bincount(inv, weights=mass * pos[:, d]) for d in range(3)], 1)
        centres /= m[:, None]
        keys = np.asarray(structure.residues)[np.sort(first)]
        return Structure(centres, m, 0.5 * _median_spacing(centres), residues=keys)
    if mode == 'kmeans':
        if atoms_per_bead and not n:
            n = max(1, int(round(len(pos) / float(atoms_per_bead))))
        if not n or n < 1:
            raise ValueError("coarse_grain(mode='kmeans') needs n >= 1 beads or "
                             "atoms_per_bead")
        centres, amps = _weighted_kmeans(pos, mass, min(int(n), len(pos)), seed)
        return Structure(centres, amps, 0.5 * _median_spacing(centres))
    raise ValueError("Unknown coarse-graining mode '%s' (use 'residue' or 'kmeans')" % mode)


def _median_spacing(p):
    from scipy.spatial import cKDTree
    if len(p) < 2:
        return 2.0
    d, _ = cKDTree(p, compact_nodes=False).query(p, k=2)
    return float(np.median(d[:, 1]))


def _weighted_kmeans(points, weights, n, seed):
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=n, n_init=1, random_state=seed, max_iter=100)
    km.fit(points, sample_weight=weights)
    amps = np.bincount(km.labels_, weights=weights, minlength=n)
    keep = amps > 0
    return km.cluster_centers_[keep], amps[keep]


# ------------------------------------------------------------------ maps

def _map_samples(vol, apix, threshold):
    vol = np.asarray(vol, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError('fit_to_map needs a 3D map, got shape %s' % (vol.shape,))
    if not np.all(np.isfinite(vol)):
        raise ValueError('The map contains NaN or Inf values')
    if threshold is None:
        threshold = 0.1 * np.quantile(np.abs(vol), 0.99)
    idx = np.argwhere(vol > threshold)
    w = vol[tuple(idx.T)] * apix ** 3
    centre = np.array(vol.shape) // 2
    pts = (idx - centre)[:, ::-1] * float(apix)  # [iz, iy, ix] -> (x, y, z) A
    return pts, w, threshold


def fit_to_map(volume, apix, n_atoms, method='kmeans', threshold=None, sigma=None,
               max_voxels=100000, max_ot_samples=20000, n_iter=10, seed=0):
    """Quantise a density map into ``n_atoms`` Gaussian pseudo-atoms.

    Voxels above ``threshold`` (default: 10 % of the 99th percentile of
    |density|) are point masses (density * apix^3).  ``method='kmeans'``:
    mass-weighted k-means (Lloyd) centres.  ``method='ot'``: optimal-transport
    quantisation of the weighted voxels (at most ``max_ot_samples``, else
    drawn by mass): the points start at their k-means centres and follow
    ``n_iter`` steps of the Sinkhorn gradient flow (GeomLoss, p=2, blur
    apix/2), each step moving every point to the barycentre of the mass it
    receives under an equal-mass transport plan (no empty or overloaded
    points).
    Positions are in A about the box centre (voxel D//2); amplitudes are the
    map mass of each point's Voronoi cell (sum = thresholded map integral);
    ``sigma`` defaults to half the median nearest spacing.
    """
    from scipy.spatial import cKDTree
    apix = float(apix)
    n_atoms = int(n_atoms)
    pts, w, threshold = _map_samples(volume, apix, threshold)
    if n_atoms < 1:
        raise ValueError('fit_to_map: n_atoms must be >= 1')
    if len(pts) < n_atoms:
        raise ValueError('The map has only %d voxels above the threshold %.3g: fewer '
                         'than the %d pseudo-atoms asked for (lower the threshold or '
                         'the number of pseudo-atoms)' % (len(pts), threshold, n_atoms))
    rng = np.random.default_rng(seed)
    if method == 'kmeans':
        kp, kw = pts, w
        if len(pts) > max_voxels:
            pick = rng.choice(len(pts), max_voxels, replace=False, p=w / w.sum())
            kp, kw = pts[pick], np.full(max_voxels, w.sum() / max_voxels)
        centres, _ = _weighted_kmeans(kp, kw, n_atoms, seed)
    elif method == 'ot':
        centres = _ot_quantise(pts, w, n_atoms, apix, max_ot_samples, n_iter, rng)
    else:
        raise ValueError("Unknown fit_to_map method '%s' (use 'kmeans' or 'ot')" % method)
    _, cell = cKDTree(centres, compact_nodes=False).query(pts)
    amps = np.bincount(cell, weights=w, minlength=len(centres))
    s = 0.5 * _median_spacing(centres) if sigma is None else float(sigma)
    return Structure(centres, amps, s)


def _ot_quantise(pts, w, n, apix, max_samples, n_iter, rng):
    """Equal-mass quantisation of the weighted voxels: k-means start, then a
    Sinkhorn (entropic OT, p=2) gradient flow of the n uniform-mass points."""
    import torch

    from .runtime import init_keops
    init_keops()
    from geomloss import SamplesLoss
    if len(pts) > max_samples:  # too many voxels: draw a subsample by mass
        pick = rng.choice(len(pts), int(max_samples), replace=False, p=w / w.sum())
        pts, w = pts[pick], np.ones(len(pick))
    x0, _ = _weighted_kmeans(pts, w, n, int(rng.integers(1 << 31)))
    if len(x0) < n:  # empty clusters: restart them on random voxels
        x0 = np.concatenate([x0, pts[rng.choice(len(pts), n - len(x0), replace=False)]])
    backend = 'tensorized' if n * len(pts) <= 2e7 else 'online'
    diameter = float(np.ptp(pts, axis=0).max() + 2 * apix)
    # debias=False: the voxel-voxel term does not depend on the points (and is
    # the costly one); blur apix/2 keeps the entropic smoothing below a voxel
    loss = SamplesLoss('sinkhorn', p=2, blur=max(0.5 * apix, 0.25), scaling=0.7,
                       diameter=diameter, debias=False, backend=backend)
    a = torch.full((n,), 1.0 / n, dtype=torch.float32)
    b = torch.as_tensor(w / w.sum(), dtype=torch.float32)
    Y = torch.as_tensor(pts, dtype=torch.float32)
    X = torch.as_tensor(x0, dtype=torch.float32).requires_grad_(True)
    for _ in range(int(n_iter)):
        g, = torch.autograd.grad(loss(a, X, b, Y), X)
        with torch.no_grad():
            X -= n * g  # x_i <- barycentre of the mass transported to x_i (p=2)
    return X.detach().double().numpy()


# ------------------------------------------------------------------ PDB files

def write_pdb(path, positions, amplitudes=None, chain='A', residue='ALA', remarks=()):
    """Pseudo-atoms as CA atoms of a PDB file; positions (M, N, 3) write M models.

    The B-factor column carries the amplitudes (scaled so that the largest
    is 999 when they exceed the column).  ``chain``: one chain ID, or one per
    atom.  ``remarks``: extra REMARK lines.  Written atomically.
    """
    from .fileio import atomic_write
    pos = np.asarray(positions, dtype=float)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError('write_pdb: positions must be (N, 3) or (M, N, 3), got %s'
                         % (pos.shape,))
    n = pos.shape[1]
    if not np.all(np.isfinite(pos)):
        raise ValueError('write_pdb: positions contain NaN or Inf')
    if np.abs(pos).max(initial=0) >= 1e4:
        raise ValueError('write_pdb: coordinates beyond the PDB format (|x| >= 10000 A)')
    b = np.zeros(n) if amplitudes is None else np.asarray(amplitudes, float).reshape(-1)
    if b.shape != (n,):
        raise ValueError('write_pdb: %d amplitudes for %d atoms' % (b.size, n))
    if b.size and np.abs(b).max() >= 1000:
        b = b * (999.0 / np.abs(b).max())
    chains = [chain] * n if isinstance(chain, str) else [str(c) for c in chain]
    if len(chains) != n or any(len(c) != 1 for c in chains):
        raise ValueError('write_pdb: chain must be one character or one per atom')
    multi = len(pos) > 1
    lines = ['REMARK   1 continuousflex_geodl pseudo-atoms (Gaussian centres, A); '
             'B-factor = amplitude']
    lines += ['REMARK   2 %s' % r for r in remarks]
    for m, p in enumerate(pos):
        if multi:
            lines.append('MODEL     %4d' % (m + 1))
        for i, (x, y, z) in enumerate(p):
            if i and chains[i] != chains[i - 1]:
                lines.append('TER')
            lines.append('ATOM  %5d  CA  %3s %1s%4d    %8.3f%8.3f%8.3f  1.00%6.2f           C'
                         % ((i + 1) % 100000, residue, chains[i], (i + 1) % 10000, x, y, z,
                            b[i]))
        lines.append('TER')
        if multi:
            lines.append('ENDMDL')
    lines.append('END')
    with atomic_write(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    return path


def read_pdb(path, return_bfactors=False):
    """All models' atom positions of a PDB/mmCIF file -> (M, N, 3) A
    (and (N,) B-factors of the first model if ``return_bfactors``)."""
    import gemmi
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError('PDB file not found: %s' % path)
    try:
        st = gemmi.read_structure(path)
    except Exception as exc:
        raise ValueError('Cannot read the PDB file %s (%s)' % (path, exc)) from None
    models = [np.array([(a.pos.x, a.pos.y, a.pos.z) for ch in mdl for r in ch for a in r])
              for mdl in st]
    if not models or not len(models[0]):
        raise ValueError('The PDB file %s contains no atoms' % path)
    if len({len(m) for m in models}) > 1:
        raise ValueError('The models of %s have different numbers of atoms' % path)
    pos = np.stack(models)
    if return_bfactors:
        b = np.array([a.b_iso for ch in st[0] for r in ch for a in r])
        return pos, b
    return pos


def load_structure(path, n_atoms=None, apix=None, method='kmeans'):
    """Reference pseudo-atoms from a .pdb/.cif (one per residue, or ``n_atoms``
    k-means beads) or a map .mrc (``fit_to_map`` with ``method``)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in ('.mrc', '.map', '.mrcs'):
        from .io.mrc import read_mrc
        vol, file_apix = read_mrc(path)
        return fit_to_map(vol, apix or file_apix, n_atoms or 500, method=method)
    model = read_atomic_model(path)
    if n_atoms:
        return coarse_grain(model, 'kmeans', n=n_atoms)
    if len(np.unique(model.residues)) == len(model):  # already one bead per residue
        return Structure(model.positions, model.amplitudes,
                         0.5 * _median_spacing(model.positions), residues=model.residues)
    return coarse_grain(model, 'residue')


# ------------------------------------------------------------------ normal modes

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
    from .models.nma import anm_hessian, anm_modes, default_cutoff
    pos = np.asarray(positions, dtype=np.float64)
    N = len(pos)
    if 3 * N - 6 < n_modes:
        raise ValueError('Too few pseudo-atoms (%d) for %d normal modes' % (N, n_modes))
    cutoff = cutoff or default_cutoff(pos)
    res = anm_modes(pos, n_modes=n_modes, cutoff=cutoff, gamma=gamma)
    v = np.asarray(res[0] if isinstance(res, tuple) else res, dtype=np.float64)
    v = v.reshape(3 * N, n_modes)  # (N, 3, M) -> (3N, M)
    rigid = _rigid_body_basis(pos)
    v = v - rigid @ (rigid.T @ v)
    q, _ = np.linalg.qr(v)  # exactly orthonormal in float64 (the solver gives float32)
    v = q * np.sign(np.sum(q * v, axis=0))[None, :]  # keep the solver's signs
    modes = v.T.reshape(n_modes, N, 3)
    if not return_eigenvalues:
        return modes
    H = anm_hessian(pos, cutoff, gamma)
    return modes, np.einsum('im,im->m', v, H @ v)


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

def builtin_molecule():
    """A deterministic two-domain protein-like pseudo-atom model (no download).

    A C-alpha-trace-like chain of 300 beads: domain 0 (170 residues) and
    domain 1 (130 residues) are compact globules at protein density (about
    135 A^3 per residue; radius of gyration about 19 A, 9-10 neighbours
    within 8 A per bead) joined by a short linker.  Consecutive beads are
    3.8 A apart, beads i, i+2 at least 5 A, all others at least 4.2 A.
    Extent about 55 x 37 x 35 A (fits a 64 px box at 2 A/px with room for
    motion), centred on its centre of mass.  ``domains`` labels the beads,
    ``hinge_point`` is the middle of the bond joining the domains and
    ``hinge_axis`` is perpendicular to the inter-domain direction, so
    rotating domain 1 about it opens/closes the cleft.  Amplitudes 110 Da
    (a residue), sigma 2.5 A.  Also shipped as
    ``resources/builtin_molecule.pdb``.
    """
    pos, dom, hinge_point, hinge_axis = _builtin_arrays()
    keys = np.array(['A:%d' % (i + 1) for i in range(len(pos))])
    return Structure(pos.copy(), np.full(len(pos), 110.0), 2.5, residues=keys,
                     domains=dom.copy(), hinge_point=hinge_point.copy(),
                     hinge_axis=hinge_axis.copy())


@functools.lru_cache(maxsize=1)
def _builtin_arrays(seed=7, n_a=170, n_b=130, linker=8):
    rng = np.random.default_rng(seed)
    ra, rb = [(3 * n * 135.0 / (4 * np.pi)) ** (1 / 3) for n in (n_a, n_b)]
    ca, cb = np.array([-0.85 * ra, 0, 0]), np.array([0.85 * rb, 0, 0])
    shape = np.array([0.85, 1.08, 1.08]) * 1.12  # slightly oblate globules
    hinge = np.zeros(3)
    plan = ([(ca, ra * shape)] * (n_a - 1 - linker) + [(hinge, None)] * linker +
            [(cb, None)] * (linker // 2) + [(cb, rb * shape)] * (n_b - linker // 2))
    pos = _compact_walk(plan, ca, rng)
    dom = np.r_[np.zeros(n_a, np.int64), np.ones(n_b, np.int64)]
    com = pos.mean(0)
    pos = pos - com
    hinge_point = 0.5 * (pos[n_a - 1] + pos[n_a])
    v = pos[dom == 1].mean(0) - pos[dom == 0].mean(0)
    v /= np.linalg.norm(v)
    axis = np.cross(v, [0.0, 0.0, 1.0])
    axis = np.cross(axis, v) if np.linalg.norm(axis) > 1e-6 else np.array([0.0, 1.0, 0.0])
    axis /= np.linalg.norm(axis)  # z made perpendicular to the inter-domain vector
    for a in (pos, dom, hinge_point, axis):
        a.flags.writeable = False
    return pos, dom, hinge_point, axis


def _compact_walk(plan, first, rng, step=3.8, min_nb=4.2, min_13=5.0, n_cand=48,
                  noise=2.0):
    """Self-avoiding chain grown bead by bead: ``plan[k] = (centre, radii)``
    confines bead k+1 to an ellipsoid and pulls it to the centre (radii None:
    only pulled).  Dead ends are undone by backtracking."""
    pts = [np.asarray(first, float)]
    fails = 0
    while len(pts) < len(plan) + 1:
        centre, radii = plan[len(pts) - 1]
        allp = np.asarray(pts)
        d = rng.normal(size=(n_cand, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        cand = allp[-1] + step * d
        ok = np.ones(n_cand, bool)
        if len(allp) > 1:
            ok &= np.linalg.norm(cand - allp[-2], axis=1) >= min_13
        if len(allp) > 2:
            ok &= np.linalg.norm(cand[:, None] - allp[None, :-2], axis=2).min(1) >= min_nb
        if radii is not None:
            r = np.linalg.norm((cand - centre) / radii, axis=1)
            ok &= r <= 1.0
        else:
            r = np.linalg.norm(cand - centre, axis=1) / 10.0
        if not ok.any():
            fails += 1
            if fails > 5000:
                raise RuntimeError('builtin molecule: chain growth failed')
            del pts[-min(len(pts) - 1, 1 + fails // 4):]
            continue
        score = -10.0 * r + noise * rng.normal(size=n_cand)
        score[~ok] = -np.inf
        pts.append(cand[np.argmax(score)])
    return np.asarray(pts)


def builtin_molecule_pdb():
    """Path of the shipped ``resources/builtin_molecule.pdb``."""
    return os.path.join(RESOURCES, 'builtin_molecule.pdb')


def write_builtin_molecule_pdb(path):
    """Write the built-in molecule as a PDB (chain A = domain 0, B = domain 1;
    B-factor = amplitude; hinge in REMARK lines).  Regenerates the resource."""
    m = builtin_molecule()
    hp, ha = m.hinge_point, m.hinge_axis
    return write_pdb(path, m.positions, m.amplitudes, chain=np.where(m.domains == 0, 'A', 'B'),
                     remarks=['continuousflex_geodl built-in two-domain molecule (synthetic, '
                              'structure.builtin_molecule())',
                              'HINGE POINT %.3f %.3f %.3f AXIS %.4f %.4f %.4f'
                              % (hp[0], hp[1], hp[2], ha[0], ha[1], ha[2])])
