"""Half-set validation: how much of a landscape two independent models agree on.

Two models are trained with the same settings on two random halves of the
particles (``split_halves``); both infer the latents of *all* particles.
Their latent spaces are arbitrary up to an invertible map, so the second is
mapped onto the first (``fit_alignment``) on the particles of the first half
and scored on the held-out particles of the second half.  Then:

* ``latent_agreement`` -- per-particle agreement of the aligned latents:
  Pearson and Spearman (rank) correlation per latent dimension and along the
  first principal axis (PC1) of the first model's latents, the relative
  per-particle error ``|z1 - A(z2)| / rms spread of z1`` and the canonical
  correlations (invariant to any linear map, a check on the alignment);
* ``fsc_table`` -- Fourier shell correlation between the maps the two models
  decode at matched latents (a point z of the first space and ``A^-1(z)`` of
  the second), with the resolutions at FSC 0.143 and 0.5
  (``core.metrics.fsc``; the maps are multiplied by a soft spherical mask);
* ``compare_states`` / ``compare_maps`` -- the landscape of each half-set
  model's latents (all particles; the second aligned into the first space)
  compared: matched states (Hungarian assignment on centre distances), the
  differences of their positions, populations and free energies, and the
  difference of the two free-energy maps on one grid.  ``half_set_sigma``
  turns a difference into an error estimate.

Error model: two estimates x1, x2 of one quantity from independent halves,
each with standard deviation sigma, differ by d with E[d^2] = 2 sigma^2, so
one half-set estimate has sigma ~ |d| / sqrt(2) (what ``half_set_sigma``
returns; with many quantities, the root-mean-square of d / sqrt(2)).  This is
the half-set error, an upper bound for a model trained on all particles.

numpy / scipy only (figures: ``core.validation_plots``).
"""
from dataclasses import dataclass

import numpy as np

from . import metrics
from .settings import AlignMethod

__all__ = ['split_halves', 'Alignment', 'fit_alignment', 'latent_agreement', 'fsc_table',
           'match_states', 'compare_states', 'compare_maps', 'half_set_sigma',
           'FSC_THRESHOLDS']

#: FSC thresholds reported (gold-standard half maps: 0.143; half-set models: 0.5 too)
FSC_THRESHOLDS = (0.143, 0.5)


# ------------------------------------------------------------------- split --

def split_halves(n, seed=0):
    """Two disjoint random halves of ``range(n)`` (sorted int64 arrays; the
    first gets the extra particle when n is odd).  Same seed, same split."""
    n = int(n)
    if n < 4:
        raise ValueError('Half-set validation needs at least 4 particles (got %d).' % n)
    perm = np.random.default_rng(int(seed)).permutation(n)
    h = (n + 1) // 2
    return np.sort(perm[:h]).astype(np.int64), np.sort(perm[h:]).astype(np.int64)


# --------------------------------------------------------------- alignment --

@dataclass
class Alignment:
    """Affine map ``y = x @ matrix + offset`` from the second latent space
    onto the first (``matrix`` (K2, K1)); ``method`` 'procrustes' or 'linear';
    ``scale`` the isotropic scale of a Procrustes map (None otherwise)."""
    method: str
    matrix: np.ndarray
    offset: np.ndarray
    scale: float = None

    def apply(self, x):
        """Points of the second space, in the first."""
        return np.asarray(x, np.float64) @ self.matrix + self.offset

    def inverse(self, y):
        """Points of the first space, in the second (least squares when the
        map is not square)."""
        y = np.asarray(y, np.float64) - self.offset
        return np.linalg.lstsq(self.matrix.T, y.T, rcond=None)[0].T

    def as_dict(self):
        return dict(method=self.method, matrix=self.matrix.tolist(),
                    offset=self.offset.tolist(), scale=self.scale)


def fit_alignment(source, target, method=AlignMethod.PROCRUSTES):
    """The map of ``source`` (N, K2) onto ``target`` (N, K1), rows the same
    particles.

    'procrustes': orthogonal Procrustes (the rotation or reflection that
    minimises the squared error) with the scale that makes the two clouds
    equally spread (rms distance to the mean) and the shift of the means;
    needs K1 == K2.  'linear': affine least squares (any linear map; like
    every regression it shrinks the mapped cloud towards the mean where the
    two spaces disagree).
    """
    method = AlignMethod.parse(method).value
    x = np.asarray(source, np.float64)
    y = np.asarray(target, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError('Alignment needs two (N, K) arrays of the same particles; got %s and '
                         '%s.' % (x.shape, y.shape))
    if len(x) <= x.shape[1]:
        raise ValueError('Alignment needs more particles (%d) than latent dimensions (%d).'
                         % (len(x), x.shape[1]))
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    if method == 'procrustes':
        if x.shape[1] != y.shape[1]:
            raise ValueError("A Procrustes alignment needs latent spaces of one dimension "
                             "(got %d and %d): use --align linear." % (x.shape[1], y.shape[1]))
        u, _, vt = np.linalg.svd(xc.T @ yc)
        rot = u @ vt
        ss = float((xc ** 2).sum())
        # the scale that matches the spreads (the least-squares scale shrinks the
        # mapped cloud towards its mean as much as the two spaces disagree)
        scale = float(np.sqrt((yc ** 2).sum() / ss)) if ss > 0 else 1.0
        matrix = scale * rot
        return Alignment('procrustes', matrix, my - mx @ matrix, scale)
    matrix = np.linalg.lstsq(xc, yc, rcond=None)[0]
    return Alignment('linear', matrix, my - mx @ matrix, None)


# --------------------------------------------------------- latent agreement --

def _pearson(a, b):
    a = a - a.mean()
    b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else 0.0


def _spearman(a, b):
    from scipy.stats import rankdata
    return _pearson(rankdata(a), rankdata(b))


def latent_agreement(z1, z2_aligned):
    """Agreement of the latents of the same particles from the first model
    (``z1`` (N, K)) and the second, aligned into the first space.

    Returns a dict: ``pearson`` / ``spearman`` per latent dimension,
    ``pc1_pearson`` / ``pc1_spearman`` along the first principal axis of
    ``z1`` (both projected on that axis; the sign is kept, so a flipped
    axis shows as a negative value), ``relative_error`` (N,) per particle and
    its ``median`` / ``p90``, ``canonical_correlations`` (alignment-free).
    """
    from .landscape.compare import canonical_correlations
    a = np.asarray(z1, np.float64)
    b = np.asarray(z2_aligned, np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) < 3:
        raise ValueError('latent_agreement needs two (N, K) arrays of one shape, N >= 3; got '
                         '%s and %s.' % (a.shape, b.shape))
    mean = a.mean(0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    pc1 = vt[0]
    p1, p2 = (a - mean) @ pc1, (b - mean) @ pc1
    spread = np.sqrt(((a - mean) ** 2).sum(1).mean())
    err = np.linalg.norm(a - b, axis=1) / (spread if spread > 0 else 1.0)
    return dict(
        pearson=[_pearson(a[:, d], b[:, d]) for d in range(a.shape[1])],
        spearman=[_spearman(a[:, d], b[:, d]) for d in range(a.shape[1])],
        pc1_pearson=_pearson(p1, p2), pc1_spearman=_spearman(p1, p2),
        pc1_axis=pc1.tolist(),
        relative_error=err, relative_error_median=float(np.median(err)),
        relative_error_p90=float(np.percentile(err, 90)),
        canonical_correlations=canonical_correlations(a, b).tolist(),
        n_particles=int(len(a)))


# --------------------------------------------------------------------- FSC --

def fsc_table(maps1, maps2, apix, mask_width=3.0, thresholds=FSC_THRESHOLDS):
    """FSC between paired maps (M, D, D, D) of the two models.

    Both are multiplied by a soft spherical mask (radius ``D/2 -
    mask_width``, raised-cosine edge of ``mask_width`` px; 0: no mask).
    Returns dict(freqs (F,) 1/A, curves (M, F), resolution {threshold:
    (M,) A}, thresholds, mask_width).
    """
    m1 = np.asarray(maps1, np.float64)
    m2 = np.asarray(maps2, np.float64)
    if m1.shape != m2.shape or m1.ndim != 4:
        raise ValueError('fsc_table needs two stacks of maps (M, D, D, D) of one shape; got %s '
                         'and %s.' % (m1.shape, m2.shape))
    mask = metrics.soft_spherical_mask(m1.shape[1], width=mask_width) if mask_width else 1.0
    freqs, curves = None, []
    for a, b in zip(m1, m2):
        freqs, c = metrics.fsc(a * mask, b * mask, apix)
        curves.append(c)
    curves = np.array(curves).reshape(len(m1), -1)
    res = {float(t): np.array([metrics.resolution_at(freqs, c, t) for c in curves])
           for t in thresholds}
    return dict(freqs=freqs, curves=curves, resolution=res, thresholds=list(thresholds),
                mask_width=float(mask_width))


# --------------------------------------------------------------- landscapes --

def match_states(centres1, centres2):
    """Pairs (i, j) of states of two landscapes, matched by the Hungarian
    assignment on the distances of their centres (same space); the states of
    the larger landscape left over are unmatched."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    c1 = np.atleast_2d(np.asarray(centres1, np.float64))
    c2 = np.atleast_2d(np.asarray(centres2, np.float64))
    rows, cols = linear_sum_assignment(cdist(c1, c2))
    return [(int(i), int(j)) for i, j in sorted(zip(rows, cols))]


def half_set_sigma(differences):
    """Standard deviation of one half-set estimate from the differences d of
    paired estimates: sqrt(mean(d^2) / 2) (|d| / sqrt 2 for one value)."""
    d = np.asarray(differences, np.float64)
    d = d[np.isfinite(d)]
    return float(np.sqrt(np.mean(d ** 2) / 2.0)) if len(d) else float('nan')


def compare_states(centres1, centres2, populations1, populations2, dG1=None, dG2=None,
                   labels1=None, labels2=None, scale=None):
    """Matched states of the two landscapes and their differences.

    ``centres`` (S, K) in the first latent space, ``populations`` (S,),
    ``dG`` (S,) free energy at each centre (kT), ``labels`` (N,) the state of
    every particle (for the fraction of particles whose states match).
    ``scale``: the latent spread the distances are also given relative to.
    Returns dict(pairs, per-state rows, sigma of the position / population /
    dG of one half-set estimate, same_state_fraction, n_states1/2).
    """
    c1, c2 = np.asarray(centres1, np.float64), np.asarray(centres2, np.float64)
    p1, p2 = np.asarray(populations1, np.float64), np.asarray(populations2, np.float64)
    pairs = match_states(c1, c2)
    rows = []
    for i, j in pairs:
        d = float(np.linalg.norm(c1[i] - c2[j]))
        row = dict(state1=i, state2=j, distance=d,
                   relative_distance=(d / scale) if scale else None,
                   population1=float(p1[i]), population2=float(p2[j]),
                   population_difference=float(p2[j] - p1[i]))
        if dG1 is not None and dG2 is not None:
            g1, g2 = float(dG1[i]), float(dG2[j])
            row.update(dG1=g1, dG2=g2, dG_difference=g2 - g1)
        rows.append(row)
    out = dict(n_states1=int(len(c1)), n_states2=int(len(c2)), pairs=pairs, states=rows,
               unmatched1=sorted(set(range(len(c1))) - {i for i, _ in pairs}),
               unmatched2=sorted(set(range(len(c2))) - {j for _, j in pairs}))
    # a position has K coordinates: sigma per coordinate from the distances
    k = c1.shape[1]
    out['position_sigma'] = half_set_sigma([r['distance'] / np.sqrt(k) for r in rows])
    out['population_sigma'] = half_set_sigma([r['population_difference'] for r in rows])
    if dG1 is not None and dG2 is not None:
        out['dG_sigma'] = half_set_sigma([r['dG_difference'] for r in rows])
    if labels1 is not None and labels2 is not None:
        l1, l2 = np.asarray(labels1), np.asarray(labels2)
        to1 = {j: i for i, j in pairs}
        mapped = np.array([to1.get(int(j), -1) for j in l2])
        out['same_state_fraction'] = float(np.mean(mapped == l1))
    return out


def compare_maps(y1, y2, max_dG=3.0, bins=None, bandwidth='cv', seed=0):
    """Free-energy maps (kT) of two sets of 1D/2D coordinates of the same
    particles on one grid and one fixed kernel width (those of ``y1``; a
    fixed kernel, so that a difference is a difference of the particles,
    not of two adaptive widths), and their difference where both are below
    ``max_dG``.

    Returns (fe1, fe2, dict(rms_difference, max_abs_difference,
    n_cells, max_dG, sigma)); ``sigma`` is ``half_set_sigma`` of the
    differences.
    """
    from .landscape.density import free_energy_map
    y1 = np.asarray(y1, np.float64)
    y2 = np.asarray(y2, np.float64)
    fe1 = free_energy_map(y1, bins=bins, bandwidth=bandwidth, n_boot=0, seed=seed,
                          kernel='fixed')
    extent = [(float(e[0]), float(e[-1])) for e in fe1.edges]
    fe2 = free_energy_map(y2, bins=[len(c) for c in fe1.centres], bandwidth=fe1.bandwidth,
                          extent=extent, n_boot=0, seed=seed, kernel='fixed')
    ok = np.isfinite(fe1.dG) & np.isfinite(fe2.dG) & (fe1.dG <= max_dG) & (fe2.dG <= max_dG)
    diff = (fe2.dG - fe1.dG)[ok]
    info = dict(n_cells=int(ok.sum()), max_dG=float(max_dG),
                rms_difference=float(np.sqrt(np.mean(diff ** 2))) if len(diff) else None,
                max_abs_difference=float(np.abs(diff).max()) if len(diff) else None,
                sigma=half_set_sigma(diff) if len(diff) else None)
    return fe1, fe2, info
