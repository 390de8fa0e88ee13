"""Protocol: train the point-cloud deformation model on particles."""
import glob
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import Volume

from .. import constants as const
from ..convert import normalModesToNpz, writeParticlesStar
from ..objects import GeoDLModel
from .protocol_base import GeoDLProtBase


class GeoDLProtTrain(GeoDLProtBase):
    """Learn a conformational landscape: train encoder, point-cloud decoder and prior.

    The reference structure (an atomic model, or a consensus map fitted with
    pseudo-atoms) is represented as Gaussian pseudo-atoms.  A point neural
    network deforms it as a function of a latent coordinate z; an encoder maps
    each particle image to z; rendered, CTF-modulated projections are compared
    with the particles.  Optionally, normal modes computed with ContinuousFlex
    (NMA) give the decoder a physically meaningful basis of motions.

    Needs particles with CTF and 3D angles (from a consensus refinement).
    Training curves are in the model folder (history.json); use the
    *Continue* action to resume an interrupted or extended training from the
    last checkpoint.
    """
    _label = 'train'
    _devStatus = BETA
    _possibleOutputs = {'outputModel': GeoDLModel}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label='Input')
        self._addDeviceParams(form)
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Input particles',
                      help='Particles with CTF and 3D projection alignment (angles and '
                           'shifts from a consensus refinement).')
        form.addParam('inputReference', params.PointerParam,
                      pointerClass='AtomStruct,Volume', important=True,
                      label='Reference structure or map',
                      help='An atomic model (PDB/mmCIF, in the frame of the particles) or '
                           'a consensus map (same box and pixel size as the particles); '
                           'it is converted to Gaussian pseudo-atoms.')
        form.addParam('inputModes', params.PointerParam, pointerClass='SetOfNormalModes',
                      allowsNull=True, label='Normal modes (optional)',
                      help='Normal modes of the reference computed with ContinuousFlex '
                           '(NMA). When given, the decoder deforms the reference in the '
                           'span of these modes.')

        form.addSection(label='Model')
        form.addParam('zdim', params.IntParam, default=8, validators=[params.Positive],
                      label='Latent dimension',
                      help='Number of conformational coordinates per particle '
                           '(cryoTWIN uses 8).')
        form.addParam('nAtoms', params.IntParam, default=0,
                      label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference; 0 lets the program '
                           'choose (atomic models: one per residue).')
        form.addParam('prior', params.EnumParam, choices=const.PRIORS, default=0,
                      label='Latent prior',
                      help='gmm: a trainable Gaussian-mixture prior (cryoTWIN), which '
                           'also gives pathways between its components; vae: a standard '
                           'normal prior (cryoDRGN-style VAE).')
        form.addParam('refinePoses', params.BooleanParam, default=False,
                      label='Refine poses?',
                      help='Also refine the angles and shifts of each particle (the '
                           'consensus poses are biased for heterogeneous samples).')

        form.addSection(label='Training')
        form.addParam('epochs', params.IntParam, default=20, validators=[params.Positive],
                      label='Epochs',
                      help='Passes over the particle set. To train more, raise it and '
                           'use Continue: training resumes from the last checkpoint.')
        form.addParam('batchSize', params.IntParam, default=32,
                      validators=[params.Positive], label='Batch size',
                      help='Particles per optimisation step. Larger batches are faster '
                           'per particle on a GPU and need more memory.')
        form.addParam('learningRate', params.FloatParam, default=1e-3,
                      validators=[params.Positive], label='Learning rate',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Step size of the Adam optimiser.')
        form.addParam('seed', params.IntParam, default=0, label='Random seed',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Seed of the network initialisation and of the batch order; '
                           'the same seed and inputs give the same model on the CPU.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep,
                                 self.inputParticles.get().getObjId())
        # training params are step arguments: changing them and pressing
        # Continue re-runs training (resumed from the checkpoint)
        self._insertFunctionStep(self.trainStep, self.epochs.get(), self.batchSize.get(),
                                 self.learningRate.get(), self.zdim.get(),
                                 self.prior.get(), self.refinePoses.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        writeParticlesStar(self.inputParticles.get(), self._getParticlesStar(),
                           convertDir=self._getExtraPath(), requirePoses=True,
                           requireCtf=True)
        self._convertReference()
        if self.inputModes.get() is not None:
            normalModesToNpz(self.inputModes.get(), self._getModesFile())

    def trainStep(self, *args):
        args = ['--particles', self._getParticlesStar(),
                '--reference', os.path.abspath(self._getReferenceFile()),
                '--out', self._getModelDir(),
                '--zdim', self.zdim.get(),
                '--epochs', self.epochs.get(),
                '--batch-size', self.batchSize.get(),
                '--lr', self.learningRate.get(),
                '--prior', const.PRIORS[self.prior.get()],
                '--seed', self.seed.get(),
                '--device', self._getDevice()]
        if self.nAtoms.get():
            args += ['--n-atoms', self.nAtoms.get()]
        if self.refinePoses.get():
            args += ['--refine-poses']
        if os.path.exists(self._getModesFile()):
            args += ['--modes', self._getModesFile()]
        if self._hasCheckpoint():
            args += ['--resume']
        self._runCli('train', args)

    def createOutputStep(self):
        parts = self.inputParticles.get()
        model = GeoDLModel(modelDir=self._getModelDir(), zdim=self.zdim.get(),
                           box=parts.getXDim(), apix=parts.getSamplingRate(),
                           prior=const.PRIORS[self.prior.get()])
        cfg = model.loadConfig()
        for key in ('zdim', 'box'):
            if key in cfg and cfg[key] is not None:
                getattr(model, '_' + key).set(int(cfg[key]))
        if cfg.get('apix'):
            model.setSamplingRate(float(cfg['apix']))
        natoms = cfg.get('n_atoms') or self.nAtoms.get() or None
        if natoms:
            model.setNumberOfAtoms(int(natoms))
        self._defineOutputs(outputModel=model)
        self._defineSourceRelation(self.inputParticles, model)
        self._defineSourceRelation(self.inputReference, model)

    # --------------------------- UTILS functions ----------------------------
    def _getParticlesStar(self):
        return self._absPath('input_particles.star')

    def _getModelDir(self):
        return self._absPath('model')

    def _getReferenceFile(self):
        """The reference as given (atomic model) or as an MRC map."""
        ref = self.inputReference.get()
        if isinstance(ref, Volume) and not self._isMrc(ref.getFileName()):
            return self._getExtraPath('reference.mrc')
        return ref.getFileName()

    @staticmethod
    def _isMrc(fn):
        return os.path.splitext(fn.split(':')[0])[1].lower() in ('.mrc', '.map')

    def _convertReference(self):
        ref = self.inputReference.get()
        if isinstance(ref, Volume) and not self._isMrc(ref.getFileName()):
            from pwem.emlib.image import ImageHandler
            ImageHandler().convert(ref, self._getExtraPath('reference.mrc'))

    def _hasCheckpoint(self):
        ck = os.path.join(self._getModelDir(), 'checkpoints')
        return self.isContinued() and bool(glob.glob(os.path.join(ck, '*')))

    def _getModesFile(self):
        return self._absPath('normal_modes.npz')

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        if not parts.hasCTF():
            errors.append('The input particles have no CTF; estimate it (e.g. CTFFIND) '
                          'and re-extract, or assign one, before training.')
        if not parts.hasAlignmentProj():
            errors.append('The input particles have no 3D angles (alignment "%s"); use '
                          'particles from a consensus 3D refinement.' % parts.getAlignment())
        box = parts.getXDim()
        if box and box % 2:
            errors.append('The particle box (%d px) must be even.' % box)
        ref = self.inputReference.get()
        if ref is None:
            errors.append('Select a reference atomic model or map.')
        elif isinstance(ref, Volume):
            vbox = ref.getXDim()
            if vbox and box and vbox != box:
                errors.append('The reference map box (%d px) differs from the particle box '
                              '(%d px); resize one of them.' % (vbox, box))
            sr = ref.getSamplingRate()
            if sr and parts.getSamplingRate() and \
                    abs(sr - parts.getSamplingRate()) > 1e-3 * sr:
                errors.append('The reference map pixel size (%.4f A) differs from the '
                              'particles\' (%.4f A).' % (sr, parts.getSamplingRate()))
        if self.zdim.get() is not None and self.zdim.get() < 1:
            errors.append('The latent dimension must be at least 1.')
        if self.useGpu.get() and not self.getGpuList():
            errors.append('Use GPU is on but no GPU id is given.')
        return errors

    def _warnings(self):
        warnings = []
        parts = self.inputParticles.get()
        if parts is not None and parts.getSize() < 10 * self.batchSize.get():
            warnings.append('Only %d particles for a batch size of %d: the model will '
                            'see very few batches per epoch.'
                            % (parts.getSize(), self.batchSize.get()))
        return warnings

    def _summary(self):
        lines = []
        if self.inputParticles.get() is not None:
            lines.append('Particles: %d' % self.inputParticles.get().getSize())
        lines.append('Latent dimension %d, prior *%s*, %d epochs, batch %d, lr %g%s.'
                     % (self.zdim.get(), const.PRIORS[self.prior.get()], self.epochs.get(),
                        self.batchSize.get(), self.learningRate.get(),
                        ', poses refined' if self.refinePoses.get() else ''))
        hist = self._readJson(os.path.join(self._getModelDir(), 'history.json'))
        if hist:
            last = hist[-1] if isinstance(hist, list) else None
            if isinstance(last, dict):
                items = ', '.join('%s %.4g' % (k, v) for k, v in last.items()
                                  if isinstance(v, (int, float)))
                lines.append('Last epoch: %s' % items)
        if not self.hasAttribute('outputModel'):
            lines.append('Output model not ready yet.')
        return lines

    def _methods(self):
        if self.inputParticles.get() is None:
            return []
        return ['We trained a point-cloud deformation model (encoder, point neural network '
                'decoder over Gaussian pseudo-atoms, %s prior, latent dimension %d) on %d '
                'particles for %d epochs with continuousflex_geodl, with an image loss on '
                'rendered, CTF-modulated projections and optimal-transport regularisation '
                '[Feydy2019geomloss].'
                % (const.PRIORS[self.prior.get()], self.zdim.get(),
                   self.inputParticles.get().getSize(), self.epochs.get())]

    def _citations(self):
        cites = ['Feydy2019geomloss', 'Charlier2021keops', 'Sverrisson2021dmasif',
                 'Zhong2021cryodrgn']
        if self.prior.get() == 0:
            cites.append('cryoTWIN')
        if self.inputModes.get() is not None:
            cites += ['Jin2014hemnma', 'Harastani2022continuousflex']
        return cites
