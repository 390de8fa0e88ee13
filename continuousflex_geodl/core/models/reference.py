"""The reference pseudo-atom cloud the model deforms.

``build_reference(path, n_atoms=None, apix=None, sigma=None)`` is the one
function that turns a file into a reference cloud (training and simulation
with ``--structure`` both call it, so one file gives one cloud).  It reads

* an atomic model (``.pdb``, ``.cif``, ``.ent``, ``.mmcif``) -- used atom for
  atom when it has no more atoms than asked for (e.g. a pseudo-atom model,
  so that atom indices keep their meaning), otherwise coarse-grained by
  mass-weighted k-means to ``n_atoms`` beads (amplitude = bead mass);
* a density map (``.mrc``, ``.map``) -- ``n_atoms`` points fitted to the
  density above a threshold by density-weighted k-means;
* a saved cloud (``.npz`` with positions, amplitudes, sigma).

The rules (default size by molecular volume, map threshold, width) are those
of ``core.cloud``.  Amplitudes are normalised to mean 1.
"""
from dataclasses import dataclass
import os

import numpy as np

from .. import fileio
from ..cloud import (MAX_ATOMS, MIN_ATOMS, default_n_atoms, default_sigma,  # noqa: F401
                     default_spacing, fit_atoms, fit_map, molecular_volume)
from ..atomic_model import read_atomic_model
from ..io.mrc import read_mrc
from ..io.pdb import write_pdb


@dataclass
class ReferenceCloud:
    positions: np.ndarray     # (N, 3) A about the box centre
    amplitudes: np.ndarray    # (N,)
    sigma: float              # A

    def save(self, path):
        """Write ``.npz`` (atomic) or ``.pdb`` (via core.io.pdb.write_pdb)."""
        if path.endswith('.npz'):
            fileio.atomic_savez(path, positions=self.positions.astype(np.float32),
                                amplitudes=self.amplitudes.astype(np.float32),
                                sigma=np.float32(self.sigma))
        elif path.endswith('.pdb'):
            write_pdb_positions(path, self.positions[None], self.amplitudes)
        else:
            raise ValueError("Reference output must end in .npz or .pdb: '%s'" % path)


def write_pdb_positions(path, positions, amplitudes=None, occupancies=None):
    """Multi-model PDB of (M, N, 3) pseudo-atom positions (core.io.pdb);
    amplitudes / occupancies (N,) or (M, N)."""
    write_pdb(path, np.asarray(positions, dtype=np.float32), amplitudes=amplitudes,
              occupancies=occupancies)


def _cloud(positions, masses, sigma):
    masses = np.asarray(masses, dtype=np.float64)
    return ReferenceCloud(np.asarray(positions).astype(np.float32),
                          (masses / masses.mean()).astype(np.float32), float(sigma))


def from_atoms(positions, masses, apix, n_atoms=None, sigma=None, seed=0):
    """Reference from atom positions / masses (``core.cloud.fit_atoms``)."""
    return _cloud(*fit_atoms(positions, masses, apix, n_atoms, sigma, seed))


def from_map(volume, map_apix, apix=None, n_atoms=None, sigma=None, threshold=None,
             seed=0):
    """Reference fitted to a density map (D, D, D) [iz, iy, ix] (``core.cloud.fit_map``)."""
    return _cloud(*fit_map(volume, map_apix, apix, n_atoms, sigma, threshold, seed))


def build_reference(path, n_atoms=None, apix=None, sigma=None, threshold=None, seed=0):
    """Reference cloud from a model, map or saved cloud (see module docstring).

    ``apix`` is the particles' pixel size (sets the default size); for a map
    it defaults to the map's pixel size.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("Reference file not found: '%s'" % path)
    low = path.lower()
    if low.endswith('.npz'):
        d = np.load(path)
        for key in ('positions', 'amplitudes', 'sigma'):
            if key not in d:
                raise ValueError("'%s' lacks '%s': a reference .npz holds positions (N, 3), "
                                 "amplitudes (N,) and sigma." % (path, key))
        return ReferenceCloud(d['positions'].astype(np.float32),
                              d['amplitudes'].astype(np.float32), float(d['sigma']))
    if low.endswith(('.mrc', '.map', '.mrcs')):
        vol, map_apix = read_mrc(path)
        if vol.ndim != 3:
            raise ValueError("'%s' is not a 3D map." % path)
        return from_map(vol, map_apix, apix, n_atoms, sigma, threshold, seed)
    if low.endswith(('.pdb', '.cif', '.ent', '.mmcif', '.pdb.gz', '.cif.gz')):
        st = read_atomic_model(path)
        if apix is None:
            apix = 2.0
        amps = getattr(st, 'amplitudes', None)
        return from_atoms(st.positions, amps, apix, n_atoms, sigma, seed)
    raise ValueError("Unknown reference format '%s': give an atomic model (.pdb/.cif), "
                     "a map (.mrc/.map) or a saved cloud (.npz)." % path)
