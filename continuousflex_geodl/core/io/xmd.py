"""Xmipp .xmd particle metadata <-> ``ParticleSet`` (via xmippLib, from pyxmipp3).

Labels interpreted:

* ``image``: ``idx@stack`` (1-based) or a single-image file, resolved like
  RELION names (absolute, or relative to the .xmd folder or a parent).
* ``angleRot/angleTilt/anglePsi`` (degrees): the core's (rot, tilt, psi)
  (Xmipp's Euler_angles2matrix is the core's ``euler_to_matrix``).
* ``shiftX/shiftY`` (pixels) have the sense of RELION's origin: Scipion
  converts a projection alignment to both with the same
  ``geometryFromMatrix(matrix, inverseTransform=True)`` (scipion-em-xmipp
  ``xmipp3/convert``; scipion-em-relion ``convert31`` writes
  ``rlnOriginXAngst`` = the same shift * pixel size).  So the core shift is
  ``t = -shift * apix``.
* CTF: ``ctfDefocusU/V`` (A), ``ctfDefocusAngle`` (deg), ``ctfVoltage``
  (kV), ``ctfSphericalAberration`` (mm), ``ctfQ0`` (amplitude contrast),
  ``ctfVPPphaseshift`` (deg; missing = 0).
* ``nmaDisplacements`` (``MDL_NMA``, ContinuousFlex / HEMNMA normal-mode
  amplitudes, a vector per row): metadata columns ``nma_0 .. nma_{K-1}``.
* ``samplingRate``: the pixel size (else give ``apix``).
* Rows with ``enabled == -1`` (disabled in Scipion/Xmipp) are skipped;
  mirrored particles (``flip`` = 1) are refused.

Every other label is kept in ``metadata`` under its Xmipp name and written
back by ``write_xmd``.  Like ``core.io.star``, reading returns the fields of
a particle set; ``core.particles`` builds the ``ParticleSet``.
"""
import os

import numpy as np

from ..fileio import atomic_path
from .stack import ImageSource, image_names, resolve_image_path, stack_references

_CTF = ('MDL_CTF_DEFOCUSU', 'MDL_CTF_DEFOCUSV', 'MDL_CTF_DEFOCUS_ANGLE', 'MDL_CTF_VOLTAGE',
        'MDL_CTF_CS', 'MDL_CTF_Q0', 'MDL_CTF_PHASE_SHIFT')
_ANG = ('MDL_ANGLE_ROT', 'MDL_ANGLE_TILT', 'MDL_ANGLE_PSI')
_SHIFT = ('MDL_SHIFT_X', 'MDL_SHIFT_Y')
_CONSUMED = _CTF + _ANG + _SHIFT + ('MDL_IMAGE', 'MDL_NMA', 'MDL_SAMPLINGRATE',
                                    'MDL_ENABLED')


def _xmipp():
    try:
        import xmippLib
    except ImportError as exc:
        raise RuntimeError('Reading or writing .xmd files needs the Xmipp bindings '
                           '(pip install pyxmipp3): %s' % exc) from None
    return xmippLib


class _CapturedStderr:
    """Redirect the process's stderr (fd 2, where Xmipp's C++ code writes its
    parse warnings) to a temporary file; ``text()`` reads what was written."""

    def __enter__(self):
        import sys
        import tempfile
        sys.stderr.flush()
        self._tmp = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._tmp.fileno(), 2)
        return self

    def text(self):
        self._tmp.seek(0)
        return self._tmp.read().decode('utf-8', 'replace')

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._tmp.close()
        return False


_PROBE = """
import sys
import xmippLib
md = xmippLib.MetaData(sys.argv[1])
for label in md.getActiveLabels():
    md.getColumnValues(label)
"""


def _probe(path, timeout=300):
    """Parse ``path`` with Xmipp in a throw-away process first.

    Xmipp's metadata parser aborts or segfaults on some malformed files
    (found by fuzzing: a trailing ``data_`` line, a truncated block name, a
    block without ``loop_``), which would kill the calling process without a
    message.  A crash or a hang there becomes a ValueError here; Python-level
    errors are left to the in-process read (same file, same error).
    """
    import subprocess
    import sys
    try:
        res = subprocess.run([sys.executable, '-c', _PROBE, path], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError('Cannot read the Xmipp metadata %s: parsing it did not finish in '
                         '%d s. The file is malformed; regenerate it.' % (path, timeout)) \
            from None
    if res.returncode < 0:
        raise ValueError('Cannot read the Xmipp metadata %s: the Xmipp parser crashed on it '
                         '(signal %d). The file is malformed or truncated (e.g. an '
                         'incomplete data_ block); regenerate it.' % (path, -res.returncode))


def read_xmd(path, apix=None, root=None):
    """Xmipp particle metadata (.xmd) -> the fields of a particle set (see the
    module docstring): a dict of the keyword arguments of
    ``core.particles.ParticleSet``.

    ``root``: data root that every image file must lie in (see
    ``core.fileio.check_data_path``).  Values Xmipp cannot parse (which it
    would silently read as 0), text that is not UTF-8 and files that crash
    Xmipp's parser (checked in a separate process first, ~0.2 s) give a
    ValueError.
    """
    x = _xmipp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError('Particle file not found: %s' % path)
    if os.path.isdir(path):
        raise ValueError('%s is a folder, not an Xmipp metadata file' % path)
    _probe(path)
    with _CapturedStderr() as err:
        try:
            return _read_xmd(x, path, apix, root, err)
        except (ValueError, FileNotFoundError):
            raise
        except UnicodeDecodeError:
            raise ValueError('The Xmipp metadata %s contains text that is not valid UTF-8: '
                             'the file is corrupt; regenerate it.' % path) from None
        except Exception as exc:  # XmippError, SystemError... from the bindings
            msg = ' '.join(str(exc).split())[:300]
            raise ValueError('Cannot read the Xmipp metadata %s (%s: %s). Check that it is '
                             'a complete .xmd file.' % (path, type(exc).__name__, msg)) \
                from None


def _parse_warnings(err, path):
    """Raise if Xmipp reported values it could not parse (it stores them as 0)."""
    import re
    text = err.text()
    cols = sorted(set(re.findall(r"Error parsing column '([^']*)'", text)))
    if cols or 'valueIn.failed' in text:
        raise ValueError('The Xmipp metadata %s has values that are not numbers (or a '
                         'row with missing values) in column(s) %s: Xmipp would read them '
                         'as 0. Fix or regenerate the file.'
                         % (path, ', '.join(cols) or '(unknown)'))


def _read_xmd(x, path, apix, root, err):
    import pandas as pd
    try:
        md = x.MetaData(path)
    except Exception as exc:
        msg = ' '.join(str(exc).split())
        raise ValueError('Cannot parse the Xmipp metadata %s (%s). Check that it is a '
                         'complete .xmd file.' % (path, msg)) from None
    _parse_warnings(err, path)
    if md.containsLabel(x.MDL_ENABLED):
        md.removeDisabled()
    if md.size() == 0:
        raise ValueError('The Xmipp metadata %s contains no (enabled) particles: select a '
                         'non-empty set' % path)
    if md.size() and not md.containsLabel(x.MDL_IMAGE):
        raise ValueError('The Xmipp metadata %s has no image column: give a particle .xmd'
                         % path)
    lab = {name: getattr(x, name) for name in _CONSUMED}

    def col(name, dtype=float):
        return np.asarray(md.getColumnValues(lab[name]), dtype=dtype)

    if md.containsLabel(x.MDL_FLIP) and np.any(np.asarray(md.getColumnValues(x.MDL_FLIP))):
        raise ValueError('The Xmipp metadata %s has mirrored particles (flip = 1), which '
                         'are not supported: re-align without mirrors' % path)
    file_apix = None
    if md.containsLabel(x.MDL_SAMPLINGRATE) and md.size():
        file_apix = float(col('MDL_SAMPLINGRATE')[0])
    apix = file_apix if apix is None else float(apix)
    if apix is None or not np.isfinite(apix) or apix <= 0:
        raise ValueError('The Xmipp metadata %s gives no pixel size (samplingRate): give it '
                         'explicitly' % path)
    folder, cache = os.path.dirname(path), {}
    names = md.getColumnValues(x.MDL_IMAGE) if md.size() else []
    codes, files, fidx, iidx = {}, [], [], []
    for k, name in enumerate(names):
        i, f = name.split('@', 1) if '@' in name else ('1', name)
        try:
            i = int(i)
        except ValueError:
            i = 0
        if i < 1:
            raise ValueError("%s, particle %d: bad image index in '%s' (indices are "
                             "integers from 1)" % (path, k + 1, name))
        c = codes.get(f)
        if c is None:
            full = resolve_image_path(f, folder, cache, root=root, source=path)
            if not os.path.exists(full):
                raise FileNotFoundError("The image stack '%s' named in the particle file %s "
                                        "does not exist (moved or deleted?)" % (full, path))
            c = codes[f] = len(files)
            files.append(full)
        fidx.append(c)
        iidx.append(i - 1)
    images = ImageSource.from_arrays(files, fidx, iidx)
    n = len(names)

    euler = shifts = ctf = None
    for group, what in ((_ANG, 'angles'), (_SHIFT, 'shifts')):
        have = [c for c in group if md.containsLabel(lab[c])]
        if have and len(have) != len(group):
            raise ValueError('The Xmipp metadata %s has %s but not %s: the %s are '
                             'incomplete' % (path, ', '.join(x.label2Str(lab[c]) for c in have),
                                             ', '.join(x.label2Str(lab[c]) for c in group
                                                       if c not in have), what))
    if all(md.containsLabel(lab[c]) for c in _ANG):
        euler = np.stack([col(c) for c in _ANG], axis=1)
    if all(md.containsLabel(lab[c]) for c in _SHIFT):
        shifts = -np.stack([col(c) for c in _SHIFT], axis=1) * apix
    elif euler is not None:
        shifts = np.zeros((n, 2))
    if md.containsLabel(x.MDL_CTF_DEFOCUSU):
        cols = []
        for c in _CTF:
            if md.containsLabel(lab[c]):
                v = col(c)
            elif c == 'MDL_CTF_DEFOCUSV':
                v = col('MDL_CTF_DEFOCUSU')
            elif c in ('MDL_CTF_DEFOCUS_ANGLE', 'MDL_CTF_PHASE_SHIFT'):
                v = np.zeros(n)
            else:
                raise ValueError('The Xmipp metadata %s has defocus values but no %s column'
                                 % (path, x.label2Str(lab[c])))
            cols.append(np.nan_to_num(v, nan=0.0) if c == 'MDL_CTF_PHASE_SHIFT' else v)
        ctf = np.stack(cols, axis=1)

    meta = {}
    if md.containsLabel(x.MDL_NMA):
        nma = md.getColumnValues(x.MDL_NMA)
        K = {len(v) for v in nma}
        if len(K) != 1:
            raise ValueError('The Xmipp metadata %s has nmaDisplacements vectors of different '
                             'lengths %s' % (path, sorted(K)))
        nma = np.asarray(nma, dtype=float).reshape(n, -1)
        meta.update({'nma_%d' % k: nma[:, k] for k in range(nma.shape[1])})
    consumed = {lab[c] for c in _CONSUMED}
    for label in md.getActiveLabels():
        if label not in consumed:
            meta[x.label2Str(label)] = md.getColumnValues(label)
    meta = pd.DataFrame(meta) if meta else None
    _parse_warnings(err, path)
    return dict(images=images, apix=float(apix), euler=euler, shifts=shifts, ctf=ctf,
                metadata=meta, source=path)


def write_xmd(path, pset, stack_path=None, chunk=1024):
    """Write ``pset`` as an Xmipp .xmd (images in MRC stacks, ``idx@stack`` names).

    Images already on disk are referenced where they are (as for .star);
    otherwise they are written to ``stack_path`` (default: the .xmd name
    with .mrcs).  Metadata columns named like Xmipp labels and ``nma_k``
    columns are written back.  Atomic.  Returns ``path``.
    """
    x = _xmipp()
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    files, fidx, iidx = stack_references(path, pset.images, pset.box, pset.apix, stack_path,
                                         chunk)
    n = len(pset)
    md = x.MetaData()
    for _ in range(n):
        md.addObject()

    def put(label, values):
        md.setColumnValues(label, [v.item() if hasattr(v, 'item') else v for v in values])

    put(x.MDL_IMAGE, image_names(files, fidx, iidx, folder))
    put(x.MDL_SAMPLINGRATE, [float(pset.apix)] * n)
    if pset.euler is not None:
        e = np.asarray(pset.euler, dtype=float)
        for j, c in enumerate(_ANG):
            put(getattr(x, c), e[:, j])
    if pset.shifts is not None:
        s = -np.asarray(pset.shifts, dtype=float) / pset.apix
        for j, c in enumerate(_SHIFT):
            put(getattr(x, c), s[:, j])
    if pset.ctf is not None:
        ctf = np.asarray(pset.ctf, dtype=float)
        for j, c in enumerate(_CTF):
            put(getattr(x, c), ctf[:, j])
    if pset.metadata is not None:
        meta = pset.metadata
        nma = sorted((c for c in meta.columns if str(c).startswith('nma_')
                      and str(c)[4:].isdigit()), key=lambda c: int(str(c)[4:]))
        if nma:
            put(x.MDL_NMA, [list(map(float, r)) for r in meta[nma].to_numpy(float)])
        for c in meta.columns:
            if c in nma:
                continue
            label = x.str2Label(str(c))
            if label < 0 or label in {getattr(x, k) for k in _CONSUMED}:
                continue  # not an Xmipp label (kept only in .star files)
            ltype = x.labelType(label)
            vals = meta[c].tolist()
            if ltype in (x.LABEL_INT, x.LABEL_SIZET):
                vals = [int(v) for v in vals]
            elif ltype == x.LABEL_DOUBLE:
                vals = [float(v) for v in vals]
            elif ltype == x.LABEL_BOOL:
                vals = [bool(v) for v in vals]
            elif ltype == x.LABEL_STRING:
                vals = [str(v) for v in vals]
            put(label, vals)
    with atomic_path(path) as tmp:
        md.write(tmp)
    return path
