"""Latent coordinates from files: the one reader of (N, K) latent arrays
(``decode``, the landscape commands and the benchmarks)."""
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
