"""Diagnostics of a latent space.

* ``isometry_correlation(z, decode_fn)`` -- cryoTWIN's isometry score: for
  pairs of *nearby* particles (each anchor with its ``k`` nearest
  neighbours in latent space), the correlation between latent distances and
  the distances between the decoded structures (RMSD over pseudo-atoms, A).
  1 means the latent space is locally a faithful (scaled) map of
  conformations.  Pearson and Spearman are both reported.
* ``prior_kl(z, prior)`` -- how well the prior fits the latents:
  KL(q || p) = E_q[ln q(z) - ln p(z)] in nats, where q is a density model of
  the latents (a Gaussian mixture chosen by BIC, or a KDE) fitted on one
  half of the particles and the Monte-Carlo average is over the other half
  (held out, so q's overfitting does not bias the estimate).  The reverse
  KL(p || q) uses samples drawn from the prior.
* ``latent_agreement(z1, z2)`` -- two latent spaces of the same particles
  (e.g. ours vs HEMNMA amplitudes or cryoDRGN z): canonical correlations
  (invariant to any invertible linear map of either space) and the mean
  fraction of shared k nearest neighbours (invariant to rotation and scale;
  ~k/N for unrelated spaces).
"""
import numpy as np


def _check(z, name='latents'):
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or len(z) < 3 or not np.isfinite(z).all():
        raise ValueError('The %s must be a finite (N, K) array with N >= 3; got shape %s.'
                         % (name, z.shape))
    return z


def isometry_correlation(z, decode_fn, n_anchors=200, k=5, seed=0, batch=256):
    """Correlation of latent vs structure distances over nearby pairs.

    Returns dict(pearson, spearman, n_pairs, latent_dist, structure_rmsd).
    """
    from scipy.spatial import cKDTree
    from scipy.stats import pearsonr, spearmanr
    z = _check(z)
    rng = np.random.default_rng(seed)
    anchors = rng.choice(len(z), min(int(n_anchors), len(z)), replace=False)
    _, nb = cKDTree(z, compact_nodes=False).query(z[anchors], k=int(k) + 1)
    pairs = np.array([(a, b) for a, row in zip(anchors, nb) for b in row[1:] if b != a])
    uniq, inv = np.unique(pairs.ravel(), return_inverse=True)
    pos = np.concatenate([np.asarray(decode_fn(z[uniq[s:s + batch]].astype(np.float32)),
                                     np.float64) for s in range(0, len(uniq), batch)])
    inv = inv.reshape(-1, 2)
    dl = np.linalg.norm(z[pairs[:, 0]] - z[pairs[:, 1]], axis=1)
    ds = np.sqrt(((pos[inv[:, 0]] - pos[inv[:, 1]]) ** 2).sum(-1).mean(-1))
    if np.ptp(dl) == 0 or np.ptp(ds) == 0:
        raise ValueError('All nearby pairs have the same latent or structure distance: the '
                         'decoder is constant; the isometry correlation is undefined.')
    return dict(pearson=float(pearsonr(dl, ds)[0]), spearman=float(spearmanr(dl, ds)[0]),
                n_pairs=int(len(pairs)), latent_dist=dl, structure_rmsd=ds)


def _density_model(z, kind, seed, max_states=10):
    from .density import LatentKDE
    from .states import _scale, _to_mixture, select_by_bic
    if kind == 'kde':
        return LatentKDE(z, max_fit=5000, seed=seed).log_density
    if kind == 'gmm':
        mean, s = _scale(z)
        g, _ = select_by_bic((z - mean) / s, max_states, seed)
        return _to_mixture(g, mean, s).log_density
    raise ValueError("Unknown density model '%s': use 'gmm' or 'kde'." % kind)


def prior_kl(z, prior, q='gmm', n_mc=20000, seed=0, reverse=True, max_states=10):
    """KL divergences (nats) between the latents' density q and the prior p.

    ``prior`` a ``Mixture`` (or any object with ``log_density`` and
    ``sample``).  Returns dict(kl_q_p, kl_p_q or None, q).
    """
    z = _check(z)
    if z.shape[1] != prior.dim:
        raise ValueError('The prior is %d-dimensional but the latents have %d dimensions.'
                         % (prior.dim, z.shape[1]))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(z))
    half = len(z) // 2
    fit, test = z[perm[:half]], z[perm[half:]][:int(n_mc)]
    logq = _density_model(fit, q, seed, max_states)
    kl_qp = float(np.mean(logq(test) - prior.log_density(test)))
    out = dict(kl_q_p=kl_qp, kl_p_q=None, q=q, n_fit=int(half), n_mc=int(len(test)))
    if reverse:
        s = prior.sample(int(n_mc), rng)
        out['kl_p_q'] = float(np.mean(prior.log_density(s) - logq(s)))
    return out


def canonical_correlations(z1, z2, reg=1e-9):
    """Canonical correlations (descending, min(K1, K2) values) between two
    representations of the same particles."""
    a, b = _check(z1, 'first latents'), _check(z2, 'second latents')
    if len(a) != len(b):
        raise ValueError('The two latent arrays describe %d and %d particles: they must be '
                         'the same particles in the same order.' % (len(a), len(b)))
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
    from scipy.spatial import cKDTree
    a, b = _check(z1, 'first latents'), _check(z2, 'second latents')
    if len(a) != len(b):
        raise ValueError('The two latent arrays describe %d and %d particles: they must be '
                         'the same particles in the same order.' % (len(a), len(b)))
    k = int(min(k, len(a) - 1))
    rng = np.random.default_rng(seed)
    q = rng.choice(len(a), min(int(n_query), len(a)), replace=False)
    _, na = cKDTree(a, compact_nodes=False).query(a[q], k=k + 1)
    _, nb = cKDTree(b, compact_nodes=False).query(b[q], k=k + 1)
    shared = [len((set(x) - {i}) & (set(y) - {i})) for i, x, y in zip(q, na, nb)]
    return float(np.mean(shared) / k)


def latent_agreement(z1, z2, k=10, n_query=5000, seed=0):
    """dict(canonical_correlations, mean_canonical_correlation, knn_overlap,
    knn_overlap_chance)."""
    cc = canonical_correlations(z1, z2)
    ov = knn_overlap(z1, z2, k, n_query, seed)
    return dict(canonical_correlations=cc.tolist(), mean_canonical_correlation=float(cc.mean()),
                knn_overlap=ov, knn_overlap_chance=float(k / (len(np.asarray(z1)) - 1)), k=int(k))
