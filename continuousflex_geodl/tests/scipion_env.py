"""Headless Scipion environment for the tests (configure before pyworkflow).

Scipion reads its configuration from environment variables when pyworkflow
is first imported, and runs every protocol in a subprocess that inherits
them.  ``configure()`` calls ``continuousflex_geodl.workflow.setup_environment``
on a private temporary folder (SCIPION_HOME, SCIPION_USER_DATA,
SCIPION_DOMAIN=pwem, SCIPION_PYTHON = this interpreter, SCIPION_TEST_NOSYNC=1,
a hosts file without queue system, KeOps cache, Agg backend); if pyworkflow
was already imported its ``Config`` is patched to the same values.
``skip_reason()`` tells why Scipion tests cannot run here (pyworkflow, pwem or
tkinter not importable), or None.

Set ``CFGEODL_KEEP_SCIPION_DATA=1`` to keep the folder (its path is in
``SCIPION_USER_DATA``) for reading protocol logs after a failure.
"""
import atexit
import os
import shutil
import tempfile

_ROOT = None


def skip_reason():
    """Why Scipion-based tests must be skipped here, or None when they can run."""
    for mod in ('pyworkflow', 'pwem', 'tkinter'):
        try:
            __import__(mod)
        except Exception as exc:  # ImportError, or a broken install
            return 'Scipion tests need %s, which cannot be imported here: %s' % (mod, exc)
    return None


def configure():
    """Set the headless Scipion environment once per process; return its root."""
    global _ROOT
    if _ROOT is not None:
        return _ROOT
    from continuousflex_geodl.workflow import setup_environment
    root = tempfile.mkdtemp(prefix='cfgeodl_scipion_')
    if os.environ.get('CFGEODL_KEEP_SCIPION_DATA') != '1':
        atexit.register(shutil.rmtree, root, True)
    from continuousflex_geodl.core.runtime import default_keops_cache
    os.environ.setdefault('KEOPS_CACHE_FOLDER', default_keops_cache('keops-tests'))
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    setup_environment(root)
    _ROOT = root
    return root
