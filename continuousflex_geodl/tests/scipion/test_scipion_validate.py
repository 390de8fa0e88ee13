"""Half-set validation in a real headless Scipion project, as the GUI runs it.

simulate -> half-set validation (two models of 2 epochs on a tiny set), in
their own subprocesses; the registered outputs must be what the core wrote
(the particles carry the latents of both models and their half, the FSC set
holds the curves of fsc.npz) and the viewer draws its figures from the run.
"""
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

N_PARTICLES = 64
BOX = 32
APIX = 4.0


@pytest.fixture(scope='module')
def project():
    with scipion_env.new_project('cfgeodl_validate') as proj:
        yield proj


def _launch(proj, prot):
    return scipion_env.launch(proj, prot)


def test_validation_protocol_registers_the_core_results(project, tmp_path):
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.convert import getParticleVector
    from continuousflex_geodl.core.artifacts import ValidationDir
    from continuousflex_geodl.protocols import GeoDLProtSimulate, GeoDLProtValidate
    sim = project.newProtocol(GeoDLProtSimulate, nParticles=N_PARTICLES, box=BOX, apix=APIX,
                              snr=1.0, seed=3)
    _launch(project, sim)
    prot = project.newProtocol(GeoDLProtValidate, zdim=2, epochs=2, batchSize=16,
                               refineSteps=0, nStates='2', bootstrap=2, feBootstrap=2,
                               pathPoints=3, splitSeed=7, numberOfThreads=1)
    prot.inputParticles.set(sim)
    prot.inputParticles.setExtended('outputParticles')
    prot.inputReference.set(sim)
    prot.inputReference.setExtended('outputReference')
    assert prot._validate() == []
    _launch(project, prot)
    v = ValidationDir(prot._getValidationDir())
    assert v.missing() == []
    h1, h2 = v.split()
    assert len(h1) + len(h2) == N_PARTICLES
    # particles: zFlex = half 1's latents, the aligned latents of half 2, the half
    z1, z2a = np.asarray(v.latents(1)), np.asarray(v.aligned())
    err = v.agreement()['relative_error']
    parts = prot.outputParticles
    assert parts.getSize() == N_PARTICLES
    ids = [p.getObjId() for p in sim.outputParticles.iterItems(orderBy='id')]
    halves = []
    for i, (pid, p) in enumerate(zip(ids, parts.iterItems(orderBy='id'))):
        assert p.getObjId() == pid
        np.testing.assert_allclose(p.getZFlex(), z1[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(getParticleVector(p, const.ATTR_Z_HALF2), z2a[i],
                                   rtol=1e-5, atol=1e-6)
        assert getattr(p, const.ATTR_HALF_ERROR).get() == pytest.approx(err[i], rel=1e-5)
        halves.append(int(getattr(p, const.ATTR_HALF).get()))
    assert np.array_equal(np.nonzero(np.array(halves) == 1)[0], h1)
    # FSCs: one per state and per path point, the curves of fsc.npz
    fsc = v.fsc()
    curves = np.concatenate([fsc['state_curves'], fsc['path_curves']])
    got = [f.clone() for f in prot.outputFSCs.iterItems(orderBy='id')]
    assert len(got) == len(curves) == len(fsc['state_latents']) + 3
    for f, c in zip(got, curves):
        x, y = f.getData()
        np.testing.assert_allclose([float(a) for a in x], fsc['freqs'], rtol=1e-6)
        np.testing.assert_allclose([float(a) for a in y], c, atol=1e-6)
    assert prot.outputReport.getFileName() == v.report_path
    assert any('FSC between the half-set models' in line for line in prot.summary())
    # the viewer draws its three figures from the run
    from continuousflex_geodl.viewers import GeoDLValidationViewer
    viewer = GeoDLValidationViewer(project=project, protocol=prot)
    viewer.setProtocol(prot)
    written = viewer.saveAll(str(tmp_path / 'figs'))
    assert sorted(written) == ['agreement', 'fsc', 'landscapes'], viewer.skipped
    for path in written.values():
        assert os.path.getsize(path) > 10000


def test_validation_command_line_parses_and_form_validation(project, tmp_path):
    from pwem.objects import AtomStruct
    from continuousflex_geodl.core.cli import build_parser
    from continuousflex_geodl.protocols import GeoDLProtValidate
    prot = GeoDLProtValidate(zdim=3, epochs=4, batchSize=8, learningRate=1e-3, prior=1,
                             nmaModes=3, nAtoms=200, beta=0.5, seed=2, splitSeed=9, align=1,
                             pathPoints=5, refineSteps=3, nStates='bic', bootstrap=4,
                             feBootstrap=6, numberOfThreads=2)
    prot.setWorkingDir(str(tmp_path / 'run'))
    parts = scipion_env.particle_set(str(tmp_path / 'p.sqlite'), str(tmp_path / 's.mrcs'), 4,
                                     APIX, box=BOX, ctf=True)
    prot.inputParticles.set(parts)
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    a = build_parser().parse_args(['validate'] + [str(x) for x in prot._validateArgs()])
    assert (a.zdim, a.epochs, a.batch_size, a.lr, a.prior, a.nma_modes, a.n_atoms, a.beta,
            a.seed, a.split_seed, a.align, a.path_points, a.refine_steps, a.n_states,
            a.bootstrap, a.fe_bootstrap, a.threads) == \
        (3, 4, 8, 1e-3, 'gaussian', 3, '200', 0.5, 2, 9, 'linear', 5, 3, 'bic', 4, 6, 2)
    assert a.out == prot._getValidationDir() and os.path.isabs(a.out)
    errors = ' '.join(prot._validate())
    assert 'at least 20 particles' in errors and 'no 3D angles' in errors
    prot.nStates.set('many')
    assert any('Number of states' in e for e in prot._validate())
