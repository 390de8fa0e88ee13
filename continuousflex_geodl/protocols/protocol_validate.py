"""Protocol: half-set validation of the landscape (two models on random halves)."""

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import EMFile, FSC, SetOfFSCs, SetOfParticlesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import latentsToParticlesFlex, setParticleAttr
from ..core.artifacts import ValidationDir
from ..core.settings import (AlignMethod, InferSettings as IS, LandscapeSettings as LS,
                             ModelSettings as MS, Prior, ReferenceSettings,
                             TrainSettings as TS, ValidateSettings as VS)
from .protocol_base import GeoDLProtBase


class GeoDLProtValidate(GeoDLProtBase, ProtFlexBase):
    """Half-set validation: how much of the landscape is signal, how much noise.

    As DynaMight and 3DFlex do, the particles are split into two random
    halves and one model is trained on each with the same settings.  Both
    models give the latents of all particles; the latent space of the second
    is mapped onto the first (fitted on half 1, scored on the held-out half
    2).  The report gives the per-particle agreement of the latents, the
    FSC between the maps the two models decode at the same conformations
    (the states and a path; resolution at FSC 0.143 and 0.5), and error
    estimates of the state positions, populations and free energies from
    the two landscapes.  Outputs: the particles with the latents of half 1's
    model (and the aligned ones of half 2, the half each particle was
    trained in and its disagreement), the FSC curves, and the report
    (extra/validation/validation.md, .json and figures).
    """
    _label = 'half-set validation'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticlesFlex, 'outputFSCs': SetOfFSCs,
                        'outputReport': EMFile}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Input particles',
                      help='Particles with CTF and 3D projection alignment, as for training.')
        form.addParam('inputReference', params.PointerParam,
                      pointerClass='AtomStruct,Volume', important=True,
                      label='Reference structure or map',
                      help='An atomic model (in the frame of the particles) or a consensus '
                           'map (same box and pixel size), as for training.')

        form.addSection(label='Training (each half)')
        form.addParam('zdim', params.IntParam, default=MS.zdim, validators=[params.Positive],
                      label='Latent dimension', help=MS.sentence('zdim'))
        form.addParam('prior', params.EnumParam, choices=Prior.labels(),
                      default=Prior.index(MS.prior), label='Latent prior',
                      help=MS.sentence('prior'))
        form.addParam('nmaModes', params.IntParam, default=MS.nma_modes,
                      label='Normal modes of the decoder', help=MS.sentence('nma_modes'))
        form.addParam('nAtoms', params.IntParam, default=ReferenceSettings.n_atoms or 0,
                      label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference. 0: sized '
                           'automatically for the box and pixel size.')
        form.addParam('epochs', params.IntParam, default=TS.epochs,
                      validators=[params.Positive], label='Epochs', help=TS.sentence('epochs'))
        form.addParam('batchSize', params.IntParam, default=TS.batch_size,
                      validators=[params.Positive], label='Batch size',
                      help=TS.sentence('batch_size'))
        form.addParam('learningRate', params.FloatParam, default=TS.lr,
                      validators=[params.Positive], label='Learning rate',
                      expertLevel=params.LEVEL_ADVANCED, help=TS.sentence('lr'))
        form.addParam('beta', params.FloatParam, default=TS.beta,
                      expertLevel=params.LEVEL_ADVANCED, label='Rate weight (beta)',
                      help=TS.sentence('beta'))
        form.addParam('seed', params.IntParam, default=MS.seed, label='Random seed',
                      expertLevel=params.LEVEL_ADVANCED, help=MS.sentence('seed'))

        form.addSection(label='Validation')
        form.addParam('splitSeed', params.IntParam, default=VS.split_seed,
                      label='Seed of the split', help=VS.sentence('split_seed'))
        form.addParam('align', params.EnumParam, choices=AlignMethod.labels(),
                      default=AlignMethod.index(VS.align), label='Latent alignment',
                      help=VS.sentence('align'))
        form.addParam('pathPoints', params.IntParam, default=VS.path_points,
                      validators=[params.Positive], label='Points along the path',
                      help=VS.sentence('path_points'))
        form.addParam('refineSteps', params.IntParam, default=IS.refine_steps,
                      expertLevel=params.LEVEL_ADVANCED, label='Latent refinement steps',
                      help=IS.sentence('refine_steps'))
        form.addParam('nStates', params.StringParam, default=LS.default('n_states'),
                      label='Number of states',
                      help="States of each landscape: a number, 'auto' (free-energy "
                           "basins) or 'bic'.")
        form.addParam('bootstrap', params.IntParam, default=LS.bootstrap,
                      expertLevel=params.LEVEL_ADVANCED, label='Population bootstrap',
                      help=LS.sentence('bootstrap'))
        form.addParam('feBootstrap', params.IntParam, default=LS.fe_bootstrap,
                      expertLevel=params.LEVEL_ADVANCED, label='Free-energy bootstrap',
                      help=LS.sentence('fe_bootstrap'))
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep, self.inputParticles.get().getObjId())
        self._insertFunctionStep(self.validateStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        self._writeParticlesWithIds()
        self._convertReference()

    def validateStep(self):
        self._runCli('validate', self._validateArgs())

    def _validateArgs(self):
        args = self._particlesAndReferenceArgs() + [
            '--out', self._getValidationDir(),
            '--zdim', self.zdim.get(),
            '--prior', Prior.at(self.prior.get()),
            '--epochs', self.epochs.get(),
            '--batch-size', self.batchSize.get(),
            '--lr', self.learningRate.get(),
            '--beta', self.beta.get(),
            '--seed', self.seed.get(),
            '--split-seed', self.splitSeed.get(),
            '--align', AlignMethod.at(self.align.get()),
            '--path-points', self.pathPoints.get(),
            '--refine-steps', self.refineSteps.get(),
            '--n-states', (self.nStates.get() or LS.default('n_states')).strip(),
            '--bootstrap', self.bootstrap.get(),
            '--fe-bootstrap', self.feBootstrap.get(),
            '--threads', self._getThreads(),
            '--device', self._getDevice()]
        if self.nAtoms.get():
            args += ['--n-atoms', self.nAtoms.get()]
        if self.nmaModes.get():
            args += ['--nma-modes', self.nmaModes.get()]
        return args

    def createOutputStep(self):
        v = ValidationDir(self._getValidationDir())
        z1 = np.asarray(v.latents(1))
        z2a = np.asarray(v.aligned())
        err = v.agreement()['relative_error']
        h1, _ = v.split()
        half = np.full(len(z1), 2, dtype=int)
        half[h1] = 1
        ids = self._readParticleIds()

        def update(item, i):
            setParticleAttr(item, const.ATTR_HALF, int(half[i]))
            setParticleAttr(item, const.ATTR_Z_HALF2, z2a[i])
            setParticleAttr(item, const.ATTR_HALF_ERROR, float(err[i]))

        parts = self._createSetOfParticlesFlex(progName=const.PROG_NAME)
        latentsToParticlesFlex(self.inputParticles.get(), parts, z1, ids=ids, flexAttrs={
            const.FLEX_MODEL_DIR: v.model_path(1), const.FLEX_ZDIM: int(z1.shape[1]),
            const.FLEX_LATENTS_FILE: v.latents_path(1), const.FLEX_SOURCE: 'model'},
            updateItem=update)

        fscs = self._createSetOfFSCs()
        data = v.fsc()
        freqs = [float(f) for f in data['freqs']]
        for kind, label in (('state', 'state %d'), ('path', 'path point %d')):
            for i, curve in enumerate(data['%s_curves' % kind]):
                fsc = FSC(objLabel=label % i)
                fsc.setData(freqs, [float(c) for c in curve])
                fscs.append(fsc)
        report = EMFile(filename=v.report_path)
        self._defineOutputs(outputParticles=parts, outputFSCs=fscs, outputReport=report)
        self._defineTransformRelation(self.inputParticles, parts)
        self._defineSourceRelation(self.inputParticles, fscs)
        self._defineSourceRelation(self.inputReference, fscs)

    # --------------------------- UTILS functions ----------------------------
    def _getValidationDir(self):
        return self._absPath('validation')

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        errors = []
        if parts.getSize() < 20:
            errors.append('Half-set validation needs at least 20 particles (got %d).'
                          % parts.getSize())
        if not parts.hasAlignmentProj():
            errors.append('The input particles have no 3D angles (alignment "%s"); use '
                          'particles from a consensus 3D refinement.' % parts.getAlignment())
        errors += self._validateParticlesAndReference(parts, 'validation', sameBox=True,
                                                      pixelTolerance=1e-3)
        if self.pathPoints.get() is not None and self.pathPoints.get() < 2:
            errors.append('Use at least 2 points along the path.')
        n = (self.nStates.get() or '').strip().lower()
        if n and n not in ('auto', 'bic') and not (n.isdigit() and int(n) >= 1):
            errors.append("Number of states: a number, 'auto' or 'bic' (got '%s')." % n)
        if self.nAtoms.get() is not None and self.nAtoms.get() < 0:
            errors.append('The number of pseudo-atoms must be 0 (automatic) or positive.')
        if self.useGpu.get() and not self.getGpuList():
            errors.append('Use GPU is on but no GPU id is given.')
        return errors

    def _summary(self):
        v = ValidationDir(self._getValidationDir())
        if not v.exists():
            return ['Output not ready yet.']
        r = v.report()
        ag, fsc, e = r['latent_agreement'], r['fsc'], r['error_estimates']
        lines = ['%d particles in two halves of %d and %d (split seed %d).'
                 % (r['n_particles'], r['halves']['n_half1'], r['halves']['n_half2'],
                    r['halves']['split_seed']),
                 'Latent agreement (held-out half, %s alignment): Pearson per dimension %s; '
                 'PC1 Pearson %.3f, Spearman %.3f; median relative error %.3f.'
                 % (ag['align_method'], ' '.join('%.3f' % x for x in ag['pearson']),
                    ag['pc1_pearson'], ag['pc1_spearman'], ag['relative_error_median']),
                 'FSC between the half-set models: states %s A at 0.143 (%s A at 0.5); '
                 'median along the path %.2f A (0.143), %.2f A (0.5); Nyquist %.2f A.'
                 % (' '.join('%.2f' % s['resolution_0143'] for s in fsc['states']),
                    ' '.join('%.2f' % s['resolution_05'] for s in fsc['states']),
                    fsc['median_path_resolution_0143'], fsc['median_path_resolution_05'],
                    fsc['nyquist_A'])]
        fmt = (lambda x, f='%.3f': 'n/a' if x is None else f % x)
        lines.append('States: %d (half 1) / %d (half 2). Half-set error: position %s '
                     '(latent units), population %s, dG %s kT; free-energy map %s kT.'
                     % (r['landscape']['n_states_half1'], r['landscape']['n_states_half2'],
                        fmt(e['state_position_sigma_latent']), fmt(e['population_sigma']),
                        fmt(e['dG_sigma_kT'], '%.2f'), fmt(e['map_dG_sigma_kT'], '%.2f')))
        lines.append('Report: %s' % v.report_md_path)
        return lines

    def _methods(self):
        if self.inputParticles.get() is None:
            return []
        return ['We validated the conformational landscape by half sets: the %d particles '
                'were split at random into two halves, a model (latent dimension %d, %d '
                'epochs) was trained on each with continuousflex_geodl, and the two were '
                'compared after a %s alignment of their latent spaces (latent agreement, '
                'FSC between the maps decoded at matched latents, and the states, '
                'populations and free energies of both landscapes).'
                % (self.inputParticles.get().getSize(), self.zdim.get(), self.epochs.get(),
                   AlignMethod.at(self.align.get()))]

    def _citations(self):
        return ['Feydy2019geomloss', 'Zhong2021cryodrgn']
