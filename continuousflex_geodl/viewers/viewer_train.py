"""Viewer: training curves of a trained model (history.json of its folder)."""
import os

from pyworkflow.viewer import DESKTOP_TKINTER, Viewer

from ..objects import GeoDLModel
from ..protocols import GeoDLProtTrain
from .base import GeoDLViewerMixin


class GeoDLTrainViewer(GeoDLViewerMixin, Viewer):
    """Loss terms, speed and learned settings of each training epoch.

    Opens on a *train* run or on its output model; the curves are read from
    the model folder's history.json (written after every epoch, so they can
    be looked at while training runs).
    """
    _label = 'training curves'
    _name = 'Training curves'
    _targets = [GeoDLProtTrain, GeoDLModel]
    _environments = [DESKTOP_TKINTER]
    _saveables = {'training_curves': ('_showTrainingCurves', 'training_curves.png')}

    def _modelDir(self, obj=None):
        obj = obj if obj is not None else self.protocol
        if isinstance(obj, GeoDLModel):
            return obj.getModelDir()
        if isinstance(obj, GeoDLProtTrain):
            if getattr(obj, 'outputModel', None) is not None:
                return obj.outputModel.getModelDir()
            return obj._getModelDir()  # still training: curves so far
        raise ValueError('Training curves need a train run or a trained model, not %s.'
                         % type(obj).__name__)

    def _showTrainingCurves(self, paramName=None, save_path=None, obj=None):
        from .plotting import load_history, training_curves_figure
        from .views import FigureView

        def build():
            model_dir = self._modelDir(obj)
            hist = load_history(model_dir)
            run = self.protocol.getRunName() if isinstance(self.protocol, GeoDLProtTrain) \
                else os.path.basename(os.path.dirname(os.path.dirname(model_dir)))
            fig = training_curves_figure(hist, title='Training: %d epoch%s (%s)' % (
                len(hist), '' if len(hist) == 1 else 's', run or model_dir))
            return [FigureView(fig, 'Training curves', self._tkParent())]
        return self._views(build, 'Training curves', save_path)

    def _visualize(self, obj, **kwargs):
        if isinstance(obj, GeoDLProtTrain):
            self.protocol = obj
        return self._showTrainingCurves(obj=obj)
