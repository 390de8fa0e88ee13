"""Scipion viewers of continuousflex_geodl (one module per viewer).

They draw what the core computed (training curves, landscapes, paths); the
plotting itself is testable headlessly with the Agg backend.

Every viewer module is imported here explicitly: Scipion finds viewers by
the classes of this package, and a failing import would silently hide them
(``tests/scipion/test_scipion_registry.py`` checks their registration).
Figures come from ``plotting`` and animations from ``animation`` (both
Scipion-free);
each display method takes ``save_path`` to write its figure headlessly and
``viewer.saveAll(folder)`` writes all of them.
"""
from .viewer_train import GeoDLTrainViewer
from .viewer_latents import GeoDLLatentsViewer
from .viewer_landscape import GeoDLLandscapeViewer
from .viewer_pathway import GeoDLPathwayViewer
from .viewer_validation import GeoDLValidationViewer

#: viewer modules of this package
VIEWER_MODULES = ['viewer_train', 'viewer_latents', 'viewer_landscape', 'viewer_pathway',
                  'viewer_validation']
