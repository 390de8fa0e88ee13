"""Particle sets: lazy images with poses, CTF and per-particle metadata.

``ParticleSet`` holds per-particle arrays in core conventions (see
``core.__init__``):

* ``euler`` (N, 3): (rot, tilt, psi) in degrees, or None (no poses);
* ``shifts`` (N, 2): ``t`` in A, the molecule centre lies at box centre + t
  (RELION origin = -t); None when there are no poses;
* ``ctf`` (N, 7): columns ``CTF_COLUMNS`` = defocus U, V (A), astigmatism
  angle (deg), voltage (kV), Cs (mm), amplitude contrast, phase shift (deg);
* ``metadata``: a pandas DataFrame of any other per-particle columns (e.g.
  ground truth, RELION/Xmipp columns we do not interpret), or None.

Images stay on disk (memory-mapped ``ImageSource``) until indexed;
``images[idx]`` gives float32 (n, D, D).  Files: ``load_particles`` reads a
RELION .star (3.0 / 3.1+, ``core.io.star``) or an Xmipp .xmd
(``core.io.xmd``); ``write_particles_star`` writes RELION .star files.
The readers in ``core.io`` return plain fields; this module makes them a
``ParticleSet`` (the dependency goes one way: particles -> io).
"""
import os
from dataclasses import dataclass, field

import numpy as np

from .io import star as _star
from .io import xmd as _xmd
from .io.stack import (ArrayImageSource, CroppedImageSource, ImageSource,  # noqa: F401
                       resolve_image_path)

#: columns of ``ParticleSet.ctf``
CTF_COLUMNS = ('dfu', 'dfv', 'dfang', 'voltage', 'cs', 'w', 'phase_shift')


@dataclass
class ParticleSet:
    """Images + poses + CTF + metadata of N particles (see the module docstring).

    ``images`` may be an ``ImageSource``, an ``ArrayImageSource``, or a
    numpy array / ``np.memmap`` (N, D, D), which is wrapped.  ``source`` is
    the file it was read from (used in messages).
    """
    images: object
    apix: float
    euler: np.ndarray = None
    shifts: np.ndarray = None
    ctf: np.ndarray = None
    metadata: object = None
    source: str = field(default=None, repr=False)

    def __post_init__(self):
        if isinstance(self.images, np.ndarray):  # arrays and np.memmap stacks
            self.images = ArrayImageSource(self.images)
        self.apix = float(self.apix)
        for name in ('euler', 'shifts', 'ctf'):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.asarray(v, dtype=np.float64))

    @property
    def box(self):
        return self.images.box

    def __len__(self):
        return len(self.images)

    @property
    def has_poses(self):
        return self.euler is not None

    @property
    def has_ctf(self):
        return self.ctf is not None

    def subset(self, indices):
        """Particles ``indices`` (int array, or boolean mask), in that order."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.nonzero(indices)[0]
        indices = indices.astype(np.int64).reshape(-1)
        pick = (lambda a: None if a is None else np.asarray(a)[indices])
        meta = None if self.metadata is None else \
            self.metadata.iloc[indices].reset_index(drop=True)
        return ParticleSet(self.images.subset(indices), self.apix, pick(self.euler),
                           pick(self.shifts), pick(self.ctf), meta, self.source)

    def _name(self):
        return 'The particles (%s)' % self.source if self.source else 'The particles'

    def check(self, require_ctf=True, require_poses=True, n_check=256):
        """Raise ValueError naming the problem (and the fix) if the set is unusable.

        Checks: not empty; pixel size; CTF and poses present when required;
        array lengths; NaN/Inf in poses/CTF; stacks readable with one square,
        even box; no NaN/Inf in a sample of ``n_check`` images spread over
        the set.  Returns ``self``.
        """
        name = self._name()
        n = len(self)
        if n == 0:
            raise ValueError('%s: the set is empty, there are no particles to process' % name)
        if not np.isfinite(self.apix) or self.apix <= 0:
            raise ValueError('%s: invalid pixel size %r A' % (name, self.apix))
        if require_ctf and self.ctf is None:
            raise ValueError(
                '%s have no CTF parameters: estimate the CTF (e.g. CTFFIND) and re-extract, '
                'or import them with their CTF' % name)
        if require_poses and (self.euler is None or self.shifts is None):
            raise ValueError(
                '%s have no poses (angles and shifts): run a consensus 3D refinement first '
                '(RELION, cryoSPARC, Xmipp) and use its output particles' % name)
        for arr, what, width in ((self.euler, 'angles', 3), (self.shifts, 'shifts', 2),
                                 (self.ctf, 'CTF parameters', len(CTF_COLUMNS))):
            if arr is None:
                continue
            if arr.shape != (n, width):
                raise ValueError('%s: %s have shape %s, expected (%d, %d)'
                                 % (name, what, arr.shape, n, width))
            ok = np.all(np.isfinite(arr), axis=1)
            if not ok.all():
                raise ValueError('%s: particle %d has NaN/Inf %s; remove it or recompute '
                                 'them' % (name, int(np.nonzero(~ok)[0][0]) + 1, what))
        if self.ctf is not None and np.any(self.ctf[:, 3] <= 0):
            raise ValueError('%s: CTF voltage <= 0 kV; fix the acceleration voltage of '
                             'the CTF/optics' % name)
        if self.metadata is not None and len(self.metadata) != n:
            raise ValueError('%s: %d metadata rows for %d particles'
                             % (name, len(self.metadata), n))
        if hasattr(self.images, 'check'):
            self.images.check()
        if self.box % 2:
            raise ValueError('%s: odd box size %d px; re-extract with an even box'
                             % (name, self.box))
        idx = np.unique(np.linspace(0, n - 1, min(int(n_check), n)).astype(np.int64))
        for s in range(0, len(idx), 64):
            chunk = idx[s:s + 64]
            imgs = self.images[chunk]
            ok = np.isfinite(imgs).all(axis=(1, 2))
            if not ok.all():
                raise ValueError('%s: image %d contains NaN or Inf pixels; remove it or '
                                 're-extract the particles'
                                 % (name, int(chunk[np.nonzero(~ok)[0][0]]) + 1))
        return self


def grid_relation(box, apix, model_box, model_apix, rtol=1e-3):
    """How particles of ``box`` px at ``apix`` A/px reach a model's training
    grid (``model_box`` px, ``model_apix`` A/px): ``'same'`` (used as they
    are), ``'crop'`` (a larger box with the same field of view, box * pixel
    size, Fourier-cropped to the model's box when read: ``at_box``), or None
    (they cannot be used; rescale them first).  ``rtol``: relative tolerance
    on the pixel size and the field of view."""
    box, model_box = int(box), int(model_box)
    apix, model_apix = float(apix), float(model_apix)
    if box == model_box and abs(apix - model_apix) <= rtol * model_apix:
        return 'same'
    extent = model_box * model_apix
    if box > model_box and abs(box * apix - extent) <= rtol * extent:
        return 'crop'
    return None


def at_box(pset, box):
    """``pset`` seen at ``box`` pixels: images Fourier-cropped when read
    (``core.downsample``), pixel size ``apix * D / box``; poses (shifts in A),
    CTF parameters and metadata unchanged (the CTF is then computed at the
    coarser pixel size).  ``box`` None or equal to the particle box returns
    ``pset`` itself.  Works for a ``ParticleSet`` and for duck-typed sets
    with ``images`` and ``apix`` attributes (a shallow copy whose images are
    a ``CroppedImageSource``)."""
    if box is None or int(box) == int(pset.box):
        return pset
    box = int(box)
    D = int(pset.box)
    images = pset.images
    if isinstance(images, np.ndarray):
        images = ArrayImageSource(images)
    cropped = CroppedImageSource(images, box)
    apix = float(pset.apix) * D / box
    if isinstance(pset, ParticleSet):
        return ParticleSet(cropped, apix, pset.euler, pset.shifts, pset.ctf, pset.metadata,
                           pset.source)
    import copy
    new = copy.copy(pset)
    new.images, new.apix = cropped, apix
    return new


# ---------------------------------------------------------------- files

def read_star(path, apix=None, root=None):
    """RELION .star -> ParticleSet (see ``core.io.star.read_star``)."""
    return ParticleSet(**_star.read_star(path, apix=apix, root=root))


def read_xmd(path, apix=None, root=None):
    """Xmipp .xmd -> ParticleSet (see ``core.io.xmd.read_xmd``)."""
    return ParticleSet(**_xmd.read_xmd(path, apix=apix, root=root))


def load_particles(path, apix=None, root=None):
    """Load a particle set from a RELION .star (3.0 / 3.1+) or an Xmipp .xmd file.

    ``apix`` (A/pixel) overrides the file's pixel size.  ``root``: folder
    every image file named in the file must lie in (default: env
    ``CFGEODL_DATA_ROOT``; see ``core.fileio.check_data_path`` for the
    path policy).  Raises FileNotFoundError for a missing file or stack and
    ValueError (naming the file and column) for malformed content, paths
    that escape their folder, or an empty set.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
        raise ValueError('%s is a folder: give a particle .star or .xmd file' % path)
    if ext == '.star':
        pset = read_star(path, apix=apix, root=root)
    elif ext == '.xmd':
        pset = read_xmd(path, apix=apix, root=root)
    else:
        raise ValueError("Unknown particle file type '%s' (%s): give a RELION .star or "
                         "an Xmipp .xmd" % (ext, path))
    if len(pset) == 0:
        raise ValueError('The particle file %s contains no particles' % path)
    return pset


def write_particles_star(path, pset, stack_path=None, version='3.1'):
    """Write ``pset`` as a RELION .star (3.1 with optics table, or '3.0').

    Images already on disk are referenced where they are; in-memory images
    (or all images, when ``stack_path`` names a new file) are written to
    ``stack_path`` (default: the .star name with .mrcs).  Atomic.
    """
    return _star.write_star(path, pset, stack_path=stack_path, version=version)


def write_particles(path, pset, stack_path=None):
    """Write a .star (RELION 3.1) or .xmd (Xmipp), by extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == '.star':
        return write_particles_star(path, pset, stack_path)
    if ext == '.xmd':
        return _xmd.write_xmd(path, pset, stack_path)
    raise ValueError("Unknown particle file type '%s': write a .star or an .xmd" % ext)
