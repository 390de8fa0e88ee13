"""Gaussian mixtures over latent space, stored as plain arrays (no pickles).

A ``Mixture`` is ``p(z) = sum_c w_c N(z; mu_c, Sigma_c)`` with ``means``
(C, K), full ``covariances`` (C, K, K) and ``weights`` (C,) summing to 1.
It serves as a fitted density model of the latents (sklearn's
GaussianMixture is converted to it), as the trained cryoTWIN prior of a model
(``load_prior``), and as the input of the ridgeline pathway.  Densities are
per unit latent volume; logs are natural logs (nats).
"""
import os
from dataclasses import dataclass

import numpy as np

from ..artifacts import ModelDir
from ..io.latents import as_latent_points

LOG2PI = np.log(2.0 * np.pi)


@dataclass
class Mixture:
    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        self.means = np.atleast_2d(np.asarray(self.means, dtype=np.float64))
        c, k = self.means.shape
        cov = np.asarray(self.covariances, dtype=np.float64)
        if cov.ndim == 2 and cov.shape == (c, k):  # diagonal variances
            cov = np.einsum('ck,kl->ckl', cov, np.eye(k))
        if cov.shape != (c, k, k):
            raise ValueError('Mixture covariances must be (C, K, K) or diagonal variances '
                             '(C, K) for %d components in %d dimensions; got %s.'
                             % (c, k, cov.shape))
        self.covariances = cov
        w = np.asarray(self.weights, dtype=np.float64).ravel()
        if w.shape != (c,) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError('Mixture weights must be %d non-negative numbers (one per '
                             'component); got %s.' % (c, np.asarray(self.weights).shape))
        self.weights = w / w.sum()
        try:
            self._chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError('A mixture covariance matrix is not positive definite: '
                             'the prior/mixture file is corrupt or degenerate.') from None
        self._chol_inv = np.linalg.inv(self._chol)
        self._logdet = 2.0 * np.log(np.diagonal(self._chol, axis1=1, axis2=2)).sum(1)

    # ------------------------------------------------------------------ sizes
    @property
    def n_components(self):
        return len(self.weights)

    @property
    def dim(self):
        return self.means.shape[1]

    @property
    def precisions(self):
        return np.linalg.inv(self.covariances)

    # ---------------------------------------------------------------- density
    def component_log_pdf(self, z):
        """log N(z; mu_c, Sigma_c) for every point and component: (M, C)."""
        z = self._check(z)
        out = np.empty((len(z), self.n_components))
        chunk = max(1, (1 << 22) // (self.n_components * self.dim))  # ~32 MB blocks
        for s in range(0, len(z), chunk):
            d = z[s:s + chunk, None, :] - self.means[None]  # (m, C, K)
            y = np.einsum('ckl,mcl->mck', self._chol_inv, d)
            out[s:s + chunk] = (-0.5 * (y ** 2).sum(-1) - 0.5 * self._logdet
                                - 0.5 * self.dim * LOG2PI)
        return out

    def log_density(self, z, chunk=65536):
        """log p(z) (natural log, per unit latent volume): (M,)."""
        z = self._check(z)
        logw = np.log(np.maximum(self.weights, 1e-300))
        out = np.empty(len(z))
        for s in range(0, len(z), chunk):
            lp = self.component_log_pdf(z[s:s + chunk]) + logw
            m = lp.max(1, keepdims=True)
            out[s:s + chunk] = (m + np.log(np.exp(lp - m).sum(1, keepdims=True)))[:, 0]
        return out

    def responsibilities(self, z):
        """Posterior probability of each component: (M, C), rows sum to 1."""
        lp = self.component_log_pdf(z) + np.log(np.maximum(self.weights, 1e-300))
        lp -= lp.max(1, keepdims=True)
        r = np.exp(lp)
        return r / r.sum(1, keepdims=True)

    def predict(self, z, chunk=65536):
        """Most probable component of each point: (M,) int."""
        z = self._check(z)
        return np.concatenate([self.responsibilities(z[s:s + chunk]).argmax(1)
                               for s in range(0, len(z), chunk)] or [np.zeros(0, int)])

    def sample(self, n, rng=None):
        """n points drawn from the mixture: (n, K)."""
        rng = np.random.default_rng(rng)
        comp = rng.choice(self.n_components, size=int(n), p=self.weights)
        eps = rng.standard_normal((int(n), self.dim))
        return self.means[comp] + np.einsum('nkl,nl->nk', self._chol[comp], eps)

    def find_mode(self, z0, iters=500, tol=1e-9):
        """Local maximum of p reached from each start point by the fixed-point
        iteration ``z <- (sum_c r_c P_c)^-1 sum_c r_c P_c mu_c``
        (Carreira-Perpinan 2000); r_c are responsibilities, P_c precisions."""
        z = self._check(z0).copy()
        prec = self.precisions
        pm = np.einsum('ckl,cl->ck', prec, self.means)
        for _ in range(iters):
            r = self.responsibilities(z)
            a = np.einsum('mc,ckl->mkl', r, prec)
            b = r @ pm
            zn = np.linalg.solve(a, b[..., None])[..., 0]
            done = np.abs(zn - z).max() < tol * (1.0 + np.abs(z).max())
            z = zn
            if done:
                break
        return z

    def _check(self, z):
        return as_latent_points(z, self.dim, np.float64,
                                'this %d-dimensional mixture' % self.dim)

    # -------------------------------------------------------------- creation
    @classmethod
    def from_sklearn(cls, gmm):
        """From a fitted ``sklearn.mixture.GaussianMixture`` (any covariance type)."""
        cov = gmm.covariances_
        c, k = gmm.means_.shape
        kind = gmm.covariance_type
        if kind == 'tied':
            cov = np.broadcast_to(cov, (c, k, k))
        elif kind == 'spherical':
            cov = np.einsum('c,kl->ckl', cov, np.eye(k))
        elif kind == 'diag':
            cov = np.einsum('ck,kl->ckl', cov, np.eye(k))
        return cls(gmm.means_, np.array(cov), gmm.weights_)

    @classmethod
    def from_diagonal(cls, means, scales, weights):
        """From per-component standard deviations (C, K) (e.g. the model prior)."""
        return cls(means, np.asarray(scales, dtype=np.float64) ** 2, weights)

    # ---------------------------------------------------------------- files
    def save(self, path):
        """npz with ``means``, ``covariances``, ``weights`` (atomic)."""
        from ..fileio import atomic_write
        with atomic_write(path, 'wb') as fh:
            np.savez(fh, means=self.means, covariances=self.covariances, weights=self.weights)
        return path


def load_mixture(path):
    """Read a mixture npz (``means``, ``covariances`` or ``scales``, ``weights``)."""
    if not os.path.exists(path):
        raise FileNotFoundError("Mixture file not found: '%s'" % path)
    with np.load(path) as f:
        keys = set(f.files)
        if not {'means', 'weights'} <= keys or not keys & {'covariances', 'scales'}:
            raise ValueError("'%s' is not a mixture file: it needs arrays 'means' (C, K), "
                             "'weights' (C,) and 'covariances' (C, K, K) or 'scales' (C, K); "
                             "it has %s." % (path, sorted(keys)))
        if 'covariances' in keys:
            return Mixture(f['means'], f['covariances'], f['weights'])
        return Mixture.from_diagonal(f['means'], f['scales'], f['weights'])


def load_prior(source):
    """The latent prior of a trained model as a ``Mixture``.

    ``source`` is a model directory written by ``continuousflex-geodl train``
    (its ``weights.pt`` holds the cryoTWIN GMM prior: ``prior.means``,
    ``prior.log_scales``, ``prior.logits``) or an ``.npz`` mixture file
    (``means``, ``covariances``/``scales``, ``weights``), e.g. exported from
    another tool.
    """
    source = os.fspath(source)
    if os.path.isfile(source) and source.endswith('.npz'):
        return load_mixture(source)
    if not os.path.isdir(source):
        raise FileNotFoundError("Prior not found: '%s' is neither a model directory nor a "
                                ".npz mixture file." % source)
    prior = ModelDir(source).read_prior_state()
    if prior is None:
        raise ValueError("The model in '%s' has no Gaussian-mixture prior (it was trained "
                         "with the Gaussian/VAE prior): analyse its latents without "
                         "--prior." % source)
    means = prior['means'].double().numpy()
    scales = prior['log_scales'].double().exp().numpy()
    logits = prior['logits'].double().numpy()
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    return Mixture.from_diagonal(means, scales, weights)
