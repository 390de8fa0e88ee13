"""The reference pseudo-atom cloud the model deforms.

``build_reference(path, n_atoms=None, apix=None, sigma=None)`` reads

* an atomic model (``.pdb``, ``.cif``, ``.ent``, ``.mmcif``) -- used atom for
  atom when it has no more atoms than asked for (e.g. a pseudo-atom model,
  so that atom indices keep their meaning), otherwise coarse-grained by
  mass-weighted k-means to ``n_atoms`` beads (amplitude = bead mass);
* a density map (``.mrc``, ``.map``) -- ``n_atoms`` points fitted to the
  density above a threshold by density-weighted k-means;
* a saved cloud (``.npz`` with positions, amplitudes, sigma).

Default size (``n_atoms=None``): one pseudo-atom per ``spacing^3`` of
molecular volume with ``spacing = max(3 apix, 4 A)`` (the images resolve
about 2 apix; one bead per ~1.5 resolution elements keeps rendering cheap
while domains stay well sampled), clipped to [200, 20000].  ``n_atoms = 0``
(or 'all') keeps every atom of a model.  Default width ``sigma``: half the
spacing of the cloud (median nearest-neighbour distance), at least ``apix``.
"""
from dataclasses import dataclass
import os

import numpy as np

MIN_ATOMS, MAX_ATOMS = 200, 20000


@dataclass
class ReferenceCloud:
    positions: np.ndarray     # (N, 3) A about the box centre
    amplitudes: np.ndarray    # (N,)
    sigma: float              # A

    def save(self, path):
        """Write ``.npz`` (atomic) or ``.pdb`` (via core.structure.write_pdb)."""
        from ..engine import atomic_savez
        if path.endswith('.npz'):
            atomic_savez(path, positions=self.positions.astype(np.float32),
                         amplitudes=self.amplitudes.astype(np.float32),
                         sigma=np.float32(self.sigma))
        elif path.endswith('.pdb'):
            write_pdb_positions(path, self.positions[None], self.amplitudes)
        else:
            raise ValueError("Reference output must end in .npz or .pdb: '%s'" % path)


def write_pdb_positions(path, positions, amplitudes=None):
    """Multi-model PDB of (M, N, 3) pseudo-atom positions (core.structure)."""
    from ..structure import write_pdb
    write_pdb(path, np.asarray(positions, dtype=np.float32), amplitudes=amplitudes)


def molecular_volume(positions, probe=3.0, cell=2.0):
    """Volume (A^3) of the union of spheres of radius ``probe`` around atoms."""
    from scipy.spatial import cKDTree
    pos = np.asarray(positions, dtype=np.float64)
    lo, hi = pos.min(0) - probe, pos.max(0) + probe
    axes = [np.arange(lo[i], hi[i] + cell, cell) for i in range(3)]
    n_cells = np.prod([len(a) for a in axes])
    if n_cells > 2e7:  # huge model: coarser cells
        return molecular_volume(positions, probe, cell * 2)
    g = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    d, _ = cKDTree(pos, compact_nodes=False).query(g, k=1, distance_upper_bound=probe)
    return float(np.isfinite(d).sum() * cell ** 3)


def default_spacing(apix):
    return max(3.0 * float(apix), 4.0)


def default_n_atoms(volume, apix):
    """Pseudo-atoms for a molecule of ``volume`` A^3 imaged at ``apix`` A/px."""
    n = int(round(volume / default_spacing(apix) ** 3))
    return int(np.clip(n, MIN_ATOMS, MAX_ATOMS))


def default_sigma(positions, apix):
    from scipy.spatial import cKDTree
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        return float(apix)
    d, _ = cKDTree(pos, compact_nodes=False).query(pos, k=2)
    return float(max(float(apix), 0.5 * np.median(d[:, 1])))


def weighted_kmeans(points, weights, k, seed=0, iters=30):
    """Weighted k-means (Lloyd, k-means++ start): centres (k, 3), cluster weights."""
    from scipy.spatial import cKDTree
    pts = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = w / w.sum()
    if k * len(pts) <= 2e8:  # k-means++ seeding (weighted)
        centres = [pts[rng.choice(len(pts), p=p)]]
        d2 = ((pts - centres[0]) ** 2).sum(1)
        for _ in range(1, k):
            q = w * d2
            c = pts[rng.choice(len(pts), p=q / q.sum())]
            centres.append(c)
            d2 = np.minimum(d2, ((pts - c) ** 2).sum(1))
        centres = np.array(centres)
    else:  # large problems: weighted sample without replacement
        centres = pts[rng.choice(len(pts), size=k, replace=False, p=p)]
    for _ in range(iters):
        _, lab = cKDTree(centres, compact_nodes=False).query(pts)
        mass = np.bincount(lab, weights=w, minlength=k)
        new = np.stack([np.bincount(lab, weights=w * pts[:, i], minlength=k)
                        for i in range(3)], 1)
        ok = mass > 0
        new[ok] /= mass[ok, None]
        new[~ok] = centres[~ok]
        shift = np.abs(new - centres).max()
        centres = new
        if shift < 1e-3:
            break
    _, lab = cKDTree(centres, compact_nodes=False).query(pts)
    mass = np.bincount(lab, weights=w, minlength=k)
    keep = mass > 0
    return centres[keep], mass[keep]


def _parse_n_atoms(n_atoms):
    if n_atoms is None or n_atoms == 'auto':
        return None
    if isinstance(n_atoms, str) and n_atoms.lower() == 'all':
        return 0
    n = int(n_atoms)
    if n < 0:
        raise ValueError('--n-atoms must be positive (or 0 / all to keep every atom).')
    if 0 < n < 4:
        raise ValueError('A reference needs at least 4 pseudo-atoms (asked for %d).' % n)
    return n


def from_atoms(positions, masses, apix, n_atoms=None, sigma=None, seed=0):
    """Reference from atom positions / masses (see module docstring)."""
    n_atoms = _parse_n_atoms(n_atoms)
    pos = np.asarray(positions, dtype=np.float64)
    masses = np.ones(len(pos)) if masses is None else np.asarray(masses, dtype=np.float64)
    target = default_n_atoms(molecular_volume(pos), apix) if n_atoms is None else n_atoms
    if target == 0 or len(pos) <= target:
        out_pos, out_amp = pos, masses
    else:
        out_pos, out_amp = weighted_kmeans(pos, masses, target, seed)
    out_amp = out_amp / out_amp.mean()
    sig = default_sigma(out_pos, apix) if sigma is None else float(sigma)
    return ReferenceCloud(out_pos.astype(np.float32), out_amp.astype(np.float32), sig)


def from_map(volume, map_apix, apix=None, n_atoms=None, sigma=None, threshold=None,
             seed=0):
    """Reference fitted to a density map (D, D, D) [iz, iy, ix] (core grid)."""
    n_atoms = _parse_n_atoms(n_atoms)
    vol = np.asarray(volume, dtype=np.float64)
    apix = float(map_apix if apix is None else apix)
    if threshold is None:
        pos_vals = vol[vol > 0]
        if pos_vals.size == 0:
            raise ValueError('The map has no positive density (inverted contrast?).')
        threshold = 0.1 * np.percentile(pos_vals, 99.9)
    sel = vol > threshold
    if sel.sum() < 4:
        raise ValueError('Fewer than 4 voxels above the map threshold %.4g: give a lower '
                         'threshold.' % threshold)
    D = vol.shape[0]
    iz, iy, ix = np.nonzero(sel)
    pts = np.stack([ix, iy, iz], 1).astype(np.float64)
    pts = (pts - D // 2) * float(map_apix)
    w = vol[sel] - threshold + 1e-6 * vol[sel].max()
    volume_a3 = sel.sum() * float(map_apix) ** 3
    target = default_n_atoms(volume_a3, apix) if not n_atoms else n_atoms
    target = min(target, len(pts))
    c, m = weighted_kmeans(pts, w, target, seed)
    m = m / m.mean()
    sig = default_sigma(c, apix) if sigma is None else float(sigma)
    return ReferenceCloud(c.astype(np.float32), m.astype(np.float32), sig)


def build_reference(path, n_atoms=None, apix=None, sigma=None, threshold=None, seed=0):
    """Reference cloud from a model, map or saved cloud (see module docstring).

    ``apix`` is the particles' pixel size (sets the default size); for a map
    it defaults to the map's pixel size.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("Reference file not found: '%s'" % path)
    low = path.lower()
    if low.endswith('.npz'):
        d = np.load(path)
        for key in ('positions', 'amplitudes', 'sigma'):
            if key not in d:
                raise ValueError("'%s' lacks '%s': a reference .npz holds positions (N, 3), "
                                 "amplitudes (N,) and sigma." % (path, key))
        return ReferenceCloud(d['positions'].astype(np.float32),
                              d['amplitudes'].astype(np.float32), float(d['sigma']))
    if low.endswith(('.mrc', '.map', '.mrcs')):
        from ..io.mrc import read_mrc
        vol, map_apix = read_mrc(path)
        if vol.ndim != 3:
            raise ValueError("'%s' is not a 3D map." % path)
        return from_map(vol, map_apix, apix, n_atoms, sigma, threshold, seed)
    if low.endswith(('.pdb', '.cif', '.ent', '.mmcif', '.pdb.gz', '.cif.gz')):
        from ..structure import read_atomic_model
        st = read_atomic_model(path)
        if apix is None:
            apix = 2.0
        amps = getattr(st, 'amplitudes', None)
        return from_atoms(st.positions, amps, apix, n_atoms, sigma, seed)
    raise ValueError("Unknown reference format '%s': give an atomic model (.pdb/.cif), "
                     "a map (.mrc/.map) or a saved cloud (.npz)." % path)
