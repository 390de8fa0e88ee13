"""Protocol: find particle poses without starting angles (global search)."""
import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticles

from ..core.settings import PoseSettings as PS
from .protocol_base import GeoDLProtBase

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
    """Find the poses (angles and shifts) of particles that have none.

    Each particle is compared with CTF-modulated projections of the reference
    (an atomic model or a consensus map, as Gaussian pseudo-atoms) over a
    quasi-uniform grid of orientations and shifts at low resolution; its best
    distinct candidates are then refined locally at increasing resolution
    and polished by gradient steps.  The output particles carry the found
    alignment (3D projection) and a per-particle confidence (attribute
    _cfgeodlPoseConfidence, 0-1: posterior mass of the best pose's basin;
    particles with low values fit the reference poorly and can be dropped).
    """
    _label = 'find poses'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticles}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Input particles',
                      help='Particles with CTF; their angles, if any, are ignored.')
        form.addParam('inputReference', params.PointerParam,
                      pointerClass='AtomStruct,Volume', important=True,
                      label='Reference structure or map',
                      help='An atomic model (PDB/mmCIF, centred in the particle box) or a '
                           'map (same box and pixel size as the particles); it is '
                           'converted to Gaussian pseudo-atoms.')
        form.addSection(label='Search')
        form.addParam('angularStep', params.FloatParam, default=PS.angular_step,
                      validators=[params.Positive], label='Global angular step (deg)',
                      help='Step of the global orientation grid (10 deg: ~15,000 '
                           'orientations).')
        form.addParam('finalStep', params.FloatParam, default=PS.final_step,
                      validators=[params.Positive], label='Final angular step (deg)',
                      help='The local refinement halves the step down to this value.')
        form.addParam('candidates', params.IntParam, default=PS.candidates,
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
                      expertLevel=params.LEVEL_ADVANCED, label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference. 0: twice the '
                           'automatic size of training (a finer reference gives more '
                           'accurate poses), at most every atom of the model.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep,
                                 self.inputParticles.get().getObjId())
        self._insertFunctionStep(self.posesStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        self._writeParticlesAndReference(requirePoses=False)

    def posesStep(self):
        self._runCli('poses', self._posesArgs())

    def createOutputStep(self):
        inSet = self.inputParticles.get()
        outSet = self._createSetOfParticles()
        applyPosedStar(inSet, self._getPosedStar(), outSet)
        self._defineOutputs(outputParticles=outSet)
        self._defineTransformRelation(self.inputParticles, outSet)
        self._defineSourceRelation(self.inputReference, outSet)

    # --------------------------- UTILS functions ----------------------------
    def _posesArgs(self):
        args = self._particlesAndReferenceArgs() + [
            '--out', self._getPosedStar(),
            '--angular-step', self.angularStep.get(),
            '--final-step', self.finalStep.get(),
            '--candidates', self.candidates.get(),
            '--threads', self._getThreads(),
            '--device', self._getDevice()]
        if self.maxShift.get():
            args += ['--max-shift', self.maxShift.get()]
        if self.resolution.get():
            args += ['--resolution', self.resolution.get()]
        if self.nAtoms.get():
            args += ['--n-atoms', self.nAtoms.get()]
        return args

    def _getPosedStar(self):
        return self._absPath('posed_particles.star')

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        # the pose search works at low resolution: 1 % pixel-size tolerance
        errors = self._validateParticlesAndReference(parts, 'the pose search', sameBox=False,
                                                     pixelTolerance=1e-2)
        if self.finalStep.get() and self.angularStep.get() and \
                self.finalStep.get() > self.angularStep.get():
            errors.append('The final angular step must not exceed the global step.')
        if self.maxShift.get() is not None and self.maxShift.get() < 0:
            errors.append('The maximum shift must be 0 (automatic) or positive.')
        return errors

    def _summary(self):
        lines = []
        if self.inputParticles.get() is not None:
            lines.append('Particles: %d' % self.inputParticles.get().getSize())
        lines.append('Global step %.3g deg, final step %.3g deg, %d candidates per particle.'
                     % (self.angularStep.get(), self.finalStep.get(), self.candidates.get()))
        if not self.hasAttribute('outputParticles'):
            lines.append('Output particles not ready yet.')
        return lines

    def _methods(self):
        if self.inputParticles.get() is None:
            return []
        return ['We assigned poses to %d particles by a global search over SO(3) and '
                'shifts against CTF-modulated projections of a pseudo-atom reference '
                '(coarse-to-fine, %g deg global grid refined to %g deg) with '
                'continuousflex_geodl.' % (self.inputParticles.get().getSize(),
                                           self.angularStep.get(), self.finalStep.get())]
