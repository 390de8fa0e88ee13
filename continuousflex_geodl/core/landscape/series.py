"""Structures at latent points (state centres, path points) written as files.

``decode_series(latents, decode_fn, folder, name)`` writes (file names:
``core.artifacts.series_paths``)

* ``<name>.pdb`` -- multi-model PDB, model m = the pseudo-atoms decoded at
  latent row m (``core.structure.write_pdb``; amplitudes in the B column,
  those of row m when they depend on z);
* ``<name>_000.mrc``, ``<name>_001.mrc``, ... -- one density per row, when
  volumes can be made: from ``volume_fn(z) -> (M, D, D, D)`` (e.g. the
  model's ``decode_volumes``) or, given ``amplitudes``, ``sigma``, ``box``
  and ``apix``, by rendering the Gaussian pseudo-atoms of row m with its
  amplitudes (``core.render.render_volume``; core grid convention, A).

``decode_fn(z (M, K)) -> positions (M, N, 3)`` in A; ``amplitudes``: (N,)
for every row, (M, N) one row per latent point, or a function
``amplitude_fn(z (M, K)) -> (M, N)`` (e.g. ``inference.make_decoder``'s,
for models whose amplitudes depend on z).  The landscape never imports the
model itself.
"""
import os

import numpy as np

from ..artifacts import series_paths


def render_volumes(positions, amplitudes, sigma, box, apix):
    """(M, D, D, D) densities of Gaussian pseudo-atom clouds (M, N, 3) with
    amplitudes (N,) or (M, N) (row m for cloud m)."""
    import torch
    from ..render import render_volume
    pos = np.asarray(positions, np.float32)
    amp = np.broadcast_to(np.asarray(amplitudes, np.float32), pos.shape[:2])
    out = np.empty((len(pos), int(box), int(box), int(box)), np.float32)
    with torch.no_grad():
        for m in range(len(pos)):
            out[m] = render_volume(torch.as_tensor(pos[m]), torch.as_tensor(np.array(amp[m])),
                                   float(sigma), int(box), float(apix)).numpy()
    return out


def series_amplitudes(amplitudes, z, n_atoms):
    """Amplitudes for latent rows z (M, K) of clouds of ``n_atoms``: (N,) or
    (M, N) as given, or ``amplitudes(z)`` when it is a function; None stays
    None.  A single row (1, N) becomes (N,)."""
    if amplitudes is None:
        return None
    amp = np.asarray(amplitudes(z) if callable(amplitudes) else amplitudes)
    if amp.ndim == 2 and amp.shape[0] == 1:
        amp = amp[0]
    if amp.shape not in ((n_atoms,), (len(z), n_atoms)):
        raise ValueError('amplitudes must be (N,) or (M, N) for M = %d latent points of '
                         'N = %d pseudo-atoms; got shape %s.' % (len(z), n_atoms, amp.shape))
    return amp


def decode_series(latents, decode_fn, folder, name, volume_fn=None, amplitudes=None,
                  sigma=None, box=None, apix=None):
    """Decode latent rows and write the PDB (+ MRC) series; returns
    dict(pdb=path, mrc=[paths], positions=(M, N, 3) array, amplitudes=(N,)
    or (M, N) array or None).  ``amplitudes``: (N,), (M, N) or a function
    of the latents (module docstring)."""
    from ..structure import write_pdb
    z = np.asarray(latents, np.float32)
    z = z[None] if z.ndim == 1 else z
    pos = np.asarray(decode_fn(z))
    if pos.ndim != 3 or pos.shape[0] != len(z) or pos.shape[2] != 3:
        raise ValueError('decode_fn must return positions (M, N, 3) for M = %d latent points; '
                         'got shape %s.' % (len(z), pos.shape))
    os.makedirs(folder, exist_ok=True)
    pdb_path, mrc_paths = series_paths(folder, name, len(z))
    amp = series_amplitudes(amplitudes, z, pos.shape[1])
    pdb = write_pdb(pdb_path, pos, amp)
    vols = None
    if volume_fn is not None:
        vols = np.asarray(volume_fn(z))
    elif amp is not None and sigma is not None and box and apix:
        vols = render_volumes(pos, amp, sigma, box, apix)
    mrcs = []
    if vols is not None:
        from ..io.mrc import write_mrc
        if apix is None:
            raise ValueError('Writing volumes needs the voxel size (apix, A).')
        for m, v in enumerate(vols):
            mrcs.append(write_mrc(mrc_paths[m], v, apix))
    return dict(pdb=pdb, mrc=mrcs, positions=pos, amplitudes=amp)
