"""Scipion sets <-> core arrays and files: the one place both worlds meet.

Poses
-----
Scipion stores a particle's 3D projection alignment (``ALIGN_PROJ``) as the
4x4 matrix ``M`` of its ``Transform``.  We read and write it exactly as
scipion-em-xmipp (``geometryFromMatrix`` / ``matrixFromGeometry``) and
scipion-em-relion (``Writer._alignProjToRow`` / ``Reader.__setParticleTransformProj``)
do, with ``pwem.convert.transformations``::

    M^-1 = [R | -s]        R = euler_matrix(-rot, -tilt, -psi, 'szyz')[:3, :3]
                             = Xmipp Euler_angles2matrix(rot, tilt, psi)
                           s = shift in pixels = Xmipp shiftX/Y = RELION origin (px)

so ``rlnOriginXAngst = s_x * apix`` and the core's shift is
``t = -rlnOriginXAngst`` (A): a point ``x`` (A, about the box centre) of the
molecule lands at image position ``(R x)[:2] + t``.

CTF
---
``CTFModel`` defocus U/V (A) and angle (degrees) are RELION's
(``rlnDefocusU/V/Angle``); a missing phase shift is 0.  Voltage (kV),
spherical aberration (mm) and amplitude contrast come from the particle's
``Acquisition``.  Core CTF rows are ``(dfu, dfv, dfang, kV, cs, w, phase_shift)``.

Files
-----
``writeParticlesStar`` writes a RELION 3.1 star (optics + particles tables)
that ``core.particles.load_particles`` reads; image stacks in MRC format are
referenced in place (absolute paths), any other format is converted to one
``.mrcs`` stack.  ``readParticlesStar`` builds a ``SetOfParticles`` from such a
star.  STAR, MRC and PDB files are read and written by ``core.io`` (starfile,
mrcfile, gemmi), the same code the command-line tools use.  Latents, volumes
and landscape states come back as pwem flexibility objects
(``ParticleFlex.setZFlex``, ``VolumeFlex``, ``SetOfClassesFlex``).
"""
import os

import numpy as np

import pwem.convert.transformations as tfs
from pwem.constants import ALIGN_2D, ALIGN_3D, ALIGN_NONE, ALIGN_PROJ, NO_INDEX
from pwem.objects import (Acquisition, CTFModel, Particle, ParticleFlex, Transform,
                          Volume, VolumeFlex)
from pyworkflow.object import CsvList, Integer

from . import constants as const
from .core.fileio import atomic_savez
from .core.io.mrc import StackWriter
from .core.io.pdb import read_coordinates
from .core.io.star import read_star_table, star_pixel_size, write_star_blocks

MRC_EXTENSIONS = ('.mrcs', '.mrc', '.st', '.map')

# --------------------------------------------------------------------------
# Poses
# --------------------------------------------------------------------------


def geometryFromMatrix(matrix, inverseTransform):
    """4x4 Scipion matrix -> (shifts (3,) px, angles (3,) rot, tilt, psi deg).

    Same as scipion-em-xmipp ``xmipp3.convert.geometryFromMatrix``.
    """
    matrix = np.asarray(matrix, dtype=float)
    if inverseTransform:
        matrix = np.linalg.inv(matrix)
        shifts = -tfs.translation_from_matrix(matrix)
    else:
        shifts = tfs.translation_from_matrix(matrix)
    angles = -np.rad2deg(tfs.euler_from_matrix(matrix, axes='szyz'))
    return shifts, angles


def matrixFromGeometry(shifts, angles, inverseTransform):
    """(shifts (3,) px, angles (3,) deg) -> 4x4 Scipion matrix.

    Same as scipion-em-xmipp ``xmipp3.convert.matrixFromGeometry``.
    """
    shifts = np.asarray(shifts, dtype=float)
    radAngles = -np.deg2rad(np.asarray(angles, dtype=float))
    M = tfs.euler_matrix(radAngles[0], radAngles[1], radAngles[2], 'szyz')
    if inverseTransform:
        M[:3, 3] = -shifts[:3]
        M = np.linalg.inv(M)
    else:
        M[:3, 3] = shifts[:3]
    return M


def matrixToRelion(matrix, apix):
    """ALIGN_PROJ matrix -> (rot, tilt, psi, rlnOriginXAngst, rlnOriginYAngst).

    As scipion-em-relion ``Writer._alignProjToRow``.
    """
    shifts, angles = geometryFromMatrix(matrix, True)
    return (float(angles[0]), float(angles[1]), float(angles[2]),
            float(shifts[0] * apix), float(shifts[1] * apix))


def relionToMatrix(rot, tilt, psi, originXAngst, originYAngst, apix, originZAngst=0.0):
    """RELION angles (deg) and origin (A) -> ALIGN_PROJ 4x4 matrix.

    As scipion-em-relion ``Reader.__setParticleTransformProj``.
    """
    shifts = np.array([originXAngst, originYAngst, originZAngst], dtype=float) / apix
    return matrixFromGeometry(shifts, [rot, tilt, psi], True)


def matrixToCorePose(matrix, apix):
    """ALIGN_PROJ matrix -> (euler (3,) deg, t (2,) A) in the core convention."""
    rot, tilt, psi, ox, oy = matrixToRelion(matrix, apix)
    return np.array([rot, tilt, psi]), np.array([-ox, -oy])


def corePoseToMatrix(euler, t, apix):
    """Core pose (euler deg, t A with t = -RELION origin) -> ALIGN_PROJ matrix."""
    return relionToMatrix(euler[0], euler[1], euler[2], -t[0], -t[1], apix)


# --------------------------------------------------------------------------
# CTF and acquisition
# --------------------------------------------------------------------------


def ctfToCoreRow(ctfModel, acquisition):
    """CTFModel + Acquisition -> (dfu A, dfv A, dfang deg, kV, cs mm, w, phase deg)."""
    phase = ctfModel.getPhaseShift() if hasattr(ctfModel, 'getPhaseShift') else None
    return (float(ctfModel.getDefocusU()), float(ctfModel.getDefocusV()),
            float(ctfModel.getDefocusAngle()), float(acquisition.getVoltage()),
            float(acquisition.getSphericalAberration()),
            float(acquisition.getAmplitudeContrast()),
            float(phase) if phase is not None else 0.0)


def coreRowToCtf(row):
    """(dfu, dfv, dfang, [kV, cs, w, phase]) -> CTFModel (phase shift kept if != 0)."""
    ctf = CTFModel()
    ctf.setStandardDefocus(float(row[0]), float(row[1]), float(row[2]))
    if len(row) > 6 and float(row[6]) != 0.0:
        ctf.setPhaseShift(float(row[6]))
    return ctf


def coreRowToAcquisition(row):
    acq = Acquisition()
    acq.setVoltage(float(row[3]))
    acq.setSphericalAberration(float(row[4]))
    acq.setAmplitudeContrast(float(row[5]))
    return acq


# --------------------------------------------------------------------------
# Particles -> RELION 3.1 star
# --------------------------------------------------------------------------


def writeStarTables(path, tables):
    """Write ``[(name, columns, rows)]`` as a RELION 3.1 STAR file (atomic).

    Text values may not contain white space (RELION splits on it)."""
    import pandas as pd
    blocks = {}
    for name, columns, rows in tables:
        for r in rows:
            for v in r:
                if isinstance(v, str) and (not v or any(c.isspace() for c in v)):
                    raise ValueError("Cannot write '%s' to a STAR file: file names with "
                                     "spaces are not supported; move the data to a folder "
                                     "without spaces." % v)
        blocks[name] = pd.DataFrame(list(rows), columns=list(columns))
    return write_star_blocks(path, blocks)


def _isMrcStackLocation(index, fn):
    return index != NO_INDEX and os.path.splitext(fn)[1].lower() in MRC_EXTENSIONS


def _acquisitionKey(acq, objId, needed):
    """(kV, Cs mm, Q0) of an Acquisition; RELION defaults when not needed."""
    values = (None, None, None) if acq is None else (
        acq.getVoltage(), acq.getSphericalAberration(), acq.getAmplitudeContrast())
    if any(v is None for v in values):
        if needed:
            raise ValueError('Particle %s has a CTF but its acquisition lacks voltage, '
                             'spherical aberration or amplitude contrast; set them when '
                             'importing the micrographs or particles.' % objId)
        return (300.0, 2.7, 0.1)
    return tuple(float(v) for v in values)


def _writeConvertedStack(locations, outStack, box, apix):
    """Write the images at ``locations`` ((index, file) list) to one float32 .mrcs."""
    from pwem.emlib.image import ImageHandler
    ih = ImageHandler()
    with StackWriter(outStack, len(locations), box, apix) as w:
        for loc in locations:
            w.write(np.asarray(ih.read(loc).getData(), dtype=np.float32).reshape(box, box))


def writeParticlesStar(partSet, starFn, convertDir=None, requirePoses=False,
                       requireCtf=False):
    """Write ``partSet`` (a SetOfParticles) as a RELION 3.1 star for the core.

    Particles are written in ascending id order; the ids are stored in
    ``rlnImageId`` and returned (a list), so outputs in row order map back.
    Images in MRC stacks are referenced in place (absolute paths); others are
    converted to ``convertDir/particles_converted.mrcs``.

    Raises ValueError with the fix when poses / CTF are required but absent.
    """
    apix = partSet.getSamplingRate()
    if not apix or apix <= 0:
        raise ValueError('The input particles have no pixel size (sampling rate); '
                         'set it when importing them.')
    box = partSet.getXDim()
    alignType = partSet.getAlignment()
    hasPoses = alignType == ALIGN_PROJ
    if alignType in (ALIGN_2D, ALIGN_3D):
        if requirePoses:
            raise ValueError('The input particles carry a %s alignment, but 3D projection '
                             'angles (ALIGN_PROJ) are needed: use particles from a 3D '
                             'refinement (RELION, cryoSPARC, Xmipp).' % alignType)
        hasPoses = False
    if requirePoses and not hasPoses:
        raise ValueError('The input particles have no 3D angular assignment (their '
                         'alignment is "%s"); run a consensus 3D refinement first so '
                         'each particle has angles and shifts.' % alignType)
    hasCtf = partSet.hasCTF()
    if requireCtf and not hasCtf:
        raise ValueError('The input particles have no CTF information; estimate the CTF '
                         'on the micrographs (e.g. CTFFIND) and extract the particles again, '
                         'or assign a CTF to them.')

    # one pass over the set (it may hold millions of particles): rows and the
    # locations that need conversion to MRC
    ids, rows, toConvert = [], [], []
    optics = {}
    for p in partSet.iterItems(orderBy='id', direction='ASC'):
        objId = p.getObjId()
        index, fn = p.getLocation()
        if _isMrcStackLocation(index, fn):
            name = '%06d@%s' % (index, os.path.abspath(fn))
        else:
            toConvert.append((index, fn))
            name = None  # filled after conversion
        acq = p.getAcquisition() or partSet.getAcquisition()
        key = _acquisitionKey(acq, objId, hasCtf)
        group = optics.setdefault(key, len(optics) + 1)
        row = [name, group, int(objId)]
        if hasPoses:
            if not p.hasTransform():
                raise ValueError('Particle %d has no transform although the set says it '
                                 'is aligned (ALIGN_PROJ).' % objId)
            row.extend(matrixToRelion(p.getTransform().getMatrix(), apix))
        if hasCtf:
            ctf = p.getCTF()
            if ctf is None:
                raise ValueError('Particle %d has no CTF although the set says it has.'
                                 % objId)
            dfu, dfv, dfang, _, _, _, phase = ctfToCoreRow(ctf, acq)
            row.extend([dfu, dfv, dfang, phase])
        ids.append(objId)
        rows.append(row)
    if not rows:
        raise ValueError('The input set of particles is empty.')

    if toConvert:
        convertDir = convertDir or os.path.dirname(os.path.abspath(starFn))
        outStack = os.path.abspath(os.path.join(convertDir, 'particles_converted.mrcs'))
        _writeConvertedStack(toConvert, outStack, box, apix)
        k = 0
        for row in rows:
            if row[0] is None:
                k += 1
                row[0] = '%06d@%s' % (k, outStack)

    pcols = ['rlnImageName', 'rlnOpticsGroup', 'rlnImageId']
    if hasPoses:
        pcols += ['rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi',
                  'rlnOriginXAngst', 'rlnOriginYAngst']
    if hasCtf:
        pcols += ['rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnPhaseShift']
    ocols = ['rlnOpticsGroup', 'rlnOpticsGroupName', 'rlnImagePixelSize', 'rlnImageSize',
             'rlnImageDimensionality', 'rlnVoltage', 'rlnSphericalAberration',
             'rlnAmplitudeContrast']
    orows = [[g, 'opticsGroup%d' % g, float(apix), int(box), 2, kv, cs, q0]
             for (kv, cs, q0), g in sorted(optics.items(), key=lambda kv: kv[1])]
    writeStarTables(starFn, [('optics', ocols, orows), ('particles', pcols, rows)])
    return ids


# --------------------------------------------------------------------------
# RELION 3.1 star -> SetOfParticles
# --------------------------------------------------------------------------


def _relionToLocation(name, starDir):
    if '@' in name:
        index, fn = name.split('@', 1)
        index = int(index)
    else:
        index, fn = NO_INDEX, name
    if not os.path.isabs(fn):
        fn = os.path.join(starDir, fn)
    return index, os.path.normpath(fn)


def readParticlesStar(starFn, partSet, relativeTo=None, extraAttrs=None):
    """Fill ``partSet`` from a RELION 3.1 star (as written by the core).

    Sets sampling rate, acquisition, CTF (if defocus columns), ALIGN_PROJ
    transforms (if angle columns).  Image paths are made relative to
    ``relativeTo`` (usually the project folder) when inside it.
    ``extraAttrs``: optional dict ``{attrName: sequence}`` of per-row values
    stored as particle attributes (lists/arrays as CsvList, ints as Integer).
    Returns the number of particles.
    """
    parts = read_star_table(starFn)  # optics groups joined onto the particles
    apix = star_pixel_size(parts, starFn)
    missing = [c for c in ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast')
               if c not in parts]
    if apix is None or missing:
        raise ValueError('The STAR file %s lacks %s: give a RELION 3.1 particle star with '
                         'its optics table.' % (starFn, ', '.join(
                             missing + ([] if apix else ['rlnImagePixelSize']))))
    groups = parts['rlnOpticsGroup'].to_numpy() if 'rlnOpticsGroup' in parts else \
        np.ones(len(parts), int)
    first = next(parts.iloc[[int(np.argmin(groups))]].itertuples(index=False))
    cols = set(parts.columns)
    hasPoses = {'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi'} <= cols
    hasCtf = {'rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle'} <= cols
    starDir = os.path.dirname(os.path.abspath(starFn))
    relativeTo = os.path.abspath(relativeTo) if relativeTo else None

    partSet.setSamplingRate(apix)
    partSet.setAcquisition(_opticsAcquisition(first))
    partSet.setHasCTF(hasCtf)
    partSet.setAlignment(ALIGN_PROJ if hasPoses else ALIGN_NONE)

    n = 0
    for i, row in enumerate(parts.itertuples(index=False)):
        index, fn = _relionToLocation(row.rlnImageName, starDir)
        if relativeTo and fn.startswith(relativeTo + os.sep):
            fn = os.path.relpath(fn, relativeTo)
        p = Particle()
        p.setLocation(index, fn)
        p.setSamplingRate(apix)
        p.setAcquisition(_opticsAcquisition(row))
        if hasCtf:
            phase = float(np.nan_to_num(float(getattr(row, 'rlnPhaseShift', 0.0) or 0.0)))
            p.setCTF(coreRowToCtf([row.rlnDefocusU, row.rlnDefocusV, row.rlnDefocusAngle,
                                   0, 0, 0, phase]))
        if hasPoses:
            M = relionToMatrix(float(row.rlnAngleRot), float(row.rlnAngleTilt),
                               float(row.rlnAnglePsi),
                               float(getattr(row, 'rlnOriginXAngst', 0.0) or 0.0),
                               float(getattr(row, 'rlnOriginYAngst', 0.0) or 0.0), apix)
            p.setTransform(Transform(M))
        for attr, values in (extraAttrs or {}).items():
            setParticleAttr(p, attr, values[i])
        partSet.append(p)
        n += 1
    return n


def _opticsAcquisition(row):
    acq = Acquisition()
    acq.setVoltage(float(row.rlnVoltage))
    acq.setSphericalAberration(float(row.rlnSphericalAberration))
    acq.setAmplitudeContrast(float(row.rlnAmplitudeContrast))
    return acq


def setParticleAttr(obj, attr, value):
    """Store ``value`` on ``obj`` as attribute ``attr`` (CsvList for vectors)."""
    if np.ndim(value) >= 1:
        csv = CsvList(pType=float)
        csv.set([float(v) for v in np.ravel(value)])
        setattr(obj, attr, csv)
    elif isinstance(value, (int, np.integer)):
        setattr(obj, attr, Integer(int(value)))
    else:
        from pyworkflow.object import Float
        setattr(obj, attr, Float(float(value)))


def getParticleVector(obj, attr):
    """Attribute ``attr`` of ``obj`` (CsvList, list of str or numbers) -> float array."""
    value = getattr(obj, attr, None)
    if value is None:
        raise ValueError("Particle %s has no attribute '%s'." % (obj.getObjId(), attr))
    if hasattr(value, 'get') and not isinstance(value, (list, tuple)):
        raw = value.get()
        if isinstance(raw, str):
            return np.array([float(v) for v in raw.replace(',', ' ').split()])
        if raw is None:
            raise ValueError("Particle %s: attribute '%s' is empty." % (obj.getObjId(), attr))
        return np.atleast_1d(np.asarray(raw, dtype=float))
    return np.array([float(v) for v in value])


# --------------------------------------------------------------------------
# Latent coordinates
# --------------------------------------------------------------------------


def particleVectors(partSet, attr):
    """(ids, (N, K) array) of the vector attribute ``attr`` over ``partSet`` (id order).

    Works for ``_xmipp_nmaDisplacements`` (HEMNMA / DeepHEMNMA), ``_zFlex``
    (flexibility tools) or any CsvList attribute.
    """
    ids, rows = [], []
    for p in partSet.iterItems(orderBy='id', direction='ASC'):
        if attr == '_zFlex':
            rows.append(np.asarray(p.getZFlex(), dtype=float))
        else:
            rows.append(getParticleVector(p, attr))
        ids.append(p.getObjId())
    if not rows:
        raise ValueError('The input set of particles is empty.')
    sizes = {len(r) for r in rows}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError("Attribute '%s' has different or zero lengths over the particles "
                         "(%s); it cannot be used as a landscape coordinate." % (attr, sorted(sizes)))
    return ids, np.vstack(rows)


def readXmdVectors(xmdFn, label='nmaDisplacements'):
    """(item ids, (N, K)) from a vector column of an Xmipp metadata (.xmd) file."""
    import xmippLib
    md = xmippLib.MetaData(xmdFn)
    mdl = xmippLib.str2Label(label)
    if mdl < 0 or not md.containsLabel(mdl):
        raise ValueError("Xmipp metadata %s has no column '%s'." % (xmdFn, label))
    values = [np.asarray(v, dtype=float) for v in md.getColumnValues(mdl)]
    ids = list(md.getColumnValues(xmippLib.MDL_ITEM_ID)) \
        if md.containsLabel(xmippLib.MDL_ITEM_ID) else list(range(1, len(values) + 1))
    return ids, np.vstack(values)


def gatherLatents(partSet, source, attr=None, xmdFn=None, xmdLabel='nmaDisplacements'):
    """(ids, (N, K) array) of landscape coordinates of ``partSet`` in id order.

    ``source`` is one of ``constants.SOURCE_*``: the particles' zFlex, the
    HEMNMA / DeepHEMNMA amplitudes (``_xmipp_nmaDisplacements``), any vector
    attribute ``attr``, or the ``xmdLabel`` column of an Xmipp metadata file
    (rows matched to particles by itemId, else by order).
    """
    if source == const.SOURCE_ZFLEX:
        return particleVectors(partSet, '_zFlex')
    if source == const.SOURCE_HEMNMA:
        return particleVectors(partSet, const.ATTR_HEMNMA)
    if source == const.SOURCE_ATTR:
        if not attr:
            raise ValueError('Give the name of the particle attribute holding the '
                             'coordinates (e.g. _xmipp_nmaDisplacements).')
        return particleVectors(partSet, attr)
    if source == const.SOURCE_XMD:
        if not xmdFn or not os.path.exists(xmdFn):
            raise FileNotFoundError('Xmipp metadata file not found: %s' % xmdFn)
        xids, values = readXmdVectors(xmdFn, xmdLabel or 'nmaDisplacements')
        ids = [p.getObjId() for p in partSet.iterItems(orderBy='id', direction='ASC')]
        byId = {int(i): k for k, i in enumerate(xids)}
        if all(i in byId for i in ids):
            return ids, values[[byId[i] for i in ids]]
        if len(xids) == len(ids):
            return ids, values
        raise ValueError('The metadata %s has %d rows that cannot be matched to the %d '
                         'particles (no common itemId).' % (xmdFn, len(xids), len(ids)))
    raise ValueError('Unknown latent source %r' % source)


def matchParticles(setA, setB):
    """Pairs of particle ids (idsA, idsB) of the same images in two sets.

    Matched by object id when the two sets share them (sets derived from one
    another), otherwise by image location (index, file).
    """
    locA = {p.getObjId(): (p.getIndex(), os.path.abspath(p.getFileName()))
            for p in setA.iterItems(orderBy='id')}
    locB = {p.getObjId(): (p.getIndex(), os.path.abspath(p.getFileName()))
            for p in setB.iterItems(orderBy='id')}
    common = [i for i in locA if i in locB and locA[i] == locB[i]]
    if common:
        return common, list(common)
    byLoc = {v: k for k, v in locB.items()}
    pairs = [(i, byLoc[loc]) for i, loc in locA.items() if loc in byLoc]
    return [a for a, _ in pairs], [b for _, b in pairs]


def latentsToParticlesFlex(inputSet, outSet, Z, ids=None, zred=None, flexAttrs=None,
                           updateItem=None):
    """Copy ``inputSet`` into ``outSet`` (SetOfParticlesFlex) with ``Z[i]`` as zFlex.

    ``Z`` rows follow ascending particle id (as ``writeParticlesStar``);
    ``ids``, when given, is checked against that order.  ``zred`` (N, 2/3)
    optionally fills zRed (e.g. a PCA/UMAP embedding).  ``flexAttrs`` is
    stored on the set's FlexInfo (``setAttr``).  ``updateItem(item, i)`` is
    called on each new particle before it is appended.
    """
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2:
        raise ValueError('Latent coordinates must be an (N, K) array, got shape %s.'
                         % (Z.shape,))
    outSet.copyInfo(inputSet)
    outSet.setHasCTF(inputSet.hasCTF())
    outSet.setAlignment(inputSet.getAlignment())
    outSet.getFlexInfo().setProgName(const.PROG_NAME)
    for k, v in (flexAttrs or {}).items():
        outSet.getFlexInfo().setAttr(k, v)
    i = -1
    for i, p in enumerate(inputSet.iterItems(orderBy='id', direction='ASC')):
        if i >= len(Z):
            raise ValueError('There are more particles (%d+) than latent rows (%d).'
                             % (i + 1, len(Z)))
        if ids is not None and int(ids[i]) != p.getObjId():
            raise ValueError('Latent row %d belongs to particle %s, not %s: the particle '
                             'order changed between conversion and output.'
                             % (i, ids[i], p.getObjId()))
        out = ParticleFlex(progName=const.PROG_NAME)
        out.copyInfo(p)
        out.setObjId(p.getObjId())
        out.setZFlex(Z[i])
        if zred is not None:
            out.setZRed(np.atleast_1d(np.asarray(zred[i], dtype=float)))
        if updateItem is not None:
            updateItem(out, i)
        outSet.append(out)
    if i + 1 != len(Z):
        raise ValueError('%d particles but %d latent rows.' % (i + 1, len(Z)))
    return outSet


# --------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------


def newVolume(fn, apix, z=None, flexAttrs=None):
    """Volume (or VolumeFlex when latent ``z`` is given) for map file ``fn``."""
    if z is not None:
        vol = VolumeFlex(progName=const.PROG_NAME)
        vol.setZFlex(np.asarray(z, dtype=float))
        for k, v in (flexAttrs or {}).items():
            vol.getFlexInfo().setAttr(k, v)
    else:
        vol = Volume()
    vol.setFileName(fn)
    vol.setSamplingRate(apix)
    return vol


def fillVolumes(volSet, files, apix, Z=None, flexAttrs=None):
    """Append one volume per file to ``volSet`` (same order), with latents ``Z``."""
    volSet.setSamplingRate(apix)
    for i, fn in enumerate(files):
        volSet.append(newVolume(fn, apix, None if Z is None else Z[i], flexAttrs))
    return volSet


# --------------------------------------------------------------------------
# ContinuousFlex normal modes
# --------------------------------------------------------------------------


def readPdbCoordinates(pdbFn):
    """(N, 3) coordinates (A) of the ATOM/HETATM records of the first model,
    in file order (``core.io.pdb.read_coordinates``, gemmi)."""
    return read_coordinates(pdbFn)


def readModeFile(fn, nAtoms):
    """Xmipp/ContinuousFlex mode file (one 'dx dy dz' line per atom) -> (N, 3)."""
    vec = np.loadtxt(fn, dtype=float, ndmin=2)
    if vec.shape != (nAtoms, 3):
        raise ValueError('Mode file %s has shape %s but the structure has %d atoms: the '
                         'modes and the structure do not match.' % (fn, vec.shape, nAtoms))
    return vec


def _modeNumber(fn):
    ext = os.path.splitext(fn)[1].lstrip('.')
    return int(ext) if ext.isdigit() else None


def modesStructureFile(modeSet):
    """The structure file a ContinuousFlex ``SetOfNormalModes`` was computed on.

    ContinuousFlex's NMA protocol computes atomic modes on ``atoms.pdb`` of its
    run folder (the input's ATOM records only, ``FlexProtNMA.copyPdbStep``), and
    its HEMNMA reads that file for atomic structures and the input structure
    (``modeSet.getPdb()``) for pseudo-atoms (``FlexProtAlignmentNMA``); same here,
    falling back to ``getPdb()`` when there is no ``atoms.pdb``.
    """
    pdb = modeSet.getPdb()
    if pdb is None or not pdb.getFileName():
        raise ValueError('The normal modes have no associated structure (PDB); use the '
                         'output of the ContinuousFlex NMA protocol.')
    if not pdb.getPseudoAtoms() and modeSet.getFileName():
        atoms = os.path.join(os.path.dirname(modeSet.getFileName()), 'atoms.pdb')
        if os.path.exists(atoms):
            return atoms
    return pdb.getFileName()


def normalModesToNpz(modeSet, npzFn, skipRigid=True):
    """ContinuousFlex ``SetOfNormalModes`` -> npz with ``positions`` (N, 3) A and
    ``modes`` (N, 3, M) (the core's layout), written atomically.

    Uses the structure the modes were computed on (``modesStructureFile``) and
    the enabled modes; modes 1-6 (rigid-body motions, vec.1..vec.6) are
    skipped when ``skipRigid``.  Returns the list of mode files used.
    """
    pos = readPdbCoordinates(modesStructureFile(modeSet))
    files, vecs = [], []
    for mode in modeSet.iterItems(orderBy='id'):
        fn = mode.getModeFile()
        if not fn or not mode.isEnabled():
            continue
        num = _modeNumber(fn)
        if skipRigid and num is not None and num <= 6:
            continue
        vecs.append(readModeFile(fn, len(pos)))
        files.append(fn)
    if not vecs:
        raise ValueError('No usable (non rigid-body, enabled) normal modes in the input set.')
    atomic_savez(npzFn, positions=pos, modes=np.stack(vecs, axis=-1))
    return files
