"""Protocol: simulate a heterogeneous particle set with known ground truth."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import AtomStruct, Volume

from .. import constants as const
from ..convert import newVolume, readParticlesStar, setParticleAttr
from ..core.settings import Motion, Population, SimulateSettings as SS
from .protocol_base import GeoDLProtBase


class GeoDLProtSimulate(GeoDLProtBase):
    """Simulate cryo-EM particles of a moving molecule, with ground truth.

    A built-in molecule (Gaussian pseudo-atoms) moves along a known motion
    (hinge, linear or normal-mode deformation); each particle is projected in
    a random orientation, modulated by a random CTF and noise is added to the
    chosen SNR.  Outputs the particles (with CTF, 3D angles, the true
    conformational coordinate of each particle as attribute
    ``_cfgeodl_gtCoord`` and its true state, 1-based, as ``_cfgeodl_gtState``),
    the reference structure and its map, and the maps of the true states.  Use it to test a workflow end to end.
    """
    _label = 'simulate particles'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': 'SetOfParticles',
                        'outputReference': AtomStruct,
                        'outputReferenceVolume': Volume,
                        'outputStates': 'SetOfVolumes'}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label='Simulation')
        form.addParam('nParticles', params.IntParam, default=SS.n_particles,
                      validators=[params.Positive],
                      label='Number of particles',
                      help='How many particle images to simulate.')
        form.addParam('box', params.IntParam, default=SS.box,
                      label='Box size (px)',
                      help='Image side in pixels (even number).')
        form.addParam('apix', params.FloatParam, default=SS.apix,
                      validators=[params.Positive],
                      label='Pixel size (A/px)',
                      help='Sampling of the simulated images in Angstrom per pixel.')
        form.addParam('snr', params.FloatParam, default=SS.snr,
                      validators=[params.Positive],
                      label='Signal-to-noise ratio',
                      help='Signal variance over noise variance; cryo-EM particles '
                           'typically have 0.01 to 0.1.')
        form.addParam('motion', params.EnumParam, choices=const.MOTIONS,
                      default=Motion.index(SS.motion),
                      label='Motion',
                      help='hinge: two domains open and close about a hinge; '
                           'linear: a domain translates; nma: deformation along '
                           'elastic-network normal modes.')
        form.addParam('population', params.EnumParam, choices=const.POPULATIONS,
                      default=Population.index(SS.population), label='Population of the states',
                      help='three_mode: two main states and a less populated middle '
                           'state; uniform: uniform along the motion; grid: a few '
                           'discrete states.')
        form.addParam('seed', params.IntParam, default=SS.seed, expertLevel=params.LEVEL_ADVANCED,
                      label='Random seed',
                      help='Same seed, same data set.')
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.simulateStep, self.nParticles.get(), self.box.get(),
                                 self.apix.get(), self.snr.get(), self.motion.get(),
                                 self.population.get(), self.seed.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def simulateStep(self, *args):
        self._runCli('simulate', self._simulateArgs())

    def _simulateArgs(self):
        return [
            '--out', self._absPath('simulation'),
            '--n-particles', self.nParticles.get(),
            '--box', self.box.get(),
            '--apix', self.apix.get(),
            '--snr', self.snr.get(),
            '--motion', const.MOTIONS[self.motion.get()],
            '--population', const.POPULATIONS[self.population.get()],
            '--seed', self.seed.get(),
            '--device', self._getDevice()]

    def createOutputStep(self):
        out = self._getExtraPath('simulation')
        gt = self._loadGroundTruth(os.path.join(out, 'ground_truth.npz'))
        partSet = self._createSetOfParticles()
        readParticlesStar(os.path.join(out, 'particles.star'), partSet,
                          relativeTo=os.getcwd(), extraAttrs=gt)
        apix = partSet.getSamplingRate()
        outputs = {'outputParticles': partSet}

        pdb = os.path.join(out, 'reference.pdb')
        if os.path.exists(pdb):
            outputs['outputReference'] = AtomStruct(filename=pdb)
        mrc = os.path.join(out, 'reference.mrc')
        if os.path.exists(mrc):
            vol = Volume()
            vol.setFileName(mrc)
            vol.setSamplingRate(apix)
            outputs['outputReferenceVolume'] = vol
        stateFiles = self._stateMaps(os.path.join(out, 'states'))
        if stateFiles:
            vols = self._createSetOfVolumes()
            vols.setSamplingRate(apix)
            coords = self._stateCoords(os.path.join(out, 'ground_truth.npz'))
            for i, fn in enumerate(stateFiles):
                vol = newVolume(fn, apix)
                if coords is not None and i < len(coords):
                    setParticleAttr(vol, const.ATTR_GT_COORD, coords[i])
                vols.append(vol)
            outputs['outputStates'] = vols
        self._defineOutputs(**outputs)

    # --------------------------- UTILS functions ----------------------------
    @staticmethod
    def _loadGroundTruth(fn):
        """Per-particle ground truth from ground_truth.npz -> {attr: values}."""
        attrs = {}
        if not os.path.exists(fn):
            return attrs
        with np.load(fn) as npz:
            if 'coords' in npz:
                coords = np.asarray(npz['coords'], dtype=float)
                attrs[const.ATTR_GT_COORD] = coords.reshape(len(coords), -1)
            if 'states' in npz:  # 0-based population component -> 1-based state
                attrs[const.ATTR_GT_STATE] = np.asarray(npz['states']).astype(int).ravel() + 1
        return attrs

    @staticmethod
    def _stateCoords(fn):
        if not os.path.exists(fn):
            return None
        with np.load(fn) as npz:
            if 'state_coords' not in npz:
                return None
            sc = np.asarray(npz['state_coords'], dtype=float)
            return sc.reshape(len(sc), -1)

    @staticmethod
    def _stateMaps(folder):
        if not os.path.isdir(folder):
            return []
        return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                if f.endswith('.mrc')]

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        if self.box.get() is None or self.box.get() < 16 or self.box.get() % 2:
            errors.append('The box size must be an even number of pixels, at least 16.')
        return errors

    def _summary(self):
        lines = ['%d particles, box %d px at %.3f A/px, SNR %g, motion *%s*, '
                 'population *%s* (seed %d).'
                 % (self.nParticles.get(), self.box.get(), self.apix.get(), self.snr.get(),
                    const.MOTIONS[self.motion.get()], const.POPULATIONS[self.population.get()],
                    self.seed.get())]
        if not self.hasAttribute('outputParticles'):
            lines.append('Output not ready yet.')
        return lines

    def _methods(self):
        return ['We simulated %d particle images (box %d px, %.2f A/px) of a molecule '
                'undergoing a %s motion with a %s population of states, with random '
                'orientations, random CTFs and additive Gaussian noise at SNR %g, using '
                'continuousflex_geodl.'
                % (self.nParticles.get(), self.box.get(), self.apix.get(),
                   const.MOTIONS[self.motion.get()], const.POPULATIONS[self.population.get()],
                   self.snr.get())]

    def _citations(self):
        return ['Harastani2022continuousflex']
