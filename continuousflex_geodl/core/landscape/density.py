"""Particle density and free energy over embeddings or the latent space.

Convention (stated once, used everywhere):

    dG(x) = -kT ln( p(x) / p_max )

``p`` is a Gaussian kernel density estimate (KDE) of the particles, ``p_max``
its largest value, so dG >= 0 and the most populated point has dG = 0.  Values
are in units of kT by default (dimensionless, temperature-free); ``units``
'kcal/mol' or 'kJ/mol' multiply by kB*T at ``temperature`` K (default
298.15 K, the temperature of the sample before vitrification; the populations
of a plunge-frozen sample are at best those of that temperature).  The
dG of a particle population is an apparent free energy: it assumes the
particles are a Boltzmann sample and that the embedding keeps densities
comparable.

Uncertainty: a bootstrap over particles (Poisson(1) weights per particle,
i.e. the large-sample resampling with replacement); ``dG_std`` is the
standard deviation of dG over the replicates, each normalised by its own
maximum.

* ``free_energy_map(y, ...)`` -- 1D/2D embeddings: linear binning of *all*
  particles on a grid, Gaussian smoothing (a binned KDE: O(N); the
  particles' cells are kept for the bootstrap, 64 bytes each) of
  cross-validated width (``map_bandwidth``), made
  adaptive by default (``local_width_factors``: Abramson's square-root law,
  applied per class of equal width), bootstrap error.  ``binned_density`` is
  the same density for given (bootstrap) weights; the default states are the
  basins of this map (``basins.map_basins``, ``states.fit_states``).
  ``FreeEnergyMap.at(points)`` gives each particle's dG by interpolation.
* ``LatentKDE`` / ``latent_free_energy(z, points)`` -- directly in latent
  space (any dimension): whitened Gaussian KDE fitted on a subsample
  (``max_fit``), width by likelihood cross-validation, evaluated exactly at
  the given points.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from ..settings import LandscapeSettings, MapKernel

KB_KCAL_PER_MOL_K = 0.0019872043  # Boltzmann constant, kcal/(mol K)
KB_KJ_PER_MOL_K = 0.0083144626    # kJ/(mol K)
DEFAULT_TEMPERATURE = LandscapeSettings.temperature  # K
#: adaptive kernel: width h * (p / g)^-ADAPTIVE_ALPHA (Abramson 1982: 1/2)
ADAPTIVE_ALPHA = 0.5
#: adaptive kernel: log2 of the width factor, rounded to steps of this (one
#: Gaussian filter per step) and kept within +-FACTOR_LIMIT (1/4 to 4 times h)
FACTOR_STEP = 0.25
FACTOR_LIMIT = 2.0


def energy_scale(units='kT', temperature=DEFAULT_TEMPERATURE):
    """Value of 1 kT in ``units`` ('kT', 'kcal/mol' or 'kJ/mol') at ``temperature`` K."""
    u = str(units).strip().lower().replace(' ', '')
    if u in ('kt', 'k_bt', 'kbt'):
        return 1.0
    if temperature is None or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError('A positive temperature in kelvin is needed to express free '
                         'energies in %s; got %r.' % (units, temperature))
    if u in ('kcal/mol', 'kcal'):
        return KB_KCAL_PER_MOL_K * float(temperature)
    if u in ('kj/mol', 'kj'):
        return KB_KJ_PER_MOL_K * float(temperature)
    raise ValueError("Unknown free-energy unit '%s': use kT, kcal/mol or kJ/mol." % units)


def bandwidth_factor(n, d, rule='scott'):
    """Kernel width in units of the data standard deviation (Scott / Silverman)."""
    n = max(int(n), 2)
    if rule == 'scott':
        return n ** (-1.0 / (d + 4))
    if rule == 'silverman':
        return (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    raise ValueError("Unknown bandwidth rule '%s': use 'scott', 'silverman' or a number."
                     % rule)


def _check_points(y, what='embedding'):
    y = np.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) < 2:
        raise ValueError('The %s must be an (N, D) array with N >= 2 particles; got shape '
                         '%s.' % (what, y.shape))
    if not np.isfinite(y).all():
        bad = int(np.nonzero(~np.isfinite(y).all(1))[0][0])
        raise ValueError('The %s of particle %d is NaN or infinite: remove it (or fix the '
                         'latent file) before the landscape analysis.' % (what, bad))
    return y


def _neg_log_ratio(p):
    """-ln(p / max p), NaN where p == 0 (no particle within reach of the kernel)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        g = -np.log(p / p.max())
    g[~(p > 0)] = np.nan
    return g


# ---------------------------------------------------------------- 1D/2D maps

@dataclass
class FreeEnergyMap:
    """dG on a regular grid over a 1D or 2D embedding (values in kT).

    ``centres[a]`` are the grid coordinates along axis a; ``dG`` and
    ``dG_std`` have shape ``(n0,)`` in 1D and ``(n1, n0)`` in 2D, i.e.
    ``dG[j, i]`` is at ``(centres[0][i], centres[1][j])`` (row = y, as
    matplotlib's ``pcolormesh(x, y, dG)``).  ``density`` is p per unit
    embedding area (integrates to the fraction of particles inside the grid).
    NaN marks cells with no particle within reach of the kernel.
    """
    centres: list
    dG: np.ndarray
    dG_std: np.ndarray
    density: np.ndarray
    bandwidth: np.ndarray
    n_particles: int
    n_boot: int = 0
    extra: dict = field(default_factory=dict)
    width_factor: np.ndarray = None

    @property
    def ndim(self):
        return len(self.centres)

    @property
    def edges(self):
        out = []
        for c in self.centres:
            w = c[1] - c[0]
            out.append(np.concatenate([c - 0.5 * w, [c[-1] + 0.5 * w]]))
        return out

    def at(self, points, values=None):
        """Linearly interpolated dG (or ``values`` on the grid) at (M, D) points;
        NaN outside the grid or where the grid is NaN."""
        from scipy.interpolate import RegularGridInterpolator
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[:, None] if self.ndim == 1 else pts[None]
        vals = self.dG if values is None else values
        if self.ndim == 2:
            vals = vals.T  # interpolator wants [ix, iy]
        interp = RegularGridInterpolator(tuple(self.centres), vals, bounds_error=False,
                                         fill_value=np.nan)
        out = np.empty(len(pts))
        for s in range(0, len(pts), 1 << 18):
            out[s:s + (1 << 18)] = interp(pts[s:s + (1 << 18), :self.ndim])
        return out

    def save(self, path, units='kT', temperature=DEFAULT_TEMPERATURE, **arrays):
        """npz: ``dG``/``dG_std`` in ``units``, ``dG_kT``, ``dG_std_kT``,
        ``density``, ``x`` (and ``y`` in 2D) grid centres, ``bandwidth``,
        ``units``, ``temperature_K``, ``kT`` (1 kT in units), ``n_particles``,
        ``n_boot``, ``width_factor`` (adaptive kernel: the width factor of
        each cell), plus any extra per-particle ``arrays`` given."""
        from ..fileio import atomic_write
        scale = energy_scale(units, temperature)
        data = dict(dG=self.dG * scale, dG_std=self.dG_std * scale, dG_kT=self.dG,
                    dG_std_kT=self.dG_std, density=self.density, x=self.centres[0],
                    bandwidth=self.bandwidth, units=np.array(str(units)),
                    temperature_K=np.array(float(temperature if temperature else np.nan)),
                    kT=np.array(scale), n_particles=np.array(self.n_particles),
                    n_boot=np.array(self.n_boot))
        if self.ndim == 2:
            data['y'] = self.centres[1]
        if self.width_factor is not None:
            data['width_factor'] = self.width_factor
        data.update(arrays)
        with atomic_write(path, 'wb') as fh:
            np.savez(fh, **data)
        return path


def load_free_energy(path):
    """Read a ``free_energy.npz`` back into a FreeEnergyMap (values in kT)."""
    if not os.path.exists(path):
        raise FileNotFoundError("Free-energy file not found: '%s'" % path)
    with np.load(path) as f:
        centres = [f['x']] + ([f['y']] if 'y' in f.files else [])
        extra = {k: f[k] for k in f.files if k not in (
            'dG', 'dG_std', 'dG_kT', 'dG_std_kT', 'density', 'x', 'y', 'bandwidth',
            'n_particles', 'n_boot', 'width_factor')}
        return FreeEnergyMap(centres, f['dG_kT'], f['dG_std_kT'], f['density'],
                             f['bandwidth'], int(f['n_particles']), int(f['n_boot']), extra,
                             f['width_factor'] if 'width_factor' in f.files else None)


def _linear_bin_indices(y, lo, width, shape):
    """Per particle the flat indices and weights of its 2^D neighbouring cells."""
    n, d = y.shape
    u = (y - lo) / width - 0.5
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    idx = np.zeros((n, 1), np.int64)
    wts = np.ones((n, 1))
    valid = np.ones((n, 1), bool)
    stride = 1
    for a in reversed(range(d)):  # C order: last axis fastest
        ia = np.stack([i0[:, a], i0[:, a] + 1], 1)  # (n, 2)
        wa = np.stack([1.0 - f[:, a], f[:, a]], 1)
        va = (ia >= 0) & (ia < shape[a])
        idx = (idx[:, :, None] + ia[:, None, :] * stride).reshape(n, -1)
        wts = (wts[:, :, None] * wa[:, None, :]).reshape(n, -1)
        valid = (valid[:, :, None] & va[:, None, :]).reshape(n, -1)
        stride *= shape[a]
    wts = np.where(valid, wts, 0.0)
    idx = np.where(valid, idx, 0)
    return idx, wts


def map_bandwidth(y, rule='cv', weights=None, seed=0):
    """Kernel width per axis (D,) of the map of a 1D/2D embedding ``y``.

    ``rule``: 'cv' (default) -- likelihood cross-validation of a KDE on the
    axes scaled to unit variance (``LatentKDE``: the factor maximising the
    leave-one-out likelihood of up to 1,000 particles, between 0.05 and 1.5x
    Scott's), times each axis' standard deviation; 'scott' / 'silverman';
    a number (all axes) or a sequence (one per axis), in embedding units.
    Why 'cv' by default: Scott's rule is optimal for one Gaussian and
    over-smooths several basins, so a minor state between two major ones
    is filled in (the map then shows fewer basins than the data hold);
    the cross-validated width follows the data, and the noise it lets
    through is what the states' significance test (``basins.map_basins``)
    is for.  The states use the same width, so the map and the state list
    agree.
    """
    y = _check_points(y)
    n, d = y.shape
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    neff = n if w is None else w.sum() ** 2 / (w ** 2).sum()
    sd = y.std(0) if n < 200000 else y[np.random.default_rng(seed).choice(
        n, 200000, replace=False)].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    if isinstance(rule, str):
        if rule == 'cv':
            kde = LatentKDE(y / sd, bandwidth='cv', max_fit=5000, seed=seed, weights=w)
            return kde.h * sd
        return sd * bandwidth_factor(neff, d, rule)
    h = np.broadcast_to(np.asarray(rule, dtype=np.float64), (d,)).copy()
    if np.any(h <= 0):
        raise ValueError('The KDE bandwidth must be positive; got %s' % (rule,))
    return h


def map_grid(y, h, bins=None, extent=None):
    """(lo (D,), width (D,), bins [D]) of the map grid (see free_energy_map)."""
    n, d = y.shape
    if extent is None:
        q = np.percentile(y if n <= 200000 else y[::max(1, n // 200000)],
                          [0.05, 99.95], axis=0)
        extent = [(q[0, a] - 3 * h[a], q[1, a] + 3 * h[a]) for a in range(d)]
    extent = [tuple(map(float, e)) for e in extent]
    if len(extent) != d or any(hi <= lo for lo, hi in extent):
        raise ValueError('extent must give (low, high) with low < high for each of the %d '
                         'axes; got %s' % (d, extent))
    lo = np.array([e[0] for e in extent])
    span = np.array([e[1] - e[0] for e in extent])
    if bins is None:
        bins = [int(np.clip(np.ceil(span[a] / (h[a] / 3.0)), 64, 400)) for a in range(d)]
    bins = [int(b) for b in np.broadcast_to(np.asarray(bins, dtype=int), (d,))]
    return lo, span / np.array(bins), bins


def free_energy_map(y, bins=None, bandwidth='cv', extent=None, n_boot=50, seed=0,
                    weights=None, kernel=LandscapeSettings.kernel, chunk=1 << 20):
    """Binned Gaussian KDE and dG (kT) of a 1D or 2D embedding of all particles.

    ``y`` (N, D) with D = 1 or 2.  ``bandwidth``: 'cv' (default; see
    ``map_bandwidth``), 'scott', 'silverman', a
    number (kernel width in embedding units, all axes) or a sequence (one per
    axis).  ``kernel``: 'adaptive' (default) -- each particle's width is
    that times its cell's factor (``local_width_factors``); 'fixed' -- the
    same width everywhere.  ``bins``: cells per axis (default: about 3 per
    kernel width, 64-400).  ``extent``: ((lo, hi), ...) per axis; default
    the 0.05-99.95 percentile range padded by 3 kernel widths.  ``n_boot``
    bootstrap replicates (0: no error estimate; the width factors are those
    of the data, kept in every replicate).  ``weights`` optional
    per-particle weights.  Memory and time are O(N) per replicate (N = 10^6
    is fine).
    """
    y = _check_points(y)
    n, d = y.shape
    if d not in (1, 2):
        raise ValueError('free_energy_map works on 1D or 2D embeddings (got %d dimensions); '
                         'use an embedding (PCA/UMAP) or latent_free_energy for the latent '
                         'space.' % d)
    w_in = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w_in is not None and w_in.shape != (n,):
        raise ValueError('weights must have one value per particle (%d); got %s'
                         % (n, w_in.shape))
    adaptive = MapKernel.parse(kernel) is MapKernel.ADAPTIVE
    h = map_bandwidth(y, bandwidth, w_in, seed)
    lo, width, bins = map_grid(y, h, bins, extent)
    factors = local_width_factors(y, h, lo, width, bins, w_in, chunk) if adaptive else None
    binned = _class_bins(y, lo, width, bins, factors, chunk)  # once, for every replicate
    dens = _smoothed_density(binned, w_in, h, width, bins, chunk)
    dG = _neg_log_ratio(dens)
    dG_std = np.full_like(dG, np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        reps = np.empty((int(n_boot),) + dG.shape)
        for b in range(int(n_boot)):
            pw = rng.poisson(1.0, n).astype(np.float64)
            reps[b] = _neg_log_ratio(_smoothed_density(
                binned, pw if w_in is None else pw * w_in, h, width, bins, chunk))
        ok = np.isfinite(reps).all(0) & np.isfinite(dG)
        dG_std[ok] = reps[:, ok].std(0, ddof=1) if n_boot > 1 else 0.0
    centres = [lo[a] + (np.arange(bins[a]) + 0.5) * width[a] for a in range(d)]
    wf = None if factors is None else (2.0 ** factors).reshape(dG.shape)
    return FreeEnergyMap(centres, dG, dG_std, dens, h, n, int(n_boot), width_factor=wf)


def cell_index(y, lo, width, bins):
    """Flat index of the grid cell holding each point (clipped to the grid;
    [iy, ix] C order in 2D, as the map's arrays)."""
    y = np.asarray(y, np.float64)
    d = y.shape[1]
    i = [np.clip(np.floor((y[:, a] - lo[a]) / width[a]).astype(np.int64), 0, bins[a] - 1)
         for a in range(d)]
    return i[0] if d == 1 else i[1] * int(bins[0]) + i[0]


def cell_centres(lo, width, bins):
    """(n_cells, D) centres in the flat order of ``cell_index``."""
    c = [lo[a] + (np.arange(bins[a]) + 0.5) * width[a] for a in range(len(bins))]
    if len(bins) == 1:
        return c[0][:, None]
    gx, gy = np.meshgrid(c[0], c[1])  # [iy, ix]
    return np.stack([gx.ravel(), gy.ravel()], 1)


def local_width_factors(y, h, lo, width, bins, weights=None, chunk=1 << 20):
    """log2 of the adaptive kernel's width factor in each grid cell (flat,
    the order of ``cell_index``).

    Abramson (1982, Ann. Stat. 10:1217): a particle's kernel has width
    ``h * (p(y_i) / g)^-1/2``, with ``p`` the fixed-width density (the pilot,
    ``binned_density`` with width ``h``) at the particle's cell and ``g`` the
    geometric mean of p over the particles.  This halves the bias of a
    fixed kernel at density peaks: the width follows the local scale of the
    density, narrow in a sharp basin and wide in sparse regions.  The log2
    factors are rounded to steps of ``FACTOR_STEP`` (one Gaussian filter per
    step) and kept within +-``FACTOR_LIMIT``.  A particle's factor is that
    of the cell holding it.
    """
    y = np.asarray(y, np.float64)
    pilot = binned_density(y, h, lo, width, bins, weights, None, chunk).ravel()
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    lp = np.log(np.maximum(pilot, 1e-300))
    ok = w > 0
    log_g = np.average(lp[cell_index(y[ok], lo, width, bins)], weights=w[ok])
    l2 = -ADAPTIVE_ALPHA * (lp - log_g) / np.log(2.0)
    l2 = np.round(l2 / FACTOR_STEP) * FACTOR_STEP
    return np.clip(l2, -FACTOR_LIMIT, FACTOR_LIMIT)


def binned_density(y, h, lo, width, bins, weights=None, factors=None, chunk=1 << 20,
                   return_counts=False):
    """The map's density (per unit area; [iy, ix] in 2D) of particles ``y``
    (N, D) with optional ``weights`` on the grid (lo, width, bins): linear
    binning, then a Gaussian filter of width ``h`` (D,) -- per class of
    particles of equal width ``h * 2^f`` when ``factors`` (the per-cell log2
    factors of ``local_width_factors``) are given.  ``free_energy_map``
    computes its density with this, so ``binned_density(y, fe.bandwidth,
    ..., factors=log2(fe.width_factor))`` equals ``fe.density``.
    ``return_counts``: also the (weighted) binned counts before smoothing,
    same layout as the density.
    """
    binned = _class_bins(y, lo, width, bins, factors, chunk)
    return _smoothed_density(binned, weights, h, width, bins, chunk, return_counts)


def _class_bins(y, lo, width, bins, factors=None, chunk=1 << 20):
    """(levels, [(flat index, weight) per chunk of particles]): each
    particle's 2^D linear-binning cells, offset by ``class * n_cells`` where
    ``class`` is the position of its cell's factor in ``levels`` (one class
    without ``factors``).  Computed once, reused by every bootstrap replicate."""
    y = np.asarray(y)
    shape_xy = tuple(int(b) for b in bins)
    ncell = int(np.prod(shape_xy))
    levels = np.zeros(1) if factors is None else np.unique(factors)
    out = []
    for s in range(0, len(y), chunk):
        yy = np.asarray(y[s:s + chunk], np.float64)
        idx, wts = _linear_bin_indices(yy, lo, width, shape_xy)
        if factors is not None:
            cls = np.searchsorted(levels, factors[cell_index(yy, lo, width, bins)])
            idx = idx + (cls * ncell)[:, None]
        out.append((idx, wts))
    return levels, out


def _smoothed_density(binned, weights, h, width, bins, chunk=1 << 20, return_counts=False):
    """``binned_density`` from ``_class_bins`` (``chunk`` as there)."""
    from scipy.ndimage import gaussian_filter
    levels, parts = binned
    shape_xy = tuple(int(b) for b in bins)
    ncell = int(np.prod(shape_xy))
    counts = np.zeros(len(levels) * ncell)
    for k, (idx, wts) in enumerate(parts):
        if weights is not None:
            wts = wts * np.asarray(weights[k * chunk:(k + 1) * chunk], np.float64)[:, None]
        counts += np.bincount(idx.ravel(), wts.ravel(), minlength=len(counts))
    counts = counts.reshape(len(levels), ncell)
    total = counts.sum() if weights is None else float(np.sum(weights))
    grid = np.zeros(shape_xy)
    for c, lev in enumerate(levels):
        if counts[c].any():
            grid += gaussian_filter(counts[c].reshape(shape_xy),
                                    sigma=np.asarray(h) * 2.0 ** lev / np.asarray(width),
                                    mode='constant', truncate=4.0)
    grid = np.clip(grid, 0.0, None) / (max(total, 1e-300) * float(np.prod(width)))
    two_d = len(shape_xy) == 2
    if return_counts:
        c = counts.sum(0).reshape(shape_xy)
        return (grid.T, c.T) if two_d else (grid, c)
    return grid.T if two_d else grid


# ------------------------------------------------------------- latent space

class LatentKDE:
    """Gaussian KDE in any dimension on whitened coordinates.

    The kernel is ``N(0, h^2 C)`` with C the covariance of the fit points.
    ``bandwidth``: 'cv' (default) -- h maximising the leave-one-out
    likelihood of up to 1,000 fit points (Scott's rule, optimal for one
    Gaussian, over-smooths multimodal and curved latent clouds); 'scott' /
    'silverman'; or a number (in units of the standard deviations).  In
    many dimensions (K >= 6) a KDE of a few thousand particles is coarse:
    prefer dG on a 2D embedding for numbers, and use this for ordering
    (density paths).  Fitted on at most ``max_fit``
    particles (a random subsample); evaluation is exact (chunked).
    """

    def __init__(self, z, bandwidth='cv', max_fit=5000, seed=0, weights=None):
        z = _check_points(z, 'latent array')
        rng = np.random.default_rng(seed)
        if len(z) > max_fit:
            pick = np.sort(rng.choice(len(z), int(max_fit), replace=False))
            z = z[pick]
            weights = None if weights is None else np.asarray(weights)[pick]
        self.points = np.asarray(z, dtype=np.float64)
        n, d = self.points.shape
        self.dim = d
        self.weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
        cov = np.atleast_2d(np.cov(self.points.T, aweights=self.weights))
        cov += 1e-12 * np.trace(cov) / d * np.eye(d) + 1e-300 * np.eye(d)
        chol = np.linalg.cholesky(cov)
        self.whiten = np.linalg.inv(chol).T  # x @ whiten has identity covariance
        self._logdet_half = np.log(np.diag(chol)).sum()
        if isinstance(bandwidth, str) and bandwidth == 'cv':
            self.cv_scores = self._cross_validate(rng)
            self._set_h(max(self.cv_scores, key=self.cv_scores.get))
        else:
            self._set_h(bandwidth_factor(self.weights.sum(), d, bandwidth)
                        if isinstance(bandwidth, str) else float(bandwidth))

    def _set_h(self, h):
        d = self.dim
        self.h = float(h)
        self.log_norm = (-self._logdet_half - d * np.log(self.h) - 0.5 * d * np.log(2 * np.pi))
        self._u = self.points @ self.whiten / self.h
        self._u2 = (self._u ** 2).sum(1)

    def _cross_validate(self, rng, n_query=1000, n_grid=15):
        """Leave-one-out mean log-likelihood of up to ``n_query`` fit points
        for widths from 0.05 to 1.5 x Scott's factor (log-spaced)."""
        n = len(self.points)
        scott = bandwidth_factor(self.weights.sum(), self.dim, 'scott')
        q = rng.choice(n, min(n_query, n), replace=False)
        u = self.points @ self.whiten
        d2 = ((u[q] ** 2).sum(1)[:, None] + (u ** 2).sum(1)[None]
              - 2.0 * u[q] @ u.T).clip(0.0)
        d2[np.arange(len(q)), q] = np.inf  # leave each query point out
        logw = np.log(np.maximum(self.weights, 1e-300))
        scores = {}
        for h in scott * np.geomspace(0.05, 1.5, n_grid):
            e = -0.5 * d2 / h ** 2 + logw[None]
            m = e.max(1, keepdims=True)
            lse = (m + np.log(np.exp(e - m).sum(1, keepdims=True)))[:, 0]
            scores[float(h)] = float(np.mean(lse - self.dim * np.log(h)))
        return scores

    def log_density(self, x, weights=None, chunk=None):
        """log p(x) per unit latent volume at (M, K) points."""
        x = _check_points(np.atleast_2d(x), 'latent array')
        if x.shape[1] != self.dim:
            raise ValueError('Points have %d dimensions but the KDE was fitted in %d.'
                             % (x.shape[1], self.dim))
        w = self.weights if weights is None else np.asarray(weights, np.float64)
        logw = np.log(np.maximum(w, 1e-300)) - np.log(w.sum())
        logw[w <= 0] = -np.inf
        chunk = chunk or max(1, (1 << 23) // len(self._u))
        out = np.empty(len(x))
        for s in range(0, len(x), chunk):
            v = x[s:s + chunk] @ self.whiten / self.h
            d2 = (v ** 2).sum(1)[:, None] + self._u2[None] - 2.0 * v @ self._u.T
            e = -0.5 * np.maximum(d2, 0.0) + logw[None]
            m = e.max(1, keepdims=True)
            out[s:s + chunk] = (m + np.log(np.exp(e - m).sum(1, keepdims=True)))[:, 0]
        return out + self.log_norm

    def bootstrap_log_density(self, x, n_boot=20, seed=0):
        """(n_boot, M) log p(x) for Poisson-bootstrap replicates of the fit points."""
        rng = np.random.default_rng(seed)
        return np.stack([self.log_density(x, self.weights * rng.poisson(1.0, len(self.weights)))
                         for _ in range(n_boot)])


def latent_free_energy(z, points=None, bandwidth='cv', max_fit=5000, n_boot=0, seed=0):
    """dG (kT) directly in latent space at ``points`` (default: the particles).

    Returns ``(dG, dG_std)``; dG is relative to the largest density among
    the evaluated points and the fit points (so dG >= 0 there); dG_std is
    NaN without bootstrap.  Cost: (#points) x min(N, max_fit) kernel terms.
    """
    kde = LatentKDE(z, bandwidth=bandwidth, max_fit=max_fit, seed=seed)
    pts = np.asarray(z if points is None else points, np.float64)
    lp = kde.log_density(pts)
    ref = max(lp.max(), kde.log_density(kde.points).max())
    dG = ref - lp
    std = np.full(len(dG), np.nan)
    if n_boot:
        reps = kde.bootstrap_log_density(pts, n_boot, seed + 1)
        reps = reps.max(1, keepdims=True) - reps
        std = reps.std(0, ddof=1) if n_boot > 1 else np.zeros(len(dG))
    return dG, std
