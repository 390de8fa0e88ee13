"""Viewer: structures along a pathway (path on the map, animation, ChimeraX, PDB)."""
import os
import shutil

import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer

from ..core.artifacts import DecodeDir, LandscapeDir, PathDir
from ..protocols import GeoDLProtStructures
from .base import GeoDLViewerMixin

PATH_LANDSCAPE = 2  # GeoDLProtStructures.pathType of a pathway through a landscape


def _chimerax():
    """The ChimeraX program Scipion knows about, or None when it is not installed."""
    try:
        from pwem.viewers.viewer_chimera import Chimera
        prog = Chimera.getProgram()
    except Exception:  # no chimera plugin / config: treat as absent
        return None
    return prog if prog and os.path.exists(prog) else None


class GeoDLPathwayViewer(GeoDLViewerMixin, ProtocolViewer):
    """Structures decoded along a pathway or a line of latent points.

    * the path drawn on the free-energy map of its landscape, with the free
      energy along it;
    * an animated GIF of the structures (projections along three orthogonal
      views, one frame per point, forth and back);
    * a ChimeraX script that plays the maps in path order (``vseries``), and
      the multi-model PDB of the deformed pseudo-atoms.
    Files are written to the run's extra/animation folder.
    """
    _label = 'pathway structures'
    _targets = [GeoDLProtStructures]
    _environments = [DESKTOP_TKINTER]
    _saveables = {'pathway_map': ('_showPathMap', 'pathway_free_energy.png'),
                  'pathway_animation': ('_showAnimation', 'pathway.gif')}

    def _defineParams(self, form):
        form.addSection(label='Visualization')
        form.addParam('displayPathMap', params.LabelParam,
                      label='Pathway on the free-energy map',
                      help='The path (latent points mapped on the landscape\'s 2D '
                           'embedding) over the free-energy map, and dG along the path. '
                           'Only for pathways through a landscape.')
        form.addParam('displayAnimation', params.LabelParam,
                      label='Animation (GIF)',
                      help='Projections of the decoded pseudo-atoms along three orthogonal '
                           'views, one frame per path point, played forth and back.')
        form.addParam('frameMs', params.IntParam, default=150,
                      expertLevel=params.LEVEL_ADVANCED, label='Frame duration (ms)',
                      help='Time each path point is shown in the animation.')
        form.addParam('displayChimera', params.LabelParam,
                      label='Maps in ChimeraX (volume series)',
                      help='Writes a ChimeraX script (.cxc) playing the maps in path '
                           'order and opens it when ChimeraX is installed.')
        form.addParam('displayPdb', params.LabelParam,
                      label='Pseudo-atom models (multi-model PDB)',
                      help='One model per path point; ChimeraX plays it as a trajectory.')

    def _getVisualizeDict(self):
        return {'displayPathMap': self._showPathMap, 'displayAnimation': self._showAnimation,
                'displayChimera': self._showChimera, 'displayPdb': self._showPdb}

    # ------------------------------------------------------------------ data
    def _structuresDir(self):
        return self.protocol._getExtraPath('structures')

    def _pdb(self):
        out = getattr(self.protocol, 'outputStructures', None)
        fn = out.getFileName() if out is not None else \
            DecodeDir(self._structuresDir()).pdb_path
        if not os.path.exists(fn):
            raise FileNotFoundError("No structures in '%s': has the run finished?" % fn)
        return fn

    def _volumes(self):
        vols = getattr(self.protocol, 'outputVolumes', None)
        if vols is not None:
            return [v.getFileName() for v in vols.iterItems(orderBy='id')]
        return DecodeDir(self._structuresDir()).volume_files()

    def _frameMs(self):
        return (self.frameMs.get() if hasattr(self, 'frameMs') else None) or 150

    def exportPathway(self, folder=None, name='pathway'):
        """GIF, ChimeraX script (with maps) and multi-model PDB of the structures,
        written to ``folder`` (default: the run's extra/animation); returns
        ``animation.export_pathway``'s dict."""
        from .animation import export_pathway, model_render_settings
        model = self.protocol._getModelDir()
        if not model:
            raise ValueError('The run has no trained model to read the pseudo-atom width from.')
        sigma, box, apix = model_render_settings(model)
        folder = folder or self.protocol._getExtraPath('animation')
        return export_pathway(folder, self._pdb(), sigma, box, apix, volumes=self._volumes(),
                              name=name, duration_ms=self._frameMs())

    def _exported(self):
        """Export once per run (reused while newer than the structures)."""
        folder = self.protocol._getExtraPath('animation')
        gif = os.path.join(folder, 'pathway.gif')
        pdb = self._pdb()
        if os.path.exists(gif) and os.path.getmtime(gif) >= os.path.getmtime(pdb):
            cxc = os.path.join(folder, 'pathway.cxc')
            return dict(gif=gif, cxc=cxc if os.path.exists(cxc) else None,
                        pdb=os.path.join(folder, 'pathway.pdb'))
        return self.exportPathway(folder)

    # --------------------------------------------------------------- figures
    def _showPathMap(self, paramName=None, save_path=None):
        from .plotting import axis_labels, free_energy_figure
        from .views import FigureView

        def build():
            if self.protocol.pathType.get() != PATH_LANDSCAPE:
                raise ValueError('These structures are not a pathway through a landscape '
                                 '(they were decoded at given points or along a line).')
            land = self.protocol.inputLandscape.get()
            files = LandscapeDir(land._getExtraPath('landscape')).require()
            pdir = PathDir(self.protocol._getExtraPath('pathway'))
            y = pdir.embedding()
            info = pdir.info()
            fe = files.free_energy()
            st = files.states()
            names = [str(i + 1) for i in range(int(st.get('n_states', 0)))]
            kind = info.get('kind', 'path')
            if 'from_state' in info and 'to_state' in info:
                label = '%s path, state %d → %d' % (kind, info['from_state'] + 1,
                                                     info['to_state'] + 1)
            else:
                label = '%s path' % kind
            units = info.get('units') or str(fe.extra.get('units', 'kT'))
            fig = free_energy_figure(
                fe, units=units, state_points=files.state_points(), state_names=names,
                paths=[(label, y[:, :2])], profile=info.get('path_dG'),
                profile_label='ΔG along the path (%s)' % units,
                labels=axis_labels(files.method()),
                title='%d structures along the %s path' % (len(y), kind))
            return [FigureView(fig, 'Pathway on the landscape', self._tkParent())]
        return self._views(build, 'Pathway on the landscape', save_path)

    def _showAnimation(self, paramName=None, save_path=None):
        """With ``save_path`` (a .gif), the GIF, the .cxc and the .pdb are all
        written next to it under the same name."""
        from .views import AnimationView

        def build():
            if save_path:
                base = os.path.splitext(os.path.basename(save_path))[0]
                res = self.exportPathway(os.path.dirname(os.path.abspath(save_path)), base)
            else:
                res = self._exported()
            return [AnimationView(res['gif'], 'Pathway animation', self._tkParent())]
        return self._views(build, 'Pathway animation', save_path)

    def _showChimera(self, paramName=None, save_path=None):
        def build():
            res = self._exported()
            if not res.get('cxc'):
                raise ValueError('This run wrote no maps (Write maps? = No); open the '
                                 'multi-model PDB instead.')
            if save_path:
                shutil.copyfile(res['cxc'], save_path)
            prog = _chimerax()
            if prog is None:
                return [self.infoMessage('ChimeraX is not installed for Scipion. Open the '
                                         'volume series with:\n\n  chimerax %s' % res['cxc'],
                                         'ChimeraX script')]
            from pwem.viewers.viewer_chimera import ChimeraView
            return [ChimeraView(res['cxc'])]
        return self._views(build, 'ChimeraX', None)

    def _showPdb(self, paramName=None, save_path=None):
        def build():
            pdb = self._pdb()
            if save_path:
                shutil.copyfile(pdb, save_path)
            if _chimerax() is None:
                return [self.infoMessage('Multi-model PDB (one model per path point):\n\n  %s'
                                         '\n\nIn ChimeraX: open it with "coordsets true" to '
                                         'play it as a trajectory.' % pdb, 'Structures')]
            from pwem.viewers.viewer_chimera import ChimeraView
            return [ChimeraView(pdb)]
        return self._views(build, 'Structures', None)
