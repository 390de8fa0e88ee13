"""Pose repair joint with the conformational model (``core.poses.joint``,
``poses --model``, per-particle clouds in ``refine_poses``).

Ground truth generated here: heterogeneous particles simulated with known
conformations, rotations and shifts (``core.simulate``); an analytic rigid
superposition; the RELION origin sign checked on the written star.
"""
import os

import numpy as np
import pytest

from continuousflex_geodl.core import cli
from continuousflex_geodl.core.geometry import (euler_to_matrix, matrix_to_euler,
                                                rotation_angle_deg)
from continuousflex_geodl.core.io.star import write_star
from continuousflex_geodl.core.models.reference import build_reference
from continuousflex_geodl.core.particles import load_particles
from continuousflex_geodl.core.poses import refine_poses
from continuousflex_geodl.core.poses.joint import superpose

pytestmark = pytest.mark.usefixtures('one_thread')

APIX = 4.0


def _rotate(euler, deg, seed):
    """Rotations ``euler`` turned by ``deg`` degrees about random axes."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(len(euler), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    R = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix() @ euler_to_matrix(*euler.T)
    return np.stack(matrix_to_euler(R), 1)


def test_superpose_undoes_a_rigid_motion():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(30, 3)) * 10
    from scipy.spatial.transform import Rotation
    R = Rotation.random(4, random_state=1).as_matrix()
    moved = np.einsum('bij,mj->bmi', R, target) + rng.normal(size=(4, 1, 3)) * 5
    back = superpose(moved, target, weights=rng.uniform(0.5, 2.0, 30))
    np.testing.assert_allclose(back, np.broadcast_to(target, back.shape), atol=1e-8)


def test_per_particle_structures_repair_rotations_a_single_reference_cannot(tmp_path):
    """A hinge motion of 12 A RMSD: from a 5 deg start, the local search against
    each particle's own (true) structure ends closer to the true rotations than
    the same search against the one reference structure, and closer than it
    started."""
    from continuousflex_geodl.core.simulate import ground_truth_positions, simulate_dataset
    paths = simulate_dataset(str(tmp_path / 'sim'), n_particles=16, box=32, apix=APIX,
                             snr=10.0, motion='hinge', population='uniform', end_rmsd=12.0,
                             sigma=4.0, seed=3)
    gt = np.load(paths['ground_truth'])
    ps = load_particles(paths['particles_star'])
    start = _rotate(gt['euler'], 5.0, seed=4)
    R_true = euler_to_matrix(*gt['euler'].T)
    ref = build_reference(paths['reference_npz'])
    own = (ground_truth_positions(dict(gt)).astype(np.float32), ref.amplitudes, ref.sigma)
    kw = dict(euler=start, shifts=gt['shifts'], start_step=2.5, final_step=1.0, polish=10)
    single = refine_poses(ps, ref, **kw)
    per = refine_poses(ps, own, **kw)
    err_start = rotation_angle_deg(euler_to_matrix(*start.T), R_true)
    err_single = rotation_angle_deg(single.rotations, R_true)
    err_per = rotation_angle_deg(per.rotations, R_true)
    assert np.median(err_per) < np.median(err_single), (err_per, err_single)
    assert np.median(err_per) < 0.5 * np.median(err_start), (err_per, err_start)
    assert per.score.mean() > single.score.mean()  # each particle fits its own structure


def test_poses_with_a_model_round_trip_relion_sign(tmp_path):
    """``poses --model``: train a small model on particles whose star poses were
    perturbed (3 deg, +-1 A), refine against the model's clouds and write a
    star: same particles in the same order, origins (RELION sign, -t) and
    rotations closer to the simulated truth than the input's."""
    import starfile
    from continuousflex_geodl.core import engine
    from continuousflex_geodl.tests.core.test_poses import simulated_with_shifted_origins
    sim, gt, ps = simulated_with_shifted_origins(tmp_path, 48)
    ps.euler = _rotate(gt['euler'], 3.0, seed=6)
    bad_star = write_star(str(tmp_path / 'perturbed.star'), ps)
    bad = load_particles(bad_star)
    ref = build_reference(os.path.join(sim, 'reference.npz'))
    model = str(tmp_path / 'model')
    engine.train(bad, (ref.positions, ref.amplitudes, ref.sigma), model, epochs=4,
                 batch_size=16, log_every=0, zdim=2, threads=1)
    out = str(tmp_path / 'repaired.star')
    rc = cli.main(['poses', '--particles', bad_star, '--model', model, '--out', out,
                   '--local-step', '2.5', '--refine-steps', '2', '--threads', '1'])
    assert rc == 0
    back = load_particles(out)
    assert len(back) == len(bad)
    np.testing.assert_array_equal(back.images[np.arange(len(bad))],
                                  bad.images[np.arange(len(bad))])
    raw = starfile.read(out, always_dict=True)['particles']
    origin = raw[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy()
    np.testing.assert_allclose(origin, -back.shifts, atol=1e-5)
    before = np.linalg.norm(-bad.shifts + gt['shifts'], axis=1)
    after = np.linalg.norm(origin + gt['shifts'], axis=1)
    assert after.mean() < 0.5 * before.mean(), (before, after)
    R_true = euler_to_matrix(*gt['euler'].T)
    rot_before = rotation_angle_deg(euler_to_matrix(*bad.euler.T), R_true)
    rot_after = rotation_angle_deg(euler_to_matrix(*back.euler.T), R_true)
    assert np.median(rot_after) < np.median(rot_before), (rot_before, rot_after)


def test_axis_latents_sit_at_percentiles_of_the_first_principal_axis():
    """Latents spread along one direction u (plus small orthogonal noise): the
    points are on u, at the percentiles of the particles' coordinate along it,
    in order (analytic: uniform coordinate in [-1, 1])."""
    from continuousflex_geodl.core.poses.joint import axis_latents
    rng = np.random.default_rng(0)
    u = np.array([3.0, -4.0, 0.0]) / 5.0
    t = rng.uniform(-1.0, 1.0, 4000)
    z = 2.0 + t[:, None] * u + 0.01 * rng.normal(size=(len(t), 3))
    pts = axis_latents(z, percentiles=(5, 50, 95), n_near=40)
    coord = (pts - 2.0) @ u
    sign = np.sign(coord[2] - coord[0])  # a principal axis has no sign
    np.testing.assert_allclose(sign * coord, [-0.9, 0.0, 0.9], atol=0.03)
    off_axis = (pts - 2.0) - coord[:, None] * u
    assert np.abs(off_axis).max() < 0.01


def test_pose_search_with_model_rounds(tmp_path):
    """``poses --model-rounds 1`` on particles without angles (one conformation,
    SNR 10): every stage is written (search against the reference, model, 3
    structures, search against them, model, repaired star), the output is the
    repaired star with the particles in their order and the search's
    confidence, and the rounds keep the rotations within the final step of the
    simulated truth (median), where the search against the reference put them.
    (That the rounds repair a heterogeneous set needs a model trained on
    thousands of particles: benchmarks/report/poses_repair.md.)"""
    import starfile
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.commands.poses import ROUND_FILES, rounds_dir
    from continuousflex_geodl.core.poses import CONFIDENCE_LABEL
    from continuousflex_geodl.core.simulate import simulate_dataset
    paths = simulate_dataset(str(tmp_path / 'sim'), n_particles=40, box=32, apix=APIX,
                             snr=10.0, population='grid', n_states=1, sigma=4.0,
                             max_shift=4.0, seed=3)
    gt = np.load(paths['ground_truth'])
    stripped = load_particles(paths['particles_star'])
    stripped.euler = stripped.shifts = None
    star = write_star(str(tmp_path / 'no_angles.star'), stripped)
    out = str(tmp_path / 'posed.star')
    final_step = 2.5
    rc = cli.main(['poses', '--particles', star, '--reference', paths['reference_npz'],
                   '--out', out, '--angular-step', '20', '--final-step', str(final_step),
                   '--candidates', '2', '--model-rounds', '1', '--epochs', '3',
                   '--local-step', '2.5', '--refine-steps', '2', '--threads', '1'])
    assert rc == 0
    work = rounds_dir(out)
    r1 = os.path.join(work, 'round1')
    for key in ('model_first', 'model'):
        assert os.path.isfile(ModelDir(os.path.join(r1, ROUND_FILES[key])).weights_path), key
    for i in range(3):
        assert os.path.isfile(os.path.join(r1, ROUND_FILES['structures'], 'vol_%03d.mrc' % i))
    back = load_particles(out)
    repaired = load_particles(os.path.join(r1, ROUND_FILES['repaired']))
    np.testing.assert_array_equal(back.images[np.arange(len(back))],
                                  stripped.images[np.arange(len(stripped))])
    np.testing.assert_allclose(back.euler, repaired.euler, atol=1e-6)
    search = starfile.read(os.path.join(r1, ROUND_FILES['search']),
                           always_dict=True)['particles']
    posed = starfile.read(out, always_dict=True)['particles']
    np.testing.assert_allclose(posed[CONFIDENCE_LABEL], search[CONFIDENCE_LABEL])
    R_true = euler_to_matrix(*gt['euler'].T)
    first = load_particles(os.path.join(work, 'search_reference.star'))
    err_first = rotation_angle_deg(euler_to_matrix(*first.euler.T), R_true)
    err = rotation_angle_deg(euler_to_matrix(*back.euler.T), R_true)
    assert np.median(err_first) < final_step, np.round(err_first, 1)
    assert np.median(err) < final_step, np.round(err, 1)
