"""Protocol: conformational landscape (embedding, free energy, states)."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pyworkflow.object import Float, Integer
from pwem.objects import (AtomStruct, SetOfClassesFlex, SetOfParticlesFlex, SetOfVolumesFlex,
                          VolumeFlex)
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import gatherLatents, latentsToParticlesFlex
from ..core.artifacts import LandscapeDir
from ..core.settings import (EmbeddingMethod, EnergyUnit, LandscapeSettings as LS, MapKernel,
                             StateMethod)
from .protocol_base import GeoDLProtBase

EMBEDDINGS = const.EMBEDDINGS
STATE_METHODS = const.STATE_METHODS
UNITS = const.UNITS
MAP_KERNELS = const.MAP_KERNELS


class GeoDLProtLandscape(GeoDLProtBase, ProtFlexBase):
    """Conformational landscape: 2D map, free energy, states and their structures.

    Works on the latents of the geometric-deep-learning model, on HEMNMA /
    DeepHEMNMA normal-mode amplitudes or on any per-particle coordinates.
    Embeds them in 2D (PCA, UMAP or t-SNE), estimates the free energy
    dG = -kT ln(p / p_max) with bootstrap errors, finds the conformational
    states (free-energy basins by topological persistence, a BIC-selected or
    fixed-size Gaussian mixture, k-means, or the model's trained cryoTWIN
    prior) with their populations and 95 % intervals, and, with a trained
    model, decodes the structure of each state.

    Outputs: the particles (flexible, with zRed = 2D embedding, the state
    ``_cfgeodl_state`` and the free energy ``_cfgeodl_dG`` of each), the
    states as classes (per-state particle subsets, representative = state
    map), the state maps and a multi-model PDB of the states.
    """
    _label = 'landscape'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticlesFlex,
                        'outputClasses': SetOfClassesFlex,
                        'outputVolumes': SetOfVolumesFlex,
                        'outputStructures': AtomStruct}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Particles',
                      help='Flexible particles from *predict latents* (or any flexibility '
                           'tool), or particles carrying HEMNMA / DeepHEMNMA amplitudes.')
        form.addParam('source', params.EnumParam, choices=const.LATENT_SOURCES,
                      default=const.SOURCE_ZFLEX, label='Coordinates',
                      help='Which per-particle coordinates define the landscape.')
        form.addParam('attrName', params.StringParam, default='',
                      condition='source == %d' % const.SOURCE_ATTR, label='Attribute name',
                      help='Particle attribute with one vector per particle.')
        form.addParam('xmdFile', params.PathParam, default='',
                      condition='source == %d' % const.SOURCE_XMD, label='Xmipp metadata',
                      help='Metadata (.xmd) with one row per particle, e.g. HEMNMA images.xmd.')
        form.addParam('xmdLabel', params.StringParam, default='nmaDisplacements',
                      condition='source == %d' % const.SOURCE_XMD, label='Column',
                      help='Vector column of the metadata.')
        form.addParam('inputModel', params.PointerParam, pointerClass='GeoDLModel',
                      allowsNull=True, label='Trained model (optional)',
                      help='Decodes the structure of each state. When empty and the '
                           'particles come from *predict latents*, their model is used.')
        form.addParam('writeVolumes', params.BooleanParam, default=True,
                      label='Write state maps?',
                      help='With a model: render a map of each state (No: only the '
                           'pseudo-atom models).')

        form.addSection(label='Landscape')
        form.addParam('embedding', params.EnumParam, choices=EMBEDDINGS,
                      default=EmbeddingMethod.index(LS.embedding),
                      label='2D embedding',
                      help='pca: linear, fast, distances preserved along the main axes; '
                           'umap / t-SNE: non-linear (fitted on a subsample).')
        form.addParam('nStates', params.StringParam, default=LS.default('n_states'),
                      label='Number of states',
                      help="'auto': free-energy basins separated by more than the barrier "
                           "below; 'bic': Gaussian components chosen by BIC; or a number.")
        form.addParam('stateMethod', params.EnumParam, choices=STATE_METHODS,
                      default=StateMethod.index(LS.method),
                      label='Clustering',
                      help='Density model / clustering of the latents: Gaussian mixture or '
                           'k-means.')
        form.addParam('usePrior', params.BooleanParam, default=False,
                      label='States from the trained prior?',
                      help="Use the model's trained Gaussian-mixture prior (cryoTWIN) as the "
                           'density model of the states (needs a model trained with the gmm '
                           'prior).')
        form.addParam('barrier', params.FloatParam, default=LS.barrier or 0.0,
                      validators=[params.GE(0)],
                      expertLevel=params.LEVEL_ADVANCED, label='Barrier (kT)',
                      help="'auto' states: merge basins separated by less than this "
                           'free-energy barrier. 0: automatic (0.3 kT between basins of the '
                           'free-energy map, which must also be 3 sampling s.d. deep; 1 kT '
                           'with the trained prior).')
        form.addParam('minPopulation', params.FloatParam, default=LS.min_population,
                      expertLevel=params.LEVEL_ADVANCED, label='Minimum population',
                      help="'auto' states: merge basins holding less than this fraction "
                           'of the particles.')
        form.addParam('kernel', params.EnumParam, choices=MAP_KERNELS,
                      default=MapKernel.index(LS.kernel),
                      expertLevel=params.LEVEL_ADVANCED, label='Map kernel width',
                      help="Kernel width over the free-energy map and its states. 'adaptive': "
                           'narrower where the particles are dense and wider where they are '
                           "sparse (Abramson's square-root law), so a sharp minor state "
                           "between broad ones keeps its barriers; 'fixed': one "
                           'cross-validated width everywhere.')
        form.addParam('units', params.EnumParam, choices=UNITS,
                      default=EnergyUnit.index(LS.units),
                      label='Free-energy units',
                      help='kT (temperature-free) or kcal/mol / kJ/mol at the temperature '
                           'below.')
        form.addParam('temperature', params.FloatParam, default=LS.temperature,
                      expertLevel=params.LEVEL_ADVANCED, label='Temperature (K)',
                      help='Temperature of the sample before vitrification (for kcal/mol '
                           'and kJ/mol).')
        form.addParam('bootstrap', params.IntParam, default=LS.bootstrap,
                      expertLevel=params.LEVEL_ADVANCED, label='Bootstrap (populations)',
                      help='Bootstrap replicates for the 95 % intervals of the populations.')
        form.addParam('feBootstrap', params.IntParam, default=LS.fe_bootstrap,
                      expertLevel=params.LEVEL_ADVANCED, label='Bootstrap (free energy)',
                      help='Bootstrap replicates for the free-energy error map.')
        form.addParam('seed', params.IntParam, default=LS.seed, expertLevel=params.LEVEL_ADVANCED,
                      label='Random seed', help='Seed of embeddings, fits and bootstraps.')
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.analyzeStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self):
        ids, Z = gatherLatents(self.inputParticles.get(), self.source.get(),
                               attr=self.attrName.get(), xmdFn=self.xmdFile.get(),
                               xmdLabel=self.xmdLabel.get())
        np.save(self._getLatentsFile(), np.asarray(Z, dtype=np.float32))
        np.save(self._absPath('particle_ids.npy'), np.asarray(ids, dtype=np.int64))

    def analyzeStep(self):
        self._runCli('landscape analyze', self._analyzeArgs())

    def _analyzeArgs(self):
        args = ['--latents', self._getLatentsFile(), '--out', self._getLandscapeDir(),
                '--embedding', EMBEDDINGS[self.embedding.get()],
                '--n-states', (self.nStates.get() or LS.default('n_states')).strip(),
                '--method', STATE_METHODS[self.stateMethod.get()],
                '--min-population', self.minPopulation.get(),
                '--bootstrap', self.bootstrap.get(),
                '--fe-bootstrap', self.feBootstrap.get(),
                '--kernel', MAP_KERNELS[self.kernel.get()],
                '--units', UNITS[self.units.get()],
                '--temperature', self.temperature.get(),
                '--seed', self.seed.get(),
                '--device', self._getDevice()]
        if self.barrier.get():
            args += ['--barrier', self.barrier.get()]
        modelDir = self._getModelDir()
        if modelDir:
            args += ['--model', modelDir]
            if not self.writeVolumes.get():
                args.append('--no-volumes')
            if self.usePrior.get():
                args += ['--prior', modelDir]
        return args

    def createOutputStep(self):
        inSet = self.inputParticles.get()
        land = self._landscape().require()
        Z = np.load(self._getLatentsFile())
        ids = np.load(self._absPath('particle_ids.npy'))
        emb = land.embedding()
        labels = land.labels()
        dG, _ = land.particle_dG()
        states = land.states()
        centres = land.state_centres()
        modelDir = self._getModelDir()
        apix = inSet.getSamplingRate()

        # particles: latents, embedding, state (1-based), free energy
        flexAttrs = {const.FLEX_ZDIM: int(Z.shape[1]),
                     const.FLEX_LATENTS_FILE: self._getLatentsFile(),
                     const.FLEX_SOURCE: const.LATENT_SOURCES[self.source.get()]}
        if modelDir:
            flexAttrs[const.FLEX_MODEL_DIR] = modelDir
        parts = self._createSetOfParticlesFlex(progName=const.PROG_NAME)
        latentsToParticlesFlex(inSet, parts, Z, ids=ids, zred=emb, flexAttrs=flexAttrs,
                               updateItem=self._particleUpdater(labels, dG))
        outputs = {'outputParticles': parts}

        # state maps and models
        volFiles = land.state_files('mrc')
        if modelDir and volFiles:
            vols = self._createSetOfVolumesFlex(progName=const.PROG_NAME)
            vols.setSamplingRate(apix)
            for s, fn in enumerate(volFiles):
                vols.append(self._stateVolume(fn, centres[s], apix, s, states))
            outputs['outputVolumes'] = vols
        pdb = land.states_pdb()
        if pdb:
            outputs['outputStructures'] = AtomStruct(filename=pdb)

        self._defineOutputs(**outputs)
        self._defineTransformRelation(self.inputParticles, parts)

        # states as classes of the output particles (per-state subsets)
        classes = self._createSetOfClassesFlex(parts, progName=const.PROG_NAME)

        def updateClass(cls):
            s = cls.getObjId() - 1
            fn = volFiles[s] if s < len(volFiles) else None
            cls.setRepresentative(self._stateVolume(fn, centres[s], apix, s, states))

        classes.classifyItems(updateClassCallback=updateClass)
        self._defineOutputs(outputClasses=classes)
        self._defineSourceRelation(self.inputParticles, classes)

    # --------------------------- UTILS functions ----------------------------
    @staticmethod
    def _particleUpdater(labels, dG):
        def update(item, i):
            item.setClassId(int(labels[i]) + 1)
            setattr(item, const.ATTR_STATE, Integer(int(labels[i]) + 1))
            setattr(item, const.ATTR_DG, Float(float(dG[i])) if np.isfinite(dG[i]) else Float())
        return update

    def _stateVolume(self, fn, centre, apix, s, states):
        vol = VolumeFlex(progName=const.PROG_NAME)
        if fn:
            vol.setFileName(fn)
        vol.setSamplingRate(apix)
        vol.setZFlex(np.asarray(centre, dtype=float))
        pops = states.get('populations') or []
        if s < len(pops):
            setattr(vol, '_cfgeodl_population', Float(float(pops[s])))
        setattr(vol, const.ATTR_STATE, Integer(s + 1))
        return vol

    def _getModelDir(self):
        """Model folder: the chosen model, else the one that made the latents."""
        model = self.inputModel.get()
        if model is not None:
            return os.path.abspath(model.getModelDir())
        parts = self.inputParticles.get()
        if self.source.get() == const.SOURCE_ZFLEX and isinstance(parts, SetOfParticlesFlex):
            info = parts.getFlexInfo()
            if info.getProgName() == const.PROG_NAME and hasattr(info, const.FLEX_MODEL_DIR):
                path = info.getAttr(const.FLEX_MODEL_DIR)
                if path and os.path.isdir(path):
                    return path
        return None

    def _getLatentsFile(self):
        return self._absPath('latents.npy')

    def _getLandscapeDir(self):
        return self._absPath('landscape')

    def _landscape(self):
        """The landscape folder (``core.artifacts.LandscapeDir``)."""
        return LandscapeDir(self._getLandscapeDir())

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the particles.']
        errors = []
        first = parts.getFirstItem()
        src = self.source.get()
        if src == const.SOURCE_ZFLEX and (not hasattr(first, 'getZFlex') or
                                          len(first.getZFlex()) == 0):
            errors.append('These particles have no latent coordinates (zFlex); run *predict '
                          'latents*, or choose HEMNMA amplitudes or an attribute.')
        elif src == const.SOURCE_HEMNMA and not first.hasAttribute(const.ATTR_HEMNMA):
            errors.append('These particles carry no HEMNMA amplitudes (%s).'
                          % const.ATTR_HEMNMA)
        elif src == const.SOURCE_ATTR and not first.hasAttribute(self.attrName.get() or '_'):
            errors.append('The particles have no attribute "%s".' % self.attrName.get())
        elif src == const.SOURCE_XMD and not os.path.exists(self.xmdFile.get() or ''):
            errors.append('The metadata file %s does not exist.' % self.xmdFile.get())
        n = (self.nStates.get() or '').strip().lower()
        if n not in ('auto', 'bic') and not (n.isdigit() and int(n) >= 1):
            errors.append("Number of states must be 'auto', 'bic' or a positive number.")
        if self.usePrior.get():
            model = self.inputModel.get()
            if self._getModelDir() is None:
                errors.append('States from the trained prior need a trained model.')
            elif model is not None and model.getPrior() not in (None, 'gmm'):
                errors.append('The model was trained with the %s prior, not a Gaussian '
                              'mixture.' % model.getPrior())
        if parts.getSize() < 10:
            errors.append('A landscape needs more particles (got %d).' % parts.getSize())
        return errors

    def _summary(self):
        st = self._readJson(self._landscape().states_path)
        if not st:
            return ['Output not ready yet.']
        lines = ['%d states (%s, %s selection).' % (st.get('n_states', 0), st.get('method'),
                                                    st.get('selection'))]
        pops, ci = st.get('populations') or [], st.get('population_ci95') or []
        for s, p in enumerate(pops):
            extra = (' (95%% CI %.3f-%.3f)' % tuple(ci[s])) if s < len(ci) else ''
            lines.append('  state %d: population %.3f%s' % (s + 1, p, extra))
        return lines

    def _methods(self):
        return ['The conformational landscape was computed with continuousflex_geodl: 2D %s '
                'embedding, free energy dG = -kT ln(p/p_max) from a Gaussian kernel density '
                'estimate with bootstrap errors, and states from %s.'
                % (EMBEDDINGS[self.embedding.get()],
                   'free-energy basins (topological persistence)'
                   if (self.nStates.get() or 'auto').strip() == 'auto' else
                   STATE_METHODS[self.stateMethod.get()])]

    def _citations(self):
        cites = ['Zhong2021cryodrgn']
        if self.usePrior.get():
            cites.append('cryoTWIN')
        if self.source.get() != const.SOURCE_ZFLEX:
            cites += ['Jin2014hemnma', 'Harastani2022continuousflex']
        return cites
