"""continuousflex_geodl: conformational landscapes with geometric deep learning.

Scipion plugin (extension of ContinuousFlex).  The Scipion-free science lives
in ``continuousflex_geodl.core``; this package's Scipion layer (protocols,
viewers, objects, convert) is thin.

``Plugin`` (the Scipion plugin class, in ``plugin.py``) is loaded on first
access, so that importing the core or running the ``continuousflex-geodl``
command never imports pyworkflow / pwem.
"""
from ._version import __version__  # noqa: F401

_logo = 'resources/logo_geodl.png'
_references = ['Harastani2022continuousflex', 'Feydy2019geomloss', 'Charlier2021keops']


def __getattr__(name):
    # PEP 562: Scipion does ``module.Plugin()`` when it registers the plugin.
    if name == 'Plugin':
        from .plugin import Plugin
        globals()['Plugin'] = Plugin
        return Plugin
    raise AttributeError("module 'continuousflex_geodl' has no attribute '%s'" % name)
