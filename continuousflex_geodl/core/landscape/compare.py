"""Agreement of two coordinate sets of the same particles (two landscapes).

For instance the latents of this project's model against HEMNMA /
DeepHEMNMA normal-mode amplitudes, cryoDRGN z, or the ground truth of
simulated particles.  Row i of both arrays is the same particle.

* ``canonical_correlations(z1, z2)`` -- CCA: invariant to any invertible
  linear map of either space (1 = linearly equivalent).
* ``knn_overlap(z1, z2)`` -- mean fraction of shared k nearest neighbours
  over a random subset of query particles (invariant to rotation and
  scale; about k/N for unrelated spaces).
* ``latent_agreement(z1, z2)`` -- the two above (``landscape diagnostics``).
* ``landscape_agreement(za, zb)`` -- the report of the *compare landscapes*
  protocol: CCA, CryoBench neighbourhood overlap and kNN error both ways,
  and the Spearman rank correlation of each axis of one space with its
  linear prediction from the other (``core.metrics``).
"""
import numpy as np
from scipy.spatial import cKDTree

from .. import metrics
from ..io.latents import as_latents


def check_latents(z, name='latents'):
    """``z`` as a finite float64 (N, K) array with N >= 3 (ValueError otherwise)."""
    return as_latents(z, min_rows=3, dtype=np.float64, finite=True, name=name)


def _pair(z1, z2):
    a, b = check_latents(z1, 'first latents'), check_latents(z2, 'second latents')
    if len(a) != len(b):
        raise ValueError('The two latent arrays describe %d and %d particles: they must be '
                         'the same particles in the same order.' % (len(a), len(b)))
    return a, b


def canonical_correlations(z1, z2, reg=1e-9):
    """Canonical correlations (descending, min(K1, K2) values) between two
    representations of the same particles."""
    a, b = _pair(z1, z2)
    a = a - a.mean(0)
    b = b - b.mean(0)

    def inv_sqrt(m):
        w, v = np.linalg.eigh(m)
        w = np.maximum(w, reg * max(w.max(), 1e-300))
        return (v / np.sqrt(w)) @ v.T

    n = len(a) - 1
    caa, cbb, cab = a.T @ a / n, b.T @ b / n, a.T @ b / n
    s = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return np.clip(s, 0.0, 1.0)


def knn_overlap(z1, z2, k=10, n_query=5000, seed=0):
    """Mean fraction of each particle's k nearest neighbours shared by the two
    spaces (1 = same neighbourhoods; about k/N if unrelated)."""
    a, b = _pair(z1, z2)
    k = int(min(k, len(a) - 1))
    rng = np.random.default_rng(seed)
    q = rng.choice(len(a), min(int(n_query), len(a)), replace=False)
    _, na = cKDTree(a, compact_nodes=False).query(a[q], k=k + 1)
    _, nb = cKDTree(b, compact_nodes=False).query(b[q], k=k + 1)
    shared = [len((set(x) - {i}) & (set(y) - {i})) for i, x, y in zip(q, na, nb)]
    return float(np.mean(shared) / k)


def latent_agreement(z1, z2, k=10, n_query=5000, seed=0):
    """dict(canonical_correlations, mean_canonical_correlation, knn_overlap,
    knn_overlap_chance, k)."""
    cc = canonical_correlations(z1, z2)
    ov = knn_overlap(z1, z2, k, n_query, seed)
    return dict(canonical_correlations=cc.tolist(), mean_canonical_correlation=float(cc.mean()),
                knn_overlap=ov, knn_overlap_chance=float(k / (len(np.asarray(z1)) - 1)), k=int(k))


def landscape_agreement(za, zb, k=10):
    """Agreement metrics between two coordinate sets of the same N particles.

    * ``neighbourhood_overlap``: mean fraction of shared k nearest neighbours
      (1 = same neighbourhoods, about k/N at random);
    * ``knn_error_a_in_b`` / ``knn_error_b_in_a``: how far apart, in one
      landscape, are the neighbours in the other (normalised: ~1 unrelated,
      0 identical);
    * ``spearman_a_predicts_b`` / ``spearman_b_predicts_a``: |Spearman rho|
      of each axis of one landscape with its linear prediction from the other;
    * ``canonical_correlations``: CCA between the two (invariant to any
      invertible linear map of either; 1 = linearly equivalent).

    Also returns ``n_particles`` and the ``k`` used (at most N - 1).
    """
    za, zb = _pair(za, zb)
    k = int(min(k, len(za) - 1))
    return {
        'canonical_correlations': canonical_correlations(za, zb).tolist(),
        'n_particles': int(len(za)),
        'k': k,
        'neighbourhood_overlap': metrics.neighbourhood_overlap(za, zb, k=k),
        'knn_error_a_in_b': metrics.knn_neighbourhood_error(za, zb, k=k),
        'knn_error_b_in_a': metrics.knn_neighbourhood_error(zb, za, k=k),
        'spearman_a_predicts_b': metrics.latent_spearman_axes(za, zb).tolist(),
        'spearman_b_predicts_a': metrics.latent_spearman_axes(zb, za).tolist(),
    }
