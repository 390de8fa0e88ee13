"""Pose-free route (``core.poses``, ``continuousflex-geodl poses``) and the sign of
every pose export.

Ground truth generated here: particles simulated with known rotations and
shifts (``core.simulate``), an independent pixel-centroid check of RELION's
origin convention, round trips through the star reader and the Scipion
converters.
"""
import os

import numpy as np
import pytest

from continuousflex_geodl.core import cli
from continuousflex_geodl.core.geometry import (euler_to_matrix, random_rotations,
                                                rotation_angle_deg)
from continuousflex_geodl.core.io.star import write_star
from continuousflex_geodl.core.models.reference import build_reference
from continuousflex_geodl.core.particles import ParticleSet, load_particles
from continuousflex_geodl.core.poses import (CONFIDENCE_LABEL, SCORE_LABEL, posed_particles,
                                             refine_poses, search_poses, so3_grid)

pytestmark = pytest.mark.usefixtures('one_thread')

#: search settings of the tests (coarse grid 15 deg; local steps 7.5, 3.75, 1.875)
SEARCH = dict(coarse_step=15.0, final_step=2.0, n_candidates=3)
FINAL_STEP = 1.875
APIX = 4.0


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
    """12 nearly noiseless particles (SNR 1e4) of one conformation, posed by the CLI."""
    from continuousflex_geodl.core.simulate import simulate_dataset
    folder = tmp_path_factory.mktemp('poses')
    sim = str(folder / 'sim')
    paths = simulate_dataset(sim, n_particles=12, box=32, apix=APIX, snr=1e4,
                             population='grid', n_states=1, sigma=4.0, max_shift=4.0,
                             seed=4)
    gt = np.load(paths['ground_truth'])
    stripped = load_particles(paths['particles_star'])  # angles and origins removed
    stripped.euler = stripped.shifts = None
    star = write_star(str(folder / 'no_angles.star'), stripped)
    assert load_particles(star).euler is None
    posed = str(folder / 'posed.star')
    rc = cli.main(['poses', '--particles', star,
                   '--reference', os.path.join(sim, 'reference.npz'), '--out', posed,
                   '--angular-step', '15', '--final-step', '2', '--candidates', '3',
                   '--model-rounds', '0', '--threads', '1'])
    assert rc == 0
    return dict(star=star, posed=posed, gt=gt,
                ref=os.path.join(sim, 'reference.npz'))


def test_global_search_recovers_rotations_within_the_final_grid_step(clean):
    ps = load_particles(clean['posed'])
    err = rotation_angle_deg(euler_to_matrix(*ps.euler.T), euler_to_matrix(*clean['gt']['euler'].T))
    assert err.max() < FINAL_STEP, np.round(err, 2)


def test_global_search_recovers_shifts_with_relion_sign(clean):
    import starfile
    ps = load_particles(clean['posed'])
    t_true = clean['gt']['shifts']
    # sub-pixel: a tenth of a pixel
    assert np.abs(ps.shifts - t_true).max() < 0.1 * APIX
    # the file itself carries RELION's origin = -t
    raw = starfile.read(clean['posed'], always_dict=True)['particles']
    origin = raw[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy()
    assert np.abs(origin + t_true).max() < 0.1 * APIX


def test_posed_star_keeps_order_and_round_trips(clean, tmp_path):
    src, ps = load_particles(clean['star']), load_particles(clean['posed'])
    assert len(ps) == len(src)
    np.testing.assert_array_equal(ps.images[np.arange(len(ps))], src.images[np.arange(len(src))])
    np.testing.assert_allclose(ps.ctf, src.ctf, rtol=1e-6)
    conf = ps.metadata[CONFIDENCE_LABEL].to_numpy()
    assert np.all((conf > 0) & (conf <= 1 + 1e-9))
    assert np.all(np.isfinite(ps.metadata[SCORE_LABEL].to_numpy()))
    again = str(tmp_path / 'again.star')
    write_star(again, ps)
    back = load_particles(again)
    np.testing.assert_allclose(back.euler, ps.euler, atol=1e-5)
    np.testing.assert_allclose(back.shifts, ps.shifts, atol=1e-5)
    np.testing.assert_allclose(back.metadata[CONFIDENCE_LABEL].to_numpy(), conf, atol=1e-6)


def test_confidence_is_higher_for_particles_than_for_pure_noise(clean):
    src = load_particles(clean['star'])
    rng = np.random.default_rng(0)
    noise = ParticleSet(rng.normal(size=(8, 32, 32)).astype(np.float32), APIX,
                        ctf=src.ctf[:8])
    res = search_poses(noise, build_reference(clean['ref']), **SEARCH)
    conf_clean = load_particles(clean['posed']).metadata[CONFIDENCE_LABEL].to_numpy()
    assert conf_clean.min() > np.median(res.confidence)
    assert np.median(res.confidence) < 0.9  # several basins share the posterior
    assert np.all(res.confidence >= 1.0 / SEARCH['n_candidates'] - 1e-6)


def test_local_refinement_export_moves_origins_towards_the_truth(clean, tmp_path):
    """Perturbed poses (3 deg, 2 A) refined by ``refine_poses`` and exported to a
    star: the exported origins move towards -t_true (RELION sign)."""
    from scipy.spatial.transform import Rotation
    src = load_particles(clean['star'])
    gt = clean['gt']
    n = len(src)
    rng = np.random.default_rng(1)
    R_true = euler_to_matrix(*gt['euler'].T)
    R_bad = Rotation.from_rotvec(rng.normal(size=(n, 3)) * np.radians(3.0) / np.sqrt(3)) \
        .as_matrix() @ R_true
    from continuousflex_geodl.core.geometry import matrix_to_euler
    e_bad = np.stack(matrix_to_euler(R_bad), 1)
    t_bad = gt['shifts'] + rng.choice([-2.0, 2.0], size=(n, 2))
    res = refine_poses(src, build_reference(clean['ref']), euler=e_bad, shifts=t_bad,
                       start_step=2.0, final_step=1.0)
    out = str(tmp_path / 'refined.star')
    write_star(out, posed_particles(src, res))
    import starfile
    raw = starfile.read(out, always_dict=True)['particles']
    origin = raw[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy()
    before = np.linalg.norm(-t_bad - (-gt['shifts']), axis=1)
    after = np.linalg.norm(origin - (-gt['shifts']), axis=1)
    assert np.all(after < 0.25 * before), (before, after)
    ang = rotation_angle_deg(res.rotations, R_true)
    assert np.all(ang < rotation_angle_deg(R_bad, R_true))


def test_relion_origin_convention_on_pixels(tmp_path):
    """Independent of the code's own conventions: a blob rendered with core shift t
    sits at pixel centre = box centre - rlnOrigin (RELION), after a star write."""
    import starfile
    import torch
    from continuousflex_geodl.core.render import project
    D, apix = 32, 2.0
    t = np.array([[5.0, -3.0]])
    img = project(torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                  2.0, torch.eye(3, dtype=torch.float64)[None], D, apix,
                  shifts=torch.as_tensor(t)).numpy()
    ps = ParticleSet(img.astype(np.float32), apix, euler=np.zeros((1, 3)), shifts=t)
    path = str(tmp_path / 'blob.star')
    write_star(path, ps)
    raw = starfile.read(path, always_dict=True)['particles']
    origin = raw[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy()[0]
    w = img[0] / img[0].sum()
    yy, xx = np.mgrid[:D, :D]
    centre_px = np.array([(w * xx).sum(), (w * yy).sum()])
    np.testing.assert_allclose(centre_px, D // 2 - origin / apix, atol=1e-3)


def test_so3_grid_covers_rotations_within_its_step():
    step = 15.0
    E = so3_grid(step)
    G = euler_to_matrix(*E.T)
    R = random_rotations(300, rng=0)
    d = np.min(rotation_angle_deg(R[:, None], G[None]), axis=1)
    assert d.max() < step  # every rotation lies within one step of the grid
    assert abs(len(E) - 8 * np.pi ** 2 / np.radians(step) ** 3) < 0.1 * len(E)


def test_posed_star_to_scipion_alignment_keeps_the_shift_sign(clean, tmp_path):
    from continuousflex_geodl.tests import scipion_env
    scipion_env.configure()
    reason = scipion_env.skip_reason()
    if reason:
        pytest.skip(reason)
    from pwem.objects import SetOfParticles
    from continuousflex_geodl import convert
    ps = load_particles(clean['posed'])
    parts = SetOfParticles(filename=str(tmp_path / 'particles.sqlite'))
    n = convert.readParticlesStar(clean['posed'], parts)
    assert n == len(ps)
    for i, p in enumerate(parts.iterItems(orderBy='id', direction='ASC')):
        e, t = convert.matrixToCorePose(p.getTransform().getMatrix(), ps.apix)
        assert rotation_angle_deg(euler_to_matrix(*e), euler_to_matrix(*ps.euler[i])) < 1e-3
        np.testing.assert_allclose(t, ps.shifts[i], atol=1e-4)



def simulated_with_shifted_origins(tmp_path, n_particles):
    """A simulated homogeneous set (32 px, SNR 10) whose particles' origins are
    moved by +-1 A in x and y: (simulation folder, ground truth, particles)."""
    from continuousflex_geodl.core.simulate import simulate_dataset
    sim = str(tmp_path / 'sim')
    paths = simulate_dataset(sim, n_particles=n_particles, box=32, apix=APIX, snr=10.0,
                             population='grid', n_states=1, sigma=4.0, seed=5)
    gt = np.load(paths['ground_truth'])
    ps = load_particles(paths['particles_star'])
    rng = np.random.default_rng(2)
    ps.shifts = gt['shifts'] + rng.choice([-1.0, 1.0], size=(len(ps), 2))
    return sim, gt, ps

def test_training_pose_refinement_exports_origins_with_relion_sign(tmp_path):
    """``train --refine-poses`` on particles whose star origins were perturbed by
    +-1 A: refined_particles.star and refined_poses.npz carry origins (RELION
    sign) that moved towards the simulated truth, and agree with each other."""
    import starfile
    from continuousflex_geodl.core import engine
    sim, gt, ps = simulated_with_shifted_origins(tmp_path, 64)
    bad_star = str(tmp_path / 'perturbed.star')
    write_star(bad_star, ps)
    bad = load_particles(bad_star)
    ref = build_reference(os.path.join(sim, 'reference.npz'))
    out = str(tmp_path / 'model')
    engine.train(bad, (ref.positions, ref.amplitudes, ref.sigma), out, refine_poses=True,
                 epochs=6, batch_size=16, log_every=0, zdim=2, threads=1)
    d = np.load(os.path.join(out, 'refined_poses.npz'))
    raw = starfile.read(os.path.join(out, 'refined_particles.star'),
                        always_dict=True)['particles']
    origin_star = raw[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy()
    np.testing.assert_allclose(origin_star, d['origin_angst'], atol=1e-5)
    np.testing.assert_allclose(d['origin_angst'], -d['shifts'], atol=1e-12)
    o_true, o_bad = -gt['shifts'], -bad.shifts
    before = np.linalg.norm(o_bad - o_true, axis=1).mean()
    after = np.linalg.norm(d['origin_angst'] - o_true, axis=1).mean()
    assert after < 0.8 * before, (before, after)
    # the refined star is read back with the same poses, in the same order
    back = load_particles(os.path.join(out, 'refined_particles.star'))
    np.testing.assert_allclose(back.shifts, d['shifts'], atol=1e-5)
    np.testing.assert_allclose(back.euler, d['euler'], atol=1e-5)
    np.testing.assert_array_equal(back.images[np.arange(4)], bad.images[np.arange(4)])


def test_shift_only_pose_refinement_keeps_the_given_rotations(tmp_path):
    """``pose_rot_sd = 0``: the rotations come out exactly as given, the
    perturbed origins still move towards the simulated truth, and the prior
    counts the shift components only."""
    import torch
    from continuousflex_geodl.core import engine
    from continuousflex_geodl.core.models.pose import PoseCorrection
    sim, gt, ps = simulated_with_shifted_origins(tmp_path, 64)
    bad_star = str(tmp_path / 'perturbed.star')
    write_star(bad_star, ps)
    bad = load_particles(bad_star)
    ref = build_reference(os.path.join(sim, 'reference.npz'))
    out = str(tmp_path / 'model')
    engine.train(bad, (ref.positions, ref.amplitudes, ref.sigma), out, refine_poses=True,
                 pose_rot_sd=0.0, epochs=6, batch_size=16, log_every=0, zdim=2, threads=1)
    d = np.load(os.path.join(out, 'refined_poses.npz'))
    np.testing.assert_array_equal(d['delta'][:, :3], 0.0)
    np.testing.assert_allclose(d['euler'], d['input_euler'], atol=1e-9)
    before = np.linalg.norm(bad.shifts - gt['shifts'], axis=1).mean()
    after = np.linalg.norm(d['shifts'] - gt['shifts'], axis=1).mean()
    assert after < 0.8 * before, (before, after)
    pc = PoseCorrection(3, rot_sd_deg=0.0, shift_sd=2.0)
    with torch.no_grad():
        pc.delta.copy_(torch.tensor([[5.0, -3.0, 1.0, 2.0, 0.0]] * 3))
    np.testing.assert_allclose(pc.penalty(torch.arange(3)).detach().numpy(), 0.5)  # (2 / 2)^2 / 2
    with pytest.raises(ValueError, match='prior widths'):
        PoseCorrection(3, rot_sd_deg=-1.0)


def test_several_references_each_particle_keeps_the_one_that_fits(clean):
    """Against the true cloud and a copy stretched by 30 % along x (not the
    mirror image: projections cannot tell the hand), every clean particle keeps
    the true one, and the star says so."""
    from continuousflex_geodl.core.poses import REFERENCE_LABEL, search_poses_multi
    src = load_particles(clean['star']).subset(np.arange(4))
    ref = build_reference(clean['ref'])
    stretched = (ref.positions * np.array([1.3, 1.0, 1.0], np.float32), ref.amplitudes,
                 ref.sigma)
    res = search_poses_multi(src, [stretched, ref], coarse_step=15.0, final_step=4.0,
                             n_candidates=2)
    assert np.all(res.reference_index == 1)
    meta = posed_particles(src, res).metadata
    assert np.all(meta[REFERENCE_LABEL].to_numpy() == 2)  # 1-based in the star


def test_several_references_share_the_candidates(clean, monkeypatch):
    """``search_poses_multi`` gives each of R references ceil(K / R) of the K
    candidates (at least 2), so that the local refinement costs about one
    search; one reference keeps all K."""
    import math
    from continuousflex_geodl.core.poses import search as S
    seen = []
    real = S.search_poses

    def spy(pset, reference, **kw):
        seen.append(kw['n_candidates'])
        return real(pset, reference, **kw)

    monkeypatch.setattr(S, 'search_poses', spy)
    src = load_particles(clean['star']).subset(np.arange(2))
    ref = build_reference(clean['ref'])
    for n_refs, k in ((1, 5), (3, 5), (2, 7), (4, 3)):
        seen.clear()
        S.search_poses_multi(src, [ref] * n_refs, coarse_step=30.0, final_step=15.0,
                             n_candidates=k, polish=0)
        expect = k if n_refs == 1 else max(S.MIN_CANDIDATES_PER_REFERENCE,
                                           math.ceil(k / n_refs))
        assert seen == [expect] * n_refs


def test_pose_corrections_hold_still_until_pose_start(tmp_path):
    """``pose_start``: no correction moves during the first fraction of the
    training steps (2 epochs x 4 steps here: 0.9 holds all 8 steps, 0.5 lets
    the last 4 move)."""
    from continuousflex_geodl.core import engine
    sim, gt, ps = simulated_with_shifted_origins(tmp_path, 64)
    ref = build_reference(os.path.join(sim, 'reference.npz'))
    moved = {}
    for start in (0.9, 0.5):
        out = str(tmp_path / ('model%g' % start))
        engine.train(ps, (ref.positions, ref.amplitudes, ref.sigma), out, refine_poses=True,
                     pose_start=start, epochs=2, batch_size=16, log_every=0, zdim=2,
                     threads=1)
        moved[start] = np.abs(np.load(os.path.join(out, 'refined_poses.npz'))['delta']).max()
    assert moved[0.9] == 0.0 and moved[0.5] > 0.0, moved
