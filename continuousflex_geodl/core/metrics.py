"""Accuracy metrics for heterogeneity methods: maps, latents, populations, structures.

Everything here is plain numpy / scipy (no torch, no POT import, no KeOps), so
it is cheap to import and usable from any tool's outputs (ours or cryoDRGN's).

Conventions
-----------
* Volumes are ``(D, D, D)`` arrays on the grid of ``core.__init__`` (cubic,
  ``[iz, iy, ix]``); ``apix`` is the voxel size in A.
* Fourier shells are indexed by the *rounded* radius in Fourier pixels,
  ``k = round(|(kx, ky, kz)| )`` (as the Flatiron challenge code does);
  shell ``k`` has spatial frequency ``k / (D * apix)`` 1/A and the curves
  returned by :func:`fsc` run over ``k = 0 .. D // 2`` (DC .. Nyquist).
* Resolutions are in A (``1 / frequency``).  A curve that never drops below
  a threshold reports the Nyquist resolution ``2 * apix``.
* FSC-AUC follows CryoBench: the area under the FSC curve with frequency in
  cycles per pixel over ``[0, 0.5]`` (so a perfect map scores 0.5).
* Latent metrics take latents ``z`` ``(N, K)`` and the ground-truth
  coordinate ``(N,)`` or ``(N, d)`` of the same particles.

Map-to-map distances follow the Flatiron heterogeneity challenge
(``cryo_challenge``): maps are masked, then normalised by subtracting the
median and dividing by the standard deviation of the masked voxels
("median z-score"); ``l2`` is the squared Euclidean norm of the difference,
``correlation`` is Pearson's correlation of the masked voxels (the challenge
uses the undivided dot product of the median-normalised maps, which is not
bounded by 1; Pearson's r is that dot product with mean centring, divided by
the voxel count), ``one_minus_mean_fsc`` is ``1 - mean(FSC)`` over shells
``1 .. D // 2`` of the masked, normalised maps, and ``res_fsc05`` the
resolution (A) at FSC = 0.5 (here interpolated linearly between shells).
"""
import numpy as np

__all__ = [
    'shell_index', 'fsc', 'resolution_at', 'fsc_auc', 'soft_spherical_mask',
    'normalise_map', 'map_distances', 'fsc_auc_per_conformation',
    'latent_spearman_pc1', 'latent_spearman_axes', 'principal_axes',
    'knn_neighbourhood_error', 'neighbourhood_overlap', 'population_emd',
    'histogram_emd', 'ensemble_emd', 'rmsd', 'kabsch',
]


# ----------------------------------------------------------------------------
# Fourier shell correlation and resolution
# ----------------------------------------------------------------------------

def _check_maps(map1, map2):
    a = np.asarray(map1, dtype=np.float64)
    b = np.asarray(map2, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError('The two maps have different shapes %s and %s; resample '
                         'one onto the grid of the other first.' % (a.shape, b.shape))
    if a.ndim not in (2, 3) or len(set(a.shape)) != 1:
        raise ValueError('Maps must be cubic volumes (D, D, D) or square images '
                         '(D, D); got shape %s.' % (a.shape,))
    return a, b


def shell_index(shape):
    """Integer Fourier shell (rounded radius in Fourier pixels) of every rfftn bin.

    ``shape`` is the real-space shape ``(D, D, D)`` or ``(D, D)``; the result
    has the shape of ``numpy.fft.rfftn`` output.
    """
    D = shape[0]
    axes = [np.fft.fftfreq(D) * D for _ in shape[:-1]] + [np.fft.rfftfreq(D) * D]
    grids = np.meshgrid(*axes, indexing='ij')
    radius = np.sqrt(sum(g ** 2 for g in grids))
    return np.rint(radius).astype(np.int64)


def _rfft_weights(shape):
    """Multiplicity of each rfftn bin in the full spectrum (Hermitian pairs)."""
    D = shape[-1]
    n_r = D // 2 + 1
    w = np.full(n_r, 2.0)
    w[0] = 1.0
    if D % 2 == 0:
        w[-1] = 1.0
    return np.broadcast_to(w, tuple(shape[:-1]) + (n_r,))


def fsc(map1, map2, apix=1.0):
    """Fourier shell (or ring, for 2D) correlation between two maps.

    Returns ``(freqs, curve)``: ``freqs`` (D//2 + 1,) in 1/A
    (``k / (D * apix)`` for shells ``k = 0 .. D // 2``) and the real FSC per
    shell.  A shell where one map has no power gets FSC 0.
    """
    a, b = _check_maps(map1, map2)
    D = a.shape[0]
    fa = np.fft.rfftn(a)
    fb = np.fft.rfftn(b)
    shells = shell_index(a.shape).ravel()
    w = _rfft_weights(a.shape).ravel()
    n = D // 2 + 1
    keep = shells < n
    shells, w = shells[keep], w[keep]
    fa, fb = fa.ravel()[keep], fb.ravel()[keep]
    cross = np.bincount(shells, weights=w * (fa * np.conj(fb)).real, minlength=n)
    pa = np.bincount(shells, weights=w * np.abs(fa) ** 2, minlength=n)
    pb = np.bincount(shells, weights=w * np.abs(fb) ** 2, minlength=n)
    denom = np.sqrt(pa * pb)
    curve = np.divide(cross, denom, out=np.zeros(n), where=denom > 0)
    freqs = np.arange(n) / (D * float(apix))
    return freqs, curve


def resolution_at(freqs, curve, threshold=0.5):
    """Resolution (A) where the FSC first drops below ``threshold``.

    Searches from shell 1 (the DC shell is ignored), interpolates linearly
    between the last shell at or above and the first shell below the
    threshold, and returns ``1 / frequency``.  If the curve never drops
    below, returns the resolution of the last shell (Nyquist, ``2 * apix``).
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    if freqs.shape != curve.shape or freqs.ndim != 1 or len(freqs) < 2:
        raise ValueError('freqs and curve must be 1D arrays of the same length (>= 2), '
                         'as returned by metrics.fsc.')
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return float(1.0 / freqs[-1])
    i = below[0] + 1          # first shell below
    f0, f1 = freqs[i - 1], freqs[i]
    c0, c1 = curve[i - 1], curve[i]
    if c0 == c1 or c0 < threshold:  # only possible at i == 1 with a low DC value
        f = f1 if c0 < threshold else f0
    else:
        f = f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1)
    if f <= 0:
        return float('inf')
    return float(1.0 / f)


def fsc_auc(freqs, curve, apix=None):
    """Area under the FSC curve against frequency in cycles/pixel, [0, 0.5].

    CryoBench's summary of an FSC curve: 0.5 for identical maps.  ``freqs``
    are in 1/A; ``apix`` (A) converts them to cycles/pixel (if None it is
    inferred from the last shell being Nyquist, as :func:`fsc` returns).
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    if apix is None:
        apix = 0.5 / freqs[-1]
    x = freqs * apix
    return float(np.sum(0.5 * (curve[1:] + curve[:-1]) * np.diff(x)))


# ----------------------------------------------------------------------------
# Masks, normalisation and map-to-map distances
# ----------------------------------------------------------------------------

def soft_spherical_mask(box, radius=None, width=3.0, ndim=3):
    """Spherical mask of ``radius`` pixels with a raised-cosine edge ``width`` px.

    Centre at pixel ``box // 2`` (the core convention).  Default radius is
    ``box / 2 - width`` so the soft edge stays inside the box.  Values are 1
    inside ``radius``, fall as ``0.5 (1 + cos(pi (r - radius) / width))`` and
    are 0 beyond ``radius + width``.
    """
    box = int(box)
    if radius is None:
        radius = box / 2.0 - width
    if radius <= 0:
        raise ValueError('Mask radius must be positive (got %.3g px for box %d).'
                         % (radius, box))
    c = np.arange(box) - box // 2
    grids = np.meshgrid(*([c] * ndim), indexing='ij')
    r = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids))
    if width <= 0:
        return (r <= radius).astype(np.float64)
    mask = 0.5 * (1.0 + np.cos(np.pi * np.clip((r - radius) / width, 0.0, 1.0)))
    mask[r <= radius] = 1.0
    return mask


def normalise_map(volume, mask=None, method='median_zscore'):
    """Normalise a map over the voxels where ``mask > 0.5``.

    ``'median_zscore'`` (Flatiron challenge): subtract the median, divide by
    the standard deviation; ``'zscore'``: subtract the mean, divide by the
    standard deviation.  The whole array is transformed; the statistics use
    only the masked voxels.  A constant map raises ValueError.
    """
    v = np.asarray(volume, dtype=np.float64)
    sel = v if mask is None else v[np.asarray(mask) > 0.5]
    if sel.size == 0:
        raise ValueError('The mask selects no voxel; use a larger mask radius.')
    if method == 'median_zscore':
        centre = np.median(sel)
    elif method == 'zscore':
        centre = sel.mean()
    else:
        raise ValueError("Unknown normalisation '%s': use 'median_zscore' or 'zscore'."
                         % method)
    std = sel.std()
    if not std > 0:
        raise ValueError('The map is constant inside the mask; it cannot be normalised '
                         '(is it empty?).')
    return (v - centre) / std


def map_distances(map1, map2, apix=1.0, mask=None, normalise='median_zscore'):
    """Flatiron-challenge map-to-map distances between two maps.

    ``mask`` is an array of weights (e.g. :func:`soft_spherical_mask`), True
    for a default soft spherical mask, or None (no mask).  The maps are
    normalised with the statistics of the voxels of weight > 0.5
    (``normalise=None`` skips this), then multiplied by the mask.  Returns a
    dict with ``l2`` (squared L2 norm of the difference over masked voxels),
    ``correlation`` (Pearson's r over masked voxels), ``one_minus_mean_fsc``
    (shells 1..D//2),
    ``res_fsc05`` (A), ``res_fsc0143`` (A) and ``fsc_auc``.
    """
    a, b = _check_maps(map1, map2)
    if mask is True:
        mask = soft_spherical_mask(a.shape[0], ndim=a.ndim)
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != a.shape:
            raise ValueError('Mask shape %s does not match the maps %s.'
                             % (mask.shape, a.shape))
        sel = mask > 0.5
    else:
        sel = np.ones(a.shape, dtype=bool)
    if normalise:
        a = normalise_map(a, sel, normalise)
        b = normalise_map(b, sel, normalise)
    if mask is not None:
        a, b = a * mask, b * mask
    diff = (a - b)[sel]
    freqs, curve = fsc(a, b, apix)
    return dict(
        l2=float(np.sum(diff ** 2)),
        correlation=float(np.corrcoef(a[sel], b[sel])[0, 1]),
        one_minus_mean_fsc=float(1.0 - curve[1:].mean()),
        res_fsc05=resolution_at(freqs, curve, 0.5),
        res_fsc0143=resolution_at(freqs, curve, 0.143),
        fsc_auc=fsc_auc(freqs, curve, apix),
    )


def fsc_auc_per_conformation(pred_maps, true_maps, apix=1.0, mask=None):
    """CryoBench per-conformation FSC-AUC: one value per (pred, true) map pair.

    ``pred_maps`` and ``true_maps`` are sequences (or (M, D, D, D) arrays) in
    the same order: the map a method produces for conformation m, and the
    ground truth of m.  ``mask`` (weights or True) multiplies both first.
    Returns an (M,) array; its mean is the usual summary.
    """
    if len(pred_maps) != len(true_maps):
        raise ValueError('Got %d predicted maps for %d ground-truth conformations; '
                         'they must pair up one to one.' % (len(pred_maps), len(true_maps)))
    out = np.empty(len(true_maps))
    for m, (p, t) in enumerate(zip(pred_maps, true_maps)):
        p = np.asarray(p, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        if mask is not None:
            w = soft_spherical_mask(t.shape[0], ndim=t.ndim) if mask is True else mask
            p, t = p * w, t * w
        freqs, curve = fsc(p, t, apix)
        out[m] = fsc_auc(freqs, curve, apix)
    return out


# ----------------------------------------------------------------------------
# Latent-space recovery
# ----------------------------------------------------------------------------

def _as_2d(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError('%s must be (N,) or (N, K); got shape %s.' % (name, x.shape))
    if not np.all(np.isfinite(x)):
        raise ValueError('%s contains NaN or infinite values.' % name)
    return x


def principal_axes(z):
    """Projections of centred latents on their principal axes, (N, K), by variance."""
    z = _as_2d(z, 'z')
    zc = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    return zc @ vt.T


def _spearman(x, y):
    from scipy.stats import rankdata
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def latent_spearman_pc1(z, true_coord):
    """|Spearman rho| between the first principal axis of ``z`` and the true coordinate.

    The sign of a principal axis is arbitrary, hence the absolute value.
    ``true_coord`` is (N,) (the motion coordinate of each particle).
    """
    z = _as_2d(z, 'z')
    c = np.asarray(true_coord, dtype=np.float64).ravel()
    if len(c) != len(z):
        raise ValueError('Got %d latents for %d ground-truth coordinates.' % (len(z), len(c)))
    return abs(_spearman(principal_axes(z)[:, 0], c))


def latent_spearman_axes(z, true_coords, method='regression', n_axes=None):
    """|Spearman rho| per true coordinate axis; a (d,) array.

    ``true_coords`` (N, d) (e.g. two normal-mode amplitudes).  ``method``:

    * ``'regression'`` (default): the least-squares linear prediction of each
      true axis from ``z`` (with intercept) is rank-correlated with that axis.
      Invariant to any invertible linear map of ``z``: use it when the true
      axes have similar variances, where principal axes are an arbitrary
      rotation of them.
    * ``'pca'``: the best |rho| over the first ``n_axes`` principal axes.
    """
    z = _as_2d(z, 'z')
    c = _as_2d(true_coords, 'true_coords')
    if len(c) != len(z):
        raise ValueError('Got %d latents for %d ground-truth coordinates.' % (len(z), len(c)))
    if method == 'regression':
        X = np.column_stack([z, np.ones(len(z))])
        coef, *_ = np.linalg.lstsq(X, c, rcond=None)
        pred = X @ coef
        return np.array([abs(_spearman(pred[:, j], c[:, j])) for j in range(c.shape[1])])
    if method != 'pca':
        raise ValueError("method must be 'regression' or 'pca' (got %r)." % (method,))
    pcs = principal_axes(z)[:, :n_axes]
    return np.array([max(abs(_spearman(pcs[:, i], c[:, j])) for i in range(pcs.shape[1]))
                     for j in range(c.shape[1])])


def _knn(points, k):
    from scipy.spatial import cKDTree
    tree = cKDTree(points, compact_nodes=False)
    _, idx = tree.query(points, k=k + 1)
    # drop each point itself (with duplicate points it need not come first)
    is_self = idx == np.arange(len(points))[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    return idx[~is_self].reshape(len(points), k)


def knn_neighbourhood_error(z, true_coord, k=10, normalise=True, rng=0):
    """How far apart, in the true coordinate, are neighbours in latent space.

    For each particle i, the mean distance ``|c_i - c_j|`` (Euclidean for
    vector coordinates) over its ``k`` nearest neighbours j in ``z``;
    averaged over particles.  With ``normalise`` (default) it is divided by
    the mean distance between random pairs of particles, so a latent space
    unrelated to the coordinate scores about 1 and a perfect one scores near
    0 (exactly the value obtained with ``z = true_coord``).  ``rng`` seeds
    the random pairs.
    """
    z = _as_2d(z, 'z')
    c = _as_2d(true_coord, 'true_coord')
    if len(c) != len(z):
        raise ValueError('Got %d latents for %d ground-truth coordinates.' % (len(z), len(c)))
    if not 0 < k < len(z):
        raise ValueError('k=%d must be between 1 and the number of particles - 1 (%d).'
                         % (k, len(z) - 1))
    nbr = _knn(z, k)
    err = np.linalg.norm(c[:, None, :] - c[nbr], axis=-1).mean()
    if not normalise:
        return float(err)
    gen = np.random.default_rng(rng)
    n_pairs = max(20000, 10 * len(c))
    i = gen.integers(0, len(c), n_pairs)
    j = gen.integers(0, len(c), n_pairs)
    base = np.linalg.norm(c[i] - c[j], axis=-1).mean()
    if not base > 0:
        raise ValueError('All ground-truth coordinates are equal; the kNN error is undefined.')
    return float(err / base)


def neighbourhood_overlap(z, true_coord, k=10):
    """CryoBench neighbourhood similarity: mean fraction of the k true-space
    nearest neighbours of each particle that are also its k latent-space
    nearest neighbours (1 = identical neighbourhoods; ~k/N at random)."""
    z = _as_2d(z, 'z')
    c = _as_2d(true_coord, 'true_coord')
    if len(c) != len(z):
        raise ValueError('Got %d latents for %d ground-truth coordinates.' % (len(z), len(c)))
    a, b = _knn(z, k), _knn(c, k)
    hits = [len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(len(z))]
    return float(np.mean(hits) / k)


# ----------------------------------------------------------------------------
# Populations
# ----------------------------------------------------------------------------

def population_emd(pred, true, pred_weights=None, true_weights=None):
    """1D earth mover's (Wasserstein-1) distance between two populations.

    ``pred`` and ``true`` are samples of the coordinate (e.g. recovered and
    true coordinate of every particle, or conformation values with
    population weights).  Closed form ``integral |F_pred - F_true|`` of the
    two cumulative distributions; in the units of the coordinate.  Weights
    are normalised to sum to 1.
    """
    u = np.asarray(pred, dtype=np.float64).ravel()
    v = np.asarray(true, dtype=np.float64).ravel()
    if len(u) == 0 or len(v) == 0:
        raise ValueError('Both populations need at least one sample.')
    wu = np.ones(len(u)) if pred_weights is None else np.asarray(pred_weights, float).ravel()
    wv = np.ones(len(v)) if true_weights is None else np.asarray(true_weights, float).ravel()
    if len(wu) != len(u) or len(wv) != len(v):
        raise ValueError('Each weight array must have one weight per sample.')
    if (wu < 0).any() or (wv < 0).any() or wu.sum() <= 0 or wv.sum() <= 0:
        raise ValueError('Population weights must be non-negative with a positive sum.')
    wu, wv = wu / wu.sum(), wv / wv.sum()
    allx = np.concatenate([u, v])
    order = np.argsort(allx, kind='mergesort')
    xs = allx[order]
    inc = np.concatenate([wu, -wv])[order]
    cdf_diff = np.cumsum(inc)[:-1]
    return float(np.sum(np.abs(cdf_diff) * np.diff(xs)))


def histogram_emd(hist_pred, hist_true, centres):
    """1D earth mover's distance between two histograms on the same bin centres."""
    h1 = np.asarray(hist_pred, dtype=np.float64).ravel()
    h2 = np.asarray(hist_true, dtype=np.float64).ravel()
    x = np.asarray(centres, dtype=np.float64).ravel()
    if not (len(h1) == len(h2) == len(x)):
        raise ValueError('Histograms and bin centres must have the same length.')
    return population_emd(x, x, h1, h2)


def ensemble_emd(cost, pred_weights=None, true_weights=None):
    """Earth mover's distance between two weighted ensembles with a ground cost.

    ``cost`` (M, P): distance between predicted state m and true state p
    (e.g. a map-to-map distance, as in the Flatiron distribution-to-
    distribution comparison).  Weights (populations) default to uniform and
    are normalised.  Solved exactly as a linear program (scipy HiGHS); fine
    for ensembles up to a few hundred states.  Returns (emd, plan (M, P)).
    """
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack
    C = np.asarray(cost, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError('cost must be a 2D matrix (predicted states x true states).')
    M, P = C.shape
    a = np.ones(M) if pred_weights is None else np.asarray(pred_weights, float).ravel()
    b = np.ones(P) if true_weights is None else np.asarray(true_weights, float).ravel()
    if len(a) != M or len(b) != P:
        raise ValueError('Weights must match the cost matrix shape %s.' % (C.shape,))
    if (a < 0).any() or (b < 0).any() or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError('Ensemble weights must be non-negative with a positive sum.')
    a, b = a / a.sum(), b / b.sum()
    rows = np.repeat(np.arange(M), P)
    cols = np.arange(M * P)
    A_rows = coo_matrix((np.ones(M * P), (rows, cols)), shape=(M, M * P))
    A_cols = coo_matrix((np.ones(M * P), (np.tile(np.arange(P), M), cols)), shape=(P, M * P))
    res = linprog(C.ravel(), A_eq=vstack([A_rows, A_cols]), b_eq=np.concatenate([a, b]),
                  bounds=(0, None), method='highs')
    if res.status != 0:
        raise RuntimeError('The transport linear program failed: %s' % res.message)
    return float(res.fun), res.x.reshape(M, P)


# ----------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------

def kabsch(p, q, weights=None):
    """Rotation R and translation t minimising ``sum w |R p_i + t - q_i|^2``.

    ``p``, ``q`` (N, 3).  Returns (R (3, 3) proper rotation, t (3,)).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    w = np.ones(len(p)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    pc = (w[:, None] * p).sum(0)
    qc = (w[:, None] * q).sum(0)
    H = ((p - pc) * w[:, None]).T @ (q - qc)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return R, qc - R @ pc


def rmsd(p, q, superpose=False, weights=None):
    """Root-mean-square deviation (A) between two point sets (N, 3).

    With ``superpose`` the optimal rigid-body superposition of ``p`` onto
    ``q`` (Kabsch, proper rotations only) is applied first.  ``p`` and ``q``
    may also be stacks (..., N, 3) that broadcast against each other (e.g.
    (M, N, 3) and (N, 3)): one RMSD per pair is returned (an array).
    ``weights`` (N,) weigh the points (default: equal).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.ndim < 2 or q.ndim < 2 or p.shape[-2:] != q.shape[-2:] or p.shape[-1] != 3:
        raise ValueError('Point sets must have the same shape (N, 3); got %s and %s. '
                         'RMSD needs a one-to-one correspondence of points.'
                         % (p.shape, q.shape))
    w = np.ones(p.shape[-2]) if weights is None else np.asarray(weights, float)
    if p.ndim > 2 or q.ndim > 2:
        if not superpose:
            return np.sqrt((w * ((p - q) ** 2).sum(-1)).sum(-1) / w.sum())
        p, q = np.broadcast_arrays(p, q)
        flat = [rmsd(a, b, True, weights) for a, b in zip(p.reshape((-1,) + p.shape[-2:]),
                                                          q.reshape((-1,) + q.shape[-2:]))]
        return np.array(flat).reshape(p.shape[:-2])
    if superpose:
        R, t = kabsch(p, q, w)
        p = p @ R.T + t
    return float(np.sqrt((w * ((p - q) ** 2).sum(-1)).sum() / w.sum()))
