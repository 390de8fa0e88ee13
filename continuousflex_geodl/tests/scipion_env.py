"""Headless Scipion environment for the tests (import before pyworkflow).

Scipion reads its configuration from environment variables when pyworkflow
is first imported, and runs every protocol in a subprocess that inherits
them.  ``configure()`` sets, in a private temporary folder:

* ``SCIPION_HOME`` (an existing folder), ``SCIPION_USER_DATA`` (projects),
  ``SCIPION_DOMAIN=pwem``, ``SCIPION_PYTHON`` (this interpreter, which has
  the plugin), ``SCIPION_TEST_NOSYNC=1``, ``SCIPION_NOTIFY=0``;
* a minimal hosts file (``SCIPION_HOSTS``; no queue system) and an empty
  ``scipion.conf``;
* ``KEOPS_CACHE_FOLDER`` / ``MPLBACKEND=Agg`` for the worker commands.

If pyworkflow was already imported (by another test module) its ``Config``
is patched to the same values.  ``skip_reason()`` tells why Scipion tests
cannot run here (pyworkflow / pwem / tkinter not importable), or None.

Set ``CFGEODL_KEEP_SCIPION_DATA=1`` to keep the folder (its path is in
``SCIPION_USER_DATA``) for inspecting logs after a failure.
"""
import atexit
import os
import shutil
import sys
import tempfile

_ROOT = None

HOSTS = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME =
MANDATORY = False
"""


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
    root = os.environ.get('CFGEODL_SCIPION_TEST_ROOT')
    if root:
        os.makedirs(root, exist_ok=True)
    else:
        root = tempfile.mkdtemp(prefix='cfgeodl_scipion_')
        if os.environ.get('CFGEODL_KEEP_SCIPION_DATA') != '1':
            atexit.register(shutil.rmtree, root, True)
    root = os.path.abspath(root)
    home = os.path.join(root, 'scipion_home')
    user = os.path.join(root, 'ScipionUserData')
    config = os.path.join(home, 'config')
    for d in (home, user, config, os.path.join(user, 'logs'), os.path.join(root, 'tests')):
        os.makedirs(d, exist_ok=True)
    hosts = os.path.join(config, 'hosts.conf')
    with open(hosts, 'w') as f:
        f.write(HOSTS)
    conf = os.path.join(config, 'scipion.conf')
    if not os.path.exists(conf):
        with open(conf, 'w') as f:
            f.write('[PYWORKFLOW]\n\n[PLUGINS]\n')
    keops = os.environ.get('KEOPS_CACHE_FOLDER') or os.path.join(
        os.path.expanduser('~'), '.cache', 'continuousflex_geodl', 'keops-tests')
    values = {
        'SCIPION_HOME': home,
        'SCIPION_USER_DATA': user,
        'SCIPION_LOGS': os.path.join(user, 'logs'),
        'SCIPION_TESTS': os.path.join(root, 'tests'),
        'SCIPION_CONFIG': conf,
        'SCIPION_LOCAL_CONFIG': conf,
        'SCIPION_HOSTS': hosts,
        'SCIPION_DOMAIN': 'pwem',
        'SCIPION_PYTHON': sys.executable,
        'SCIPION_TEST_NOSYNC': '1',
        'SCIPION_NOTIFY': '0',
        'SCIPION_USE_QUEUE': 'False',
        'KEOPS_CACHE_FOLDER': keops,
        'CFGEODL_KEOPS_CACHE': keops,
        'MPLBACKEND': 'Agg',
    }
    os.environ.update(values)
    # worker processes must use this interpreter (it has the plugin)
    os.environ.setdefault('CFGEODL_PYTHON', sys.executable)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    if 'pyworkflow' in sys.modules:
        _patch_loaded_pyworkflow(values)
    _ROOT = root
    return root


def _patch_loaded_pyworkflow(values):
    """pyworkflow already read its config: make it see ``values`` too."""
    import pyworkflow as pw
    import pyworkflow.config as pwconfig
    for key, value in values.items():
        if hasattr(pw.Config, key):
            setattr(pw.Config, key, value)
    pw.PYTHON = values['SCIPION_PYTHON']
    if hasattr(pwconfig, 'PYTHON'):
        pwconfig.PYTHON = values['SCIPION_PYTHON']


def project_manager():
    """A pyworkflow ``Manager`` on the test user-data folder."""
    configure()
    from pyworkflow.project import Manager
    return Manager()
