"""Protocol: particle subset from a landscape state or a region of it."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticles, SetOfParticlesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..core.landscape.subsets import Selection, parse_polygon, select_mask
from .protocol_base import GeoDLProtBase

# choice indices of the form = core.landscape.subsets.Selection
SELECT_STATES, SELECT_BOX, SELECT_POLYGON, SELECT_DG, SELECT_BALL, SELECT_IDS = (
    int(s) for s in (Selection.STATES, Selection.BOX, Selection.POLYGON, Selection.FREE_ENERGY,
                     Selection.BALL, Selection.IDS))
SELECT_CHOICES = ['states', 'box in the 2D embedding', 'polygon in the 2D embedding',
                  'free energy below a threshold', 'ball in latent space',
                  'particles chosen in the explorer (id file)']


def writeIdFile(path, ids, header=''):
    """Text file of Scipion particle ids, one per line, with a '#' header (what
    the landscape viewer's explorer writes for the *ids* selection)."""
    from ..core.fileio import atomic_write
    ids = np.asarray(ids, dtype=np.int64).ravel()
    with atomic_write(path) as fh:
        fh.write('# %d Scipion particle ids%s\n' % (len(ids), ('; ' + header) if header else ''))
        fh.write(''.join('%d\n' % i for i in ids))
    return path


def readIdFile(path):
    """Particle ids of a file written by ``writeIdFile`` (ValueError when unreadable)."""
    try:
        return np.loadtxt(path, dtype=np.int64, comments='#', ndmin=1)
    except (OSError, ValueError) as exc:
        raise ValueError('Cannot read the particle ids in %s: %s' % (path, exc)) from None


def parse_ints(text):
    """'1 3, 5-7' -> [1, 3, 5, 6, 7] (ValueError on anything else)."""
    out = []
    for tok in str(text or '').replace(',', ' ').split():
        if '-' in tok[1:]:
            a, b = tok[0] + tok[1:].split('-', 1)[0], tok[1:].split('-', 1)[1]
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(tok))
    return out


def parse_floats(text):
    """'0.5 -1.2, 3' -> [0.5, -1.2, 3.0] (ValueError on anything else)."""
    return [float(t) for t in str(text or '').replace(',', ' ').split()]


class GeoDLProtSubset(GeoDLProtBase, ProtFlexBase):
    """Select the particles of landscape states, or of a region of the landscape.

    Works on particles from the *landscape* protocol (state label
    ``_cfgeodl_state``, 2D embedding ``zRed``, free energy ``_cfgeodl_dG``) or
    on any flexible particles (latents ``zFlex``).  The subset keeps every
    particle attribute (poses, CTF, latents), ready for a downstream
    refinement of that state.  The selections are those of
    ``core.landscape.subsets`` (``select_mask``).
    """
    _label = 'subset from landscape'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticles}

    def _defineParams(self, form):
        form.addSection(label='Selection')
        form.addParam('inputParticles', params.PointerParam,
                      pointerClass='SetOfParticlesFlex,SetOfParticles', important=True,
                      label='Particles',
                      help='Output particles of the landscape protocol (they carry the '
                           'state of each particle and the 2D embedding) or any flexible '
                           'particles with latent coordinates.')
        form.addParam('selection', params.EnumParam, choices=SELECT_CHOICES,
                      default=SELECT_STATES, display=params.EnumParam.DISPLAY_LIST,
                      label='Select by',
                      help='states: particles assigned to the given landscape states; '
                           'box / polygon: particles whose 2D embedding (zRed) lies inside '
                           'a rectangle / polygon typed as coordinates; free energy: '
                           'particles in regions with dG below a threshold (kT); ball: '
                           'particles whose latent z lies within a radius of a point; '
                           'explorer: the particles drawn around in the landscape viewer\'s '
                           'interactive explorer (it fills this in).')
        form.addParam('states', params.StringParam, default='1',
                      condition='selection == %d' % SELECT_STATES, label='States',
                      help='State numbers (1-based), e.g. "1 3" or "2-4".')
        line = form.addLine('Embedding box', condition='selection == %d' % SELECT_BOX,
                            help='Rectangle in the 2D embedding coordinates (zRed), as '
                                 'shown by the landscape viewer.')
        line.addParam('xmin', params.FloatParam, default=-1.0, label='x min',
                      help='Lower bound of the first embedding coordinate.')
        line.addParam('xmax', params.FloatParam, default=1.0, label='x max',
                      help='Upper bound of the first embedding coordinate.')
        line.addParam('ymin', params.FloatParam, default=-1.0, label='y min',
                      help='Lower bound of the second embedding coordinate.')
        line.addParam('ymax', params.FloatParam, default=1.0, label='y max',
                      help='Upper bound of the second embedding coordinate.')
        form.addParam('polygon', params.StringParam, default='',
                      condition='selection == %d' % SELECT_POLYGON, label='Polygon vertices',
                      help='Vertices in the 2D embedding coordinates, written "x,y" and '
                           'separated by spaces, e.g. "0,0 1,0 1,1 0,1" (at least 3).')
        form.addParam('maxDG', params.FloatParam, default=1.0,
                      condition='selection == %d' % SELECT_DG, label='Max free energy (kT)',
                      help='Keep the particles where the landscape free energy dG (0 at the '
                           'most populated point) is at most this value.')
        form.addParam('center', params.StringParam, default='',
                      condition='selection == %d' % SELECT_BALL, label='Centre (latent z)',
                      help='Latent coordinates of the centre, one number per dimension, '
                           'e.g. "0.5 -1.2".')
        form.addParam('radius', params.FloatParam, default=1.0,
                      condition='selection == %d' % SELECT_BALL, label='Radius',
                      help='Euclidean radius in latent units.')
        form.addParam('idsFile', params.PathParam, default='',
                      condition='selection == %d' % SELECT_IDS, label='Particle id file',
                      help='Text file with one Scipion particle id per line (# comments), '
                           'as written by the interactive explorer of the landscape viewer.')

    def _insertAllSteps(self):
        self._insertFunctionStep(self.createOutputStep)

    def createOutputStep(self):
        inSet = self.inputParticles.get()
        ids, mask = self._selectedIds(inSet)
        if isinstance(inSet, SetOfParticlesFlex):
            outSet = self._createSetOfParticlesFlex(progName=inSet.getFlexInfo().getProgName())
        else:
            outSet = self._createSetOfParticles()
        outSet.copyInfo(inSet)
        keep = set(int(i) for i, m in zip(ids, mask) if m)
        for p in inSet.iterItems(orderBy='id'):
            if p.getObjId() in keep:
                outSet.append(p.clone())
        if outSet.getSize() == 0:
            raise ValueError('The selection is empty: no particle is in the chosen '
                             'states or region.')
        self._defineOutputs(outputParticles=outSet)
        self._defineSourceRelation(self.inputParticles, outSet)

    def _selectedIds(self, inSet):
        ids, states, zred, z, dG = [], [], [], [], []
        sel = self.selection.get()
        for p in inSet.iterItems(orderBy='id'):
            ids.append(p.getObjId())
            if sel == SELECT_STATES:
                states.append(int(getattr(p, const.ATTR_STATE).get()))
            elif sel in (SELECT_BOX, SELECT_POLYGON):
                zred.append(p.getZRed())
            elif sel == SELECT_DG:
                dG.append(getattr(p, const.ATTR_DG).get())
            elif sel == SELECT_BALL:
                z.append(p.getZFlex())
        mask = select_mask(
            sel, states=states, zred=np.array(zred) if zred else None,
            z=np.array(z) if z else None, dG=np.array(dG, dtype=float) if dG else None,
            state_ids=parse_ints(self.states.get()) if sel == SELECT_STATES else None,
            box=(self.xmin.get(), self.xmax.get(), self.ymin.get(), self.ymax.get()),
            polygon=parse_polygon(self.polygon.get()) if sel == SELECT_POLYGON else None,
            max_dG=self.maxDG.get(),
            center=parse_floats(self.center.get()) if sel == SELECT_BALL else None,
            radius=self.radius.get(), ids=np.array(ids, dtype=np.int64),
            id_list=readIdFile(self.idsFile.get()) if sel == SELECT_IDS else None)
        return ids, mask

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        inSet = self.inputParticles.get()
        if inSet is None:
            return ['Select the input particles.']
        first = inSet.getFirstItem()
        sel = self.selection.get()
        if sel == SELECT_STATES:
            if not first.hasAttribute(const.ATTR_STATE):
                return ['These particles carry no landscape state; use the output of the '
                        'landscape protocol, or select by region.']
            try:
                if not parse_ints(self.states.get()):
                    return ['Give at least one state number.']
            except ValueError:
                return ['States must be numbers, e.g. "1 3" or "2-4".']
        elif sel in (SELECT_BOX, SELECT_POLYGON):
            if not hasattr(first, 'getZRed') or len(first.getZRed()) < 2:
                return ['These particles have no 2D embedding (zRed); run the landscape '
                        'protocol first.']
            if sel == SELECT_BOX and (self.xmin.get() >= self.xmax.get() or
                                      self.ymin.get() >= self.ymax.get()):
                return ['The box must have x min < x max and y min < y max.']
            if sel == SELECT_POLYGON:
                try:
                    parse_polygon(self.polygon.get())
                except ValueError as exc:
                    return [str(exc)]
        elif sel == SELECT_IDS:
            fn = self.idsFile.get() or ''
            if not os.path.exists(fn):
                return ['The particle id file %s does not exist.' % fn]
            try:
                if not len(readIdFile(fn)):
                    return ['The particle id file %s lists no particle.' % fn]
            except ValueError as exc:
                return [str(exc)]
        elif sel == SELECT_DG:
            if not first.hasAttribute(const.ATTR_DG):
                return ['These particles carry no free energy; use the output of the '
                        'landscape protocol.']
        else:
            if not hasattr(first, 'getZFlex') or len(first.getZFlex()) == 0:
                return ['These particles have no latent coordinates (zFlex).']
            try:
                center = parse_floats(self.center.get())
            except ValueError:
                return ['The centre must be numbers separated by spaces.']
            if len(center) != len(first.getZFlex()):
                return ['The centre has %d numbers but the latent space has %d dimensions.'
                        % (len(center), len(first.getZFlex()))]
            if self.radius.get() is None or self.radius.get() <= 0:
                return ['The radius must be positive.']
        return []

    def _summary(self):
        if not self.hasAttribute('outputParticles'):
            return ['Output not ready yet.']
        return ['%d of %d particles selected.' % (self.outputParticles.getSize(),
                                                  self.inputParticles.get().getSize())]

    def _methods(self):
        return []

    def _citations(self):
        return ['Harastani2022continuousflex']
