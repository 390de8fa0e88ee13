"""Scipion ``Plugin`` class of continuousflex_geodl (variables, environment).

Imported lazily by the package ``__init__`` (``continuousflex_geodl.Plugin``)
so that the Scipion-free core never imports pyworkflow / pwem.

Variables (Scipion config file or environment):

* ``CFGEODL_DEVICE``: default device of the protocols, ``cpu`` or ``cuda``
  (protocols with a GPU option override it with their "Use GPU" setting).
* ``CFGEODL_KEOPS_CACHE``: fixed, writable folder for KeOps' JIT-compiled
  formulas, shared by every run (KeOps' default folder depends on the host
  name and import fails when the home folder is not writable).
* ``CFGEODL_PYTHON``: interpreter that runs the worker command
  ``python -m continuousflex_geodl ...`` (default: the one running Scipion).
* ``CFGEODL_NODE_LAUNCHER``: command that starts one process per machine of a
  multi-machine queue job (default ``srun --nodes={nodes} --ntasks-per-node=1
  --kill-on-bad-exit=1``, SLURM).
"""
import importlib.util
import os
import sys

import pwem
import pyworkflow.utils as pwutils
from pyworkflow import FLEXIBILITY

from . import constants as const
from .core.runtime import default_keops_cache

#: modules the worker command needs; checked by ``validateInstallation``
REQUIRED_MODULES = ('torch', 'pykeops', 'geomloss', 'mrcfile', 'gemmi', 'sklearn')


class Plugin(pwem.Plugin):
    """continuousflex_geodl: conformational landscapes with geometric deep learning."""
    # Scipion derives the plugin name and folder from the class' module: it
    # must be the package (this class is only *defined* in plugin.py).
    __module__ = 'continuousflex_geodl'
    _url = 'https://github.com/scipion-em/scipion-em-continuousflex'
    _processingField = [FLEXIBILITY]
    _supportedVersions = []

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(const.CFGEODL_DEVICE, const.CFGEODL_DEVICE_DEFAULT,
                       description='Default device of continuousflex_geodl protocols: '
                                   'cpu or cuda.')
        cls._defineVar(const.CFGEODL_KEOPS_CACHE, default_keops_cache(),
                       description='Writable folder where KeOps keeps its compiled '
                                   'formulas (reused by every run).')
        cls._defineVar(const.CFGEODL_PYTHON, sys.executable,
                       description='Python interpreter that has continuousflex_geodl '
                                   'and its numerical stack (torch, pykeops, geomloss).')
        cls._defineVar(const.CFGEODL_NODE_LAUNCHER, const.CFGEODL_NODE_LAUNCHER_DEFAULT,
                       description='Starts one process per machine of a multi-machine '
                                   'queue job ({nodes}: number of machines), for '
                                   'training on GPUs of several machines.')

    # ---- accessors ---------------------------------------------------------------
    @classmethod
    def getDefaultDevice(cls):
        dev = (cls.getVar(const.CFGEODL_DEVICE) or const.CFGEODL_DEVICE_DEFAULT).strip().lower()
        return dev if dev in ('cpu', 'cuda') or dev.startswith('cuda:') else 'cpu'

    @classmethod
    def getKeopsCacheFolder(cls):
        return cls.getVar(const.CFGEODL_KEOPS_CACHE) or default_keops_cache()

    @classmethod
    def getPython(cls):
        return cls.getVar(const.CFGEODL_PYTHON) or sys.executable

    @classmethod
    def getNodeLauncher(cls, nodes):
        """``CFGEODL_NODE_LAUNCHER`` for ``nodes`` machines (e.g. ``srun --nodes=2
        --ntasks-per-node=1 ...``)."""
        fmt = cls.getVar(const.CFGEODL_NODE_LAUNCHER) or const.CFGEODL_NODE_LAUNCHER_DEFAULT
        return fmt.format(nodes=int(nodes))

    @classmethod
    def getEnviron(cls, threads=None, gpus=None):
        """Environment of the worker process.

        Sets the KeOps cache folder (before pykeops is imported), a
        non-interactive matplotlib backend, the thread count (``threads``)
        and ``CUDA_VISIBLE_DEVICES`` (``gpus``: list of GPU ids).
        """
        env = pwutils.Environ(os.environ)
        cache = cls.getKeopsCacheFolder()
        env.update({'KEOPS_CACHE_FOLDER': cache, const.CFGEODL_KEOPS_CACHE: cache,
                    'MPLBACKEND': 'Agg', 'PYTHONUNBUFFERED': '1'})
        if threads:
            n = str(max(1, int(threads)))
            env.update({'OMP_NUM_THREADS': n, 'MKL_NUM_THREADS': n})
        if gpus:
            env['CUDA_VISIBLE_DEVICES'] = ','.join(str(g) for g in gpus)
        return env

    @classmethod
    def getProgram(cls, nproc=1, nnodes=1, rdzvEndpoint=None, rdzvId=None):
        """Program for ``Protocol.runJob``: ``<python> -m continuousflex_geodl``;
        with ``nproc`` > 1, ``nproc`` data-parallel processes through torchrun
        (one per GPU in CUDA_VISIBLE_DEVICES); with ``nnodes`` > 1, this
        machine's part of a run on ``nnodes`` machines (c10d rendezvous at
        ``rdzvEndpoint``, HOST:PORT; ``core.launch.launch_command``)."""
        from .core.launch import format_command, launch_command
        return format_command(launch_command(
            max(1, int(nproc or 1)), nnodes=nnodes, rdzv_endpoint=rdzvEndpoint,
            rdzv_id=rdzvId, python=cls.getPython(), target=['-m', const.CLI_MODULE]))

    @classmethod
    def defineBinaries(cls, env):
        """Nothing to compile: the numerical stack comes with pip."""
        return

    @classmethod
    def validateInstallation(cls):
        missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return ['continuousflex_geodl needs the Python modules %s, which are not '
                    'installed in this environment. Install them with '
                    '"pip install scipion-em-continuousflex-geodl" (pulls torch, '
                    'pykeops, geomloss).' % ', '.join(missing)]
        return []
