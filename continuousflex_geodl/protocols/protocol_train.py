"""Protocol: train the point-cloud deformation model on particles."""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticles

from .. import constants as const
from ..convert import normalModesToNpz
from ..core.artifacts import ModelDir
from ..core.settings import (EncoderInputs, ModelSettings as MS, Prior, ReferenceSettings,
                             TrainSettings as TS)
from ..objects import GeoDLModel
from .protocol_base import GeoDLProtBase, coreCommandFlags


class GeoDLProtTrain(GeoDLProtBase):
    """Learn a conformational landscape: train encoder, point-cloud decoder and prior.

    The reference structure (an atomic model, or a consensus map fitted with
    pseudo-atoms) is represented as Gaussian pseudo-atoms.  A point neural
    network deforms it as a function of a latent coordinate z; an encoder maps
    each particle image to z; rendered, CTF-modulated projections are compared
    with the particles, with optimal-transport and neighbourhood regularisers
    keeping the deformed cloud physical.  The decoder can instead be restricted
    to elastic-network normal modes (HEMNMA-like).

    Needs particles with CTF and 3D angles (from a consensus refinement).
    With several GPU ids, training runs data-parallel (one process per GPU).
    Training curves are in the model folder (history.json); use the
    *Continue* action to resume an interrupted (or extended: raise the
    epochs) training from the last checkpoint.
    """
    _label = 'train'
    _devStatus = BETA
    _possibleOutputs = {'outputModel': GeoDLModel, 'outputParticles': SetOfParticles}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
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
                      allowsNull=True, expertLevel=params.LEVEL_ADVANCED,
                      label='ContinuousFlex normal modes (optional)',
                      help='Normal modes of the reference computed with ContinuousFlex '
                           '(NMA protocol), on the same atomic model as the reference '
                           '(same frame). When given, the decoder deforms the reference '
                           'only in the span of these modes (as HEMNMA / DeepHEMNMA); '
                           'the modes are interpolated onto the pseudo-atoms. Rigid-body '
                           'modes 1-6 and disabled modes are skipped.')

        form.addSection(label='Model')
        form.addParam('zdim', params.IntParam, default=MS.zdim, validators=[params.Positive],
                      label='Latent dimension',
                      help='Number of conformational coordinates per particle '
                           '(cryoTWIN used 8 on real data).')
        form.addParam('prior', params.EnumParam, choices=Prior.labels(),
                      default=Prior.index(MS.prior), label='Latent prior',
                      help='gmm: a trainable Gaussian-mixture prior (cryoTWIN), which '
                           'also gives pathways between its components; gaussian: a '
                           'standard normal prior with a KL rate (cryoDRGN-style VAE).')
        form.addParam('nmaModes', params.IntParam, default=MS.nma_modes,
                      label='Normal modes of the decoder',
                      help='0: free-form deformation field from the point network. '
                           'N > 0: displacements restricted to the N lowest elastic-network '
                           'normal modes of the reference (computed automatically).')
        form.addParam('nAtoms', params.IntParam, default=ReferenceSettings.n_atoms or 0,
                      label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference. 0: sized '
                           'automatically for the box and pixel size.')
        form.addParam('allAtoms', params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED, label='Use every atom?',
                      help='Use every atom of the atomic model as a pseudo-atom (slow for '
                           'large models; overrides the number of pseudo-atoms).')
        form.addParam('refinePoses', params.BooleanParam, default=MS.refine_poses,
                      label='Refine poses?',
                      help='Also learn small per-particle rotation and shift corrections '
                           '(the consensus poses are biased for heterogeneous samples).')
        form.addParam('encoderInputs', params.EnumParam, choices=EncoderInputs.values(),
                      default=EncoderInputs.index(MS.encoder_inputs),
                      expertLevel=params.LEVEL_ADVANCED, label='Encoder inputs',
                      help='What the encoder sees: linearised normal-mode features of the '
                           'particle and/or the low-passed particle image itself.')

        form.addSection(label='Training')
        form.addParam('epochs', params.IntParam, default=TS.epochs, validators=[params.Positive],
                      label='Epochs',
                      help='Passes over the particle set. To train more, raise it and '
                           'use Continue: training resumes from the last checkpoint.')
        form.addParam('batchSize', params.IntParam, default=TS.batch_size,
                      validators=[params.Positive], label='Batch size',
                      help='Particles per optimisation step. Larger batches are faster '
                           'per particle on a GPU and need more memory.')
        form.addParam('learningRate', params.FloatParam, default=TS.lr,
                      validators=[params.Positive], label='Learning rate',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Initial step size of the optimiser (cosine decay).')
        form.addParam('beta', params.FloatParam, default=TS.beta,
                      expertLevel=params.LEVEL_ADVANCED, label='Rate weight (beta)',
                      help=TS.sentence('beta'))
        form.addParam('timeLimit', params.FloatParam, default=TS.time_limit or 0.0,
                      expertLevel=params.LEVEL_ADVANCED, label='Time limit (minutes)',
                      help='Stop at the end of the epoch that would exceed this time '
                           '(0: no limit). Continue later to train further.')
        form.addParam('seed', params.IntParam, default=MS.seed, label='Random seed',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Seed of the network initialisation and of the batch order; '
                           'the same seed and inputs give the same model on the CPU, and '
                           'a resumed run reproduces the uninterrupted one.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep,
                                 self.inputParticles.get().getObjId())
        # training params are step arguments: changing them (e.g. more epochs)
        # and pressing Continue re-runs training, resumed from the checkpoint
        self._insertFunctionStep(self.trainStep, self.epochs.get(), self.batchSize.get(),
                                 self.learningRate.get(), self.timeLimit.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        self._writeParticlesAndReference(requirePoses=True)
        if self.inputModes.get() is not None:
            normalModesToNpz(self.inputModes.get(), self._getModesFile())

    def trainStep(self, *args):
        self._runCli('train', self._trainArgs(), nproc=self._nproc())

    def _nproc(self):
        """One data-parallel process per GPU when several GPUs are given."""
        if self._getDevice().startswith('cuda'):
            return max(1, len(self.getGpuList()))
        return 1

    def createOutputStep(self):
        parts = self.inputParticles.get()
        model = GeoDLModel(modelDir=self._getModelDir(), zdim=self.zdim.get(),
                           box=parts.getXDim(), apix=parts.getSamplingRate(),
                           prior=Prior.at(self.prior.get()))
        cfg = model.loadConfig()
        if cfg.get('zdim'):
            model.setZdim(int(cfg['zdim']))
        if cfg.get('box'):
            model.setBox(int(cfg['box']))
        if cfg.get('apix'):
            model.setSamplingRate(float(cfg['apix']))
        if cfg.get('prior'):
            model.setPrior(str(cfg['prior']))
        md = ModelDir(self._getModelDir())
        if md.has_reference():
            model.setNumberOfAtoms(md.n_atoms())
        self._defineOutputs(outputModel=model)
        self._defineSourceRelation(self.inputParticles, model)
        self._defineSourceRelation(self.inputReference, model)
        if os.path.exists(md.refined_star_path):  # refined poses back to Scipion
            from .protocol_poses import applyPosedStar
            refined = self._createSetOfParticles()
            applyPosedStar(self.inputParticles.get(), md.refined_star_path, refined)
            self._defineOutputs(outputParticles=refined)
            self._defineTransformRelation(self.inputParticles, refined)

    # --------------------------- UTILS functions ----------------------------
    def _trainArgs(self):
        args = self._particlesAndReferenceArgs() + [
            '--out', self._getModelDir(),
            '--zdim', self.zdim.get(),
            '--epochs', self.epochs.get(),
            '--batch-size', self.batchSize.get(),
            '--lr', self.learningRate.get(),
            '--beta', self.beta.get(),
            '--prior', Prior.at(self.prior.get()),
            '--encoder-inputs', EncoderInputs.at(self.encoderInputs.get()),
            '--seed', self.seed.get(),
            '--threads', self._getThreads(),
            '--device', self._getDevice()]
        if self.allAtoms.get():
            args += ['--n-atoms', 'all']
        elif self.nAtoms.get():
            args += ['--n-atoms', self.nAtoms.get()]
        if self.nmaModes.get():
            args += ['--nma-modes', self.nmaModes.get()]
        if self.refinePoses.get():
            args += ['--refine-poses']
        if self.timeLimit.get():
            args += ['--time-limit', self.timeLimit.get()]
        if os.path.exists(self._getModesFile()):
            args += ['--modes', self._getModesFile()]
        if self._hasCheckpoint():
            args += ['--resume']
        return args

    def _getModelDir(self):
        return self._absPath('model')

    def _getModesFile(self):
        return self._absPath('normal_modes.npz')

    def _hasCheckpoint(self):
        return ModelDir(self._getModelDir()).has_checkpoint()

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        if parts.getSize() == 0:
            errors.append('The input particle set is empty: select a set with particles.')
        if not parts.hasAlignmentProj():
            errors.append('The input particles have no 3D angles (alignment "%s"); use '
                          'particles from a consensus 3D refinement.' % parts.getAlignment())
        errors += self._validateParticlesAndReference(parts, 'training', sameBox=True,
                                                      pixelTolerance=1e-3)
        if self.nAtoms.get() is not None and self.nAtoms.get() < 0:
            errors.append('The number of pseudo-atoms must be 0 (automatic) or positive.')
        if self.nmaModes.get() is not None and self.nmaModes.get() < 0:
            errors.append('The number of normal modes must be 0 (free-form) or positive.')
        if self.inputModes.get() is not None:
            if '--modes' not in coreCommandFlags('train'):
                errors.append('This version of continuousflex_geodl cannot train on '
                              'external (ContinuousFlex) normal modes; leave that input '
                              'empty and set "Normal modes of the decoder" instead.')
            if self.nmaModes.get():
                errors.append('Give either ContinuousFlex normal modes or a number of '
                              'automatic normal modes, not both.')
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
        md = ModelDir(self._getModelDir())
        hist = md.read_history() if md.has_history() else None
        if isinstance(hist, list) and hist and isinstance(hist[-1], dict):
            items = ', '.join('%s %.4g' % (k, v) for k, v in hist[-1].items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool))
            lines.append('Epochs done: %d. Last epoch: %s' % (len(hist), items))
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
        if self.inputModes.get() is not None or self.nmaModes.get():
            cites += ['Jin2014hemnma', 'Harastani2022continuousflex']
        return cites
