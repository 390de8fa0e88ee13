"""Base class of the continuousflex_geodl protocols: how the core is run.

Every protocol is thin: it converts its inputs to files (convert.py), runs
``<python> -m continuousflex_geodl <command> ...`` in a worker process with
``runJob`` (so heavy libraries are imported there, never in Scipion's own
processes) and registers the outputs.
"""
import json
import os
import shlex

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol

from .. import constants as const


def coreCommandFlags(command):
    """Option strings accepted by ``continuousflex-geodl <command>`` (cheap: the
    command modules import nothing heavy at module level); empty if absent."""
    import argparse
    import importlib
    words = command.split()
    try:
        mod = importlib.import_module('continuousflex_geodl.core.commands.' + words[0])
    except ImportError:
        return set()
    parser = argparse.ArgumentParser(add_help=False)
    mod.add_args(parser)
    for word in words[1:]:  # sub-commands (e.g. 'landscape path')
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return set()
        parser = subs[0].choices[word]
    return {s for a in parser._actions for s in a.option_strings}


class GeoDLProtBase(EMProtocol):
    """Common helpers (no ``_label``: not offered in the GUI)."""

    # --------------------------- params helpers -----------------------------
    def _addDeviceParams(self, form):
        """Hidden standard GPU params (like xmipp / flexutils)."""
        from .. import Plugin
        form.addHidden(params.USE_GPU, params.BooleanParam,
                       default=Plugin.getDefaultDevice().startswith('cuda'),
                       label='Use GPU for execution',
                       help='Run the network on a CUDA GPU. On a machine without one, '
                            'leave it to No (CPU). The default comes from the plugin '
                            'variable %s.' % const.CFGEODL_DEVICE)
        form.addHidden(params.GPU_LIST, params.StringParam, default='0',
                       label='Choose GPU IDs',
                       help='GPU ids to use (comma separated, e.g. 0 or 0,1).')

    # --------------------------- running the core ----------------------------
    def _getDevice(self):
        """'cuda' / 'cpu' from the Use-GPU param, else the plugin default device."""
        from .. import Plugin
        if self.hasAttribute(params.USE_GPU):
            return 'cuda' if self.getAttributeValue(params.USE_GPU, False) else 'cpu'
        return Plugin.getDefaultDevice()

    def _getThreads(self):
        n = self.numberOfThreads.get() if hasattr(self, 'numberOfThreads') else None
        return n or 1

    def _runCli(self, command, args, nproc=1):
        """Run ``continuousflex-geodl <command> <args>`` (args: list of str/num).

        ``command`` may be several words (e.g. 'landscape analyze').  With
        ``nproc`` > 1 it runs as ``nproc`` distributed processes (torchrun).
        """
        from .. import Plugin
        words = command.split() + [str(a) for a in args]
        gpus = self.getGpuList() if self._getDevice().startswith('cuda') else None
        env = Plugin.getEnviron(threads=self._getThreads(), gpus=gpus)
        self.runJob(Plugin.getProgram(nproc), ' '.join(shlex.quote(w) for w in words),
                    env=env, numberOfMpi=1, numberOfThreads=1)

    # --------------------------- small utilities ----------------------------
    def _absPath(self, *p):
        return os.path.abspath(self._getExtraPath(*p))

    @staticmethod
    def _readJson(fn, default=None):
        if not os.path.exists(fn):
            return default
        with open(fn) as f:
            return json.load(f)

    @staticmethod
    def _flexProgName():
        return const.PROG_NAME
