"""Latent coordinates from files: the one reader of (N, K) latent arrays
(``decode``, the landscape commands and the benchmarks), and the shape rules
of latent arrays in memory (``as_latents``: particles' latents,
``as_latent_points``: points of a model's or mixture's latent space)."""
import os

import numpy as np


def load_latents(path, dim=None, min_rows=1):
    """(N, K) latents from .npy (memory-mapped), .npz (array ``z``, else the
    first) or text (``#`` comments).

    A 1-D array (.npy / .npz) is one latent point when ``dim`` (the K the caller needs) is
    larger than 1 and equals its length; otherwise it is N one-dimensional
    latents (N, 1).  ValueError when the array is not (N, K) with
    N >= ``min_rows``, or K differs from ``dim``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("Latent file not found: '%s'" % path)
    try:
        if path.endswith('.npy'):
            z = np.load(path, mmap_mode='r')
        elif path.endswith('.npz'):
            with np.load(path) as f:
                if not f.files:
                    raise ValueError("'%s' holds no array." % path)
                z = f['z'] if 'z' in f.files else f[f.files[0]]
        else:
            z = np.loadtxt(path, ndmin=2, comments='#')  # a text row is a point
    except (OSError, EOFError) as exc:
        raise ValueError("Cannot read the latents '%s' (%s: %s)"
                         % (path, type(exc).__name__, exc)) from None
    if z.ndim == 1:
        z = z[None] if dim is not None and dim > 1 and len(z) == dim else z[:, None]
    if z.ndim != 2 or len(z) < min_rows:
        raise ValueError("'%s' must hold an (N, K) latent array with N >= %d particles; "
                         "got shape %s." % (path, min_rows, z.shape))
    if dim is not None and z.shape[1] != dim:
        raise ValueError("'%s' holds %d-dimensional latents but %d are needed (the model's "
                         "latent dimension)." % (path, z.shape[1], dim))
    return z


def as_latents(z, min_rows=1, dtype=None, finite=False, name='latents'):
    """``z`` as an (N, K) array of N particles' latents (a 1-D array is N
    one-dimensional latents), of ``dtype`` when given.  ValueError when it is
    not 2-D, has fewer than ``min_rows`` rows or (``finite``) holds NaN / inf."""
    z = np.asarray(z) if dtype is None else np.asarray(z, dtype=dtype)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or len(z) < min_rows or (finite and not np.isfinite(z).all()):
        raise ValueError('The %s must be a%s (N, K) array with N >= %d particles; got shape %s.'
                         % (name, ' finite' if finite else 'n', min_rows, z.shape))
    return z


def as_latent_points(z, dim, dtype=np.float64, owner='this model'):
    """``z`` as (M, ``dim``) points of a ``dim``-dimensional latent space (a
    1-D array is one point), of ``dtype``; ValueError naming ``owner``."""
    z = np.asarray(z, dtype=dtype)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != dim:
        raise ValueError('Latent points must be an (M, %d) array for %s; got shape %s.'
                         % (dim, owner, z.shape))
    return z
