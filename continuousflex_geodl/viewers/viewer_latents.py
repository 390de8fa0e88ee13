"""Viewer: latent coordinates of flexible particles (corner plot and density)."""
import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from .. import constants as const
from ..protocols import GeoDLProtHemnmaToFlex, GeoDLProtPredict
from .base import GeoDLViewerMixin, attr_label, latents_of, particle_values

COLOUR_NONE, COLOUR_ATTR = 0, 1


class GeoDLLatentsViewer(GeoDLViewerMixin, ProtocolViewer):
    """Latent coordinates of the particles: every pair of dimensions and the
    density of the first two, coloured by any particle attribute (for
    simulated data, the true coordinate or state shows what was learned).
    """
    _label = 'latent coordinates'
    _targets = [GeoDLProtPredict, GeoDLProtHemnmaToFlex]
    _environments = [DESKTOP_TKINTER]
    _saveables = {'latents': ('_showLatents', 'latents.png'),
                  'latent_density': ('_showDensity', 'latent_density.png')}

    def _defineParams(self, form):
        form.addSection(label='Visualization')
        form.addParam('colourBy', params.EnumParam, choices=['nothing', 'particle attribute'],
                      default=COLOUR_ATTR, display=params.EnumParam.DISPLAY_HLIST,
                      label='Colour particles by',
                      help='A particle attribute, e.g. the true coordinate of simulated '
                           'particles (%s) or their true state (%s).'
                           % (const.ATTR_GT_COORD, const.ATTR_GT_STATE))
        self._addParticleColourParams(form, 'colourBy == %d' % COLOUR_ATTR)
        form.addParam('dims', params.StringParam, default='',
                      label='Latent dimensions',
                      help='Dimensions to draw, numbered from 1 (e.g. "1 2 3"); empty: the '
                           'first four.')
        form.addParam('displayLatents', params.LabelParam,
                      label='Latent coordinates (pairs of dimensions)',
                      help='Corner plot: histogram of each dimension, scatter of each pair.')
        form.addParam('displayDensity', params.LabelParam,
                      label='Density of the first two dimensions',
                      help='Scatter of the chosen dimensions next to the particle density.')

    def _getVisualizeDict(self):
        return {'displayLatents': self._showLatents, 'displayDensity': self._showDensity}

    # ------------------------------------------------------------------ data
    def _dims(self, k):
        txt = (self.dims.get() or '').replace(',', ' ').split()
        return [int(d) - 1 for d in txt] if txt else list(range(min(k, 4)))

    def _colouring(self, ids):
        if self.colourBy.get() != COLOUR_ATTR:
            return None, None
        attr, comp = self.attrName.get(), self.attrComponent.get() or 1
        parts = self.protocol.outputParticles
        if not attr or not parts.getFirstItem().hasAttribute(attr):
            return None, None  # nothing to colour by: plain plot
        return particle_values(parts, attr, ids, comp), attr_label(attr, comp)

    # --------------------------------------------------------------- figures
    def _showLatents(self, paramName=None, save_path=None):
        from .plotting import latent_pairs_figure
        from .views import FigureView

        def build():
            ids, z = latents_of(self.protocol)
            values, label = self._colouring(ids)
            fig = latent_pairs_figure(z, values, label, dims=self._dims(z.shape[1]),
                                      max_points=self.maxPoints.get())
            return [FigureView(fig, 'Latent coordinates', self._tkParent())]
        return self._views(build, 'Latent coordinates', save_path)

    def _showDensity(self, paramName=None, save_path=None):
        from .plotting import embedding_figure
        from .views import FigureView

        def build():
            ids, z = latents_of(self.protocol)
            dims = self._dims(z.shape[1])[:2]
            if len(dims) == 1 or z.shape[1] == 1:
                xy, names = np.asarray(z[:, dims[:1]]), ('z%d' % (dims[0] + 1),)
            else:
                xy, names = np.asarray(z[:, dims]), tuple('z%d' % (d + 1) for d in dims)
            values, label = self._colouring(ids)
            fig = embedding_figure(xy, values, label, max_points=self.maxPoints.get(),
                                   labels=names + ('',) * (2 - len(names)),
                                   title='Latent coordinates of %d particles' % len(z))
            return [FigureView(fig, 'Latent density', self._tkParent())]
        return self._views(build, 'Latent density', save_path)
