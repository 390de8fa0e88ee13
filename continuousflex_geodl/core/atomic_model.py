"""Atomic models as Gaussian pseudo-atom clouds: the ``Structure`` container,
reading PDB/mmCIF models (``core.io.pdb``, gemmi), coarse-graining atoms into
beads, and the check that a model lies in the particle box.

Conventions: positions (N, 3) in A as (x, y, z) (for maps: about the box
centre, core convention, voxel ``D // 2`` at 0); amplitudes (N,) are masses
in Da (atomic models, coarse-graining) or density integrals (maps, in map
units * A^3); ``sigma`` is the Gaussian width in A
(``V(r) = sum_j a_j exp(-|r - x_j|^2 / 2 sigma^2)``).
"""
import logging
import os
from dataclasses import dataclass

import numpy as np

from . import cloud
from .io.pdb import read_structure

logger = logging.getLogger(__name__)

#: atomic masses (Da) of the common elements; others from gemmi
_MASS = {'H': 1.008, 'C': 12.011, 'N': 14.007, 'O': 15.999, 'S': 32.06, 'P': 30.974,
         'SE': 78.97, 'MG': 24.305, 'ZN': 65.38, 'FE': 55.845, 'CA': 40.078,
         'NA': 22.99, 'K': 39.098, 'CL': 35.45, 'MN': 54.938}


@dataclass
class Structure:
    """A Gaussian pseudo-atom cloud (or the atoms of a model).

    ``residues``: (N,) residue keys ``'chain:seqid'`` (atomic models);
    ``domains``: (N,) integer domain labels; ``hinge_point`` (3,) A and
    ``hinge_axis`` (3,) unit vector: an axis about which domain 1 can rotate
    rigidly relative to domain 0 (built-in molecule).
    """
    positions: np.ndarray
    amplitudes: np.ndarray
    sigma: float = 2.0
    residues: np.ndarray = None
    domains: np.ndarray = None
    hinge_point: np.ndarray = None
    hinge_axis: np.ndarray = None

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise ValueError('Structure positions must be (N, 3) A, got shape %s'
                             % (self.positions.shape,))
        self.amplitudes = np.ones(len(self.positions)) if self.amplitudes is None else \
            np.asarray(self.amplitudes, dtype=np.float64)
        if self.amplitudes.shape != (len(self.positions),):
            raise ValueError('Structure: %d amplitudes for %d positions'
                             % (self.amplitudes.size, len(self.positions)))
        self.sigma = float(self.sigma)

    def __len__(self):
        return len(self.positions)

    @property
    def labels(self):
        """Alias of ``domains``."""
        return self.domains


def _element_mass(el):
    name = el.name.upper()
    m = _MASS.get(name)
    if m is None:
        m = el.weight if el.weight > 0 else 12.011
    return float(m)


def read_atomic_model(path, model_index=0):
    """Heavy atoms (no hydrogens, no waters) of a PDB/mmCIF file -> ``Structure``.

    Amplitudes are the element masses (Da); ``residues`` holds
    ``'chain:seqid'`` keys; sigma 1.5 A (atomic).  Coordinates as in the file.
    """
    path = os.fspath(path)
    st = read_structure(path, 'atomic model', merge_chain_parts=True)
    st.remove_hydrogens()
    st.remove_waters()
    st.remove_alternative_conformations()  # keep the first of alternative locations
    if len(st) == 0:
        raise ValueError('The atomic model %s has no model (no atoms)' % path)
    if not 0 <= model_index < len(st):
        raise ValueError('The atomic model %s has %d model(s); model %d was asked for'
                         % (path, len(st), model_index))
    pos, mass, res = [], [], []
    for ch in st[model_index]:
        for r in ch:
            key = '%s:%d%s' % (ch.name, r.seqid.num, r.seqid.icode.strip())
            for a in r:
                pos.append((a.pos.x, a.pos.y, a.pos.z))
                mass.append(_element_mass(a.element))
                res.append(key)
    if not pos:
        raise ValueError('The atomic model %s contains no heavy atoms' % path)
    pos = np.asarray(pos, float)
    if not np.isfinite(pos).all():
        raise ValueError('The atomic model %s has atoms with NaN/Inf coordinates' % path)
    return Structure(pos, np.asarray(mass, float), 1.5, residues=np.asarray(res))


def check_in_box(positions, box, apix, source='The reference', warn_fraction=0.1):
    """Check that a structure (positions (N, 3) A about the box centre) lies in
    the particle box (``box`` px of ``apix`` A).

    Raises ValueError when no atom is inside the box (the model is not in
    the frame of the particles); warns on stderr when more than
    ``warn_fraction`` of the atoms are outside.  Returns the inside fraction.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        raise ValueError('%s has no atoms.' % source)
    if not np.isfinite(pos).all():
        raise ValueError('%s has atoms with NaN/Inf coordinates.' % source)
    half = 0.5 * int(box) * float(apix)
    inside = np.all(np.abs(pos) <= half, axis=1)
    frac = float(inside.mean())
    centre = pos.mean(0)
    where = ('its atoms span x %.0f..%.0f, y %.0f..%.0f, z %.0f..%.0f A (centre %.0f, %.0f, '
             '%.0f A) but the box spans -%.0f..%.0f A about its centre'
             % (pos[:, 0].min(), pos[:, 0].max(), pos[:, 1].min(), pos[:, 1].max(),
                pos[:, 2].min(), pos[:, 2].max(), centre[0], centre[1], centre[2],
                half, half))
    fix = ('Coordinates must be in A about the centre of the particle box (the frame of '
           'the consensus map): fit the model into the map and save it relative to the map '
           '(ChimeraX: save ... relModel #map), or, if it was fitted into a map whose origin '
           'is its corner, subtract the map centre (%.1f A) from x, y and z.' % half)
    if frac == 0.0:
        raise ValueError('%s has no atom inside the particle box (%d px x %.3g A): %s. %s'
                         % (source, int(box), float(apix), where, fix))
    if 1.0 - frac > warn_fraction:
        logger.warning('%s has %.0f%% of its atoms outside the particle box: %s. %s',
                       source, 100 * (1 - frac), where, fix)
    return frac


def coarse_grain(structure, mode='residue', n=None, atoms_per_bead=None, seed=0):
    """Pseudo-atoms from atoms.

    ``mode='residue'``: one bead per residue at its centre of mass,
    amplitude = residue mass.  ``mode='kmeans'``: ``n`` beads (or
    ``len / atoms_per_bead``) at mass-weighted k-means centres, amplitude =
    mass of the atoms in the cell.  Sigma = half the median nearest-bead
    spacing.  Total mass is conserved.
    """
    pos = np.asarray(structure.positions, float)
    mass = np.asarray(structure.amplitudes, float)
    if mode == 'residue':
        if structure.residues is None:
            raise ValueError("coarse_grain(mode='residue') needs residue information "
                             "(read the model with read_atomic_model)")
        _, first, inv = np.unique(structure.residues, return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first)] = np.arange(len(first))  # keep the file's residue order
        inv = rank[inv]
        m = np.bincount(inv, weights=mass)
        centres = np.stack([np.bincount(inv, weights=mass * pos[:, d]) for d in range(3)], 1)
        centres /= m[:, None]
        keys = np.asarray(structure.residues)[np.sort(first)]
        return Structure(centres, m, bead_sigma(centres), residues=keys)
    if mode == 'kmeans':
        if atoms_per_bead and not n:
            n = max(1, int(round(len(pos) / float(atoms_per_bead))))
        if not n or n < 1:
            raise ValueError("coarse_grain(mode='kmeans') needs n >= 1 beads or "
                             "atoms_per_bead")
        centres, amps = _weighted_kmeans(pos, mass, min(int(n), len(pos)), seed)
        return Structure(centres, amps, bead_sigma(centres))
    raise ValueError("Unknown coarse-graining mode '%s' (use 'residue' or 'kmeans')" % mode)


def bead_sigma(centres):
    """Default width of beads (A): half their median nearest spacing (1 A for
    a single bead)."""
    return 0.5 * cloud.median_spacing(centres) if len(centres) > 1 else 1.0


def _weighted_kmeans(points, weights, n, seed):
    from sklearn.cluster import KMeans
    km = KMeans(n_clusters=n, n_init=1, random_state=seed, max_iter=100)
    km.fit(points, sample_weight=weights)
    amps = np.bincount(km.labels_, weights=weights, minlength=n)
    keep = amps > 0
    return km.cluster_centers_[keep], amps[keep]
