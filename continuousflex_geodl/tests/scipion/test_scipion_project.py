"""Real headless Scipion project: protocols run as the GUI runs them.

Each protocol runs in its own subprocess (``SCIPION_PYTHON`` = this
interpreter), which runs ``python -m continuousflex_geodl <command>`` in a
worker, exactly as in the GUI.  The chain: simulate -> train (1 epoch) ->
predict latents, with the known answers that Scipion's copy of the data
equals what the core wrote (poses, CTF, ground truth) and that outputs map
back to the right particles.
"""
import importlib.util
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
if _SKIP is None:
    _missing = [m for m in ('commands.simulate', 'commands.train', 'commands.infer',
                            'particles') if importlib.util.find_spec(
        'continuousflex_geodl.core.' + m) is None]
    if _missing:
        _SKIP = 'core modules not built yet: %s' % ', '.join(_missing)
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

N_PARTICLES = 48
BOX = 32
APIX = 3.0


@pytest.fixture(scope='module')
def project():
    """A fresh Scipion project; cwd is the project folder while it is used."""
    with scipion_env.new_project('cfgeodl') as proj:
        yield proj


def _launch(proj, prot):
    return scipion_env.launch(proj, prot)


@pytest.fixture(scope='module')
def simulated(project):
    from continuousflex_geodl.protocols import GeoDLProtSimulate
    prot = project.newProtocol(GeoDLProtSimulate, nParticles=N_PARTICLES, box=BOX, apix=APIX,
                               snr=1.0, seed=3)
    return _launch(project, prot)


def test_simulated_particles_match_the_core_files(simulated):
    from continuousflex_geodl import constants as const, convert
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.core.geometry import euler_to_matrix
    parts = simulated.outputParticles
    assert parts.getSize() == N_PARTICLES
    assert parts.hasCTF() and parts.hasAlignmentProj()
    assert parts.getSamplingRate() == pytest.approx(APIX) and parts.getXDim() == BOX
    star = simulated._getExtraPath('simulation', 'particles.star')
    truth = load_particles(star)
    gt = np.load(simulated._getExtraPath('simulation', 'ground_truth.npz'))['coords']
    gt = np.asarray(gt, dtype=float).reshape(N_PARTICLES, -1)
    for i, p in enumerate(parts.iterItems(orderBy='id')):
        euler, t = convert.matrixToCorePose(p.getTransform().getMatrix(), APIX)
        np.testing.assert_allclose(euler_to_matrix(*euler), euler_to_matrix(*truth.euler[i]),
                                   atol=1e-4)
        np.testing.assert_allclose(t, truth.shifts[i], atol=1e-4)
        acq = p.getAcquisition()
        np.testing.assert_allclose(convert.ctfToCoreRow(p.getCTF(), acq), truth.ctf[i],
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(convert.getParticleVector(p, const.ATTR_GT_COORD), gt[i],
                                   atol=1e-5)
        assert os.path.exists(p.getFileName())
    assert os.path.exists(simulated.outputReference.getFileName())
    assert simulated.outputReferenceVolume.getSamplingRate() == pytest.approx(APIX)


@pytest.fixture(scope='module')
def trained(project, simulated):
    from continuousflex_geodl.protocols import GeoDLProtTrain
    prot = project.newProtocol(GeoDLProtTrain, zdim=2, epochs=1, batchSize=16,
                               numberOfThreads=1)
    prot.inputParticles.set(simulated)
    prot.inputParticles.setExtended('outputParticles')
    prot.inputReference.set(simulated)
    prot.inputReference.setExtended('outputReference')
    return _launch(project, prot)


def test_train_registers_a_model(trained):
    model = trained.outputModel
    assert os.path.isdir(model.getModelDir())
    assert model.getZdim() == 2 and model.getBox() == BOX
    assert model.getSamplingRate() == pytest.approx(APIX)
    for fn in ('config.json', 'weights.pt', 'history.json'):
        assert os.path.exists(os.path.join(model.getModelDir(), fn)), fn


@pytest.fixture(scope='module')
def predicted(project, simulated, trained):
    from continuousflex_geodl.protocols import GeoDLProtPredict
    prot = project.newProtocol(GeoDLProtPredict, numberOfThreads=1)
    prot.inputModel.set(trained)
    prot.inputModel.setExtended('outputModel')
    prot.inputParticles.set(simulated)
    prot.inputParticles.setExtended('outputParticles')
    return _launch(project, prot)


def test_predict_outputs_flex_particles_in_order(simulated, predicted):
    from continuousflex_geodl import constants as const
    prot = predicted
    out = prot.outputParticles
    Z = np.load(prot._getExtraPath('latents.npy'))
    assert Z.shape == (N_PARTICLES, 2) and np.all(np.isfinite(Z))
    assert out.getSize() == N_PARTICLES
    assert out.getFlexInfo().getProgName() == const.PROG_NAME
    assert out.getFlexInfo().getAttr(const.FLEX_ZDIM) == 2
    ids = [p.getObjId() for p in simulated.outputParticles.iterItems(orderBy='id')]
    for i, (pid, p) in enumerate(zip(ids, out.iterItems(orderBy='id'))):
        assert p.getObjId() == pid
        np.testing.assert_allclose(p.getZFlex(), Z[i], rtol=1e-5, atol=1e-6)
        assert p.hasAttribute(const.ATTR_GT_COORD)   # ground truth travels along


def test_continue_resumes_training_from_the_checkpoint(project, trained):
    """Scipion 'Continue' with more epochs: only training re-runs, from last.pt."""
    import json
    from pyworkflow.protocol.constants import MODE_RESUME
    hist_fn = os.path.join(trained.outputModel.getModelDir(), 'history.json')
    with open(hist_fn) as f:
        first = json.load(f)
    assert len(first) == 1
    star = trained._getExtraPath('input_particles.star')
    star_mtime = os.path.getmtime(star)
    trained.epochs.set(2)
    trained.runMode.set(MODE_RESUME)
    _launch(project, trained)
    with open(hist_fn) as f:
        second = json.load(f)
    assert len(second) == 2
    assert second[0] == first[0]          # epoch 1 kept, not retrained
    assert os.path.getmtime(star) == star_mtime   # conversion step skipped
    assert trained.outputModel.getZdim() == 2


def test_hemnma_bridge_and_landscape_comparison(project, simulated):
    """Amplitudes stored on particles -> flexible particles -> compared with
    the truth: the ground truth used as 'amplitudes' must agree perfectly."""
    import json
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import (GeoDLProtCompareLandscapes,
                                                GeoDLProtHemnmaToFlex)
    bridge = project.newProtocol(GeoDLProtHemnmaToFlex, source=1,  # another attribute
                                 attrName=const.ATTR_GT_COORD)
    bridge.inputParticles.set(simulated)
    bridge.inputParticles.setExtended('outputParticles')
    _launch(project, bridge)
    flex = bridge.outputParticles
    assert flex.getSize() == N_PARTICLES
    gt = np.load(simulated._getExtraPath('simulation', 'ground_truth.npz'))['coords']
    gt = np.asarray(gt, dtype=float).reshape(N_PARTICLES, -1)
    for i, p in enumerate(flex.iterItems(orderBy='id')):
        np.testing.assert_allclose(p.getZFlex(), gt[i], atol=1e-5)

    cmp_ = project.newProtocol(GeoDLProtCompareLandscapes, sourceA=const.SOURCE_ZFLEX,
                               sourceB=const.SOURCE_ATTR, attrB=const.ATTR_GT_COORD, k=5)
    cmp_.inputA.set(bridge)
    cmp_.inputA.setExtended('outputParticles')
    cmp_.inputB.set(simulated)
    cmp_.inputB.setExtended('outputParticles')
    _launch(project, cmp_)
    with open(cmp_._getExtraPath('agreement.json')) as f:
        res = json.load(f)
    assert res['agreement']['n_particles'] == N_PARTICLES
    for key in ('agreement', 'first_vs_truth', 'second_vs_truth'):
        assert res[key]['spearman_a_predicts_b'] == pytest.approx([1.0] * gt.shape[1])
    assert any('neighbourhood overlap' in line for line in cmp_.summary())


def test_structures_along_a_line_match_direct_decoding(project, trained):
    from continuousflex_geodl.core.inference import decode_positions, load_model
    from continuousflex_geodl.protocols import GeoDLProtStructures
    prot = project.newProtocol(GeoDLProtStructures, pathType=1, startPoint='-1 0.5',
                               endPoint='1 -0.5', nPoints=3)
    prot.inputModel.set(trained)
    prot.inputModel.setExtended('outputModel')
    _launch(project, prot)
    vols = [v.clone() for v in prot.outputVolumes.iterItems(orderBy='id')]
    assert len(vols) == 3
    expected = np.array([[-1, 0.5], [0, 0], [1, -0.5]], dtype=float)
    for v, z in zip(vols, expected):
        np.testing.assert_allclose(v.getZFlex(), z, atol=1e-6)
        assert os.path.exists(v.getFileName()) and v.getSamplingRate() == pytest.approx(APIX)
    # the multi-model PDB holds the decoded pseudo-atoms in path order
    models, cur = [], []
    with open(prot.outputStructures.getFileName()) as f:
        for line in f:
            if line.startswith(('ATOM', 'HETATM')):
                cur.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            elif line.startswith('ENDMDL') and cur:
                models.append(cur)
                cur = []
    if cur:
        models.append(cur)
    assert len(models) == 3
    model = load_model(trained.outputModel.getModelDir())
    pos = decode_positions(model, expected.astype(np.float32))
    np.testing.assert_allclose(np.array(models), pos, atol=2e-3)


def _partition_matches(a, b):
    """True when labellings a and b are the same partition (up to renaming)."""
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


def test_landscape_of_ground_truth_recovers_states_and_subsets(project, simulated):
    """Landscape of the true coordinates (three well-separated populations): the
    3 states must be exactly the simulated ones; a state subset is exact."""
    import json
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtSubset
    land = project.newProtocol(GeoDLProtLandscape, source=const.SOURCE_ATTR,
                               attrName=const.ATTR_GT_COORD, nStates='3', stateMethod=1,
                               bootstrap=2, feBootstrap=2)
    land.inputParticles.set(simulated)
    land.inputParticles.setExtended('outputParticles')
    _launch(project, land)
    parts = land.outputParticles
    emb = np.load(land._getExtraPath('landscape', 'embedding.npy'))
    with open(land._getExtraPath('landscape', 'states.json')) as f:
        states = json.load(f)
    found, truth, ids = [], [], []
    for i, p in enumerate(parts.iterItems(orderBy='id')):
        np.testing.assert_allclose(p.getZRed(), emb[i], rtol=1e-5, atol=1e-6)
        found.append(int(getattr(p, const.ATTR_STATE).get()))
        truth.append(int(getattr(p, const.ATTR_GT_STATE).get()))
        ids.append(p.getObjId())
        assert getattr(p, const.ATTR_DG).get() >= 0.0
    assert _partition_matches(found, truth), (found, truth)
    classes = land.outputClasses
    assert classes.getSize() == 3 == states['n_states']
    for cls in classes.iterItems(orderBy='id'):
        members = [p.getObjId() for p in cls.iterItems()]
        expected = [pid for pid, s in zip(ids, found) if s == cls.getObjId()]
        assert sorted(members) == sorted(expected)
        assert len(members) / N_PARTICLES == pytest.approx(
            states['populations'][cls.getObjId() - 1])
    assert not land.hasAttribute('outputVolumes')  # no model: no maps

    sub = project.newProtocol(GeoDLProtSubset, selection=0, states='2')
    sub.inputParticles.set(land)
    sub.inputParticles.setExtended('outputParticles')
    _launch(project, sub)
    got = sorted(p.getObjId() for p in sub.outputParticles.iterItems())
    assert got == sorted(pid for pid, s in zip(ids, found) if s == 2)


def test_landscape_with_model_maps_and_pathway(project, predicted):
    """Landscape of the predicted latents (model taken from the particles):
    state maps decoded; a density pathway decoded in path order."""
    import json
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtStructures
    land = project.newProtocol(GeoDLProtLandscape, nStates='2', stateMethod=1, bootstrap=2,
                               feBootstrap=2)
    land.inputParticles.set(predicted)
    land.inputParticles.setExtended('outputParticles')
    _launch(project, land)
    centres = np.load(land._getExtraPath('landscape', 'state_centres.npy'))
    vols = [v.clone() for v in land.outputVolumes.iterItems(orderBy='id')]
    assert len(vols) == 2
    for s, v in enumerate(vols):
        assert os.path.exists(v.getFileName())
        np.testing.assert_allclose(v.getZFlex(), centres[s], rtol=1e-5, atol=1e-6)
    for cls in land.outputClasses.iterItems(orderBy='id'):
        rep = cls.getRepresentative()
        assert os.path.exists(rep.getFileName())
    assert os.path.exists(land.outputStructures.getFileName())

    path = project.newProtocol(GeoDLProtStructures, pathType=2, pathKind=0, nPoints=4,
                               writeVolumes=False)
    path.inputLandscape.set(land)
    _launch(project, path)
    pts = np.load(path._getExtraPath('pathway', 'path_latents.npy'))
    assert pts.shape == (4, 2)
    with open(path._getExtraPath('pathway', 'path.json')) as f:
        info = json.load(f)
    assert info['kind'] == 'density'
    np.testing.assert_allclose(np.load(path._getExtraPath('points.npy')), pts, atol=1e-6)
    n_models = sum(1 for line in open(path.outputStructures.getFileName())
                   if line.startswith('MODEL'))
    assert n_models == 4
    assert not path.hasAttribute('outputVolumes')
