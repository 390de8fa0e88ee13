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


def _particles(tmp_path, n=5, box=32, apix=2.0, ctf=True, name='p'):
    import mrcfile
    stack = str(tmp_path / ('%s.mrcs' % name))
    with mrcfile.new(stack, overwrite=True) as m:
        m.set_data(np.random.default_rng(0).normal(size=(n, box, box)).astype(np.float32))
        m.voxel_size = apix
    return scipion_env.particle_set(str(tmp_path / ('%s.sqlite' % name)), stack, n, apix,
                                    box=box, ctf=ctf,
                                    defocus=lambda i: (15000.0 + 100 * i, 14800.0, 10.0))


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
