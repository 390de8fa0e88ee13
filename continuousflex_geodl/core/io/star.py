"""RELION particle .star files <-> ``ParticleSet`` (RELION 3.0 and 3.1+).

Reading (``read_star``):

* RELION 3.1+: ``data_optics`` + ``data_particles``; optics columns are
  joined onto the particles through ``rlnOpticsGroup``.  RELION 3.0: one
  ``data_`` block with everything per particle.
* Pixel size: ``rlnImagePixelSize`` (3.1), else ``rlnPixelSize``, else
  ``rlnDetectorPixelSize`` (um) * 1e4 / ``rlnMagnification`` (3.0).
* Images ``i@stack`` (1-based ``i``); the stack path may be absolute, or
  relative to the .star's folder or one of its parents (RELION names are
  relative to the project folder).
* Shifts: RELION's origin is the opposite of the core shift ``t``:
  ``t = -rlnOriginXAngst`` (3.1) or ``t = -rlnOriginX * apix`` (3.0, pixels).
* Angles rlnAngleRot/Tilt/Psi (degrees) are the core's (rot, tilt, psi);
  if absent, ``euler`` and ``shifts`` are None.
* CTF: rlnDefocusU/V (A), rlnDefocusAngle (deg), rlnVoltage (kV),
  rlnSphericalAberration (mm), rlnAmplitudeContrast, rlnPhaseShift (deg;
  missing or empty = 0).  No rlnDefocusU -> ``ctf`` None.
* Every other column (including optics-table columns such as
  rlnOpticsGroup or rlnMicrographOriginalPixelSize) is kept in ``metadata``.

Writing (``write_star``): RELION 3.1 (optics table; one optics group per
distinct voltage / Cs / amplitude contrast / optics metadata) or 3.0.  Optics
columns read from a 3.1 file go back to the optics table, so a read-write
round trip keeps the file's content.

This module is the only STAR parser and writer of the package (``starfile``):
``read_star_table`` (the particle table, optics joined) and
``write_star_blocks`` (named tables, atomic) serve the Scipion conversion
(``convert.py``) too.  It returns plain arrays and tables: building a
``ParticleSet`` is ``core.particles``' job (io never imports it).
"""
import os

import numpy as np

from ..fileio import atomic_path
from .stack import ImageSource, image_names, resolve_image_path, stack_references  # noqa: F401

CTF_STAR = ('rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnVoltage',
            'rlnSphericalAberration', 'rlnAmplitudeContrast', 'rlnPhaseShift')
_CTF_OPTICS = ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast')
_ANGLES = ('rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi')
_APIX = ('rlnImagePixelSize', 'rlnPixelSize', 'rlnDetectorPixelSize', 'rlnMagnification')
#: columns interpreted by the reader (not copied into ``metadata``)
CONSUMED = set(CTF_STAR) | set(_ANGLES) | set(_APIX) | {
    'rlnImageName', 'rlnOriginX', 'rlnOriginY', 'rlnOriginXAngst', 'rlnOriginYAngst',
    'rlnImageSize', 'rlnImageDimensionality'}
#: columns that RELION 3.1 keeps in the optics table
OPTICS_LABELS = (
    'rlnOpticsGroup', 'rlnOpticsGroupName', 'rlnMicrographOriginalPixelSize',
    'rlnMicrographPixelSize', 'rlnCtfDataAreCtfPremultiplied', 'rlnCtfDataArePhaseFlipped',
    'rlnBeamTiltX', 'rlnBeamTiltY', 'rlnOddZernike', 'rlnEvenZernike', 'rlnMagMat00',
    'rlnMagMat01', 'rlnMagMat10', 'rlnMagMat11', 'rlnMtfFileName', 'rlnMtfPixelSize')


def _err(path, msg):
    return ValueError('RELION STAR file %s: %s' % (path, msg))


def _read_blocks(path):
    import starfile
    if not os.path.exists(path):
        raise FileNotFoundError('Particle file not found: %s' % path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise _err(path, 'cannot be parsed (%s: %s). Check that it is a complete STAR '
                   'file (loop_ headers and one value per column on every row).'
                   % (type(exc).__name__, exc)) from None
    return blocks


def _numeric(df, col, path):
    """Column as float64, with an error naming the column and the bad value."""
    import pandas as pd
    vals = df[col]
    try:
        return pd.to_numeric(vals, errors='raise').to_numpy(np.float64)
    except (ValueError, TypeError):
        num = pd.to_numeric(vals, errors='coerce')
        bad = np.nonzero(num.isna().to_numpy() & vals.notna().to_numpy())[0]
        k = int(bad[0]) if len(bad) else 0
        raise _err(path, "column %s has a non-numeric value %r (particle %d)"
                   % (col, vals.iloc[k], k + 1)) from None


def _no_duplicate_columns(df, path, block):
    dup = sorted(set(df.columns[df.columns.duplicated()].astype(str)))
    if dup:
        raise _err(path, 'column(s) %s appear more than once in the %s table: remove the '
                   'repeated header lines' % (', '.join(dup), block))


def _particle_table(blocks, path):
    import pandas as pd
    for name, df in blocks.items():
        if isinstance(df, pd.DataFrame):
            _no_duplicate_columns(df, path, 'data_%s' % name)
    parts = blocks.get('particles')
    if not isinstance(parts, pd.DataFrame):
        parts = None
        for df in blocks.values():
            if isinstance(df, pd.DataFrame) and 'rlnImageName' in df.columns:
                parts = df
                break
    if parts is None or 'rlnImageName' not in parts.columns:
        raise _err(path, 'no particle table with an rlnImageName column (found blocks: %s). '
                   'Give a particle .star (e.g. the _data.star of a RELION Refine3D job).'
                   % (', '.join('data_%s' % k for k in blocks) or 'none'))
    parts = parts.reset_index(drop=True)
    optics = blocks.get('optics')
    if isinstance(optics, pd.DataFrame) and len(optics):
        if 'rlnOpticsGroup' not in parts.columns or 'rlnOpticsGroup' not in optics.columns:
            raise _err(path, 'has a data_optics table but no rlnOpticsGroup column to join '
                       'it with the particles')
        og = _numeric(parts, 'rlnOpticsGroup', path)
        known = set(_numeric(optics, 'rlnOpticsGroup', path))
        missing = sorted(set(og) - known)
        if missing:
            raise _err(path, 'particles refer to optics group(s) %s that the data_optics '
                       'table does not define' % ', '.join('%g' % m for m in missing))
        extra = [c for c in optics.columns if c not in parts.columns or c == 'rlnOpticsGroup']
        opt = optics[extra].copy()
        opt['rlnOpticsGroup'] = _numeric(optics, 'rlnOpticsGroup', path)
        parts = parts.assign(rlnOpticsGroup=og).merge(opt, on='rlnOpticsGroup', how='left',
                                                      sort=False)
        parts['rlnOpticsGroup'] = parts['rlnOpticsGroup'].astype(np.int64)
    return parts


def _pixel_size(parts, path):
    if 'rlnImagePixelSize' in parts or 'rlnPixelSize' in parts:
        col = 'rlnImagePixelSize' if 'rlnImagePixelSize' in parts else 'rlnPixelSize'
        apix = _numeric(parts, col, path)
    elif 'rlnDetectorPixelSize' in parts and 'rlnMagnification' in parts:
        col = 'rlnDetectorPixelSize / rlnMagnification'
        apix = _numeric(parts, 'rlnDetectorPixelSize', path) * 1e4 / \
            _numeric(parts, 'rlnMagnification', path)
    else:
        return None
    if not np.all(np.isfinite(apix)) or np.any(apix <= 0):
        raise _err(path, 'invalid pixel size in %s' % col)
    if np.ptp(apix) > 1e-4 * apix.max():
        raise _err(path, 'the particles have different pixel sizes (%s A): rescale or '
                   're-extract them to one pixel size first'
                   % ', '.join('%g' % a for a in np.unique(apix)))
    return float(apix[0])


def _image_refs(parts, path, root=None):
    """(files list, file index, 0-based image index) from rlnImageName."""
    import pandas as pd
    names = parts['rlnImageName'].astype(str)
    split = names.str.split('@', n=1, expand=True)
    if split.shape[1] < 2 or split[1].isna().any():
        k = int(np.nonzero(split[1].isna().to_numpy())[0][0]) if split.shape[1] > 1 else 0
        raise _err(path, "particle %d: image name '%s' is not of the form index@stack.mrcs"
                   % (k + 1, names.iloc[k]))
    idx = np.asarray(pd.to_numeric(split[0], errors='coerce'))
    bad = np.nonzero(~np.isfinite(idx) | (idx < 1) | (idx != np.round(idx)))[0]
    if len(bad):
        raise _err(path, "particle %d: bad image index in '%s' (indices are integers from 1)"
                   % (bad[0] + 1, names.iloc[bad[0]]))
    codes, uniq = pd.factorize(split[1])
    folder, cache = os.path.dirname(path), {}
    files = [resolve_image_path(f, folder, cache, root=root, source=path) for f in uniq]
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError("The image stack '%s' named in the particle file %s does "
                                    "not exist (moved or deleted?)" % (f, path))
    return files, codes.astype(np.int64), idx.astype(np.int64) - 1


def _all_or_none(parts, cols, path, what):
    """True if all ``cols`` are present, False if none; a clear error otherwise."""
    have = [c for c in cols if c in parts]
    if have and len(have) != len(cols):
        raise _err(path, 'has %s but not %s: the %s are incomplete. Give all of %s, or none.'
                   % (', '.join(have), ', '.join(c for c in cols if c not in have), what,
                      ', '.join(cols)))
    return bool(have)


def read_star_table(path):
    """The particle table of a RELION 3.0 / 3.1+ .star as a pandas DataFrame,
    with the optics-table columns joined onto each particle (3.1+).

    Errors (ValueError) name the file and the problem: unparsable file,
    repeated columns, no particle table, optics groups not defined.
    """
    path = os.path.abspath(os.fspath(path))
    return _particle_table(_read_blocks(path), path)


def star_pixel_size(parts, path):
    """The one pixel size (A) of a particle table (``read_star_table``), or
    None when it has none; ValueError when particles disagree."""
    return _pixel_size(parts, os.fspath(path))


def _compact(meta):
    """``meta`` with its repeated text columns (micrograph names, ...) as
    pandas categories: a small integer per particle instead of a Python
    string, so that the columns kept for the output files stay small in
    memory for 10^6 particles.  Values (and their text when written) are
    unchanged."""
    import pandas as pd
    for c in meta.columns:
        col = meta[c]
        text = col.dtype == object or (pd.api.types.is_string_dtype(col.dtype) and
                                       not isinstance(col.dtype, pd.CategoricalDtype))
        if text and col.nunique(dropna=False) <= len(col) // 2:
            meta[c] = col.astype('category')
    return meta


def read_star(path, apix=None, root=None):
    """RELION 3.0 or 3.1+ particle .star -> the fields of a particle set.

    Returns a dict with ``images`` (lazy ``ImageSource``), ``apix``,
    ``euler``, ``shifts``, ``ctf``, ``metadata`` and ``source``: the keyword
    arguments of ``core.particles.ParticleSet`` (see the module docstring;
    ``core.particles.read_star`` builds the set).  ``apix`` (A/pixel)
    overrides the pixel size of the file.  ``root``: data root folder that
    every image file must lie in (default: env ``CFGEODL_DATA_ROOT``, else
    no restriction on absolute names; see ``core.fileio.check_data_path``).
    """
    path = os.path.abspath(os.fspath(path))
    parts = read_star_table(path)
    if len(parts) == 0:
        raise _err(path, 'the particle table is empty (no particles): select a non-empty '
                   'set of particles')
    file_apix = _pixel_size(parts, path)
    apix = file_apix if apix is None else float(apix)
    if apix is None:
        raise _err(path, 'no pixel size (rlnImagePixelSize in the optics table, or '
                   'rlnDetectorPixelSize and rlnMagnification): give it explicitly')
    files, fidx, iidx = _image_refs(parts, path, root)
    images = ImageSource.from_arrays(files, fidx, iidx)

    euler = shifts = None
    if _all_or_none(parts, _ANGLES, path, 'angles'):
        euler = np.stack([_numeric(parts, c, path) for c in _ANGLES], axis=1)
    if _all_or_none(parts, ('rlnOriginXAngst', 'rlnOriginYAngst'), path, 'shifts'):
        shifts = -np.stack([_numeric(parts, c, path)
                            for c in ('rlnOriginXAngst', 'rlnOriginYAngst')], axis=1)
    elif _all_or_none(parts, ('rlnOriginX', 'rlnOriginY'), path, 'shifts'):
        shifts = -np.stack([_numeric(parts, c, path)
                            for c in ('rlnOriginX', 'rlnOriginY')], axis=1) * apix
    elif euler is not None:
        shifts = np.zeros((len(parts), 2))

    ctf = None
    if 'rlnDefocusU' in parts:
        cols = []
        for c in CTF_STAR:
            if c in parts:
                v = _numeric(parts, c, path)
            elif c == 'rlnDefocusV':
                v = _numeric(parts, 'rlnDefocusU', path)
            elif c in ('rlnDefocusAngle', 'rlnPhaseShift'):
                v = np.zeros(len(parts))
            else:
                raise _err(path, 'has defocus values but no %s column (in RELION 3.1 it '
                           'belongs to the data_optics table)' % c)
            if c == 'rlnPhaseShift':
                v = np.nan_to_num(v, nan=0.0)  # empty phase shift means none
            cols.append(v)
        ctf = np.stack(cols, axis=1)

    keep = [c for c in parts.columns if c not in CONSUMED]
    meta = _compact(parts[keep].reset_index(drop=True)) if keep else None
    return dict(images=images, apix=float(apix), euler=euler, shifts=shifts, ctf=ctf,
                metadata=meta, source=path)


# ---------------------------------------------------------------- writing

def write_star_blocks(path, blocks):
    """Write named tables ``{'optics': DataFrame, 'particles': DataFrame}``
    (or one DataFrame) as a STAR file, atomically; returns ``path``.

    Floats are written with 6 decimals (``starfile``).
    """
    import pandas as pd
    import starfile
    path = os.fspath(path)
    if isinstance(blocks, dict):
        blocks = {k: pd.DataFrame(v) for k, v in blocks.items()}
    with atomic_path(path) as tmp:
        try:
            starfile.write(blocks, tmp, overwrite=True)
        except Exception as exc:
            raise ValueError('Cannot write the STAR file %s (%s: %s)'
                             % (path, type(exc).__name__, exc)) from None
    return path


def write_star(path, pset, stack_path=None, version='3.1', chunk=1024):
    """Write ``pset`` as a RELION particle .star (3.1 with optics table, or 3.0).

    Images already on disk (``ImageSource``, or a memory-mapped MRC stack)
    are referenced where they are; otherwise (or when ``stack_path`` names
    another file) they are written to ``stack_path`` (default: the .star
    name with .mrcs), in chunks.  Image paths inside the .star's folder are
    written relative to it, others absolute.  Atomic.  Returns ``path``.
    """
    import pandas as pd
    version = str(version)
    if version not in ('3.0', '3.1'):
        raise ValueError("write_star: version must be '3.0' or '3.1' (got %r)" % version)
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    n = len(pset)
    files, fidx, iidx = stack_references(path, pset.images, pset.box, pset.apix, stack_path,
                                         chunk)
    cols = {'rlnImageName': image_names(files, fidx, iidx, folder)}
    if pset.euler is not None:
        e = np.asarray(pset.euler, dtype=float)
        for j, c in enumerate(_ANGLES):
            cols[c] = e[:, j]
    if pset.shifts is not None:
        origin = -np.asarray(pset.shifts, dtype=float)
        if version == '3.0':
            cols['rlnOriginX'], cols['rlnOriginY'] = (origin / pset.apix).T
        else:
            cols['rlnOriginXAngst'], cols['rlnOriginYAngst'] = origin.T
    if pset.ctf is not None:
        ctf = np.asarray(pset.ctf, dtype=float)
        for j, c in enumerate(CTF_STAR):
            cols[c] = ctf[:, j]
    df = pd.DataFrame(cols)
    if pset.metadata is not None:
        for c in pset.metadata.columns:
            if c not in df.columns and c not in CONSUMED:
                df[c] = pset.metadata[c].to_numpy()
    if version == '3.0':
        df = df.drop(columns=[c for c in ('rlnOpticsGroup', 'rlnOpticsGroupName') if c in df])
        df['rlnDetectorPixelSize'] = float(pset.apix)
        df['rlnMagnification'] = 10000.0
        data = df
    else:
        data = _split_optics(df, pset.apix, pset.box)
    return write_star_blocks(path, data)


def _split_optics(df, apix, box):
    """RELION 3.1 tables: optics groups = distinct values of the optics columns."""
    import pandas as pd
    ocols = [c for c in OPTICS_LABELS if c in df.columns] + \
        [c for c in _CTF_OPTICS if c in df.columns]
    if ocols:
        codes = df.groupby(ocols, sort=False, dropna=False).ngroup().to_numpy()
        order = np.unique(codes, return_index=True)[1]  # first particle of each group
        first = df.iloc[order][ocols].reset_index(drop=True)
    else:
        codes = np.zeros(len(df), dtype=np.int64)
        first = pd.DataFrame(index=range(1))
    optics = pd.DataFrame({'rlnOpticsGroup': np.arange(1, len(first) + 1)})
    if 'rlnOpticsGroup' in first:
        optics['rlnOpticsGroup'] = first['rlnOpticsGroup'].to_numpy()
        if optics['rlnOpticsGroup'].duplicated().any():  # same group, different optics
            optics['rlnOpticsGroup'] = np.arange(1, len(first) + 1)
    optics['rlnOpticsGroupName'] = first['rlnOpticsGroupName'].to_numpy() \
        if 'rlnOpticsGroupName' in first else \
        ['opticsGroup%d' % g for g in optics['rlnOpticsGroup']]
    for c in ocols:
        if c not in optics:
            optics[c] = first[c].to_numpy()
    optics['rlnImagePixelSize'] = float(apix)
    optics['rlnImageSize'] = int(box)
    optics['rlnImageDimensionality'] = 2
    parts = df.drop(columns=ocols)
    parts['rlnOpticsGroup'] = optics['rlnOpticsGroup'].to_numpy()[codes]
    return {'optics': optics, 'particles': parts}
