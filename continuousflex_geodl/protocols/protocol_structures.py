"""Protocol: structures at latent points and along pathways of the landscape."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import AtomStruct, SetOfVolumesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import gatherLatents, newVolume
from .protocol_base import GeoDLProtBase, coreCommandFlags

PATH_POINTS, PATH_LINEAR, PATH_LANDSCAPE = 0, 1, 2
PATH_CHOICES = ['given latent points', 'straight line between two points',
                'pathway through the landscape']


def parse_points(text, zdim):
    """'0 1; 2 3' (one point per ';' or line) -> (M, zdim) array."""
    rows = [r for r in str(text or '').replace('\n', ';').split(';') if r.strip()]
    pts = np.array([[float(v) for v in r.replace(',', ' ').split()] for r in rows])
    if pts.size == 0:
        raise ValueError('Give at least one latent point.')
    if pts.ndim != 2 or pts.shape[1] != zdim:
        raise ValueError('Each latent point needs %d numbers (the latent dimension); got '
                         '%s.' % (zdim, [len(r.split()) for r in rows]))
    return pts


def linear_path(start, end, n):
    """``n`` points evenly spaced from ``start`` to ``end`` (both included)."""
    t = np.linspace(0.0, 1.0, int(n))[:, None]
    return (1.0 - t) * np.asarray(start, float)[None] + t * np.asarray(end, float)[None]


class GeoDLProtStructures(GeoDLProtBase, ProtFlexBase):
    """Decode 3D structures at latent points: chosen points, a straight line, or a
    pathway through the landscape (along the density, the ridgeline between
    mixture components, or a principal axis).

    Outputs the maps in path order (flexible volumes whose zFlex is the latent
    point) and the deformed pseudo-atom models as one multi-model PDB, ready
    for an animation in ChimeraX.
    """
    _label = 'structures and pathways'
    _devStatus = BETA
    _possibleOutputs = {'outputVolumes': SetOfVolumesFlex, 'outputStructures': AtomStruct}

    def _defineParams(self, form):
        form.addSection(label='Input')
        self._addDeviceParams(form)
        form.addParam('inputModel', params.PointerParam, pointerClass='GeoDLModel',
                      important=True, label='Trained model',
                      help='Output of the *train* protocol: it decodes latent points into '
                           'structures.')
        form.addParam('pathType', params.EnumParam, choices=PATH_CHOICES, default=PATH_LINEAR,
                      label='Structures at', display=params.EnumParam.DISPLAY_LIST,
                      help='given latent points: one structure per point; straight line: '
                           'evenly spaced points between two latent points; pathway: '
                           'computed from the particles\' latent distribution (needs the '
                           'landscape command of the core).')
        form.addParam('points', params.TextParam, default='', condition='pathType == 0',
                      label='Latent points',
                      help='One point per line (or separated by ";"), each with as many '
                           'numbers as the latent dimension, e.g. "0 0.5; 1 -0.2".')
        form.addParam('startPoint', params.StringParam, default='',
                      condition='pathType == 1', label='Start point',
                      help='Latent coordinates of the first structure, e.g. "-1 0".')
        form.addParam('endPoint', params.StringParam, default='',
                      condition='pathType == 1', label='End point',
                      help='Latent coordinates of the last structure, e.g. "1 0".')
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticlesFlex',
                      condition='pathType == 2', allowsNull=True, label='Particles (latents)',
                      help='Flexible particles from *predict latents* (their latent '
                           'distribution defines the pathway).')
        form.addParam('pathKind', params.EnumParam, choices=const.PATH_KINDS, default=0,
                      condition='pathType == 2', label='Pathway kind',
                      help='density: through the most populated regions between the two '
                           'most populated states; ridgeline: Ray-Lindsay ridgeline between '
                           'mixture components (cryoTWIN); pc: along the first principal '
                           'axis of the latents.')
        form.addParam('nPoints', params.IntParam, default=10, validators=[params.Positive],
                      condition='pathType != 0', label='Number of structures',
                      help='Structures along the line or pathway.')
        form.addParam('writeVolumes', params.BooleanParam, default=True,
                      label='Write maps?',
                      help='Render a map for each structure (on the particles\' grid); '
                           'No: only the pseudo-atom models.')

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.pointsStep)
        self._insertFunctionStep(self.decodeStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def pointsStep(self):
        zdim = self.inputModel.get().getZdim()
        kind = self.pathType.get()
        if kind == PATH_POINTS:
            pts = parse_points(self.points.get(), zdim)
        elif kind == PATH_LINEAR:
            pts = linear_path(parse_points(self.startPoint.get(), zdim)[0],
                              parse_points(self.endPoint.get(), zdim)[0], self.nPoints.get())
        else:
            ids, Z = gatherLatents(self.inputParticles.get(), const.SOURCE_ZFLEX)
            latents = self._absPath('particle_latents.npy')
            np.save(latents, Z)
            self._runCli('landscape path', [
                '--latents', latents, '--out', self._absPath('pathway'),
                '--kind', const.PATH_KINDS[self.pathKind.get()],
                '--n-points', self.nPoints.get(),
                '--model', os.path.abspath(self.inputModel.get().getModelDir())])
            pts = np.load(self._findPathPoints())
        np.save(self._absPath('points.npy'), np.asarray(pts, dtype=np.float32))

    def decodeStep(self):
        args = ['--model', os.path.abspath(self.inputModel.get().getModelDir()),
                '--latents', self._absPath('points.npy'),
                '--out', self._absPath('structures'),
                '--device', self._getDevice()]
        if not self.writeVolumes.get():
            args.append('--no-volumes')
        self._runCli('decode', args)

    def createOutputStep(self):
        model = self.inputModel.get()
        pts = np.load(self._absPath('points.npy'))
        out = self._getExtraPath('structures')
        outputs = {}
        if self.writeVolumes.get():
            vols = self._createSetOfVolumesFlex(progName=const.PROG_NAME)
            vols.setSamplingRate(model.getSamplingRate())
            vols.getFlexInfo().setAttr(const.FLEX_MODEL_DIR,
                                       os.path.abspath(model.getModelDir()))
            vols.getFlexInfo().setAttr(const.FLEX_ZDIM, int(pts.shape[1]))
            for i, z in enumerate(pts):
                vols.append(newVolume(os.path.join(out, 'vol_%03d.mrc' % i),
                                      model.getSamplingRate(), z=z))
            outputs['outputVolumes'] = vols
        pdb = os.path.join(out, 'structures.pdb')
        if os.path.exists(pdb):
            outputs['outputStructures'] = AtomStruct(filename=pdb)
        self._defineOutputs(**outputs)
        for obj in outputs.values():
            self._defineSourceRelation(self.inputModel, obj)

    # --------------------------- UTILS functions ----------------------------
    def _findPathPoints(self):
        folder = self._getExtraPath('pathway')
        for name in ('path_latents.npy', 'path.npy', 'latents.npy', 'points.npy'):
            fn = os.path.join(folder, name)
            if os.path.exists(fn):
                return fn
        raise FileNotFoundError('The landscape path command wrote no latent points in %s.'
                                % folder)

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        model = self.inputModel.get()
        if model is None:
            return ['Select a trained model.']
        zdim = model.getZdim()
        kind = self.pathType.get()
        try:
            if kind == PATH_POINTS:
                parse_points(self.points.get(), zdim)
            elif kind == PATH_LINEAR:
                parse_points(self.startPoint.get(), zdim)
                parse_points(self.endPoint.get(), zdim)
        except ValueError as exc:
            return [str(exc)]
        if kind == PATH_LANDSCAPE:
            if self.inputParticles.get() is None:
                return ['Select the flexible particles whose latents define the pathway.']
            if not coreCommandFlags('landscape path'):
                return ['This version of continuousflex_geodl has no landscape path command; '
                        'use given points or a straight line.']
        if kind != PATH_POINTS and self.nPoints.get() < 2:
            return ['A line or pathway needs at least 2 structures.']
        return []

    def _summary(self):
        if not self.hasAttribute('outputStructures'):
            return ['Output not ready yet.']
        n = len(np.load(self._absPath('points.npy')))
        return ['%d structures decoded (%s).' % (n, PATH_CHOICES[self.pathType.get()])]

    def _methods(self):
        return []

    def _citations(self):
        cites = ['Zhong2021cryodrgn']
        if self.pathType.get() == PATH_LANDSCAPE:
            cites.append('cryoTWIN')
        return cites
