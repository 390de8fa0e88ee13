"""Protocol: find particle poses without starting angles (global search), or
repair given poses with a trained model."""
import os

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticles

from ..core.settings import InferSettings, PoseSettings as PS, TrainSettings
from .protocol_base import GeoDLProtBase

#: modes of the protocol (form param ``mode``)
MODE_SEARCH, MODE_REPAIR = 0, 1
MODES = ['global search against a reference', 'repair given poses with a trained model']

#: particle attribute holding the pose confidence (0-1) of the output particles
ATTR_POSE_CONFIDENCE = '_cfgeodlPoseConfidence'
#: particle attribute holding the matched-filter score of the best pose
ATTR_POSE_SCORE = '_cfgeodlPoseScore'


def applyPosedStar(inSet, starFn, outSet):
    """Fill ``outSet`` with the particles of ``inSet`` carrying the poses of
    ``starFn`` (written by ``continuousflex-geodl poses`` from a star made by
    ``convert.writeParticlesStar``, or train's refined_particles.star; rows
    matched by ``rlnImageId``).

    Angles and origins (RELION sign) become ALIGN_PROJ transforms with
    ``convert.relionToMatrix`` (as scipion-em-relion); the confidence and score
    become the attributes ``_cfgeodlPoseConfidence`` / ``_cfgeodlPoseScore``
    (when the star has them).
    Returns the number of particles.
    """
    from emtable import Table
    from pwem.objects import Transform
    from pyworkflow.object import Float

    from ..convert import relionToMatrix
    optics = Table(fileName=starFn, tableName='optics')
    apix = float(next(iter(optics)).rlnImagePixelSize)
    rows = {}
    for r in Table(fileName=starFn, tableName='particles'):
        rows[int(r.rlnImageId)] = r
    outSet.copyInfo(inSet)
    outSet.setAlignmentProj()
    n = 0
    for p in inSet.iterItems(orderBy='id', direction='ASC'):
        r = rows.get(p.getObjId())
        if r is None:
            raise ValueError('Particle %d is missing from the posed particles %s'
                             % (p.getObjId(), starFn))
        q = p.clone()
        q.setTransform(Transform(relionToMatrix(
            float(r.rlnAngleRot), float(r.rlnAngleTilt), float(r.rlnAnglePsi),
            float(r.rlnOriginXAngst), float(r.rlnOriginYAngst), apix)))
        for attr, col in ((ATTR_POSE_CONFIDENCE, 'cfgeodlPoseConfidence'),
                          (ATTR_POSE_SCORE, 'cfgeodlPoseScore')):
            if hasattr(r, col):  # absent in e.g. train's refined_particles.star
                setattr(q, attr, Float(float(getattr(r, col))))
        outSet.append(q)
        n += 1
    return n


class GeoDLProtPoses(GeoDLProtBase):
    """Find the poses (angles and shifts) of particles that have none, or repair
    the poses of a heterogeneous set with a trained model.

    Global search: each particle is compared with CTF-modulated projections of
    the reference (an atomic model or a consensus map, as Gaussian
    pseudo-atoms) over a quasi-uniform grid of orientations and shifts at low
    resolution; its best distinct candidates are then refined locally at
    increasing resolution and polished by gradient steps.  A single reference
    fits the particles of other conformations poorly, so by default one round
    then learns the structures from the particles (two trainings) and poses
    every particle against its own structure.

    Repair: the given poses (e.g. of a consensus refinement) are refined
    locally, each particle against the structure a trained model decodes at
    its latent coordinate.

    The output particles carry the alignment (3D projection) and a
    per-particle confidence (attribute _cfgeodlPoseConfidence, 0-1: posterior
    mass of the best pose's basin in the global search; 1 after a repair;
    particles with low values fit the reference poorly and can be dropped).
    """
    _label = 'find poses'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticles}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('mode', params.EnumParam, choices=MODES, default=MODE_SEARCH,
                      display=params.EnumParam.DISPLAY_LIST, label='Mode',
                      help='*Global search*: poses from scratch against a reference '
                           '(particles without angles, or angles that are not trusted).\n'
                           '*Repair*: local refinement of the particles\' given poses '
                           '(e.g. a consensus 3D refinement of a heterogeneous sample), '
                           'each particle against its own structure decoded by a model '
                           'of the *train* protocol; no reference is needed.')
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Input particles',
                      help='Particles with CTF. Global search: their angles, if any, are '
                           'ignored. Repair: they need 3D angles (alignment "projection"), '
                           'the starting point of the refinement.')
        form.addParam('inputReference', params.PointerParam,
                      pointerClass='AtomStruct,Volume', important=True,
                      condition='mode == %d' % MODE_SEARCH,
                      label='Reference structure or map',
                      help='An atomic model (PDB/mmCIF, centred in the particle box) or a '
                           'map (same box and pixel size as the particles); it is '
                           'converted to Gaussian pseudo-atoms.')
        form.addParam('inputModel', params.PointerParam, pointerClass='GeoDLModel',
                      important=True, condition='mode == %d' % MODE_REPAIR,
                      label='Trained model',
                      help='Output of the *train* protocol, trained on these particles or '
                           'on a set with the same box and pixel size. Each particle is '
                           'refined against the structure the model decodes at its latent '
                           'coordinate. When the particles are the training set of a model '
                           'trained with pose refinement, the poses refined in training '
                           'are the starting point.')
        form.addParam('ignoreRefinedPoses', params.BooleanParam,
                      default=InferSettings.ignore_refined_poses,
                      condition='mode == %d' % MODE_REPAIR, expertLevel=params.LEVEL_ADVANCED,
                      label='Ignore refined poses',
                      help='Yes: start from the particles\' input poses even when they are '
                           'the training set of a model trained with *Refine poses* (by '
                           'default the poses refined in training are the starting point).')
        form.addSection(label='Search')
        form.addParam('angularStep', params.FloatParam, default=PS.angular_step,
                      condition='mode == %d' % MODE_SEARCH,
                      validators=[params.Positive], label='Global angular step (deg)',
                      help='Step of the global orientation grid (10 deg: ~15,000 '
                           'orientations).')
        form.addParam('localStep', params.FloatParam, default=PS.local_step,
                      condition='mode == %d' % MODE_REPAIR,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label='First local angular step (deg)',
                      help='First step of the local refinement around the given poses; it '
                           'halves down to the final angular step. A larger step reaches '
                           'poses further from the given ones.')
        form.addParam('finalStep', params.FloatParam, default=PS.final_step,
                      validators=[params.Positive], label='Final angular step (deg)',
                      help='The local refinement halves the step down to this value.')
        form.addParam('candidates', params.IntParam, default=PS.candidates,
                      condition='mode == %d' % MODE_SEARCH,
                      validators=[params.Positive], label='Candidates per particle',
                      help='Distinct poses of the global search refined per particle; '
                           'the confidence compares them.')
        form.addParam('maxShift', params.FloatParam, default=PS.max_shift or 0.0,
                      label='Maximum shift (A)',
                      help='Largest shift searched (0: 5 pixels).')
        form.addParam('resolution', params.FloatParam, default=PS.resolution or 0.0,
                      expertLevel=params.LEVEL_ADVANCED, label='Highest resolution (A)',
                      help='0: where the pseudo-atoms fall to 2% of their amplitude.')
        form.addParam('nAtoms', params.IntParam, default=0,
                      condition='mode == %d' % MODE_SEARCH,
                      expertLevel=params.LEVEL_ADVANCED, label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference. 0: twice the '
                           'automatic size of training (a finer reference gives more '
                           'accurate poses), at most every atom of the model.')
        form.addParam('modelRounds', params.IntParam, default=PS.model_rounds,
                      condition='mode == %d' % MODE_SEARCH, validators=[params.GE(0)],
                      label='Rounds with learned structures',
                      help='A single reference does not fit the particles of a '
                           'heterogeneous sample that are in other conformations, and the '
                           'global search against it gives many of them gross errors. '
                           'After that search, each round learns the structures from the '
                           'particles: it trains a model on the current poses, searches '
                           'again against 3 structures the model decodes along its first '
                           'latent axis (each particle keeps the best), trains a second '
                           'model on those poses and refines every pose locally against '
                           'the particle\'s own structure (as the repair mode). On a '
                           'simulated heterogeneous set (adenylate kinase, closed-state '
                           'reference, SNR 0.1), one round took the median rotation error '
                           'from 9.9 to 3.6 deg. Each round trains two models: it costs '
                           'roughly two trainings plus a second search. 0: search against '
                           'the reference only, enough for a homogeneous sample. The '
                           'models, structures and intermediate poses of the rounds are '
                           'kept in the run\'s extra folder (posed_particles_rounds).')
        form.addParam('roundEpochs', params.IntParam, default=TrainSettings.epochs,
                      condition='mode == %d' % MODE_SEARCH,
                      validators=[params.Positive], expertLevel=params.LEVEL_ADVANCED,
                      label='Training epochs per round model',
                      help='Epochs of each model trained in the rounds with learned '
                           'structures (the default of the *train* protocol). Fewer epochs '
                           'make the rounds faster.')
        form.addParam('rounds', params.IntParam, default=PS.rounds,
                      condition='mode == %d' % MODE_REPAIR, validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label='Repair rounds',
                      help='Rounds of repair: each round after the first infers the '
                           'particles\' latent coordinates again at the repaired poses, '
                           'then repairs them again against the new structures.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep,
                                 self.inputParticles.get().getObjId())
        self._insertFunctionStep(self.posesStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        # repair: the star carries the particles' poses (the starting point)
        self._writeParticlesAndReference(requirePoses=self._isRepair())

    def posesStep(self):
        self._runCli('poses', self._posesArgs())

    def createOutputStep(self):
        inSet = self.inputParticles.get()
        outSet = self._createSetOfParticles()
        applyPosedStar(inSet, self._getPosedStar(), outSet)
        self._defineOutputs(outputParticles=outSet)
        self._defineTransformRelation(self.inputParticles, outSet)
        self._defineSourceRelation(self.inputModel if self._isRepair() else
                                   self.inputReference, outSet)

    # --------------------------- UTILS functions ----------------------------
    def _isRepair(self):
        return self.mode.get() == MODE_REPAIR

    def _posesArgs(self):
        if self._isRepair():
            args = ['--particles', self._getParticlesStar(),
                    '--model', self._getModelDir(),
                    '--local-step', self.localStep.get(),
                    '--rounds', self.rounds.get()]
            if self.ignoreRefinedPoses.get():
                args.append('--ignore-refined-poses')
        else:
            args = self._particlesAndReferenceArgs() + [
                '--angular-step', self.angularStep.get(),
                '--candidates', self.candidates.get(),
                '--model-rounds', self.modelRounds.get(),
                '--epochs', self.roundEpochs.get()]
            if self.nAtoms.get():
                args += ['--n-atoms', self.nAtoms.get()]
        args += ['--out', self._getPosedStar(),
                 '--final-step', self.finalStep.get(),
                 '--threads', self._getThreads(),
                 '--device', self._getDevice()]
        if self.maxShift.get():
            args += ['--max-shift', self.maxShift.get()]
        if self.resolution.get():
            args += ['--resolution', self.resolution.get()]
        return args

    def _getPosedStar(self):
        return self._absPath('posed_particles.star')

    def _getModelDir(self):
        return os.path.abspath(self.inputModel.get().getModelDir())

    def _getRoundsDir(self):
        """Models, structures and stars of the rounds with learned structures
        (``core.commands.poses.rounds_dir``)."""
        from ..core.commands.poses import rounds_dir
        return rounds_dir(self._getPosedStar())

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        if self._isRepair():
            errors = self._validateRepair(parts)
            if self.finalStep.get() and self.localStep.get() and \
                    self.finalStep.get() > self.localStep.get():
                errors.append('The final angular step must not exceed the first local '
                              'step.')
        else:
            # the pose search works at low resolution: 1 % pixel-size tolerance
            errors = self._validateParticlesAndReference(parts, 'the pose search',
                                                         sameBox=False, pixelTolerance=1e-2)
            if self.finalStep.get() and self.angularStep.get() and \
                    self.finalStep.get() > self.angularStep.get():
                errors.append('The final angular step must not exceed the global step.')
            if self.modelRounds.get() is not None and self.modelRounds.get() < 0:
                errors.append('The rounds with learned structures must be 0 or more.')
        if self.maxShift.get() is not None and self.maxShift.get() < 0:
            errors.append('The maximum shift must be 0 (automatic) or positive.')
        return errors

    def _validateRepair(self, parts):
        """Errors of the repair mode: particles with CTF, even box and 3D angles,
        and a model folder on their grid."""
        errors = []
        if not parts.hasCTF():
            errors.append('The input particles have no CTF; estimate it (e.g. CTFFIND) '
                          'and re-extract, or assign one, before repairing their poses.')
        box = parts.getXDim()
        if box and box % 2:
            errors.append('The particle box (%d px) must be even.' % box)
        if not parts.hasAlignmentProj():
            errors.append('Repairing poses needs particles with 3D angles (alignment '
                          '"projection"), e.g. from a consensus 3D refinement; these have '
                          'alignment "%s". For particles without angles, use the global '
                          'search against a reference.' % parts.getAlignment())
        model = self.inputModel.get()
        if model is None:
            errors.append('Select a trained model (output of the *train* protocol).')
            return errors
        if not model.getModelDir() or not os.path.isdir(model.getModelDir()):
            errors.append('The model folder %s does not exist (was the training run '
                          'deleted?).' % model.getModelDir())
        sr, msr = parts.getSamplingRate(), model.getSamplingRate()
        if model.getBox() and box and model.getBox() != box:
            errors.append('The particles have a box of %d px but the model was trained at '
                          '%d px (%.4f A/px); resample the particles to that grid (e.g. '
                          'xmipp3 "crop/resize particles"), or train a model on them.'
                          % (box, model.getBox(), msr or 0))
        if sr and msr and abs(sr - msr) > 1e-3 * msr:
            errors.append('The particles have %.4f A/px but the model was trained at %.4f '
                          'A/px; resample the particles to %.4f A/px (e.g. xmipp3 '
                          '"crop/resize particles"), or train a model on them.'
                          % (sr, msr, msr))
        return errors

    def _summary(self):
        lines = []
        if self.inputParticles.get() is not None:
            lines.append('Particles: %d' % self.inputParticles.get().getSize())
        if self._isRepair():
            lines.append('Repair of the given poses with a trained model: local steps '
                         '%.3g -> %.3g deg, %d round(s).'
                         % (self.localStep.get(), self.finalStep.get(), self.rounds.get()))
        else:
            lines.append('Global step %.3g deg, final step %.3g deg, %d candidates per '
                         'particle.' % (self.angularStep.get(), self.finalStep.get(),
                                        self.candidates.get()))
            n = self.modelRounds.get() or 0
            if n:
                lines.append('Then %d round(s) with learned structures (2 models of %d '
                             'epochs each per round).' % (n, self.roundEpochs.get()))
                if self.hasAttribute('outputParticles'):
                    lines.append('Models, structures and poses of the rounds: %s'
                                 % self._getRoundsDir())
            else:
                lines.append('Search against the reference only (no rounds with learned '
                             'structures).')
        if not self.hasAttribute('outputParticles'):
            lines.append('Output particles not ready yet.')
        return lines

    def _methods(self):
        if self.inputParticles.get() is None:
            return []
        n = self.inputParticles.get().getSize()
        if self._isRepair():
            return ['We refined the given poses of %d particles locally (angular steps '
                    '%g deg halved down to %g deg, %d round(s)), each particle against its '
                    'own structure, decoded at its latent coordinate by a trained '
                    'continuousflex_geodl model.' % (n, self.localStep.get(),
                                                     self.finalStep.get(), self.rounds.get())]
        text = ('We assigned poses to %d particles by a global search over SO(3) and '
                'shifts against CTF-modulated projections of a pseudo-atom reference '
                '(coarse-to-fine, %g deg global grid refined to %g deg) with '
                'continuousflex_geodl.' % (n, self.angularStep.get(), self.finalStep.get()))
        rounds = self.modelRounds.get() or 0
        if rounds:
            text += (' Then, in %d round(s), a model trained on the current poses '
                     '(%d epochs) decoded 3 structures along its first latent axis, the '
                     'global search was repeated against them, and every pose was refined '
                     'locally against the particle\'s own structure, decoded by a second '
                     'model trained on the poses of that search.'
                     % (rounds, self.roundEpochs.get()))
        return [text]
