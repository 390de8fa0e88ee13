"""Structures as Gaussian pseudo-atom clouds: fitting pseudo-atoms to maps and
loading a reference from a file; the public names of the structure modules.

The concepts live in their own modules (all importable from here too):

* ``core.atomic_model``: ``Structure``, ``read_atomic_model``,
  ``coarse_grain``, ``check_in_box``;
* ``core.io.pdb``: ``read_pdb``, ``write_pdb`` (gemmi);
* ``core.enm``: ``elastic_network_modes``;
* ``core.builtin``: ``builtin_molecule`` and its shipped PDB;
* ``core.cloud``: the rules that turn atoms or maps into pseudo-atoms.

Conventions: positions (N, 3) in A as (x, y, z) (for maps: about the box
centre, core convention, voxel ``D // 2`` at 0); amplitudes (N,) are masses
in Da (atomic models, coarse-graining) or density integrals (maps, in map
units * A^3); ``sigma`` is the Gaussian width in A
(``V(r) = sum_j a_j exp(-|r - x_j|^2 / 2 sigma^2)``).
"""
import os

import numpy as np

from . import cloud
from .atomic_model import (Structure, bead_sigma, check_in_box, coarse_grain,  # noqa: F401
                           read_atomic_model)
from .builtin import (RESOURCES, builtin_molecule, builtin_molecule_pdb,  # noqa: F401
                      write_builtin_molecule_pdb)
from .enm import elastic_network_modes  # noqa: F401
from .io.mrc import read_mrc
from .io.pdb import read_pdb, write_pdb  # noqa: F401
from .models.reference import build_reference
from .runtime import init_keops


# ------------------------------------------------------------------ maps

def fit_to_map(volume, apix, n_atoms, method='kmeans', threshold=None, sigma=None,
               max_voxels=100000, max_ot_samples=20000, n_iter=10, seed=0):
    """Quantise a density map into ``n_atoms`` Gaussian pseudo-atoms.

    The rules are those of every reference cloud (``core.cloud.fit_map``):
    voxels above ``threshold`` (default ``core.cloud.map_threshold``: 10 % of
    the 99.9th percentile of the positive densities) are point masses
    (density * apix^3).  ``method='kmeans'``: mass-weighted k-means (Lloyd)
    centres.  ``method='ot'``: optimal-transport
    quantisation of the weighted voxels (at most ``max_ot_samples``, else
    drawn by mass): the points start at their k-means centres and follow
    ``n_iter`` steps of the Sinkhorn gradient flow (GeomLoss, p=2, blur
    apix/2), each step moving every point to the barycentre of the mass it
    receives under an equal-mass transport plan (no empty or overloaded
    points).
    Positions are in A about the box centre (voxel D//2); amplitudes are the
    map mass of each point's Voronoi cell (sum = thresholded map integral);
    ``sigma`` defaults to ``cloud.default_sigma`` (half the median nearest
    spacing, at least ``cloud.SIGMA_MIN_PX`` pixels).
    """
    apix = float(apix)
    n_atoms = int(n_atoms)
    if n_atoms < 1:
        raise ValueError('fit_to_map: n_atoms must be >= 1')
    if method not in ('kmeans', 'ot'):
        raise ValueError("Unknown fit_to_map method '%s' (use 'kmeans' or 'ot')" % method)
    centres = None
    if method == 'ot':
        pts, w, threshold = cloud.map_samples(volume, apix, threshold)
        if len(pts) < n_atoms:
            raise ValueError('The map has only %d voxels above the threshold %.3g: fewer '
                             'than the %d pseudo-atoms asked for (lower the threshold or '
                             'the number of pseudo-atoms)' % (len(pts), threshold, n_atoms))
        centres = _ot_quantise(pts, w, n_atoms, apix, max_ot_samples, n_iter,
                               np.random.default_rng(seed))
    pos, amps, s = cloud.fit_map(volume, apix, n_atoms=n_atoms, sigma=sigma,
                                 threshold=threshold, seed=seed, max_voxels=max_voxels,
                                 centres=centres)
    return Structure(pos, amps, s)


def _ot_quantise(pts, w, n, apix, max_samples, n_iter, rng):
    """Equal-mass quantisation of the weighted voxels: k-means start, then a
    Sinkhorn (entropic OT, p=2) gradient flow of the n uniform-mass points."""
    import torch

    init_keops()
    from geomloss import SamplesLoss
    if len(pts) > max_samples:  # too many voxels: draw a subsample by mass
        pick = rng.choice(len(pts), int(max_samples), replace=False, p=w / w.sum())
        pts, w = pts[pick], np.ones(len(pick))
    x0, _ = cloud.weighted_kmeans(pts, w, n, int(rng.integers(1 << 31)))
    if len(x0) < n:  # empty clusters: restart them on random voxels
        x0 = np.concatenate([x0, pts[rng.choice(len(pts), n - len(x0), replace=False)]])
    backend = 'tensorized' if n * len(pts) <= 2e7 else 'online'
    diameter = float(np.ptp(pts, axis=0).max() + 2 * apix)
    # debias=False: the voxel-voxel term does not depend on the points (and is
    # the costly one); blur apix/2 keeps the entropic smoothing below a voxel
    loss = SamplesLoss('sinkhorn', p=2, blur=max(0.5 * apix, 0.25), scaling=0.7,
                       diameter=diameter, debias=False, backend=backend)
    a = torch.full((n,), 1.0 / n, dtype=torch.float32)
    b = torch.as_tensor(w / w.sum(), dtype=torch.float32)
    Y = torch.as_tensor(pts, dtype=torch.float32)
    X = torch.as_tensor(x0, dtype=torch.float32).requires_grad_(True)
    for _ in range(int(n_iter)):
        g, = torch.autograd.grad(loss(a, X, b, Y), X)
        with torch.no_grad():
            X -= n * g  # x_i <- barycentre of the mass transported to x_i (p=2)
    return X.detach().double().numpy()


# ------------------------------------------------------------------ files

def load_structure(path, n_atoms=None, apix=None, method='kmeans'):
    """Reference pseudo-atoms from an atomic model (.pdb/.cif) or a map (.mrc),
    as a ``Structure``: the cloud of ``models.reference.build_reference``, the
    one rule ``train --reference`` and ``simulate --structure`` use.  With
    ``method='ot'`` a map is quantised by ``fit_to_map(method='ot')`` to the
    same number of pseudo-atoms."""
    ref = build_reference(os.fspath(path), n_atoms=n_atoms, apix=apix)
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if method != 'kmeans' and ext in ('.mrc', '.map', '.mrcs'):
        vol, file_apix = read_mrc(path)
        return fit_to_map(vol, file_apix, len(ref.positions), method=method, sigma=ref.sigma)
    return Structure(ref.positions.astype(np.float64), ref.amplitudes.astype(np.float64),
                     ref.sigma)
