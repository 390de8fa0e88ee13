"""The plugin's tests for Scipion's own test runner (``pyworkflow.tests.BaseTest``).

Scipion finds a plugin's tests with ``unittest`` discovery (pattern
``test*.py``) in the plugin's ``tests`` package, so this module is what
``scipion tests`` lists and runs::

    scipion3 tests --grep continuousflex_geodl --show      # or: python -m scipion tests ...
    scipion3 tests continuousflex_geodl.tests.testsuite_scipion
    scipion3 tests continuousflex_geodl.tests.testsuite_scipion.TestGeoDLSimulate

* ``TestGeoDLSimulate`` is a native Scipion test: it creates a test project
  (``setupTestProject``) and launches the *simulate* protocol through it,
  exactly as the GUI would, then checks the registered outputs against the
  files the core wrote.
* ``TestGeoDLCore``, ``TestGeoDLModel``, ``TestGeoDLLandscape`` and
  ``TestGeoDLScipion`` run the plugin's pytest suites (every ``test_*.py``
  of ``core/`` -- the Scipion-free core, split by area -- and of
  ``scipion/``) in a subprocess and fail with pytest's report when any test
  fails.  They need pytest (``pip install
  scipion-em-continuousflex-geodl[test]``) and are skipped without it.

The module name does not match pytest's ``test_*.py``, so ``pytest`` does not
run these wrappers (they would run the suites twice).
"""
import glob
import importlib.util
import os
import subprocess
import sys
import unittest

from pyworkflow.tests import BaseTest, setupTestProject

HERE = os.path.dirname(os.path.abspath(__file__))
SCIPION_WORDS = ('scipion', 'workflow', 'viewers')
MODEL_WORDS = ('engine', 'model', 'faults', 'modes')
LANDSCAPE_WORDS = ('landscape', 'states', 'explore')


def suite_files(group):
    """The pytest files of one area: 'scipion' (the ``scipion/`` folder), or of
    the ``core/`` folder 'landscape', 'model' or 'core' (the rest)."""
    out = []
    for fn in sorted(glob.glob(os.path.join(HERE, '**', 'test_*.py'), recursive=True)):
        name = os.path.basename(fn)
        folder = os.path.basename(os.path.dirname(fn))
        if folder == 'scipion' or any(w in name for w in SCIPION_WORDS):
            kind = 'scipion'
        elif any(w in name for w in LANDSCAPE_WORDS):
            kind = 'landscape'
        elif any(w in name for w in MODEL_WORDS):
            kind = 'model'
        else:
            kind = 'core'
        if kind == group:
            out.append(fn)
    return out


class _PytestSuite(BaseTest):
    """Runs one group of the pytest files in a subprocess."""
    group = None

    @classmethod
    def setUpClass(cls):
        if importlib.util.find_spec('pytest') is None:
            raise unittest.SkipTest('pytest is not installed: pip install pytest '
                                    'pytest-timeout hypothesis')

    def _run_group(self):
        files = suite_files(self.group)
        self.assertTrue(files, 'no test files found for %s in %s' % (self.group, HERE))
        env = dict(os.environ, OMP_WAIT_POLICY='PASSIVE')
        proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-ra', '-p',
                               'no:cacheprovider', '--rootdir', HERE] + files,
                              cwd=HERE, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)
        print(proc.stdout[-4000:])
        self.assertEqual(proc.returncode, 0, 'pytest failed on %s:\n%s'
                         % (', '.join(map(os.path.basename, files)), proc.stdout[-8000:]))


class TestGeoDLCore(_PytestSuite):
    """Core I/O, geometry, rendering, CTF, structures, metrics, simulation."""
    group = 'core'

    def test_core(self):
        self._run_group()


class TestGeoDLModel(_PytestSuite):
    """The model: components, training engine, learning, CLI, faults."""
    group = 'model'

    def test_model(self):
        self._run_group()


class TestGeoDLLandscape(_PytestSuite):
    """Landscapes: free energy, states, paths, subsets, comparisons, CLI."""
    group = 'landscape'

    def test_landscape(self):
        self._run_group()


class TestGeoDLScipion(_PytestSuite):
    """Protocols, conversions, viewers, registry and the whole workflow in
    headless Scipion projects of their own."""
    group = 'scipion'

    def test_scipion(self):
        self._run_group()


class TestGeoDLSimulate(BaseTest):
    """The simulate protocol in a Scipion test project."""
    N, BOX, APIX = 24, 32, 3.0

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)

    def test_simulate_registers_particles_with_ground_truth(self):
        import numpy as np

        from continuousflex_geodl import constants as const
        from continuousflex_geodl.convert import getParticleVector
        from continuousflex_geodl.protocols import GeoDLProtSimulate
        prot = self.newProtocol(GeoDLProtSimulate, nParticles=self.N, box=self.BOX,
                                apix=self.APIX, snr=1.0, seed=3)
        self.launchProtocol(prot)
        parts = prot.outputParticles
        self.assertEqual(parts.getSize(), self.N)
        self.assertTrue(parts.hasCTF() and parts.hasAlignmentProj())
        self.assertAlmostEqual(parts.getSamplingRate(), self.APIX, places=5)
        gt = np.load(prot._getExtraPath('simulation', 'ground_truth.npz'))['coords']
        gt = np.asarray(gt, dtype=float).reshape(self.N, -1)
        for i, p in enumerate(parts.iterItems(orderBy='id')):
            np.testing.assert_allclose(getParticleVector(p, const.ATTR_GT_COORD), gt[i],
                                       atol=1e-5)
            self.assertTrue(os.path.exists(p.getFileName()))
        self.assertTrue(os.path.exists(
            prot._getExtraPath('simulation', 'run.log')))
