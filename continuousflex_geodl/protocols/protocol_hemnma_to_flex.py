"""Protocol: HEMNMA / DeepHEMNMA normal-mode amplitudes as a flexible landscape."""
import os

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticlesFlex
from pwem.protocols.protocol_base_flexhub import ProtFlexBase

from .. import constants as const
from ..convert import gatherLatents, latentsToParticlesFlex
from .protocol_base import GeoDLProtBase


class GeoDLProtHemnmaToFlex(GeoDLProtBase, ProtFlexBase):
    """Bring ContinuousFlex HEMNMA or DeepHEMNMA results into the landscape tools.

    Reads the per-particle normal-mode amplitudes (the particle attribute
    ``_xmipp_nmaDisplacements`` written by HEMNMA and DeepHEMNMA, another
    attribute, or the ``nmaDisplacements`` column of an Xmipp metadata file
    such as HEMNMA's images.xmd) and outputs the particles as flexible
    particles whose latent coordinates (zFlex) are these amplitudes.  The
    landscape, subset and comparison protocols then treat HEMNMA and
    geometric-deep-learning landscapes alike.  ContinuousFlex itself is not
    needed to run this protocol.
    """
    _label = 'HEMNMA amplitudes to landscape'
    _devStatus = BETA
    _possibleOutputs = {'outputParticles': SetOfParticlesFlex}

    def _defineParams(self, form):
        form.addSection(label='Input')
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Particles',
                      help='Output particles of ContinuousFlex "image analysis with normal '
                           'modes" (HEMNMA) or "deep hemnma infer" (DeepHEMNMA), or any '
                           'particles matching the metadata file below.')
        form.addParam('source', params.EnumParam, default=0,
                      choices=const.LATENT_SOURCES[1:], label='Amplitudes from',
                      help='Where the normal-mode amplitudes are stored.')
        form.addParam('attrName', params.StringParam, default='',
                      condition='source == 1', label='Attribute name',
                      help='Name of the particle attribute holding one vector per particle '
                           '(e.g. _xmipp_nmaDisplacements).')
        form.addParam('xmdFile', params.PathParam, default='',
                      condition='source == 2', label='Xmipp metadata (.xmd)',
                      help='Metadata with one row per particle (e.g. the images.xmd of a '
                           'HEMNMA run); rows are matched to particles by itemId.')
        form.addParam('xmdLabel', params.StringParam, default='nmaDisplacements',
                      condition='source == 2', label='Column',
                      help='Vector column of the metadata (Xmipp label name).')

    def _insertAllSteps(self):
        self._insertFunctionStep(self.createOutputStep)

    def _source(self):
        return self.source.get() + 1  # choices skip SOURCE_ZFLEX

    def createOutputStep(self):
        inSet = self.inputParticles.get()
        ids, A = gatherLatents(inSet, self._source(), attr=self.attrName.get(),
                               xmdFn=self.xmdFile.get(), xmdLabel=self.xmdLabel.get())
        fn = self._absPath('amplitudes.npy')
        np.save(fn, A)
        outSet = self._createSetOfParticlesFlex(progName=const.PROG_NAME)
        latentsToParticlesFlex(inSet, outSet, A, ids=ids, flexAttrs={
            const.FLEX_ZDIM: int(A.shape[1]), const.FLEX_LATENTS_FILE: fn,
            const.FLEX_SOURCE: 'HEMNMA'})
        self._defineOutputs(outputParticles=outSet)
        self._defineTransformRelation(self.inputParticles, outSet)

    def _validate(self):
        inSet = self.inputParticles.get()
        if inSet is None:
            return ['Select the particles.']
        src = self._source()
        first = inSet.getFirstItem()
        if src == const.SOURCE_HEMNMA and not first.hasAttribute(const.ATTR_HEMNMA):
            return ['These particles carry no HEMNMA amplitudes (%s); use the output of '
                    'HEMNMA or DeepHEMNMA, or choose another source.' % const.ATTR_HEMNMA]
        if src == const.SOURCE_ATTR:
            if not self.attrName.get():
                return ['Give the attribute name.']
            if not first.hasAttribute(self.attrName.get()):
                return ['The particles have no attribute %s.' % self.attrName.get()]
        if src == const.SOURCE_XMD and not os.path.exists(self.xmdFile.get() or ''):
            return ['The metadata file %s does not exist.' % self.xmdFile.get()]
        return []

    def _summary(self):
        if not self.hasAttribute('outputParticles'):
            return ['Output not ready yet.']
        return ['%d particles with %s normal-mode amplitudes each as landscape coordinates.'
                % (self.outputParticles.getSize(),
                   self.outputParticles.getFlexInfo().getAttr(const.FLEX_ZDIM))]

    def _methods(self):
        return []

    def _citations(self):
        return ['Jin2014hemnma', 'Harastani2020hemnma', 'Hamitouche2022deephemnma',
                'Harastani2022continuousflex']
