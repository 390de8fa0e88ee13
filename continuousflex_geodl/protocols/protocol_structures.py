"""Protocol: structures at latent points and along pathways of the landscape."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import AtomStruct, SetOfVolumesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import newVolume
from ..core.artifacts import DecodeDir, LandscapeDir, ModelDir, PathDir
from ..core.settings import PATH_POINTS as DEFAULT_POINTS, PathKind, PathSettings
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
        self._addInputSection(form)
        form.addParam('inputModel', params.PointerParam, pointerClass='GeoDLModel',
                      allowsNull=True, label='Trained model',
                      help='Output of the *train* protocol: it decodes latent points into '
                           'structures. For a pathway it may be left empty when the '
                           'landscape run used a model.')
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
        form.addParam('inputLandscape', params.PointerParam,
                      pointerClass='GeoDLProtLandscape', condition='pathType == 2',
                      allowsNull=True, label='Landscape run',
                      help='A run of the *landscape* protocol: its latents, map and states '
                           'define the pathway.')
        form.addParam('pathKind', params.EnumParam, choices=const.PATH_KINDS,
                      default=PathKind.index(PathSettings.kind),
                      condition='pathType == 2', label='Pathway kind',
                      help='density: minimum free-energy path through the particles between '
                           'two states; ridgeline: cryoTWIN ridgeline between the mixture '
                           'components of two states; pca: along the first principal axis '
                           '(5th to 95th percentile).')
        line = form.addLine('States', condition='pathType == 2 and pathKind != 2',
                            help='Start and end states (numbers as in the landscape output, '
                                 'from 1); 0 and 0: the two states farthest apart.')
        line.addParam('fromState', params.IntParam, default=0, label='from',
                      help='Start state (1-based; 0 = automatic).')
        line.addParam('toState', params.IntParam, default=0, label='to',
                      help='End state (1-based; 0 = automatic).')
        form.addParam('nPoints', params.IntParam, default=PathSettings.n_points or 0,
                      validators=[params.GE(0)],
                      condition='pathType != 0', label='Number of structures',
                      help='Structures along the line or pathway. 0: the default of the '
                           'core (straight line %d, density pathway %d, ridgeline K + 1 = '
                           '%d, pca pathway %d).'
                           % (DEFAULT_POINTS['line'], DEFAULT_POINTS['density'],
                              PathSettings.K + 1, DEFAULT_POINTS['pca']))
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
        zdim = self._getZdim()
        kind = self.pathType.get()
        if kind == PATH_POINTS:
            pts = parse_points(self.points.get(), zdim)
        elif kind == PATH_LINEAR:
            pts = linear_path(parse_points(self.startPoint.get(), zdim)[0],
                              parse_points(self.endPoint.get(), zdim)[0],
                              self.nPoints.get() or DEFAULT_POINTS['line'])
        else:
            self._runCli('landscape path', self._pathArgs())
            pts = PathDir(self._absPath('pathway')).latents()
        np.save(self._absPath('points.npy'), np.asarray(pts, dtype=np.float32))

    def _pathArgs(self):
        land = self.inputLandscape.get()
        args = ['--latents', land._getLatentsFile(), '--landscape', land._getLandscapeDir(),
                '--out', self._absPath('pathway'),
                '--kind', const.PATH_KINDS[self.pathKind.get()]]
        if self.nPoints.get():
            args += ['--n-points', self.nPoints.get()]
        if self.pathKind.get() != 2 and self.fromState.get() and self.toState.get():
            args += ['--from-state', self.fromState.get() - 1,
                     '--to-state', self.toState.get() - 1]
        if self.pathKind.get() == 1 and land.usePrior.get() and land._getModelDir():
            args += ['--prior', land._getModelDir()]
        return args

    def decodeStep(self):
        args = ['--model', self._getModelDir(),
                '--latents', self._absPath('points.npy'),
                '--out', self._absPath('structures'),
                '--device', self._getDevice()]
        if not self.writeVolumes.get():
            args.append('--no-volumes')
        self._runCli('decode', args)

    def createOutputStep(self):
        apix = self._getSamplingRate()
        pts = np.load(self._absPath('points.npy'))
        out = DecodeDir(self._getExtraPath('structures'))
        outputs = {}
        if self.writeVolumes.get():
            vols = self._createSetOfVolumesFlex(progName=const.PROG_NAME)
            vols.setSamplingRate(apix)
            vols.getFlexInfo().setAttr(const.FLEX_MODEL_DIR, self._getModelDir())
            vols.getFlexInfo().setAttr(const.FLEX_ZDIM, int(pts.shape[1]))
            for i, z in enumerate(pts):
                vols.append(newVolume(out.volume_path(i), apix, z=z))
            outputs['outputVolumes'] = vols
        pdb = out.pdb_path
        if os.path.exists(pdb):
            outputs['outputStructures'] = AtomStruct(filename=pdb)
        self._defineOutputs(**outputs)
        source = self.inputModel if self.inputModel.get() is not None else \
            self.inputLandscape.get().inputParticles
        for obj in outputs.values():
            self._defineSourceRelation(source, obj)

    # --------------------------- UTILS functions ----------------------------
    def _getModelDir(self):
        """The chosen model, else the one the landscape run used (or None)."""
        if self.inputModel.get() is not None:
            return os.path.abspath(self.inputModel.get().getModelDir())
        land = self.inputLandscape.get() if self.pathType.get() == PATH_LANDSCAPE else None
        return land._getModelDir() if land is not None else None

    def _getZdim(self):
        if self.inputModel.get() is not None:
            return self.inputModel.get().getZdim()
        model = self._getModelDir()
        if model and ModelDir(model).has_config():
            return int(ModelDir(model).read_config()['zdim'])
        return None

    def _getSamplingRate(self):
        if self.inputModel.get() is not None:
            return self.inputModel.get().getSamplingRate()
        md = ModelDir(self._getModelDir())
        cfg = md.read_config() if md.has_config() else {}
        return float(cfg.get('apix') or
                     self.inputLandscape.get().inputParticles.get().getSamplingRate())

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        kind = self.pathType.get()
        if kind == PATH_LANDSCAPE:
            land = self.inputLandscape.get()
            if land is None:
                return ['Select a landscape run whose latents define the pathway.']
            if not coreCommandFlags('landscape path'):
                return ['This version of continuousflex_geodl has no landscape path command; '
                        'use given points or a straight line.']
            if (self.fromState.get() or 0) < 0 or (self.toState.get() or 0) < 0:
                return ['State numbers start at 1 (0: automatic).']
            states = self._readJson(LandscapeDir(land._getLandscapeDir()).states_path, {})
            n = states.get('n_states')
            if n is not None and self.pathKind.get() != 2:
                if n < 2:
                    return ['The landscape has a single state: a %s pathway needs two; use '
                            'the pca pathway.' % const.PATH_KINDS[self.pathKind.get()]]
                if max(self.fromState.get() or 0, self.toState.get() or 0) > n:
                    return ['The landscape has %d states (1 to %d).' % (n, n)]
                if self.fromState.get() and self.fromState.get() == self.toState.get():
                    return ['The start and end states must differ.']
        if self._getModelDir() is None:
            return ['Select a trained model: it decodes the latent points into structures.']
        zdim = self._getZdim()
        try:
            if kind == PATH_POINTS:
                parse_points(self.points.get(), zdim)
            elif kind == PATH_LINEAR:
                parse_points(self.startPoint.get(), zdim)
                parse_points(self.endPoint.get(), zdim)
        except ValueError as exc:
            return [str(exc)]
        if kind != PATH_POINTS and self.nPoints.get() and self.nPoints.get() < 2:
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
