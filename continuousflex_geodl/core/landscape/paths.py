"""Pathways through the landscape: ordered series of latent points.

Each function returns a ``Path`` whose ``latents`` (M, K) are ordered from
start to end; decode them into structures with ``series.decode_series``.

* ``pca_path`` -- along one principal axis of the latents, from the
  ``percentiles[0]`` to the ``percentiles[1]`` percentile of the particles'
  coordinate on that axis (other coordinates at the mean).
* ``density_path`` -- through the particles: shortest path on a
  k-nearest-neighbour graph of (a subsample of) the particles, each edge
  costing ``length * exp(alpha * dG_edge)`` with dG (kT) from a latent-space
  KDE (dG_edge = mean of its two ends; alpha = 1 is ``length x p_max /
  sqrt(p_i p_j)``, alpha = 0 the plain geodesic).  The node sequence is
  smoothed and resampled evenly by arc length.
* ``ridgeline_path`` -- the cryoTWIN pathway between two components of a
  Gaussian mixture (the trained prior, or a mixture fitted to the latents):
  for k = 1..K-1, weights a_start = cos(pi k / 2K), a_end = (1 - cos(pi k /
  2K))^omega, the rest 1 - a_start - a_end shared among the other components
  in M random draws (flat Dirichlet; draw 0 gives them nothing, i.e. the
  Ray-Lindsay ridgeline of the two components); candidate
  z = (sum_c a_c P_c)^-1 sum_c a_c P_c mu_c (P_c = Sigma_c^-1); keep the
  candidate minimising ||z - z_prev|| / p(z).  K + 1 points from mu_start
  to mu_end.  Defaults K = 11, omega = 2, M = 1000 (paper settings).
"""
from dataclasses import dataclass, field

import numpy as np

from .embedding import _check_latents


@dataclass
class Path:
    latents: np.ndarray        # (M, K) ordered points
    kind: str                  # 'pca', 'density' or 'ridgeline'
    info: dict = field(default_factory=dict)

    @property
    def length(self):
        return float(np.linalg.norm(np.diff(self.latents, axis=0), axis=1).sum())


def resample_polyline(points, n_points):
    """``n_points`` points evenly spaced by arc length along a polyline."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 1 or n_points < 2:
        return np.repeat(p[:1], max(int(n_points), 1), 0)
    seg = np.linalg.norm(np.diff(p, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(p[:1], int(n_points), 0)
    t = np.linspace(0.0, s[-1], int(n_points))
    return np.stack([np.interp(t, s, p[:, j]) for j in range(p.shape[1])], 1)


# ----------------------------------------------------------------- PCA axis

def pca_path(z, axis=0, n_points=10, percentiles=(5.0, 95.0), pca=None):
    """Points along principal axis ``axis`` (0 = first) of the latents.

    ``pca`` an already fitted PCA ``Embedding`` (default: fitted on z).
    """
    from .embedding import fit_pca
    z = _check_latents(z)
    pca = fit_pca(z) if pca is None else pca
    if pca.method != 'pca':
        raise ValueError('pca_path needs a PCA embedding, not %s.' % pca.method)
    if not 0 <= int(axis) < pca.components.shape[0]:
        raise ValueError('Principal axis %d does not exist: the latents have %d axes '
                         '(numbered from 0).' % (axis, pca.components.shape[0]))
    lo, hi = float(percentiles[0]), float(percentiles[1])
    if not 0 <= lo < hi <= 100:
        raise ValueError('Percentiles must satisfy 0 <= low < high <= 100; got %s'
                         % (percentiles,))
    v = pca.components[int(axis)]
    proj = np.asarray(z, np.float64)[:: max(1, len(z) // 1000000)] @ v - pca.mean @ v
    a, b = np.percentile(proj, [lo, hi])
    t = np.linspace(a, b, int(n_points))
    lat = pca.mean[None] + t[:, None] * v[None]
    return Path(lat, 'pca', dict(axis=int(axis), percentiles=[lo, hi],
                                 coordinate=t.tolist()))


# -------------------------------------------------------- density (graph)

def density_path(z, start, end, n_points=20, knn=10, max_nodes=20000, alpha=1.0,
                 log_density=None, bandwidth='cv', smooth=1.0, seed=0):
    """Minimum-cost path through the particles from ``start`` to ``end``.

    ``start``/``end`` latent points (K,).  ``log_density`` optional callable
    (M, K) -> ln p (default: a latent KDE of the nodes).  ``max_nodes``
    particles (random subsample) form the graph; the k-NN graph is made
    denser automatically if start and end are not connected.  ``smooth``
    scales the Gaussian smoothing of the node sequence (0: none).
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra
    from .basins import knn_edges
    from .density import LatentKDE
    z = _check_latents(z)
    a = np.asarray(start, np.float64).ravel()
    b = np.asarray(end, np.float64).ravel()
    if a.shape != (z.shape[1],) or b.shape != (z.shape[1],):
        raise ValueError('Start and end must be latent points of dimension %d.' % z.shape[1])
    rng = np.random.default_rng(seed)
    n = len(z)
    pick = np.sort(rng.choice(n, int(max_nodes), replace=False)) if n > max_nodes \
        else np.arange(n)
    nodes = np.concatenate([np.asarray(z[pick], np.float64), a[None], b[None]])
    ia, ib = len(nodes) - 2, len(nodes) - 1
    if log_density is None:
        kde = LatentKDE(nodes[:-2], bandwidth=bandwidth, max_fit=5000, seed=seed)
        f = kde.log_density(nodes)
    else:
        f = np.asarray(log_density(nodes), np.float64)
    dG = f.max() - f
    k = int(knn)
    for attempt in range(5):
        e = knn_edges(nodes, k)
        length = np.linalg.norm(nodes[e[:, 0]] - nodes[e[:, 1]], axis=1)
        cost = length * np.exp(float(alpha) * 0.5 * (dG[e[:, 0]] + dG[e[:, 1]]))
        cost = np.maximum(cost, 1e-300)
        g = coo_matrix((cost, (e[:, 0], e[:, 1])), shape=(len(nodes),) * 2).tocsr()
        dist, pred = dijkstra(g, directed=False, indices=ia, return_predecessors=True)
        if np.isfinite(dist[ib]):
            break
        k *= 2
    else:
        raise ValueError('The start and end points are not connected through the particles '
                         '(even with %d neighbours): they lie in separate clouds; use the '
                         'ridgeline or PCA path instead.' % k)
    seq = [ib]
    while seq[-1] != ia:
        seq.append(pred[seq[-1]])
    seq = np.array(seq[::-1])
    poly = nodes[seq]
    if smooth and len(poly) > 3:
        sig = float(smooth) * len(poly) / (2.0 * max(int(n_points), 2))
        if sig > 0.3:
            sm = gaussian_filter1d(poly, sig, axis=0, mode='nearest')
            sm[0], sm[-1] = poly[0], poly[-1]
            poly = sm
    lat = resample_polyline(poly, n_points)
    node_index = np.where(seq < len(pick), pick[np.minimum(seq, len(pick) - 1)], -1)
    info = dict(knn=int(k), alpha=float(alpha), n_nodes=int(len(nodes)), cost=float(dist[ib]),
                particle_path=node_index.tolist(), node_dG_kT=dG[seq].tolist())
    return Path(lat, 'density', info)


# ---------------------------------------------------------- cryoTWIN ridgeline

def ridgeline_weights(k, K, omega):
    """(a_start, a_end) at step k of K (cryoTWIN schedule)."""
    c = np.cos(np.pi * k / (2.0 * K))
    return c, (1.0 - c) ** omega


def ridgeline_path(mixture, start, end, K=11, omega=2.0, M=1000, seed=0):
    """cryoTWIN ridgeline pathway between mixture components ``start`` and
    ``end`` (indices); see module docstring.  Returns K + 1 points."""
    C = mixture.n_components
    i, j = int(start), int(end)
    if not (0 <= i < C and 0 <= j < C) or i == j:
        raise ValueError('The ridgeline needs two different mixture components among 0..%d; '
                         'got %d and %d.' % (C - 1, i, j))
    K, M = int(K), int(M)
    if K < 2 or M < 1:
        raise ValueError('Ridgeline settings need K >= 2 and M >= 1 (got K=%d, M=%d).' % (K, M))
    rng = np.random.default_rng(seed)
    prec = mixture.precisions
    pm = np.einsum('ckl,cl->ck', prec, mixture.means)
    others = np.array([c for c in range(C) if c not in (i, j)], dtype=np.int64)
    pts = [mixture.means[i]]
    chosen = []
    z_prev = mixture.means[i]
    for k in range(1, K):
        a_s, a_e = ridgeline_weights(k, K, omega)
        rest = max(0.0, 1.0 - a_s - a_e)
        w = np.zeros((M, C))
        w[:, i], w[:, j] = a_s, a_e
        if len(others) and rest > 0:
            d = rng.dirichlet(np.ones(len(others)), size=M) * rest
            d[0] = 0.0  # draw 0: the two-component Ray-Lindsay ridgeline point
            w[:, others] = d
        A = np.einsum('mc,ckl->mkl', w, prec)
        bvec = w @ pm
        cand = np.linalg.solve(A, bvec[..., None])[..., 0]
        logp = mixture.log_density(cand)
        step = np.linalg.norm(cand - z_prev, axis=1)
        with np.errstate(divide='ignore'):
            score = np.log(step) - logp  # log(||z - z_prev|| / p(z))
        best = int(np.argmin(score))
        z_prev = cand[best]
        pts.append(z_prev)
        chosen.append(dict(k=k, a_start=float(a_s), a_end=float(a_e), draw=best,
                           log_p=float(logp[best])))
    pts.append(mixture.means[j])
    info = dict(start_component=i, end_component=j, K=K, omega=float(omega), M=M,
                steps=chosen)
    return Path(np.array(pts), 'ridgeline', info)
