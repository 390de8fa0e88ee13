"""Version of continuousflex_geodl: the one place it is written.

Imports nothing; imported by the package ``__init__`` and by the core
(``core.settings``), and read as text by ``setup.py``.
"""
__version__ = '0.1.0'
