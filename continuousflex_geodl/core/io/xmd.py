"""Xmipp .xmd particle metadata (via xmippLib from pyxmipp3).

Columns read: image (``idx@stack`` or a single-image file), angleRot/Tilt/Psi
(degrees), shiftX/Y (pixels, same sense as RELION's origin: ``t = -shift *
apix``), the CTF (ctfDefocusU/V/Angle, ctfVoltage, ctfSphericalAberration,
ctfQ0, ctfPhaseShift; missing phase shift = 0) and ContinuousFlex's
normal-mode amplitudes ``nmaDisplacements`` (a vector per row), returned in
``metadata`` as columns ``nma_0 .. nma_{K-1}``.
"""
import os

import numpy as np


def _xmipp():
    try:
        import xmippLib
    except ImportError as exc:
        raise RuntimeError('Reading .xmd files needs the Xmipp bindings (pip install '
                           'pyxmipp3): %s' % exc) from None
    return xmippLib


def read_xmd(path, apix=None):
    import pandas as pd

    from ..particles import ImageSource, ParticleSet, _resolve_image_path
    x = _xmipp()
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError('Particle file not found: %s' % path)
    try:
        md = x.MetaData(path)
    except Exception as exc:
        raise ValueError('Cannot parse the Xmipp metadata %s (%s)' % (path, exc)) from None
    ids = list(md)
    if not md.containsLabel(x.MDL_IMAGE):
        raise ValueError('The metadata %s has no image column' % path)
    if apix is None and md.containsLabel(x.MDL_SAMPLINGRATE):
        apix = md.getValue(x.MDL_SAMPLINGRATE, ids[0])
    if apix is None:
        raise ValueError('The metadata %s gives no pixel size (samplingRate): give it '
                         'explicitly' % path)
    folder, cache, refs = os.path.dirname(path), {}, []
    for oid in ids:
        name = md.getValue(x.MDL_IMAGE, oid)
        i, f = name.split('@', 1) if '@' in name else ('1', name)
        refs.append((_resolve_image_path(f, folder, cache), int(i) - 1))

    def cols(labels, defaults=None):
        out = []
        for k, lab in enumerate(labels):
            if md.containsLabel(lab):
                out.append([md.getValue(lab, oid) for oid in ids])
            elif defaults is not None and defaults[k] is not None:
                out.append([defaults[k]] * len(ids))
            else:
                return None
        return np.asarray(out, dtype=float).T

    euler = cols([x.MDL_ANGLE_ROT, x.MDL_ANGLE_TILT, x.MDL_ANGLE_PSI])
    shifts = cols([x.MDL_SHIFT_X, x.MDL_SHIFT_Y], [0.0, 0.0]) if euler is not None else None
    if shifts is not None:
        shifts = -shifts * apix
    ctf = None
    if md.containsLabel(x.MDL_CTF_DEFOCUSU):
        ctf = cols([x.MDL_CTF_DEFOCUSU, x.MDL_CTF_DEFOCUSV, x.MDL_CTF_DEFOCUS_ANGLE,
                    x.MDL_CTF_VOLTAGE, x.MDL_CTF_CS, x.MDL_CTF_Q0, x.MDL_CTF_PHASE_SHIFT],
                   [None, None, 0.0, 300.0, 2.7, 0.1, 0.0])
        if ctf is not None:
            ctf[:, 6] = np.nan_to_num(ctf[:, 6], nan=0.0)
    meta = None
    if md.containsLabel(x.MDL_NMA):
        nma = np.asarray([md.getValue(x.MDL_NMA, oid) for oid in ids], dtype=float)
        meta = pd.DataFrame({'nma_%d' % k: nma[:, k] for k in range(nma.shape[1])})
    return ParticleSet(ImageSource(refs), float(apix), euler, shifts, ctf, meta, source=path)


def write_xmd(path, pset, stack_path=None):
    """Write ``pset`` as an Xmipp .xmd (images referenced in an MRC stack)."""
    from ..fileio import atomic_path
    from ..particles import ImageSource
    x = _xmipp()
    path = os.path.abspath(os.fspath(path))
    imgs = pset.images
    if isinstance(imgs, ImageSource) and stack_path is None:
        names = ['%d@%s' % (i + 1, os.path.relpath(imgs.files[f], os.path.dirname(path)))
                 for f, i in zip(imgs.file_idx, imgs.img_idx)]
    else:
        from .mrc import write_mrc
        stack_path = os.path.abspath(stack_path or os.path.splitext(path)[0] + '.mrcs')
        write_mrc(stack_path, imgs[np.arange(len(pset))], pset.apix)
        rel = os.path.relpath(stack_path, os.path.dirname(path))
        names = ['%d@%s' % (i + 1, rel) for i in range(len(pset))]
    md = x.MetaData()
    nma = None
    if pset.metadata is not None:
        c = [k for k in pset.metadata.columns if str(k).startswith('nma_')]
        if c:
            nma = pset.metadata[sorted(c, key=lambda s: int(s[4:]))].to_numpy(float)
    for k, name in enumerate(names):
        oid = md.addObject()
        md.setValue(x.MDL_IMAGE, name, oid)
        md.setValue(x.MDL_SAMPLINGRATE, float(pset.apix), oid)
        if pset.euler is not None:
            for lab, v in zip((x.MDL_ANGLE_ROT, x.MDL_ANGLE_TILT, x.MDL_ANGLE_PSI), pset.euler[k]):
                md.setValue(lab, float(v), oid)
        if pset.shifts is not None:
            sx, sy = -np.asarray(pset.shifts[k]) / pset.apix
            md.setValue(x.MDL_SHIFT_X, float(sx), oid)
            md.setValue(x.MDL_SHIFT_Y, float(sy), oid)
        if pset.ctf is not None:
            labs = (x.MDL_CTF_DEFOCUSU, x.MDL_CTF_DEFOCUSV, x.MDL_CTF_DEFOCUS_ANGLE,
                    x.MDL_CTF_VOLTAGE, x.MDL_CTF_CS, x.MDL_CTF_Q0, x.MDL_CTF_PHASE_SHIFT)
            for lab, v in zip(labs, pset.ctf[k]):
                md.setValue(lab, float(v), oid)
        if nma is not None:
            md.setValue(x.MDL_NMA, [float(v) for v in nma[k]], oid)
    with atomic_path(path) as tmp:
        md.write(tmp)
    return path
