"""Viewer: conformational landscape (free-energy map, states, particles on the map)."""
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
        form.addParam('attrName', params.StringParam, default=const.ATTR_GT_COORD,
                      condition='colourBy == %d' % COLOUR_ATTR, label='Attribute',
                      help='Name of a particle attribute (scalar or vector), e.g. the true '
                           'coordinate (%s) or state (%s) of simulated particles.'
                           % (const.ATTR_GT_COORD, const.ATTR_GT_STATE))
        form.addParam('attrComponent', params.IntParam, default=1,
                      condition='colourBy == %d' % COLOUR_ATTR, label='Component',
                      help='For vector attributes: which component (from 1).')
        form.addParam('maxPoints', params.IntParam, default=20000,
                      expertLevel=params.LEVEL_ADVANCED, label='Most points drawn',
                      help='The scatter plot draws a random subset of at most this many '
                           'particles; the density uses all of them.')
        form.addParam('displayParticles', params.LabelParam,
                      label='Particles on the map (and their density)',
                      help='Each particle at its 2D embedding, coloured as chosen above.')

    def _getVisualizeDict(self):
        return {'displayFreeEnergy': self._showFreeEnergy,
                'displayParticles': self._showParticles}

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
