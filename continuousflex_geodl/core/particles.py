"""Particle sets: lazy image sources, poses, CTF, and RELION .star / Xmipp .xmd I/O.

``ParticleSet`` holds per-particle arrays in core conventions (see
``core.__init__``): Euler angles (rot, tilt, psi) in degrees, shifts ``t``
in A (molecule centre at box centre + t; RELION origin = -t), and CTF
parameters as an (N, 7) array with columns ``CTF_COLUMNS``.  Images stay on
disk (memory-mapped) until indexed.
"""
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

CTF_COLUMNS = ('dfu', 'dfv', 'dfang', 'voltage', 'cs', 'w', 'phase_shift')
_STAR_CTF = ('rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnVoltage',
             'rlnSphericalAberration', 'rlnAmplitudeContrast', 'rlnPhaseShift')
_CTF_DEFAULTS = {'rlnDefocusAngle': 0.0, 'rlnPhaseShift': 0.0,
                 'rlnAmplitudeContrast': 0.1, 'rlnSphericalAberration': 2.7}
_KNOWN = set(_STAR_CTF) | {
    'rlnImageName', 'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi', 'rlnOriginX',
    'rlnOriginY', 'rlnOriginXAngst', 'rlnOriginYAngst', 'rlnOpticsGroup',
    'rlnImagePixelSize', 'rlnImageSize', 'rlnDetectorPixelSize', 'rlnMagnification',
    'rlnPixelSize', 'rlnOpticsGroupName', 'rlnImageDimensionality'}


class ImageSource:
    """Images of a particle set, read lazily from MRC stacks (memory-mapped).

    ``refs`` is a list of (stack file, 0-based index).  Indexing with an
    int, slice or integer array returns float32 (n, D, D).
    """

    def __init__(self, refs, max_open=64):
        self.files = []
        fid = {}
        file_idx, img_idx = [], []
        for f, i in refs:
            if f not in fid:
                fid[f] = len(self.files)
                self.files.append(f)
            file_idx.append(fid[f])
            img_idx.append(i)
        self.file_idx = np.asarray(file_idx, dtype=np.int64)
        self.img_idx = np.asarray(img_idx, dtype=np.int64)
        self._open = OrderedDict()
        self.max_open = max_open
        self._box = None

    def _stack(self, k):
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        from .io.mrc import open_stack
        s = open_stack(self.files[k])
        self._open[k] = s
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return s

    def check(self):
        """Open every stack once: missing files, wrong sizes, bad indices."""
        boxes = set()
        for k, f in enumerate(self.files):
            s = self._stack(k)
            boxes.add(s.shape[-1])
            sel = self.img_idx[self.file_idx == k]
            if sel.size and (sel.max() >= s.shape[0] or sel.min() < 0):
                raise ValueError("The stack %s has %d images but image %d is referenced "
                                 "(the stack is truncated or the .star is wrong)"
                                 % (f, s.shape[0], sel.max() + 1))
        if len(boxes) > 1:
            raise ValueError('The particle stacks have different box sizes %s' % sorted(boxes))
        return self

    @property
    def box(self):
        if self._box is None:
            self._box = int(self._stack(0).shape[-1]) if len(self) else 0
        return self._box

    def __len__(self):
        return len(self.img_idx)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self[np.array([idx])]
        idx = np.arange(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx)
        out = np.empty((len(idx), self.box, self.box), dtype=np.float32)
        fk, ik = self.file_idx[idx], self.img_idx[idx]
        for k in np.unique(fk):
            sel = np.nonzero(fk == k)[0]
            s = self._stack(int(k))
            if ik[sel].max() >= s.shape[0]:
                raise ValueError("The stack %s has %d images but image %d is referenced"
                                 % (self.files[k], s.shape[0], ik[sel].max() + 1))
            order = np.argsort(ik[sel])
            out[sel[order]] = s[ik[sel][order]]
        return out

    def subset(self, indices):
        new = ImageSource.__new__(ImageSource)
        new.files = self.files
        new.file_idx = self.file_idx[indices]
        new.img_idx = self.img_idx[indices]
        new._open, new.max_open, new._box = OrderedDict(), self.max_open, self._box
        return new


class ArrayImageSource:
    """In-memory images with the ``ImageSource`` interface (tests, small sets)."""

    def __init__(self, images):
        self.filename = getattr(images, 'filename', None)  # set for np.memmap
        self.array = images if (isinstance(images, np.memmap) and images.dtype == np.float32) \
            else np.asarray(images, dtype=np.float32)
        if self.array.ndim != 3 or self.array.shape[1] != self.array.shape[2]:
            raise ValueError('Images must be square, shape (N, D, D); got %s'
                             % (self.array.shape,))
        self.box = self.array.shape[-1]

    def __len__(self):
        return len(self.array)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            idx = [idx]
        return np.asarray(self.array[idx], dtype=np.float32)

    def subset(self, indices):
        return ArrayImageSource(self.array[indices])

    def check(self):
        return self


@dataclass
class ParticleSet:
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

    @property
    def box(self):
        return self.images.box

    def __len__(self):
        return len(self.images)

    def subset(self, indices):
        indices = np.asarray(indices)
        pick = (lambda a: None if a is None else a[indices])
        meta = None if self.metadata is None else \
            self.metadata.iloc[indices].reset_index(drop=True)
        return ParticleSet(self.images.subset(indices), self.apix, pick(self.euler),
                           pick(self.shifts), pick(self.ctf), meta, self.source)

    def check(self, require_ctf=True, require_poses=True, n_check=256):
        """Raise ValueError naming the problem when the set cannot be used."""
        name = self.source or 'the particle set'
        if len(self) == 0:
            raise ValueError('%s is empty: no particles to process' % name)
        if require_ctf and self.ctf is None:
            raise ValueError(
                '%s has no CTF parameters: estimate the CTF (e.g. CTFFIND) and '
                're-extract, or import the particles together with their CTF' % name)
        if require_poses and (self.euler is None or self.shifts is None):
            raise ValueError(
                '%s has no poses (angles and shifts): run a consensus 3D refinement '
                'first (RELION, cryoSPARC, Xmipp) and use its output particles' % name)
        for arr, what in ((self.euler, 'angles'), (self.shifts, 'shifts'),
                          (self.ctf, 'CTF parameters')):
            if arr is not None and not np.all(np.isfinite(arr)):
                bad = int(np.nonzero(~np.all(np.isfinite(arr.reshape(len(arr), -1)), 1))[0][0])
                raise ValueError('%s: particle %d has NaN/Inf %s' % (name, bad + 1, what))
        if hasattr(self.images, 'check'):
            self.images.check()
        if self.images.box % 2:
            raise ValueError('%s: odd box size %d; re-extract with an even box'
                             % (name, self.images.box))
        idx = np.unique(np.linspace(0, len(self) - 1, min(n_check, len(self))).astype(int))
        imgs = self.images[idx]
        if not np.all(np.isfinite(imgs)):
            bad = idx[np.nonzero(~np.isfinite(imgs).all(axis=(1, 2)))[0][0]]
            raise ValueError('%s: image %d contains NaN or Inf pixels; remove it or '
                             're-extract the particles' % (name, bad + 1))
        return self


# ---------------------------------------------------------------- RELION .star

def _resolve_image_path(name, star_dir, cache):
    """Image file named in a .star: absolute, relative to the star, or to a parent."""
    if name in cache:
        return cache[name]
    if os.path.isabs(name):
        found = name
    else:
        found = None
        d = star_dir
        for _ in range(6):  # RELION names are relative to the project folder
            cand = os.path.normpath(os.path.join(d, name))
            if os.path.exists(cand):
                found = cand
                break
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        if found is None:
            found = os.path.normpath(os.path.join(star_dir, name))
    cache[name] = found
    return found


def _read_star_blocks(path):
    import starfile
    if not os.path.exists(path):
        raise FileNotFoundError('Particle file not found: %s' % path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise ValueError('Cannot parse the STAR file %s (%s: %s)'
                         % (path, type(exc).__name__, exc)) from None
    return blocks


def read_star(path, apix=None):
    """RELION 3.0 or 3.1+ particle .star -> ParticleSet."""
    import pandas as pd
    path = os.path.abspath(os.fspath(path))
    blocks = _read_star_blocks(path)
    parts = blocks.get('particles')
    if parts is None:
        for df in blocks.values():
            if isinstance(df, pd.DataFrame) and 'rlnImageName' in df.columns:
                parts = df
                break
    if parts is None or not isinstance(parts, pd.DataFrame) or 'rlnImageName' not in parts:
        raise ValueError("The STAR file %s has no particle table with an rlnImageName "
                         "column" % path)
    parts = parts.reset_index(drop=True)
    optics = blocks.get('optics')
    if isinstance(optics, pd.DataFrame) and 'rlnOpticsGroup' in parts and \
            'rlnOpticsGroup' in optics:
        extra = [c for c in optics.columns if c not in parts.columns or c == 'rlnOpticsGroup']
        parts = parts.merge(optics[extra], on='rlnOpticsGroup', how='left', sort=False)
    # pixel size
    if apix is None:
        for col in ('rlnImagePixelSize', 'rlnPixelSize'):
            if col in parts:
                apix = float(parts[col].iloc[0])
                break
        else:
            if 'rlnDetectorPixelSize' in parts and 'rlnMagnification' in parts:
                apix = float(parts['rlnDetectorPixelSize'].iloc[0] * 1e4
                             / parts['rlnMagnification'].iloc[0])
    if apix is None or not np.isfinite(apix) or apix <= 0:
        raise ValueError('The STAR file %s gives no pixel size (rlnImagePixelSize in the '
                         'optics table, or rlnDetectorPixelSize and rlnMagnification): '
                         'give it explicitly' % path)
    # images
    star_dir, cache, refs = os.path.dirname(path), {}, []
    for k, name in enumerate(parts['rlnImageName'].astype(str)):
        if '@' not in name:
            raise ValueError("%s, particle %d: image name '%s' is not of the form "
                             "index@stack.mrcs" % (path, k + 1, name))
        i, f = name.split('@', 1)
        try:
            i = int(i)
        except ValueError:
            raise ValueError("%s, particle %d: bad image index in '%s'"
                             % (path, k + 1, name)) from None
        if i < 1:
            raise ValueError("%s, particle %d: image indices start at 1 ('%s')"
                             % (path, k + 1, name))
        refs.append((_resolve_image_path(f, star_dir, cache), i - 1))
    for f in set(cache.values()):
        if not os.path.exists(f):
            raise FileNotFoundError("The stack '%s' named in %s does not exist" % (f, path))
    # poses
    euler = None
    if all(c in parts for c in ('rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi')):
        euler = parts[['rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi']].to_numpy(float)
    shifts = None
    if 'rlnOriginXAngst' in parts and 'rlnOriginYAngst' in parts:
        shifts = -parts[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy(float)
    elif 'rlnOriginX' in parts and 'rlnOriginY' in parts:
        shifts = -parts[['rlnOriginX', 'rlnOriginY']].to_numpy(float) * apix
    elif euler is not None:
        shifts = np.zeros((len(parts), 2))
    # CTF
    ctf = None
    if 'rlnDefocusU' in parts:
        cols = []
        for c in _STAR_CTF:
            if c in parts:
                v = parts[c].to_numpy(float)
            elif c == 'rlnDefocusV':
                v = parts['rlnDefocusU'].to_numpy(float)
            elif c in _CTF_DEFAULTS:
                v = np.full(len(parts), _CTF_DEFAULTS[c])
            else:
                raise ValueError("The STAR file %s has defocus values but no %s column"
                                 % (path, c))
            if c == 'rlnPhaseShift':
                v = np.nan_to_num(v, nan=0.0)  # missing phase shift means 0
            cols.append(v)
        ctf = np.stack(cols, axis=1)
    meta = parts[[c for c in parts.columns if c not in _KNOWN]].reset_index(drop=True)
    return ParticleSet(ImageSource(refs), float(apix), euler, shifts, ctf,
                       meta if meta.shape[1] else None, source=path)


def write_particles_star(path, pset, stack_path=None, version='3.1', chunk=1024):
    """Write ``pset`` as a RELION .star (3.1 with optics table, or 3.0).

    Images already in a single on-disk stack in order are referenced as is;
    otherwise they are written to ``stack_path`` (default: the .star name
    with .mrcs), in chunks.  Image names are relative to the .star folder.
    """
    import pandas as pd
    import starfile

    from .fileio import atomic_path
    from .io.mrc import StackWriter
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    n = len(pset)
    imgs = pset.images
    mm = getattr(imgs, 'filename', None)
    if mm and len(imgs) == n and (stack_path is None or
                                  os.path.abspath(stack_path) == os.path.abspath(mm)):
        stack_file, imgs = os.path.abspath(mm), None  # already on disk, in order
    elif (stack_path is None and isinstance(imgs, ImageSource) and len(imgs.files) == 1
            and np.array_equal(imgs.img_idx, np.arange(n))):
        stack_file = imgs.files[0]
    else:
        stack_file = os.path.abspath(stack_path or os.path.splitext(path)[0] + '.mrcs')
        with StackWriter(stack_file, n, pset.box, pset.apix) as w:
            for s in range(0, n, chunk):
                w.write(imgs[np.arange(s, min(n, s + chunk))])
        imgs = None
    if isinstance(pset.images, ImageSource) and imgs is not None:
        names = ['%d@%s' % (i + 1, os.path.relpath(pset.images.files[f], folder))
                 for f, i in zip(pset.images.file_idx, pset.images.img_idx)]
    else:
        rel = os.path.relpath(stack_file, folder)
        names = ['%d@%s' % (i + 1, rel) for i in range(n)]
    df = pd.DataFrame({'rlnImageName': names})
    if pset.euler is not None:
        df['rlnAngleRot'], df['rlnAngleTilt'], df['rlnAnglePsi'] = np.asarray(pset.euler).T
    if pset.shifts is not None:
        origin = -np.asarray(pset.shifts, dtype=float)
        if version == '3.0':
            df['rlnOriginX'], df['rlnOriginY'] = (origin / pset.apix).T
        else:
            df['rlnOriginXAngst'], df['rlnOriginYAngst'] = origin.T
    ctf = None if pset.ctf is None else np.asarray(pset.ctf, dtype=float)
    optics_cols = ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast')
    if ctf is not None:
        for j, c in enumerate(_STAR_CTF):
            if version == '3.0' or c not in optics_cols:
                df[c] = ctf[:, j]
    if pset.metadata is not None:
        for c in pset.metadata.columns:
            if c not in df:
                df[c] = pset.metadata[c].to_numpy()
    if version == '3.0':
        df['rlnDetectorPixelSize'] = pset.apix
        df['rlnMagnification'] = 1e4
        data = df
    else:
        optics = {'rlnOpticsGroup': [1], 'rlnOpticsGroupName': ['opticsGroup1'],
                  'rlnImagePixelSize': [pset.apix], 'rlnImageSize': [pset.box],
                  'rlnImageDimensionality': [2]}
        if ctf is not None:
            for j, c in enumerate(_STAR_CTF):
                if c in optics_cols:
                    optics[c] = [float(np.median(ctf[:, j]))]
        df['rlnOpticsGroup'] = 1
        data = {'optics': pd.DataFrame(optics), 'particles': df}
    with atomic_path(path) as tmp:
        starfile.write(data, tmp, overwrite=True)
    return path


# ---------------------------------------------------------------- dispatch

def load_particles(path, apix=None):
    """Load a particle set from a RELION .star or an Xmipp .xmd file."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == '.star':
        pset = read_star(path, apix=apix)
    elif ext == '.xmd':
        from .io.xmd import read_xmd
        pset = read_xmd(path, apix=apix)
    else:
        raise ValueError("Unknown particle file type '%s' (%s): give a RELION .star or "
                         "an Xmipp .xmd" % (ext, path))
    if len(pset) == 0:
        raise ValueError('The particle file %s contains no particles' % path)
    return pset
