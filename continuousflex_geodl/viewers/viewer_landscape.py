"""Viewer: conformational landscape (free-energy map, states, particles on the map)
and the interactive explorer (click, lasso, paths; ``core.landscape.explore``)."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from .. import constants as const
from ..core.artifacts import LandscapeDir
from ..protocols import GeoDLProtLandscape
from .base import GeoDLViewerMixin, attr_label, particle_values

COLOUR_DG, COLOUR_STATE, COLOUR_ATTR = 0, 1, 2
COLOUR_CHOICES = ['free energy', 'state', 'particle attribute']


class GeoDLLandscapeViewer(GeoDLViewerMixin, ProtocolViewer):
    """Free-energy map with the states and their populations, and every
    particle on the 2D map coloured by its free energy, its state or any
    attribute (e.g. the true coordinate of simulated particles), next to the
    particle density.  States are numbered from 1, as in the outputs.

    *Open interactive explorer*: the map in a window where a click decodes
    the structure there, a lasso / polygon / box selects particles and
    "Save selection" registers them as a new *subset from landscape* run
    (its output is the SetOfParticles subset), and a drawn path gives its
    structures and animation (``core.landscape.explore``; files in the
    run's extra/explorer folder).
    """
    _label = 'conformational landscape'
    _targets = [GeoDLProtLandscape]
    _environments = [DESKTOP_TKINTER]
    _saveables = {'free_energy': ('_showFreeEnergy', 'free_energy.png'),
                  'particles_dG': ('_showParticlesDG', 'particles_by_free_energy.png'),
                  'particles_state': ('_showParticlesState', 'particles_by_state.png'),
                  'particles_attr': ('_showParticlesAttr', 'particles_by_attribute.png')}

    def _defineParams(self, form):
        form.addSection(label='Visualization')
        form.addParam('displayFreeEnergy', params.LabelParam,
                      label='Free-energy map, states and populations',
                      help='dG = -kT ln(p/p_max) on the 2D map with contours every kT, the '
                           'state centres (numbered from 1) and the state populations with '
                           'their 95 % bootstrap intervals.')
        form.addParam('colourBy', params.EnumParam, choices=COLOUR_CHOICES, default=COLOUR_DG,
                      display=params.EnumParam.DISPLAY_HLIST, label='Colour particles by',
                      help='Free energy at the particle, its state, or any particle '
                           'attribute.')
        self._addParticleColourParams(form, 'colourBy == %d' % COLOUR_ATTR)
        form.addParam('displayParticles', params.LabelParam,
                      label='Particles on the map (and their density)',
                      help='Each particle at its 2D embedding, coloured as chosen above.')
        form.addParam('displayExplorer', params.LabelParam,
                      label='Open interactive explorer',
                      help='The free-energy map with every particle, in a window: '
                           'point mode, a click decodes the structure there (projections, '
                           'PDB and map written, opened in ChimeraX when installed); '
                           'lasso / polygon / box select particles and "Save selection" '
                           'registers them as a new "subset from landscape" run (a '
                           'SetOfParticles); path mode, click points then "Make path" for '
                           'the structures along it and their animation. Axes: the '
                           'landscape, PCA, UMAP or two latent dimensions; colour by free '
                           'energy, state or the attribute above. Files go to the run\'s '
                           'extra/explorer folder.')

    def _getVisualizeDict(self):
        return {'displayFreeEnergy': self._showFreeEnergy,
                'displayParticles': self._showParticles,
                'displayExplorer': self._showExplorer}

    # ------------------------------------------------------------------ data
    def _files(self):
        return LandscapeDir(self.protocol._getExtraPath('landscape')).require()

    def _attr(self):
        return (self.attrName.get() if hasattr(self, 'attrName') else None) or \
            const.ATTR_GT_COORD, (self.attrComponent.get() if hasattr(self, 'attrComponent')
                                  else None) or 1

    def _maxPoints(self):
        return self.maxPoints.get() if hasattr(self, 'maxPoints') else 20000

    # --------------------------------------------------------------- figures
    def _showFreeEnergy(self, paramName=None, save_path=None):
        from .plotting import axis_labels, free_energy_figure
        from .views import FigureView

        def build():
            files = self._files()
            fe = files.free_energy()
            st = files.states()
            n = int(st.get('n_states', 0))
            names = [str(i + 1) for i in range(n)]
            ci = st.get('population_ci95')
            fig = free_energy_figure(
                fe, state_points=files.state_points(), state_names=names,
                populations=st.get('populations'),
                population_ci=np.asarray(ci, float) if ci else None,
                labels=axis_labels(files.method()),
                title='%d particles, %d state%s' % (fe.n_particles, n, '' if n == 1 else 's'))
            return [FigureView(fig, 'Free-energy landscape', self._tkParent())]
        return self._views(build, 'Free-energy landscape', save_path)

    def _particlesFigure(self, colour, save_path=None):
        from .plotting import axis_labels, embedding_figure
        from .views import FigureView

        def build():
            files = self._files()
            y = files.embedding()
            if colour == COLOUR_DG:
                values, units = files.particle_dG()
                label, cat = 'ΔG (%s)' % units, False
            elif colour == COLOUR_STATE:
                values, label, cat = files.labels() + 1, 'state', True
            else:
                attr, comp = self._attr()
                ids = np.load(self.protocol._getExtraPath('particle_ids.npy'))
                values = particle_values(getattr(self.protocol, 'outputParticles', None), attr,
                                         ids, comp)
                label, cat = attr_label(attr, comp), None
            fig = embedding_figure(y, values, label, categorical=cat,
                                   max_points=self._maxPoints(),
                                   labels=axis_labels(files.method()),
                                   state_points=files.state_points())
            return [FigureView(fig, 'Particles on the landscape', self._tkParent())]
        return self._views(build, 'Particles on the landscape', save_path)

    def _showParticles(self, paramName=None, save_path=None):
        return self._particlesFigure(self.colourBy.get(), save_path)

    def _showParticlesDG(self, paramName=None, save_path=None):
        return self._particlesFigure(COLOUR_DG, save_path)

    def _showParticlesState(self, paramName=None, save_path=None):
        return self._particlesFigure(COLOUR_STATE, save_path)

    def _showParticlesAttr(self, paramName=None, save_path=None):
        return self._particlesFigure(COLOUR_ATTR, save_path)

    # ---------------------------------------------------------- explorer
    #: wait for the subset run to finish before returning (tests; the GUI does not wait)
    launchWait = False

    def _showExplorer(self, paramName=None):
        from .views import ExplorerView

        def build():
            return [ExplorerView(self.explorer(), 'Landscape explorer: %s'
                                 % self.protocol.getRunName(), self._tkParent())]
        return self._views(build, 'Landscape explorer')

    def explorer(self):
        """The ``core.landscape.explore.Explorer`` of this run (not yet drawn):
        its latents, landscape folder and model; selections saved in it
        become *subset from landscape* runs (``registerSubset``)."""
        from ..core.landscape.explore import Explorer
        land = self._files()
        latents = self.protocol._getLatentsFile()
        if not os.path.exists(latents):
            raise FileNotFoundError('The run has no latents file (%s): has it finished?'
                                    % latents)
        attributes = {}
        try:  # the attribute chosen above, when the particles carry it
            attr, comp = self._attr()
            ids = np.load(self.protocol._getExtraPath('particle_ids.npy'))
            attributes[attr_label(attr, comp)] = particle_values(
                getattr(self.protocol, 'outputParticles', None), attr, ids, comp)
        except (ValueError, FileNotFoundError, KeyError, AttributeError):
            pass
        return Explorer(latents, model=self.protocol._getModelDir(), landscape=land.path,
                        out=os.path.abspath(self.protocol._getExtraPath('explorer')),
                        attributes=attributes,
                        on_subset=self.registerSubset, chimerax=_chimerax(),
                        first_state=1)

    def registerSubset(self, info):
        """Register the explorer selection ``info`` (0-based rows of the landscape)
        as a new *subset from landscape* run on this run's output particles
        (selection by particle ids, written to ``particle_ids.txt`` next to the
        explorer's files) and launch it; returns the new run."""
        from ..protocols import GeoDLProtSubset
        from ..protocols.protocol_subset import SELECT_IDS, writeIdFile
        if getattr(self.protocol, 'outputParticles', None) is None:
            raise ValueError('The landscape run has no output particles to take a subset of.')
        ids = np.load(self.protocol._getExtraPath('particle_ids.npy'))
        rows = np.asarray(info['indices'], dtype=np.int64)
        fn = writeIdFile(os.path.join(info['folder'], 'particle_ids.txt'), ids[rows],
                         header='%s of %s' % (info['name'], self.protocol.getRunName()))
        project = self.getProject()
        prot = project.newProtocol(GeoDLProtSubset, selection=SELECT_IDS)
        prot.setObjLabel('explorer %s (%d particles)' % (info['name'], len(rows)))
        prot.inputParticles.set(self.protocol)
        prot.inputParticles.setExtended('outputParticles')
        prot.idsFile.set(fn)
        project.launchProtocol(prot, wait=self.launchWait)
        info['protocol'] = prot
        return prot


def _chimerax():
    """ChimeraX as Scipion knows it (None: look for ``chimerax`` on PATH)."""
    try:
        from pwem.viewers.viewer_chimera import Chimera
        prog = Chimera.getProgram()
    except Exception:  # noqa: BLE001 -- no chimera configuration: use PATH
        return None
    return prog if prog and os.path.exists(prog) else None
