"""Pseudo-atom clouds (numpy / scipy only): the one rule that turns atoms or a
density map into Gaussian pseudo-atoms, and neighbour graphs of clouds.

Every reference cloud of the package comes from here: ``models.reference.
build_reference`` (training, simulation with ``--structure``) and
``structure.fit_to_map`` both call ``fit_map``, so one file gives one cloud.

Rules
-----
* Size (``n_atoms=None``): one pseudo-atom per ``spacing^3`` of molecular
  volume, ``spacing = max(2 apix, 4 A)``: one bead per resolution element at
  the particles' Nyquist (2 apix), so that the cloud represents the reference
  to the resolution the images carry (AdK consensus map at 2 A/px: FSC 0.5 at
  4.0 A, against 6.3 A with the former 3 apix rule, ``benchmarks/report/
  realistic_gap.md``), never finer than 4 A (a few heavy atoms per bead);
  clipped to [``MIN_ATOMS``, ``MAX_ATOMS``].  The
  molecular volume of atoms is the union of 3 A spheres around them; of a
  map, the volume of the voxels above the threshold.
* Map threshold (``threshold=None``): 10 % of the 99.9th percentile of the
  positive densities (``map_threshold``).
* Map samples: every voxel above the threshold is a point mass
  ``density * apix^3`` at its centre ((x, y, z) A about voxel D//2).
* Fitting: mass-weighted k-means (Lloyd from a greedy k-means++ start, best
  of ``KMEANS_RESTARTS`` runs, ``weighted_kmeans``);
  the amplitude of a pseudo-atom is the mass of its Voronoi cell (atoms:
  atom masses; maps: sum = the thresholded map integral).
* Width (``sigma=None``): half the median nearest-neighbour spacing of the
  cloud, at least ``SIGMA_MIN_PX`` = 0.75 apix (``default_sigma``): a
  Gaussian of that width keeps exp(-2 pi^2 0.75^2 / 4) = 6 % of its
  amplitude at Nyquist, where a width of 1 apix keeps 0.7 %; much of what
  tells neighbouring conformations apart lies there (``realistic_gap.md``).
"""
import numpy as np
from scipy.spatial import cKDTree

MIN_ATOMS, MAX_ATOMS = 200, 20000
#: narrowest automatic pseudo-atom width, in pixels of the particles
SIGMA_MIN_PX = 0.75
#: k-means runs of a reference fit (the lowest inertia is kept): one run of
#: greedy k-means++ / Lloyd can leave two beads in one blob of density
KMEANS_RESTARTS = 3


# ------------------------------------------------------------------ graphs
def knn_graph(positions, k):
    """Indices (N, k) of the k nearest neighbours (self included first)."""
    pos = np.asarray(positions, dtype=np.float64)
    k = min(k, len(pos))
    _, idx = cKDTree(pos, compact_nodes=False).query(pos, k=k)
    return idx.reshape(len(pos), k)


def median_spacing(positions):
    """Median nearest-neighbour distance (A) of a cloud (0 below 2 points)."""
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        return 0.0
    d, _ = cKDTree(pos, compact_nodes=False).query(pos, k=2)
    return float(np.median(d[:, 1]))


# ------------------------------------------------------------------ sizes
def molecular_volume(positions, probe=3.0, cell=2.0):
    """Volume (A^3) of the union of spheres of radius ``probe`` around atoms."""
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
    return max(2.0 * float(apix), 4.0)


def default_n_atoms(volume, apix):
    """Pseudo-atoms for a molecule of ``volume`` A^3 imaged at ``apix`` A/px."""
    n = int(round(volume / default_spacing(apix) ** 3))
    return int(np.clip(n, MIN_ATOMS, MAX_ATOMS))


def default_sigma(positions, apix):
    """Half the median nearest-neighbour spacing, at least ``SIGMA_MIN_PX``
    pixels."""
    floor = SIGMA_MIN_PX * float(apix)
    if len(positions) < 2:
        return floor
    return float(max(floor, 0.5 * median_spacing(positions)))


def parse_n_atoms(n_atoms):
    """None (automatic size), 0 (keep every atom) or a count >= 4."""
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


# ------------------------------------------------------------------ k-means
def weighted_kmeans(points, weights, k, seed=0, iters=30, trials=None, n_init=1):
    """Weighted k-means: the solution of lowest weighted inertia among
    ``n_init`` runs (``_lloyd``; run 0 uses ``seed``, run r > 0 the seed
    (seed, r)): centres (k', 3) and the weight of each cluster (empty
    clusters dropped, so k' <= k)."""
    best = None
    for r in range(int(n_init)):
        c, m, inertia = _lloyd(points, weights, k, seed if r == 0 else [seed, r], iters,
                               trials)
        if best is None or inertia < best[2]:
            best = (c, m, inertia)
    return best[0], best[1]


def _lloyd(points, weights, k, seed, iters, trials):
    """One k-means run: Lloyd iterations from a k-means++ start.  Returns
    (centres, cluster weights, weighted inertia).

    ``trials``: candidate centres drawn at each k-means++ step, the one that
    lowers the weighted inertia most is kept (greedy k-means++, as
    scikit-learn; default ``2 + log k``); 1 is the plain k-means++ draw (the
    decoder's segments use it).  Above 2e8 point-centre pairs the start is a
    weighted sample without replacement.
    """
    pts = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = w / w.sum()
    trials = 2 + int(np.log(k)) if trials is None else int(trials)
    if k * len(pts) <= 2e8:
        centres = _kmeans_plus_plus(pts, w, k, rng, trials)
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
    d, lab = cKDTree(centres, compact_nodes=False).query(pts)
    mass = np.bincount(lab, weights=w, minlength=k)
    keep = mass > 0
    return centres[keep], mass[keep], float(w @ d ** 2)


def _kmeans_plus_plus(pts, w, k, rng, trials):
    """k-means++ start (weighted by ``w``); greedy with ``trials`` > 1."""
    p = w / w.sum()
    centres = [pts[rng.choice(len(pts), p=p)]]
    d2 = ((pts - centres[0]) ** 2).sum(1)
    sq = (pts ** 2).sum(1) if trials > 1 else None
    for _ in range(1, k):
        q = w * d2
        if trials == 1:
            c = pts[rng.choice(len(pts), p=q / q.sum())]
            d2 = np.minimum(d2, ((pts - c) ** 2).sum(1))
        else:
            cand = pts[rng.choice(len(pts), size=trials, p=q / q.sum())]
            dc = np.maximum(sq[:, None] - 2.0 * pts @ cand.T + (cand ** 2).sum(1)[None], 0.0)
            new = np.minimum(d2[:, None], dc)
            best = int(np.argmin(w @ new))
            c, d2 = cand[best], new[:, best]
        centres.append(c)
    return np.array(centres)


def cell_masses(centres, points, weights):
    """Mass of the Voronoi cell of every centre (sum of the weights of the
    points closest to it)."""
    _, cell = cKDTree(np.asarray(centres, np.float64), compact_nodes=False).query(points)
    return np.bincount(cell, weights=weights, minlength=len(centres))


# ------------------------------------------------------------------ atoms
def fit_atoms(positions, masses, apix, n_atoms=None, sigma=None, seed=0):
    """Pseudo-atoms from atoms: (positions (N, 3), masses (N,), sigma).

    Atoms are kept as they are when there are no more of them than asked for
    (e.g. a pseudo-atom model: atom indices keep their meaning) or when
    ``n_atoms`` is 0 / 'all'; otherwise mass-weighted k-means to ``n_atoms``
    (default: sized by molecular volume).
    """
    n_atoms = parse_n_atoms(n_atoms)
    pos = np.asarray(positions, dtype=np.float64)
    masses = np.ones(len(pos)) if masses is None else np.asarray(masses, dtype=np.float64)
    target = default_n_atoms(molecular_volume(pos), apix) if n_atoms is None else n_atoms
    if target == 0 or len(pos) <= target:
        out_pos, out_amp = pos, masses
    else:
        out_pos, out_amp = weighted_kmeans(pos, masses, target, seed, n_init=KMEANS_RESTARTS)
    sig = default_sigma(out_pos, apix) if sigma is None else float(sigma)
    return out_pos, out_amp, sig


# ------------------------------------------------------------------ maps
def map_threshold(volume):
    """Default density threshold: 10 % of the 99.9th percentile of the
    positive densities.  ValueError when the map has none."""
    vol = np.asarray(volume)
    pos_vals = vol[vol > 0]
    if pos_vals.size == 0:
        raise ValueError('The map has no positive density (inverted contrast?).')
    return float(0.1 * np.percentile(pos_vals, 99.9))


def map_samples(volume, apix, threshold=None):
    """Voxels above ``threshold`` as point masses: (points (M, 3) A as
    (x, y, z) about voxel D//2, masses density * apix^3, threshold)."""
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError('A 3D map is needed, got shape %s' % (vol.shape,))
    if not np.all(np.isfinite(vol)):
        raise ValueError('The map contains NaN or Inf values')
    if threshold is None:
        threshold = map_threshold(vol)
    idx = np.argwhere(vol > threshold)
    w = vol[tuple(idx.T)] * float(apix) ** 3
    centre = np.array(vol.shape) // 2
    pts = (idx - centre)[:, ::-1] * float(apix)  # [iz, iy, ix] -> (x, y, z) A
    return pts, w, float(threshold)


def fit_map(volume, map_apix, apix=None, n_atoms=None, sigma=None, threshold=None, seed=0,
            max_voxels=None, centres=None):
    """Pseudo-atoms fitted to a density map (D, D, D) [iz, iy, ix]:
    (positions (N, 3), masses (N,), sigma).

    ``apix``: the particles' pixel size (sets the default size and the
    minimum sigma; default ``map_apix``).  ``max_voxels``: k-means on at most
    that many voxels drawn by mass (large maps).  ``centres``: positions
    found by another quantiser (e.g. optimal transport) instead of k-means;
    masses and sigma then follow the same rule.
    """
    apix = float(map_apix if apix is None else apix)
    n_atoms = parse_n_atoms(n_atoms)
    pts, w, threshold = map_samples(volume, map_apix, threshold)
    volume_a3 = len(pts) * float(map_apix) ** 3
    target = default_n_atoms(volume_a3, apix) if not n_atoms else n_atoms
    need = n_atoms if n_atoms else 4
    if len(pts) < need:
        raise ValueError('The map has only %d voxels above the threshold %.3g: fewer than '
                         'the %d pseudo-atoms needed (give a lower threshold or fewer '
                         'pseudo-atoms).' % (len(pts), threshold, need))
    target = min(target, len(pts))
    if centres is None:
        kp, kw = pts, w
        if max_voxels and len(pts) > max_voxels:
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(pts), int(max_voxels), replace=False, p=w / w.sum())
            kp, kw = pts[pick], np.full(int(max_voxels), w.sum() / max_voxels)
        centres, _ = weighted_kmeans(kp, kw, target, seed, n_init=KMEANS_RESTARTS)
    centres = np.asarray(centres, dtype=np.float64)
    masses = cell_masses(centres, pts, w)
    keep = masses > 0
    centres, masses = centres[keep], masses[keep]
    sig = default_sigma(centres, apix) if sigma is None else float(sigma)
    return centres, masses, sig
