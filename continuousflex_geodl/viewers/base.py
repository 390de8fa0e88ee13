"""Shared plumbing of our viewers: saving views headlessly, particle values, errors.

Every display method of our viewers has the signature
``_showX(paramName=None, save_path=None)`` and returns a list of Scipion
views; with ``save_path`` the (first) figure or animation is also written
there (PNG / GIF) and errors are raised instead of shown, so the same code
serves the GUI and batch scripts (``continuousflex_geodl.workflow``).
``saveAll(folder)`` writes everything a viewer can show.
"""
import os

import numpy as np

from .. import constants as const

#: errors that mean "these results cannot be drawn" (shown to the user in the GUI)
DRAW_ERRORS = (ValueError, FileNotFoundError, KeyError)


class GeoDLViewerMixin:
    """Helpers for ``Viewer`` / ``ProtocolViewer`` subclasses of this plugin."""

    #: {name: (method name, file name)} written by ``saveAll``
    _saveables = {}

    def _views(self, build, title, save_path=None):
        """Run ``build() -> [views]``; save the first one to ``save_path``.

        Drawing errors become an error message in the GUI, and are raised when
        saving (no one would see the message).
        """
        try:
            views = build()
        except DRAW_ERRORS as exc:
            if save_path:
                raise
            return [self.errorMessage(str(exc), title)]
        if save_path and views:
            views[0].save(save_path)
        return views

    def saveAll(self, folder, names=None):
        """Write every figure / animation of this viewer into ``folder``.

        Returns {name: path} of the files written; names whose data is absent
        (e.g. a path figure without landscape) are skipped with their reason
        in ``self.skipped``.
        """
        os.makedirs(folder, exist_ok=True)
        written, self.skipped = {}, {}
        for name, (method, fname) in self._saveables.items():
            if names is not None and name not in names:
                continue
            path = os.path.join(folder, fname)
            try:
                getattr(self, method)(save_path=path)
            except DRAW_ERRORS as exc:
                self.skipped[name] = str(exc)
                continue
            written[name] = path
        return written

    @staticmethod
    def _addParticleColourParams(form, attrCondition):
        """The params of colouring particles in scatter plots: 'Attribute' and
        'Component' (shown when ``attrCondition``), and 'Most points drawn'."""
        import pyworkflow.protocol.params as params
        form.addParam('attrName', params.StringParam, default=const.ATTR_GT_COORD,
                      condition=attrCondition, label='Attribute',
                      help='Name of a particle attribute (scalar or vector), e.g. the true '
                           'coordinate (%s) or state (%s) of simulated particles.'
                           % (const.ATTR_GT_COORD, const.ATTR_GT_STATE))
        form.addParam('attrComponent', params.IntParam, default=1,
                      condition=attrCondition, label='Component',
                      help='For vector attributes: which component (from 1).')
        form.addParam('maxPoints', params.IntParam, default=20000,
                      expertLevel=params.LEVEL_ADVANCED, label='Most points drawn',
                      help='Scatter plots draw a random subset of at most this many '
                           'particles; densities use all of them.')

    def _tkParent(self):
        return self.getTkRoot() if hasattr(self, 'getTkRoot') else None


# ------------------------------------------------------------------ particles

def latents_of(protocol):
    """(ids, (N, K) latents) of a protocol's flexible output particles, id order.

    Read from the latent file the protocol wrote (FlexInfo ``latentsFile``)
    when it exists, else from the particles' zFlex.
    """
    from ..convert import particleVectors
    parts = getattr(protocol, 'outputParticles', None)
    if parts is None:
        raise ValueError('The run %s has no output particles yet.' % protocol.getRunName())
    fn = None
    try:
        fn = parts.getFlexInfo().getAttr(const.FLEX_LATENTS_FILE)
    except AttributeError:
        pass
    ids_fn = protocol._getExtraPath('particle_ids.npy')
    if fn and os.path.exists(fn) and os.path.exists(ids_fn):
        z = np.load(fn, mmap_mode='r')
        ids = np.load(ids_fn)
        if len(ids) == len(z) == parts.getSize():
            return ids, np.asarray(z, float)
    return particleVectors(parts, '_zFlex')


def particle_values(partSet, attr, ids, component=1):
    """Values of attribute ``attr`` (component ``component``, 1-based, for vectors)
    for the particles ``ids`` in that order.

    Integer-valued attributes with at most 20 distinct values come back as
    ints (drawn as categories, e.g. states).
    """
    from ..convert import particleVectors
    if not attr:
        raise ValueError('Give the name of the particle attribute to colour by.')
    if partSet is None:
        raise ValueError('The run has no output particles (yet) to read attributes from.')
    first = partSet.getFirstItem()
    if first is None or not first.hasAttribute(attr):
        raise ValueError("The particles have no attribute '%s'." % attr)
    pids, vec = particleVectors(partSet, attr)
    c = int(component) - 1
    if not 0 <= c < vec.shape[1]:
        raise ValueError("Attribute '%s' has %d components; component %d does not exist."
                         % (attr, vec.shape[1], component))
    row = {int(p): i for i, p in enumerate(pids)}
    missing = [int(p) for p in ids if int(p) not in row]
    if missing:
        raise ValueError('Particles %s of the landscape are not in the set.' % missing[:5])
    v = vec[[row[int(p)] for p in ids], c]
    if np.all(np.isfinite(v)) and np.all(v == np.round(v)) and len(np.unique(v)) <= 20:
        return v.astype(int)
    return v


def attr_label(attr, component=1):
    """Readable name of an attribute (component, 1-based) for a colour bar."""
    names = {const.ATTR_GT_COORD: 'true coordinate', const.ATTR_GT_STATE: 'true state',
             const.ATTR_STATE: 'state', const.ATTR_DG: 'ΔG'}
    name = names.get(attr, attr.lstrip('_'))
    return name if int(component) == 1 else '%s [%d]' % (name, int(component))
