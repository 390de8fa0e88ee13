"""Protocol: latent coordinates of particles with a trained model."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticlesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import latentsToParticlesFlex
from ..core.particles import grid_relation
from ..core.settings import InferSettings
from .protocol_base import GeoDLProtBase


class GeoDLProtPredict(GeoDLProtBase, ProtFlexBase):
    """Predict the conformational coordinate (latent z) of every particle.

    Runs the trained encoder over the particles (one forward pass each, so
    millions of particles are fine; they need CTF and 3D angles, as for
    training) and outputs them as flexible particles
    (``SetOfParticlesFlex``, z in ``zFlex``), usable by the landscape
    protocols here and by other flexibility tools (flexutils).
    """
    _label = 'predict latents'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticlesFlex}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('inputModel', params.PointerParam, pointerClass='GeoDLModel',
                      important=True, label='Trained model',
                      help='Output of the *train* protocol.')
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Particles',
                      help='Particles to place in the landscape: the training set or '
                           'another set with the same box and pixel size.')
        form.addParam('refineSteps', params.IntParam, default=InferSettings.refine_steps,
                      validators=[params.GE(0)], label='Latent refinement steps',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='After the encoder, each particle\'s latent is refined by this '
                           'many gradient steps on its own image likelihood plus the latent '
                           'prior (the most probable conformation under the trained '
                           'model). It ranks particles closer to the best the data allow '
                           '(measured: |Spearman| 0.936 -> 0.952 on a 10 A hinge at SNR '
                           '0.1). Gauss-Newton steps: each particle stops as soon as it '
                           'has converged (mostly after 1-3 steps), so this is only an '
                           'upper bound. 0: encoder output only (fastest).')
        form.addParam('ignoreRefinedPoses', params.BooleanParam,
                      default=InferSettings.ignore_refined_poses,
                      expertLevel=params.LEVEL_ADVANCED, label='Ignore refined poses',
                      help='When these particles are the training set of a model trained '
                           'with *Refine poses*, they are placed with the poses refined in '
                           'training (recognised by their input poses and CTF). Yes: use '
                           'their input poses instead. Other particles always use their '
                           'input poses.')
        form.addParam('batchSize', params.IntParam, default=InferSettings.batch_size,
                      validators=[params.Positive], label='Batch size',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Particles per forward pass; lower it if memory runs out.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, self.inputParticles.get().getObjId())
        self._insertFunctionStep(self.predictStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        self._writeParticlesWithIds()

    def predictStep(self):
        self._runCli('infer', self._inferArgs())

    def _inferArgs(self):
        args = ['--model', os.path.abspath(self.inputModel.get().getModelDir()),
                '--particles', self._getParticlesStar(),
                '--out', self._getLatentsFile(),
                '--batch-size', self.batchSize.get(),
                '--refine-steps', self.refineSteps.get(),
                '--threads', self._getThreads(),
                '--device', self._getDevice()]
        if self.ignoreRefinedPoses.get():
            args.append('--ignore-refined-poses')
        return args

    def createOutputStep(self):
        Z = np.load(self._getLatentsFile())
        ids = self._readParticleIds()
        model = self.inputModel.get()
        outSet = self._createSetOfParticlesFlex(progName=const.PROG_NAME)
        latentsToParticlesFlex(self.inputParticles.get(), outSet, Z, ids=ids, flexAttrs={
            const.FLEX_MODEL_DIR: os.path.abspath(model.getModelDir()),
            const.FLEX_ZDIM: int(Z.shape[1]),
            const.FLEX_LATENTS_FILE: self._getLatentsFile(),
            const.FLEX_SOURCE: 'model'})
        self._defineOutputs(outputParticles=outSet)
        self._defineTransformRelation(self.inputParticles, outSet)
        self._defineSourceRelation(self.inputModel, outSet)

    # --------------------------- UTILS functions ----------------------------
    def _getLatentsFile(self):
        return self._absPath('latents.npy')

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        model, parts = self.inputModel.get(), self.inputParticles.get()
        if model is None or parts is None:
            return ['Select a trained model and particles.']
        if not model.getModelDir() or not os.path.isdir(model.getModelDir()):
            errors.append('The model folder %s does not exist (was the training run '
                          'deleted?).' % model.getModelDir())
        if parts.getSize() == 0:
            errors.append('The input particle set is empty: select a set with particles.')
        errors += self._validateModelGrid(model, parts)
        if not parts.hasCTF():
            errors.append('The particles have no CTF; the encoder needs it (as in '
                          'training).')
        if not parts.hasAlignmentProj():
            errors.append('The particles have no 3D angles (alignment "%s"); the encoder '
                          'needs the poses, as in training.' % parts.getAlignment())
        if self.useGpu.get() and not self.getGpuList():
            errors.append('Use GPU is on but no GPU id is given.')
        return errors

    def _validateModelGrid(self, model, parts):
        """The particles must be on the model's training grid, or on a larger box
        with the same field of view (cropped when read; ``core.particles.grid_relation``).
        The model object holds the particles' full grid; a model trained with a
        smaller training box also takes particles already cropped to it."""
        box, sr = parts.getXDim(), parts.getSamplingRate()
        grids = [(model.getBox(), model.getSamplingRate())]
        cfg = model.loadConfig() if os.path.isdir(model.getModelDir() or '') else {}
        if cfg.get('box') and cfg.get('apix'):
            grids.append((int(cfg['box']), float(cfg['apix'])))
        grids = [(b, a) for b, a in grids if b and a]
        if not (box and sr and grids) or any(grid_relation(box, sr, b, a) for b, a in grids):
            return []
        b, a = grids[-1]
        return ['The particles (box of %d px, %.4f A/px) are not on the grid the model was '
                'trained at (%d px, %.4f A/px: a %.1f A field of view); give particles at '
                'that grid, or a larger box with the same field of view (resample them, '
                'e.g. xmipp3 "crop/resize particles"), or train a model on them.'
                % (box, sr, b, a, b * a)]

    def _summary(self):
        if not self.hasAttribute('outputParticles'):
            return ['Output not ready yet.']
        out = self.outputParticles
        return ['%d particles placed in a %s-dimensional latent space.'
                % (out.getSize(), out.getFlexInfo().getAttr(const.FLEX_ZDIM))]

    def _methods(self):
        if not self.hasAttribute('outputParticles'):
            return []
        return ['The conformational coordinates of %d particles were predicted with the '
                'trained continuousflex_geodl encoder.' % self.outputParticles.getSize()]

    def _citations(self):
        return ['Zhong2021cryodrgn', 'Harastani2022continuousflex']
