"""Viewer: half-set validation (FSC curves, latent agreement, the two landscapes)."""
import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..core.artifacts import ValidationDir
from ..protocols import GeoDLProtValidate
from .base import GeoDLViewerMixin


class GeoDLValidationViewer(GeoDLViewerMixin, ProtocolViewer):
    """The figures of a half-set validation run, drawn from its folder
    (extra/validation, ``core.artifacts.ValidationDir``) with the code the
    ``validate`` command draws its PNGs with (``core.validation_plots``):

    * FSC between the two half-set models at matched latents (states and
      path), with the resolution at FSC 0.143 and 0.5 at each point;
    * per-particle latent agreement after the alignment (PC1 scatter,
      correlation per latent dimension, per-particle error);
    * the two free-energy maps on one grid with the matched states and
      their populations with the half-set error.
    """
    _label = 'half-set validation'
    _targets = [GeoDLProtValidate]
    _environments = [DESKTOP_TKINTER]
    _saveables = {'fsc': ('_showFsc', 'fsc.png'),
                  'agreement': ('_showAgreement', 'latent_agreement.png'),
                  'landscapes': ('_showLandscapes', 'landscape_comparison.png')}

    def _defineParams(self, form):
        form.addSection(label='Visualization')
        form.addParam('displayFsc', params.LabelParam,
                      label='FSC between the half-set models',
                      help='FSC of the maps the two models decode at the same conformation '
                           '(each state of half 1\'s landscape and each point of a path), '
                           'with the resolution at FSC 0.143 and 0.5 at each point.')
        form.addParam('displayAgreement', params.LabelParam,
                      label='Per-particle latent agreement',
                      help='Latents of every particle from both models, after mapping the '
                           'second space onto the first: PC1 against PC1, correlation per '
                           'latent dimension, distribution of the per-particle error (the '
                           'held-out half in colour).')
        form.addParam('displayLandscapes', params.LabelParam,
                      label='Landscapes of the two halves',
                      help='The free-energy maps of both models on one grid, the matched '
                           'states and their populations with the half-set error.')

    def _getVisualizeDict(self):
        return {'displayFsc': self._showFsc, 'displayAgreement': self._showAgreement,
                'displayLandscapes': self._showLandscapes}

    def _folder(self):
        v = ValidationDir(self.protocol._getValidationDir())
        if not v.exists():
            raise FileNotFoundError('The half-set validation has not finished: no report in '
                                    '%s.' % v.path)
        return v

    def _show(self, draw, title, save_path):
        from .views import FigureView

        def build():
            fig = draw(self._folder())
            return [FigureView(fig, title, self._tkParent())]
        return self._views(build, title, save_path)

    def _showFsc(self, paramName=None, save_path=None):
        from ..core.validation_plots import fsc_figure
        return self._show(lambda v: fsc_figure(v.fsc(), title=v.report().get('title')),
                          'Half-set FSC', save_path)

    def _showAgreement(self, paramName=None, save_path=None):
        from ..core.validation_plots import agreement_figure

        def draw(v):
            rep = v.report()
            ag = v.agreement()
            return agreement_figure(v.latents(1), v.aligned(), ag['held_out'],
                                    dict(rep['latent_agreement'],
                                         relative_error=ag['relative_error']),
                                    title=rep.get('title'))
        return self._show(draw, 'Half-set latent agreement', save_path)

    def _showLandscapes(self, paramName=None, save_path=None):
        from ..core.validation_plots import landscape_figure

        def draw(v):
            rep = v.report()
            return landscape_figure(v.fe_maps(), rep['landscape'], title=rep.get('title'))
        return self._show(draw, 'Half-set landscapes', save_path)
