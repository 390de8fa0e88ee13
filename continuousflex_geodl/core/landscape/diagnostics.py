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
  (e.g. ours vs HEMNMA amplitudes or cryoDRGN z); defined with the other
  comparisons of two spaces in ``compare`` and re-exported here.
"""
import numpy as np

from .compare import canonical_correlations, knn_overlap, latent_agreement  # noqa: F401
from .compare import check_latents as _check


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
