"""Protocol: agreement between two conformational landscapes of the same particles."""
import json

import numpy as np

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA

from .. import constants as const
from ..convert import gatherLatents, matchParticles, particleVectors
from ..core.fileio import atomic_write_text
from ..core.landscape.compare import landscape_agreement
from ..core.settings import DiagnosticsSettings
from .protocol_base import GeoDLProtBase


class GeoDLProtCompareLandscapes(GeoDLProtBase):
    """Compare two conformational landscapes of the same particles.

    For instance the latents of the geometric-deep-learning model against the
    HEMNMA / DeepHEMNMA normal-mode amplitudes of the same particles.
    Particles are matched by id (sets derived from one another) or by image.
    Reports neighbourhood agreement and how well each landscape linearly
    predicts the other; with simulated data, also each landscape against the
    ground truth.  Results are in the summary and in extra/agreement.json.
    """
    _label = 'compare landscapes'
    _devStatus = BETA

    def _defineParams(self, form):
        form.addSection(label='Input')
        for key, label in (('A', 'first'), ('B', 'second')):
            form.addParam('input%s' % key, params.PointerParam, pointerClass='SetOfParticles',
                          important=True, label='Particles (%s landscape)' % label,
                          help='Particles carrying the %s landscape coordinates.' % label)
            form.addParam('source%s' % key, params.EnumParam, choices=const.LATENT_SOURCES[:3],
                          default=const.SOURCE_ZFLEX if key == 'A' else const.SOURCE_HEMNMA,
                          label='Coordinates (%s)' % label,
                          help='zFlex of flexible particles (our latents, flexutils tools), '
                               'HEMNMA/DeepHEMNMA amplitudes, or any vector attribute.')
            form.addParam('attr%s' % key, params.StringParam, default='',
                          condition='source%s == %d' % (key, const.SOURCE_ATTR),
                          label='Attribute (%s)' % label,
                          help='Particle attribute holding one vector per particle.')
        form.addParam('gtAttr', params.StringParam, default=const.ATTR_GT_COORD,
                      expertLevel=params.LEVEL_ADVANCED, label='Ground-truth attribute',
                      help='When the particles carry the true coordinate (simulated data), '
                           'both landscapes are also scored against it. Leave empty to skip.')
        form.addParam('k', params.IntParam, default=DiagnosticsSettings.k,
                      validators=[params.Positive],
                      expertLevel=params.LEVEL_ADVANCED, label='Neighbours (k)',
                      help='Number of nearest neighbours of the neighbourhood metrics.')

    def _insertAllSteps(self):
        self._insertFunctionStep(self.compareStep)

    def compareStep(self):
        setA, setB = self.inputA.get(), self.inputB.get()
        idsA, idsB = matchParticles(setA, setB)
        if len(idsA) < 3:
            raise ValueError('Only %d particles are common to the two sets; compare '
                             'landscapes of the same particles.' % len(idsA))
        za = self._coords(setA, self.sourceA.get(), self.attrA.get(), idsA)
        zb = self._coords(setB, self.sourceB.get(), self.attrB.get(), idsB)
        result = {'agreement': landscape_agreement(za, zb, self.k.get())}
        gt = self.gtAttr.get()
        if gt and setA.getFirstItem().hasAttribute(gt):
            ids, truth = particleVectors(setA, gt)
            pos = {i: n for n, i in enumerate(ids)}
            truth = truth[[pos[i] for i in idsA]]
            result['first_vs_truth'] = landscape_agreement(za, truth, self.k.get())
            result['second_vs_truth'] = landscape_agreement(zb, truth, self.k.get())
        atomic_write_text(self._getExtraPath('agreement.json'), json.dumps(result, indent=1))

    @staticmethod
    def _coords(partSet, source, attr, ids):
        allIds, Z = gatherLatents(partSet, source, attr=attr)
        pos = {i: n for n, i in enumerate(allIds)}
        return Z[[pos[i] for i in ids]]

    def _validate(self):
        errors = []
        for key in ('A', 'B'):
            s = getattr(self, 'input%s' % key).get()
            if s is None:
                errors.append('Select both particle sets.')
                continue
            src = getattr(self, 'source%s' % key).get()
            first = s.getFirstItem()
            if src == const.SOURCE_ZFLEX and (not hasattr(first, 'getZFlex') or
                                              len(first.getZFlex()) == 0):
                errors.append('Set %s has no latent coordinates (zFlex).' % key)
            if src == const.SOURCE_HEMNMA and not first.hasAttribute(const.ATTR_HEMNMA):
                errors.append('Set %s has no HEMNMA amplitudes.' % key)
            if src == const.SOURCE_ATTR and not first.hasAttribute(
                    getattr(self, 'attr%s' % key).get() or '_'):
                errors.append('Set %s has no attribute "%s".'
                              % (key, getattr(self, 'attr%s' % key).get()))
        return errors

    def _summary(self):
        res = self._readJson(self._getExtraPath('agreement.json'))
        if not res:
            return ['Not computed yet.']
        lines = []
        for key, title in (('agreement', 'First vs second'),
                           ('first_vs_truth', 'First vs ground truth'),
                           ('second_vs_truth', 'Second vs ground truth')):
            if key in res:
                r = res[key]
                lines.append('%s (%d particles): canonical correlations %s, neighbourhood '
                             'overlap %.3f, kNN error %.3f / %.3f, Spearman %s / %s'
                             % (title, r['n_particles'],
                                np.round(r['canonical_correlations'], 3).tolist(),
                                r['neighbourhood_overlap'],
                                r['knn_error_a_in_b'], r['knn_error_b_in_a'],
                                np.round(r['spearman_a_predicts_b'], 3).tolist(),
                                np.round(r['spearman_b_predicts_a'], 3).tolist()))
        return lines

    def _methods(self):
        return []

    def _citations(self):
        return ['Harastani2022continuousflex', 'Jin2014hemnma']
