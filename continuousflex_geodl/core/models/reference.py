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

``map_fit_quality`` (and ``reference_fit_quality`` for a file) says how well
a cloud fitted to a map represents it: the FSC of the rendered cloud against
the map, its 0.5 / 0.143 resolutions, the real-space correlation inside the
map's threshold, and pseudo-atoms per residue-equivalent of the map;
``model_fit_quality`` the same for an atomic model, against a map simulated
from its atoms.
"""
from dataclasses import dataclass
import os

import numpy as np

from .. import fileio
from ..cloud import (MAX_ATOMS, MIN_ATOMS, default_n_atoms, default_sigma,  # noqa: F401
                     default_spacing, fit_atoms, fit_map, map_threshold, molecular_volume)
from .. import metrics
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


# ------------------------------------------------------------ fit quality
#: Protein volume per residue (A^3): a mean residue mass of ~110 Da at the
#: mean protein density of ~0.81 Da/A^3 (1.35 g/cm^3) is 110 / 0.81 = 136,
#: rounded to 135 (the value ``core.builtin`` packs its molecule at)
RESIDUE_VOLUME = 135.0
#: FSC thresholds of the reported resolutions
FSC_THRESHOLDS = (0.5, 0.143)


def _is_map(path):
    return path.lower().endswith(('.mrc', '.map', '.mrcs'))


def _cube(volume):
    """The map on a cubic grid (zero-padded so that voxel D//2 stays the
    centre voxel shape//2 of every axis, the origin of ``cloud.map_samples``)."""
    vol = np.asarray(volume, dtype=np.float64)
    D = max(vol.shape)
    if all(n == D for n in vol.shape):
        return vol
    pad = [(D // 2 - n // 2, D - n - (D // 2 - n // 2)) for n in vol.shape]
    return np.pad(vol, pad)


def _render(positions, amplitudes, sigma, box, apix):
    """``render.render_volume`` in float64 (numpy in and out), in chunks of
    at most 256 MB."""
    import torch
    from ..render import render_volume
    chunk = int(max(16, min(4096, 2 ** 25 // (box * box))))
    return render_volume(torch.as_tensor(np.asarray(positions, dtype=np.float64)),
                         torch.as_tensor(np.asarray(amplitudes, dtype=np.float64)),
                         float(sigma), int(box), float(apix), chunk=chunk).numpy()


def map_fit_quality(volume, map_apix, positions, amplitudes, sigma, threshold=None):
    """How well a pseudo-atom cloud represents a density map (D, D, D) [iz, iy, ix].

    The cloud (positions (N, 3) A about voxel D//2, amplitudes (N,), sigma A)
    is rendered on the map's grid with ``core.render.render_volume`` (the
    renderer of ``decode`` / ``explore`` maps).  Returns a dict:

    * ``fsc_freqs`` (1/A) and ``fsc``: the FSC of the rendered cloud against
      the map over the whole box (``metrics.fsc``); ``resolution_fsc05`` and
      ``resolution_fsc0143`` (A) where it drops below 0.5 / 0.143
      (``metrics.resolution_at``: Nyquist, ``2 * map_apix``, when it never
      does);
    * ``real_space_cc``: Pearson correlation of the two maps over the voxels
      above ``threshold`` (the voxels the fit sees; default
      ``cloud.map_threshold``, as ``fit_map``; NaN when either map is
      constant there);
    * ``molecular_volume_a3`` (voxels above the threshold * map_apix^3),
      ``residue_equivalents`` (that volume / ``RESIDUE_VOLUME``),
      ``n_atoms`` and ``atoms_per_residue``.

    FSC and correlation do not depend on the amplitudes' scale.
    """
    vol = _cube(volume)
    if threshold is None:
        threshold = map_threshold(vol)
    apix = float(map_apix)
    pos = np.asarray(positions, dtype=np.float64)
    D = vol.shape[0]
    model = _render(pos, amplitudes, sigma, D, apix)
    freqs, curve = metrics.fsc(model, vol, apix)
    inside = vol > threshold
    n_in = int(inside.sum())
    a, b = vol[inside], model[inside]
    cc = float(np.corrcoef(a, b)[0, 1]) if n_in > 1 and a.std() > 0 and b.std() > 0 \
        else float('nan')
    volume_a3 = n_in * apix ** 3
    residues = volume_a3 / RESIDUE_VOLUME
    out = dict(n_atoms=int(len(pos)), sigma=float(sigma), map_apix=apix, box=int(D),
               threshold=float(threshold), molecular_volume_a3=float(volume_a3),
               residue_volume_a3=RESIDUE_VOLUME, residue_equivalents=float(residues),
               atoms_per_residue=float(len(pos) / residues) if residues > 0 else float('nan'),
               real_space_cc=cc, fsc_freqs=freqs.tolist(), fsc=curve.tolist())
    for t in FSC_THRESHOLDS:
        out['resolution_fsc%s' % str(t).replace('.', '')] = metrics.resolution_at(freqs,
                                                                                  curve, t)
    return out


#: largest atoms * voxels rendered for the fit quality of an atomic model
#: (beyond it, minutes of CPU: the quality is not computed)
MAX_MODEL_RENDER = 2e11


def model_fit_quality(atom_positions, atom_masses, residues, positions, amplitudes, sigma,
                      apix, box=None):
    """``map_fit_quality`` of a cloud fitted to an atomic model, against a map
    simulated from the model: every atom a Gaussian of its mass and of width
    ``apix`` (smooth at the grid's Nyquist: no aliasing), on a (box, box,
    box) grid of ``apix`` (default: the smallest even box holding the model
    and the cloud, about the origin).  The FSC hardly depends on that width
    (a Gaussian blur scales every shell of one map by one factor).
    ``residue_equivalents`` is the model's residue count (``residues``: a
    key per atom) and ``atoms_per_residue`` pseudo-atoms per residue; the
    thresholded volume of the simulated map is kept as
    ``molecular_volume_a3``.  None when the grid would be too large
    (``MAX_MODEL_RENDER``)."""
    apix = float(apix)
    atoms = np.asarray(atom_positions, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64)
    if box is None:
        reach = max(np.abs(atoms).max(), np.abs(pos).max()) + 4 * max(apix, float(sigma))
        box = 2 * int(np.ceil(reach / apix)) + 2
    box = int(box)
    if len(atoms) * float(box) ** 3 > MAX_MODEL_RENDER:
        return None
    masses = np.ones(len(atoms)) if atom_masses is None else atom_masses
    vol = _render(atoms, masses, apix, box, apix)
    q = map_fit_quality(vol, apix, pos, amplitudes, sigma)
    n_res = len(np.unique(np.asarray(residues))) if residues is not None else 0
    if n_res:
        q.update(residue_equivalents=float(n_res), atoms_per_residue=len(pos) / n_res)
    q.update(against='model', atom_sigma=apix)
    return q


def reference_fit_quality(path, ref, threshold=None, apix=None, box=None):
    """How well the cloud ``ref`` (a ``ReferenceCloud``) represents the file
    ``path`` it was built from: a map -> ``map_fit_quality`` (with the same
    ``threshold``; ``against`` 'map'); an atomic model ->
    ``model_fit_quality`` on the grid of ``apix`` (default 2.0, as
    ``build_reference``) and ``box``; None for a saved cloud (.npz) or when
    the model is too large to render."""
    low = path.lower()
    if _is_map(path):
        vol, map_apix = read_mrc(path)
        q = map_fit_quality(vol, map_apix, ref.positions, ref.amplitudes, ref.sigma,
                            threshold)
        q['against'] = 'map'
        return q
    if low.endswith(('.pdb', '.cif', '.ent', '.mmcif', '.pdb.gz', '.cif.gz')):
        st = read_atomic_model(path)
        return model_fit_quality(st.positions, st.amplitudes, st.residues, ref.positions,
                                 ref.amplitudes, ref.sigma, 2.0 if apix is None else apix,
                                 box)
    return None


def describe_fit_quality(q):
    """One line for a log: the figures of ``map_fit_quality`` /
    ``model_fit_quality``."""
    if q.get('against') == 'model':
        what = 'fit to the atomic model (vs a map simulated from it)'
        res = '%d residues' % q['residue_equivalents']
    else:
        what = 'fit to the map'
        res = '%.0f residue-equivalents (%.0f A^3 / %.0f A^3)' % (
            q['residue_equivalents'], q['molecular_volume_a3'], q['residue_volume_a3'])
    return ('%s: FSC 0.5 at %.1f A, 0.143 at %.1f A (Nyquist %.1f A), real-space '
            'correlation %.3f above the threshold %.3g; %d pseudo-atoms for %s: %.2f per '
            'residue'
            % (what, q['resolution_fsc05'], q['resolution_fsc0143'], 2 * q['map_apix'],
               q['real_space_cc'], q['threshold'], q['n_atoms'], res, q['atoms_per_residue']))
