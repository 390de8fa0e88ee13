"""continuousflex_geodl: conformational landscapes with geometric deep learning.

Scipion plugin (extension of ContinuousFlex).  The Scipion-free science lives
in ``continuousflex_geodl.core``; this package's Scipion layer (protocols,
viewers, objects, convert) is thin.
"""
__version__ = '0.1.0'
