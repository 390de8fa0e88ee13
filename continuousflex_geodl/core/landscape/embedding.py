"""Low-dimensional embeddings of latents: PCA (always), UMAP, t-SNE.

Every embedding is fitted once and reused: ``Embedding.transform(z)`` maps
later particles with the *same* mapping, and ``save``/``load_embedding``
keep it in an ``.npz`` file (no pickle):

* PCA -- ``mean`` (K,), ``components`` (n, K) (rows = unit principal axes,
  sign fixed so that the largest loading is positive), ``explained_variance``
  and ``explained_variance_ratio``.  ``y = (z - mean) @ components.T``.
  Fitted on all particles (the K x K covariance is accumulated in chunks).
* UMAP / t-SNE -- fitted on a random subsample (``max_fit`` particles); the
  npz stores those latents and their coordinates, and every other (or later)
  particle is placed at the inverse-distance-weighted mean of its ``k``
  nearest fitted particles (``knn`` transfer; t-SNE has no transform of its
  own).  For UMAP the fitted ``umap.UMAP`` object can also be saved with
  joblib (``umap_model_path``; a pickle: load it only from folders you
  trust) to use UMAP's own ``transform``.
"""
import os

import numpy as np

from ..io.latents import as_latents
from ..settings import EmbeddingMethod

METHODS = tuple(EmbeddingMethod.values())


class Embedding:
    """A fitted mapping latent (N, K) -> embedding (N, n_components)."""

    def __init__(self, method, n_components, **arrays):
        self.method = method
        self.n_components = int(n_components)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._tree = None

    def __getattr__(self, name):
        arrays = self.__dict__.get('arrays', {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def dim(self):
        """Latent dimension K the mapping expects."""
        return int(self.arrays['mean'].shape[0] if self.method == 'pca'
                   else self.arrays['fit_latents'].shape[1])

    def transform(self, z, chunk=1 << 18):
        """Embed (M, K) latents with the fitted mapping -> (M, n_components)."""
        z = np.asarray(z)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError('This embedding was fitted on %d-dimensional latents; got shape '
                             '%s. Use the latents of the same model.' % (self.dim, z.shape))
        if self.method == 'pca':
            out = np.empty((len(z), self.n_components))
            for s in range(0, len(z), chunk):
                out[s:s + chunk] = (np.asarray(z[s:s + chunk], np.float64) - self.mean) \
                    @ self.components.T
            return out
        return self._knn_transfer(z, chunk)

    def _knn_transfer(self, z, chunk):
        from scipy.spatial import cKDTree
        if self._tree is None:
            self._tree = cKDTree(self.fit_latents, compact_nodes=False)
        k = int(min(self.arrays.get('k', 10), len(self.fit_latents)))
        out = np.empty((len(z), self.n_components))
        for s in range(0, len(z), chunk):
            d, i = self._tree.query(np.asarray(z[s:s + chunk], np.float64), k=k)
            d, i = d.reshape(len(d), -1), i.reshape(len(i), -1)
            w = 1.0 / np.maximum(d, 1e-12)
            exact = d[:, 0] < 1e-12
            w[exact] = 0.0
            w[exact, 0] = 1.0
            w /= w.sum(1, keepdims=True)
            out[s:s + chunk] = np.einsum('mk,mkc->mc', w, self.fit_coords[i])
        return out

    def save(self, path):
        """Write the mapping to an .npz (atomic)."""
        from ..fileio import atomic_write
        with atomic_write(path, 'wb') as fh:
            np.savez(fh, method=np.array(self.method),
                     n_components=np.array(self.n_components), **self.arrays)
        return path


def load_embedding(path):
    """Read an embedding .npz written by ``Embedding.save``."""
    if not os.path.exists(path):
        raise FileNotFoundError("Embedding file not found: '%s'" % path)
    with np.load(path) as f:
        if 'method' not in f.files:
            raise ValueError("'%s' is not an embedding file written by the landscape "
                             "analysis (no 'method' entry)." % path)
        arrays = {k: f[k] for k in f.files if k not in ('method', 'n_components')}
        return Embedding(str(f['method']), int(f['n_components']), **arrays)


def _check_latents(z):
    return as_latents(z, min_rows=3)


def fit_pca(z, n_components=None, chunk=1 << 18):
    """PCA of all particles (exact, chunked, memory O(K^2)).  ``n_components``
    defaults to K (all axes)."""
    z = _check_latents(z)
    n, k = z.shape
    nc = k if n_components is None else int(min(n_components, k))
    s1 = np.zeros(k)
    s2 = np.zeros((k, k))
    for s in range(0, n, chunk):
        b = np.asarray(z[s:s + chunk], np.float64)
        if not np.isfinite(b).all():
            bad = s + int(np.nonzero(~np.isfinite(b).all(1))[0][0])
            raise ValueError('The latent vector of particle %d is NaN or infinite: remove '
                             'it before the landscape analysis.' % bad)
        s1 += b.sum(0)
    mean = s1 / n
    for s in range(0, n, chunk):
        b = np.asarray(z[s:s + chunk], np.float64) - mean
        s2 += b.T @ b
    cov = s2 / max(n - 1, 1)
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    val, vec = np.clip(val[order], 0, None), vec[:, order].T  # rows = axes
    sign = np.sign(vec[np.arange(k), np.abs(vec).argmax(1)])
    vec *= np.where(sign == 0, 1, sign)[:, None]
    total = val.sum() if val.sum() > 0 else 1.0
    return Embedding('pca', nc, mean=mean, components=vec[:nc],
                     explained_variance=val[:nc], explained_variance_ratio=val[:nc] / total)


def fit_embedding(z, method='pca', n_components=2, max_fit=20000, seed=0, k=10,
                  n_neighbors=15, min_dist=0.1, perplexity=30.0, umap_model_path=None):
    """Fit an embedding and embed every particle.

    Returns ``(embedding, coords)`` with ``coords`` (N, n_components).
    ``method``: 'pca', 'umap' (umap-learn; ``n_neighbors``, ``min_dist``) or
    'tsne' (scikit-learn; ``perplexity``).  UMAP/t-SNE are fitted on at most
    ``max_fit`` random particles (default 20,000; t-SNE is slower, consider
    5,000) and the rest are placed by ``k``-nearest-neighbour transfer.
    """
    z = _check_latents(z)
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError("Unknown embedding '%s': use one of %s." % (method, ', '.join(METHODS)))
    if method == 'pca':
        emb = fit_pca(z, n_components)
        return emb, emb.transform(z)
    n = len(z)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, int(max_fit), replace=False)) if n > max_fit else np.arange(n)
    zf = np.asarray(z[pick], np.float64)
    if not np.isfinite(zf).all():
        raise ValueError('Some latent vectors are NaN or infinite: remove those particles '
                         'before the landscape analysis.')
    if method == 'umap':
        try:
            import umap
        except ImportError:
            raise RuntimeError("UMAP needs the 'umap-learn' package: pip install umap-learn "
                               "(or use --embedding pca).") from None
        model = umap.UMAP(n_components=n_components, n_neighbors=int(min(n_neighbors, len(zf) - 1)),
                          min_dist=min_dist, random_state=int(seed))
        yf = model.fit_transform(zf)
        if umap_model_path:
            import joblib
            from ..fileio import atomic_path
            with atomic_path(umap_model_path) as tmp:
                joblib.dump(model, tmp)
    else:
        from sklearn.manifold import TSNE
        perp = float(min(perplexity, max(2.0, (len(zf) - 1) / 3.0)))
        yf = TSNE(n_components=n_components, perplexity=perp, init='pca',
                  random_state=int(seed)).fit_transform(zf)
    emb = Embedding(method, n_components, fit_latents=zf, fit_coords=np.asarray(yf, np.float64),
                    fit_index=pick, k=np.array(k))
    coords = np.empty((n, n_components))
    coords[pick] = yf
    rest = np.setdiff1d(np.arange(n), pick, assume_unique=True)
    if len(rest):
        coords[rest] = emb.transform(z[rest])
    return emb, coords


def umap_transform(model_path, z):
    """Embed latents with a saved ``umap.UMAP`` object (joblib; trusted files only)."""
    import joblib
    if not os.path.exists(model_path):
        raise FileNotFoundError("UMAP model not found: '%s'" % model_path)
    return joblib.load(model_path).transform(np.asarray(z))
