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
from pwem.objects import Volume
from pwem.protocols import EMProtocol

from .. import constants as const

#: Scipion ids of the rows of the particles' star file (extra folder)
PARTICLE_IDS = 'particle_ids.npy'


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
    def _addInputSection(self, form):
        """The 'Input' section of a protocol that can run on a GPU (starts with
        the hidden GPU params, ``_addDeviceParams``)."""
        form.addSection(label='Input')
        self._addDeviceParams(form)

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

    def _runCli(self, command, args, nproc=1, program=None):
        """Run ``continuousflex-geodl <command> <args>`` (args: list of str/num).

        ``command`` may be several words (e.g. 'landscape analyze').  With
        ``nproc`` > 1 it runs as ``nproc`` distributed processes (torchrun).
        ``program``: the launcher when not ``Plugin.getProgram(nproc)``.
        """
        from .. import Plugin
        words = command.split() + [str(a) for a in args]
        gpus = self._getRunGpus() if self._getDevice().startswith('cuda') else None
        env = Plugin.getEnviron(threads=self._getThreads(), gpus=gpus)
        self.runJob(program or Plugin.getProgram(nproc),
                    ' '.join(shlex.quote(w) for w in words),
                    env=env, numberOfMpi=1, numberOfThreads=1)

    def _getRunGpus(self):
        """GPU ids of this run: those the steps executor assigns (through a
        queue, Scipion numbers them 0..n-1: the scheduler shows the job its
        own GPUs only), else the form's GPU list."""
        executor = getattr(self, '_stepsExecutor', None)
        gpus = executor.getGpuList() if executor is not None else None
        return list(gpus) if gpus else self.getGpuList()

    # --------------------------- inputs as files -----------------------------
    def _writeParticlesAndReference(self, requirePoses):
        """Write ``inputParticles`` (with CTF; with poses when ``requirePoses``)
        as the star file and ``inputReference`` as the file the worker reads."""
        from ..convert import writeParticlesStar
        writeParticlesStar(self.inputParticles.get(), self._getParticlesStar(),
                           convertDir=self._getExtraPath(), requirePoses=requirePoses,
                           requireCtf=True)
        self._convertReference()

    def _writeParticlesWithIds(self):
        """Write ``inputParticles`` (with poses and CTF) as the star file, and the
        Scipion ids of its rows (in star order) for ``_readParticleIds``."""
        import numpy as np
        from ..convert import writeParticlesStar
        ids = writeParticlesStar(self.inputParticles.get(), self._getParticlesStar(),
                                 convertDir=self._getExtraPath(), requirePoses=True,
                                 requireCtf=True)
        np.save(self._getExtraPath(PARTICLE_IDS), np.asarray(ids, dtype=np.int64))

    def _readParticleIds(self):
        """Scipion ids of the star file's rows, in order (int64 array)."""
        import numpy as np
        return np.load(self._getExtraPath(PARTICLE_IDS))

    def _particlesAndReferenceArgs(self):
        """``--particles`` and ``--reference`` of the worker command."""
        return ['--particles', self._getParticlesStar(),
                '--reference', os.path.abspath(self._getReferenceFile())]

    def _validateParticlesAndReference(self, parts, purpose, sameBox, pixelTolerance):
        """Errors of the particles ``parts`` (no CTF, odd box) and of
        ``inputReference`` (missing; a map with another pixel size, relative
        ``pixelTolerance``, or with ``sameBox`` another box).  ``purpose``
        ends the no-CTF message ('before <purpose>')."""
        errors = []
        if not parts.hasCTF():
            errors.append('The input particles have no CTF; estimate it (e.g. CTFFIND) '
                          'and re-extract, or assign one, before %s.' % purpose)
        box = parts.getXDim()
        if box and box % 2:
            errors.append('The particle box (%d px) must be even.' % box)
        ref = self.inputReference.get()
        if ref is None:
            errors.append('Select a reference atomic model or map.')
        elif isinstance(ref, Volume):
            vbox, psr = ref.getXDim(), parts.getSamplingRate()
            if sameBox and vbox and box and vbox != box:
                errors.append('The reference map box (%d px) differs from the particle box '
                              '(%d px); resample the map to %d px at %.4f A/px (e.g. '
                              'xmipp3 "crop/resize volumes" or relion_image_handler '
                              '--new_box %d --rescale_angpix %.4f).'
                              % (vbox, box, box, psr or 0, box, psr or 0))
            sr = ref.getSamplingRate()
            if sr and psr and abs(sr - psr) > pixelTolerance * sr:
                errors.append('The reference map pixel size (%.4f A) differs from the '
                              'particles\' (%.4f A); resample the map to %.4f A/px (e.g. '
                              'xmipp3 "crop/resize volumes") or correct the sampling rate '
                              'that is wrong.' % (sr, psr, psr))
        return errors

    def _getParticlesStar(self):
        """The input particles as written for the worker (``writeParticlesStar``)."""
        return self._absPath('input_particles.star')

    def _getReferenceFile(self):
        """``inputReference`` as the worker reads it: the atomic model or MRC map
        as given; a map in another format converted by ``_convertReference``."""
        ref = self.inputReference.get()
        if isinstance(ref, Volume) and not self._isMrc(ref.getFileName()):
            return self._getExtraPath('reference.mrc')
        return ref.getFileName().split(':')[0]

    def _convertReference(self):
        """Write ``inputReference`` as MRC when it is a map in another format."""
        ref = self.inputReference.get()
        if isinstance(ref, Volume) and not self._isMrc(ref.getFileName()):
            from pwem.emlib.image import ImageHandler
            ImageHandler().convert(ref, self._getExtraPath('reference.mrc'))

    @staticmethod
    def _isMrc(fn):
        return os.path.splitext(fn.split(':')[0])[1].lower() in ('.mrc', '.map')

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
