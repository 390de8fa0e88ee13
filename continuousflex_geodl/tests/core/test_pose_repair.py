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
