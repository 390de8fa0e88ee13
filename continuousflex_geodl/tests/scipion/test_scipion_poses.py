"""The 'find poses' protocol without a project: its command line parses with the
real CLI, validation catches bad input, and its output conversion carries the
poses (RELION origin sign) and confidence through Scipion -> star -> core ->
star -> Scipion."""
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

if _SKIP is None:
    from pwem.objects import AtomStruct, SetOfParticles, Volume

    from continuousflex_geodl.protocols import GeoDLProtPoses
    from continuousflex_geodl.protocols.protocol_poses import (ATTR_POSE_CONFIDENCE,
                                                               applyPosedStar)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _particles(tmp_path, n=5, box=32, apix=2.0, ctf=True, name='p', transforms=None):
    import mrcfile
    stack = str(tmp_path / ('%s.mrcs' % name))
    with mrcfile.new(stack, overwrite=True) as m:
        m.set_data(np.random.default_rng(0).normal(size=(n, box, box)).astype(np.float32))
        m.voxel_size = apix
    return scipion_env.particle_set(str(tmp_path / ('%s.sqlite' % name)), stack, n, apix,
                                    box=box, ctf=ctf, transforms=transforms,
                                    defocus=lambda i: (15000.0 + 100 * i, 14800.0, 10.0))


def _random_poses(n, apix, seed=5):
    """(euler (n, 3) deg, t (n, 2) A, ALIGN_PROJ matrices) of random poses."""
    from continuousflex_geodl import convert
    rng = np.random.default_rng(seed)
    euler = np.stack([rng.uniform(-180, 180, n), rng.uniform(5, 175, n),
                      rng.uniform(-180, 180, n)], 1)
    t = rng.uniform(-5, 5, (n, 2))
    return euler, t, [convert.corePoseToMatrix(euler[k], t[k], apix) for k in range(n)]


def _parse(prot):
    from continuousflex_geodl.core.cli import build_parser
    return build_parser().parse_args(['poses'] + [str(x) for x in prot._posesArgs()])


def test_poses_command_line_parses_with_the_core_cli(tmp_path):
    from continuousflex_geodl.core.cli import build_parser
    prot = GeoDLProtPoses(angularStep=12.0, finalStep=1.5, candidates=4, maxShift=8.0,
                          resolution=6.0, nAtoms=300, numberOfThreads=2)
    prot.setWorkingDir(str(tmp_path / 'run'))
    prot.inputParticles.set(_particles(tmp_path))
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    a = build_parser().parse_args(['poses'] + [str(x) for x in prot._posesArgs()])
    assert (a.angular_step, a.final_step, a.candidates, a.max_shift, a.resolution,
            a.n_atoms, a.threads, a.device) == (12.0, 1.5, 4, 8.0, 6.0, '300', 2, 'cpu')
    assert a.reference == [str(tmp_path / 'ref.pdb')] and a.out.endswith('.star')
    prot.maxShift.set(0.0)
    assert build_parser().parse_args(
        ['poses'] + [str(x) for x in prot._posesArgs()]).max_shift is None
    # the rounds with learned structures: the core defaults unless set on the form
    from continuousflex_geodl.core.settings import PoseSettings, TrainSettings
    a = _parse(prot)
    assert (a.model_rounds, a.epochs) == (PoseSettings.model_rounds, TrainSettings.epochs)
    assert a.model is None
    prot.modelRounds.set(0)
    prot.roundEpochs.set(7)
    a = _parse(prot)
    assert (a.model_rounds, a.epochs) == (0, 7)
    prot.modelRounds.set(2)
    assert _parse(prot).model_rounds == 2


def test_repair_mode_command_line_parses_with_the_core_cli(tmp_path):
    from continuousflex_geodl.core.settings import PoseSettings
    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols.protocol_poses import MODE_REPAIR
    prot = GeoDLProtPoses(mode=MODE_REPAIR, finalStep=0.5, maxShift=6.0, numberOfThreads=3)
    prot.setWorkingDir(str(tmp_path / 'run'))
    prot.inputParticles.set(_particles(tmp_path, transforms=_random_poses(5, 2.0)[2]))
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32,
                                   apix=2.0))
    a = _parse(prot)
    assert a.model == str(tmp_path / 'model') and a.reference is None
    assert (a.local_step, a.rounds) == (PoseSettings.local_step, PoseSettings.rounds)
    assert (a.final_step, a.max_shift, a.threads) == (0.5, 6.0, 3)
    assert a.particles == prot._getParticlesStar() and a.out == prot._getPosedStar()
    prot.localStep.set(8.0)
    prot.rounds.set(3)
    assert (_parse(prot).local_step, _parse(prot).rounds) == (8.0, 3)
    assert not a.ignore_refined_poses
    prot.ignoreRefinedPoses.set(True)
    assert _parse(prot).ignore_refined_poses


def test_repair_mode_needs_a_model_and_3d_angles_but_no_reference(tmp_path):
    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols.protocol_poses import MODE_REPAIR, MODE_SEARCH
    os.makedirs(str(tmp_path / 'model'))
    posed = _particles(tmp_path, transforms=_random_poses(5, 2.0)[2], name='posed')
    prot = GeoDLProtPoses(mode=MODE_REPAIR)
    prot.inputParticles.set(posed)
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32,
                                   apix=2.0))
    assert prot._validate() == []
    # the form's own check of empty pointers: the reference is not needed here ...
    assert not any('EMPTY' in e for e in prot.validate())
    # ... but is in the global search, where the model is not
    prot.mode.set(MODE_SEARCH)
    empty = [e for e in prot.validate() if 'EMPTY' in e]
    assert len(empty) == 1 and 'Reference' in empty[0]
    # particles without angles cannot be repaired
    prot = GeoDLProtPoses(mode=MODE_REPAIR)
    prot.inputParticles.set(_particles(tmp_path, name='unposed'))
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32,
                                   apix=2.0))
    errors = prot._validate()
    assert len(errors) == 1 and '3D angles' in errors[0] and 'global search' in errors[0]
    # a model of another grid, a deleted model folder, a missing model
    prot.inputParticles.set(posed)
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'gone'), zdim=2, box=64,
                                   apix=1.0))
    errors = ' '.join(prot._validate())
    assert 'does not exist' in errors and 'box of 32 px' in errors and '1.0000 A/px' in errors
    prot.inputModel.set(None)
    assert any('Select a trained model' in e for e in prot._validate())
    assert any('EMPTY' in e for e in prot.validate())
    prot = GeoDLProtPoses(mode=MODE_REPAIR, localStep=2.0, finalStep=3.0)
    prot.inputParticles.set(posed)
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32,
                                   apix=2.0))
    assert prot._validate() == ['The final angular step must not exceed the first local '
                                'step.']


def test_repair_mode_star_carries_the_given_poses(tmp_path):
    """Repair mode: the converted star has the particles' Scipion poses (the
    starting point of the core), and no reference is converted."""
    from continuousflex_geodl.core.geometry import euler_to_matrix, rotation_angle_deg
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols.protocol_poses import MODE_REPAIR
    euler, t, mats = _random_poses(5, 2.0, seed=11)
    prot = GeoDLProtPoses(mode=MODE_REPAIR)
    prot.setWorkingDir(str(tmp_path / 'run'))
    os.makedirs(prot._getExtraPath())
    prot.inputParticles.set(_particles(tmp_path, transforms=mats))
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32,
                                   apix=2.0))
    prot.convertInputStep(prot.inputParticles.get().getObjId())
    pset = load_particles(prot._getParticlesStar())
    assert len(pset) == 5
    for k in range(5):
        assert rotation_angle_deg(euler_to_matrix(*pset.euler[k]),
                                  euler_to_matrix(*euler[k])) < 1e-3
        np.testing.assert_allclose(pset.shifts[k], t[k], atol=1e-4)
    assert not os.path.exists(prot._getExtraPath('reference.mrc'))


def test_poses_validation_catches_bad_input(tmp_path):
    prot = GeoDLProtPoses()
    prot.inputParticles.set(_particles(tmp_path, ctf=False))
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    assert any('no CTF' in e for e in prot._validate())
    prot = GeoDLProtPoses(angularStep=5.0, finalStep=8.0)
    prot.inputParticles.set(_particles(tmp_path, name='q'))
    vol = Volume(location=str(tmp_path / 'ref.mrc'))
    vol.setSamplingRate(3.0)
    prot.inputReference.set(vol)
    errors = prot._validate()
    assert any('final angular step' in e for e in errors)
    assert any('pixel size' in e for e in errors)


def test_posed_star_becomes_scipion_alignment_with_the_right_sign(tmp_path):
    from continuousflex_geodl import convert
    from continuousflex_geodl.core.geometry import euler_to_matrix, rotation_angle_deg
    from continuousflex_geodl.core.io.star import write_star
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.core.poses import PoseSearchResult, posed_particles
    inSet = _particles(tmp_path)
    star = str(tmp_path / 'input.star')
    ids = convert.writeParticlesStar(inSet, star, requireCtf=True)
    pset = load_particles(star)
    rng = np.random.default_rng(3)
    n = len(pset)
    euler = np.stack([rng.uniform(-180, 180, n), rng.uniform(5, 175, n),
                      rng.uniform(-180, 180, n)], 1)
    t = rng.uniform(-6, 6, (n, 2))
    conf = rng.uniform(0.2, 1.0, n)
    res = PoseSearchResult(euler=euler, shifts=t, rotations=euler_to_matrix(*euler.T),
                           confidence=conf, score=rng.uniform(5, 20, n), noise_sd=1.0)
    posed = str(tmp_path / 'posed.star')
    write_star(posed, posed_particles(pset, res))
    outSet = SetOfParticles(filename=str(tmp_path / 'out.sqlite'))
    assert applyPosedStar(inSet, posed, outSet) == n
    assert outSet.hasAlignmentProj()
    for k, p in enumerate(outSet.iterItems(orderBy='id', direction='ASC')):
        assert p.getObjId() == ids[k]
        e, tt = convert.matrixToCorePose(p.getTransform().getMatrix(), inSet.getSamplingRate())
        assert rotation_angle_deg(euler_to_matrix(*e), euler_to_matrix(*euler[k])) < 1e-3
        np.testing.assert_allclose(tt, t[k], atol=1e-4)
        # Scipion/Xmipp shift (px) = RELION origin / apix = -t / apix
        M = np.linalg.inv(p.getTransform().getMatrix())
        np.testing.assert_allclose(-M[:2, 3], -t[k] / inSet.getSamplingRate(), atol=1e-5)
        assert abs(float(getattr(p, ATTR_POSE_CONFIDENCE).get()) - conf[k]) < 1e-5
        assert p.getCTF() is not None and os.path.exists(p.getFileName())


def test_training_refined_star_becomes_scipion_alignment(tmp_path):
    """train --refine-poses writes refined_particles.star (ModelDir); the train
    protocol turns it into output particles with the refined alignment."""
    from continuousflex_geodl import convert
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.geometry import euler_to_matrix, rotation_angle_deg
    from continuousflex_geodl.core.particles import load_particles
    inSet = _particles(tmp_path, n=4)
    star = str(tmp_path / 'input.star')
    convert.writeParticlesStar(inSet, star, requireCtf=True)
    pset = load_particles(star)
    rng = np.random.default_rng(4)
    euler = np.stack([rng.uniform(-180, 180, 4), rng.uniform(5, 175, 4),
                      rng.uniform(-180, 180, 4)], 1)
    t = rng.uniform(-5, 5, (4, 2))
    md = ModelDir(str(tmp_path / 'model'))
    os.makedirs(md.path)
    md.write_refined_star(pset, euler, t)
    outSet = SetOfParticles(filename=str(tmp_path / 'refined.sqlite'))
    assert applyPosedStar(inSet, md.refined_star_path, outSet) == 4
    for k, p in enumerate(outSet.iterItems(orderBy='id', direction='ASC')):
        e, tt = convert.matrixToCorePose(p.getTransform().getMatrix(), inSet.getSamplingRate())
        assert rotation_angle_deg(euler_to_matrix(*e), euler_to_matrix(*euler[k])) < 1e-3
        np.testing.assert_allclose(tt, t[k], atol=1e-4)
        assert not hasattr(p, ATTR_POSE_CONFIDENCE)
