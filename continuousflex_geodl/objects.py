"""Scipion objects of continuousflex_geodl (found by Scipion by module name).

``GeoDLModel`` is a trained model: a folder written by
``continuousflex-geodl train`` (config.json, weights.pt, reference.npz,
history.json, checkpoints/) plus the numbers a protocol needs without opening
it: latent dimension, box (pixels) and pixel size (A/pixel).
"""
from pyworkflow.object import Float, Integer, String

from pwem.objects import EMObject

from .core.artifacts import ModelDir


class GeoDLModel(EMObject):
    """A trained point-cloud deformation model (encoder + decoder + prior)."""

    def __init__(self, modelDir=None, zdim=None, box=None, apix=None, prior=None,
                 nAtoms=None, **kwargs):
        EMObject.__init__(self, **kwargs)
        self._modelDir = String(modelDir)
        self._zdim = Integer(zdim)
        self._box = Integer(box)
        self._apix = Float(apix)
        self._prior = String(prior)
        self._nAtoms = Integer(nAtoms)

    # folder ------------------------------------------------------------------
    def getModelDir(self):
        return self._modelDir.get()

    def setModelDir(self, path):
        self._modelDir.set(path)

    def getFileName(self):
        """The model folder (so Scipion's file handling sees the data)."""
        return self.getModelDir()

    def getFiles(self):
        d = self.getModelDir()
        return {d} if d else set()

    def getArtifacts(self):
        """The model folder's files (``core.artifacts.ModelDir``)."""
        return ModelDir(self.getModelDir())

    def getHistoryFile(self):
        return self.getArtifacts().history_path

    def getConfigFile(self):
        return self.getArtifacts().config_path

    # numbers -----------------------------------------------------------------
    def getZdim(self):
        return self._zdim.get()

    def setZdim(self, value):
        self._zdim.set(value)

    def getBox(self):
        return self._box.get()

    def setBox(self, value):
        self._box.set(value)

    def getSamplingRate(self):
        return self._apix.get()

    def setSamplingRate(self, value):
        self._apix.set(value)

    def getPrior(self):
        return self._prior.get()

    def setPrior(self, value):
        self._prior.set(value)

    def getNumberOfAtoms(self):
        return self._nAtoms.get()

    def setNumberOfAtoms(self, value):
        self._nAtoms.set(value)

    def loadConfig(self):
        """The model's config.json as a dict ({} when absent)."""
        md = self.getArtifacts()
        return md.read_config() if md.has_config() else {}

    def __str__(self):
        return ('GeoDLModel (zdim=%s, box=%s px, %s A/px, prior=%s, %s pseudo-atoms)'
                % (self.getZdim(), self.getBox(), self.getSamplingRate(), self.getPrior(),
                   self.getNumberOfAtoms()))
