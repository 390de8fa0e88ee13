"""Fast tests of the realistic benchmark (benchmarks/realistic): the independent
simulator against analytic facts and independent libraries, the star files
against continuousflex_geodl's reader, and the oracle on a tiny set.

The simulator itself never imports continuousflex_geodl; these tests do, only
to cross-check conventions (rotation matrix, image formation, star reading).
"""
import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'realistic'))

import simulator as S  # noqa: E402
import datasets as D  # noqa: E402


def test_simulator_imports_nothing_from_the_package():
    for mod in ('simulator.py', 'datasets.py'):
        with open(os.path.join(os.path.dirname(HERE), 'realistic', mod)) as f:
            src = f.read()
        code = [ln for ln in src.splitlines() if ln.strip().startswith(('import ', 'from '))]
        offending = [ln for ln in code if 'continuousflex_geodl' in ln]
        # datasets.py may use the package's metrics to SCORE the oracle (not to simulate)
        assert all('metrics' in ln for ln in offending), offending


@pytest.mark.parametrize('element', ['C', 'N', 'O', 'S'])
def test_projected_atom_integral_is_f0(element):
    """Integral of one atom's projection = f(0) = sum a_k, exact and tabulated paths."""
    terms = S.AtomTerms([element], None, bfactor=15.0)
    f0 = S.scattering_factor(element, 0.0)
    assert f0 == pytest.approx(sum(S.PENG1996[element][0]), rel=1e-12)
    R = S.euler_matrix([33.0], [71.0], [-120.0])
    for exact in (True, False):
        img = S.project(np.array([[1.3, -2.1, 0.7]]), terms, R, np.array([[0.4, -0.9]]),
                        32, 1.5, exact=exact)
        assert img.sum() == pytest.approx(f0, rel=1e-6)
    vol = S.potential_volume(np.array([[1.3, -2.1, 0.7]]), terms, 24, 1.5)
    assert vol.sum() == pytest.approx(f0, rel=1e-6)


def test_projected_atom_fourier_transform_is_the_scattering_factor():
    """The DFT of a pixel-integrated atom image equals f(q/2) exp(-B q^2/4) times the
    pixel-integration sinc (s = q/2 convention, sigma^2 = (b + B)/(8 pi^2)); fine
    pixels, so aliasing is negligible."""
    B, apix, box = 10.0, 0.2, 128
    terms = S.AtomTerms(['N'], None, bfactor=B)
    img = S.project(np.zeros((1, 3)), terms, np.eye(3)[None], np.zeros((1, 2)), box, apix)[0]
    ft = np.fft.fft2(np.fft.ifftshift(img))    # atom at pixel box//2 -> real, even transform
    q = np.fft.fftfreq(box, d=apix)
    for k in (1, 5, 10, 20, 30):
        expect = S.scattering_factor('N', q[k] / 2, bfactor=B) * np.sinc(q[k] * apix)
        assert ft[0, k].real == pytest.approx(expect, rel=1e-4, abs=1e-8)
        assert ft[k, 0].real == pytest.approx(expect, rel=1e-4, abs=1e-8)


def test_rotation_is_relion_convention():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(3)
    e = S.uniform_eulers(200, rng)
    M = S.euler_matrix(*e.T)
    # independent construction: RELION's A = (intrinsic active ZYZ rotation)^T
    ref = Rotation.from_euler('ZYZ', e, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(M, ref, atol=1e-12)
    # the third row is the viewing direction (cos rot sin tilt, sin rot sin tilt, cos tilt)
    r, t = np.deg2rad(e[:, 0]), np.deg2rad(e[:, 1])
    np.testing.assert_allclose(M[:, 2], np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t),
                                                  np.cos(t)], 1), atol=1e-12)
    # round trip through the angles
    np.testing.assert_allclose(S.euler_matrix(*S.matrix_to_euler(M)), M, atol=1e-10)
    # cross-check once against the package (Xmipp/RELION Euler_angles2matrix)
    from continuousflex_geodl.core.geometry import euler_to_matrix
    np.testing.assert_allclose(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), M, atol=1e-12)


def test_ctf_zeros_and_astigmatism():
    lam = S.electron_wavelength(300.0)
    assert lam == pytest.approx(0.019687, abs=2e-6)   # tabulated 300 kV value
    df, cs = 15000.0, 2.7e7                           # A
    # gamma = -k pi  <=>  (1/4) cs lam^3 x^2 - (1/2) df lam x + k/2 = 0, x = q^2 (small root)
    for k in (1, 2, 5):
        a, b, c = 0.25 * cs * lam ** 3, -0.5 * df * lam, 0.5 * k
        x = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
        q = np.sqrt(x)
        for ang in (0.0, 40.0, 135.0):
            qx, qy = q * np.cos(np.deg2rad(ang)), q * np.sin(np.deg2rad(ang))
            assert abs(S.ctf_at(qx, qy, df, df, 0.0, 300.0, 2.7, 0.0)) < 1e-9
            # with amplitude contrast w the value there is -w cos(-k pi)
            assert S.ctf_at(qx, qy, df, df, 0.0, 300.0, 2.7, 0.1) == pytest.approx(
                -0.1 * np.cos(k * np.pi), abs=1e-9)
        # astigmatism: along the angle, defocus U; perpendicular to it, defocus V
        dfang = 30.0
        th = np.deg2rad(dfang)
        assert abs(S.ctf_at(q * np.cos(th), q * np.sin(th), df, df - 2000, dfang, 300, 2.7,
                            0.0)) < 1e-9
        qv = np.sqrt((-(-0.5 * (df - 2000) * lam)
                      - np.sqrt((0.5 * (df - 2000) * lam) ** 2 - 4 * a * c)) / (2 * a))
        assert abs(S.ctf_at(-qv * np.sin(th), qv * np.cos(th), df, df - 2000, dfang, 300, 2.7,
                            0.0)) < 1e-9
    # at q = 0 the CTF is -w; the stored image is -CTF (protein white)
    assert S.ctf_at(0.0, 0.0, df, df, 0, 300, 2.7, 0.07) == pytest.approx(-0.07)


def test_shift_and_axes_follow_relion():
    """An atom at the origin with shift t lands at pixel D//2 + t/apix, x = column."""
    terms = S.AtomTerms(['C'], None, bfactor=20.0)
    t = np.array([[6.0, -4.0]])
    img = S.project(np.zeros((1, 3)), terms, np.eye(3)[None], t, 32, 2.0)[0]
    iy, ix = np.indices(img.shape)
    cx, cy = (img * ix).sum() / img.sum(), (img * iy).sum() / img.sum()
    assert cx == pytest.approx(16 + 3.0, abs=1e-6) and cy == pytest.approx(16 - 2.0, abs=1e-6)
    # the x axis of the volume goes along image columns with tilt 0
    img2 = S.project(np.array([[4.0, 0.0, 0.0]]), terms, S.euler_matrix([0.0], [0.0], [0.0]),
                     np.zeros((1, 2)), 32, 2.0)[0]
    assert (img2 * ix).sum() / img2.sum() == pytest.approx(18.0, abs=1e-6)


def test_images_match_the_package_image_formation():
    """Same molecule, pose and CTF: our all-atom image and the package's Gaussian
    pseudo-atom render (one Gaussian per atom) agree in convention (corr > 0.99;
    a mirrored or shifted convention gives far less)."""
    from continuousflex_geodl.core.simulation.imaging import render_images
    adk = S.load_adk()
    terms = S.AtomTerms(adk['elements'], adk['n_hydrogens'], 20.0)
    rng = np.random.default_rng(1)
    n = 3
    e = S.uniform_eulers(n, rng)
    sh = rng.normal(0, 4, (n, 2))
    ctf = dict(dfu=np.full(n, 15000.), dfv=np.full(n, 14000.), dfang=np.full(n, 30.),
               kv=np.full(n, 300.), cs=np.full(n, 2.7), w=np.full(n, .1), phase_shift=np.zeros(n))
    mine = S.clean_images(adk['coords'][0], terms, S.euler_matrix(*e.T), sh, ctf, 64, 2.0, pad=1)
    ctf7 = np.stack([ctf[k] for k in ('dfu', 'dfv', 'dfang', 'kv', 'cs', 'w', 'phase_shift')], 1)
    theirs = render_images(adk['coords'][0], terms.amp.sum(1), 1.0, e, sh, ctf7, 64, 2.0)
    for i in range(n):
        assert np.corrcoef(mine[i].ravel(), theirs[i].ravel())[0, 1] > 0.99
        assert np.corrcoef(mine[i][:, ::-1].ravel(), theirs[i].ravel())[0, 1] < 0.9


def test_pose_errors_have_the_target_medians():
    pc = S.load_adk()['path_coord']
    b = D.make_base(4000, 32, 4.0, 5, pc)
    assert np.median(b['rot_err_deg']) == pytest.approx(D.ROT_ERR_MEDIAN_DEG, rel=0.06)
    assert np.median(b['shift_err']) == pytest.approx(D.SHIFT_ERR_MEDIAN_A, rel=0.06)
    # three-state populations follow the law, uniform covers every frame
    st = b['states']['three_state']
    np.testing.assert_allclose(np.bincount(st) / len(st), [0.4, 0.2, 0.4], atol=0.03)
    assert len(np.unique(b['frames']['uniform'])) == len(pc)


@pytest.fixture(scope='module')
def tiny_sets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('realistic'))
    D.make_sets(root, n=160, box=32, apix=4.0, snrs=(0.1,), seed=1, pops=['three_state'],
                log=lambda *a: None)
    res = D.oracle(root, box=32, apix=4.0, n=160, seed=1, snrs=(0.1,), pops=['three_state'],
                   log=lambda *a: None, chunk=20)
    return root, res


def test_star_round_trips_through_the_package_reader(tiny_sets):
    from continuousflex_geodl.core.particles import load_particles
    root, _ = tiny_sets
    for poses in ('exact', 'noisy'):
        d = os.path.join(root, D.set_name('three_state', 32, 0.1, poses))
        ps = load_particles(os.path.join(d, 'particles.star'))
        with np.load(os.path.join(d, 'ground_truth.npz')) as g:
            np.testing.assert_allclose(ps.euler, g['euler_star'], atol=1e-5)
            np.testing.assert_allclose(ps.shifts, g['shifts_star'], atol=1e-5)  # t = -origin
            np.testing.assert_allclose(ps.ctf[:, 0], g['ctf_dfu'], atol=1e-2)
            np.testing.assert_allclose(ps.ctf[:, 2], g['ctf_dfang'], atol=1e-3)
            assert ps.apix == 4.0 and ps.box == 32 and len(ps) == 160
            if poses == 'exact':
                np.testing.assert_allclose(ps.euler, g['euler_true'], atol=1e-5)
            else:
                assert not np.allclose(ps.euler, g['euler_true'], atol=0.1)
        imgs = ps.images[np.arange(5)]
        stack = S.read_star_columns(os.path.join(d, 'particles.star'))['rlnImageName'][0]
        assert stack.startswith('000001@Stacks/')
        assert np.isfinite(imgs).all() and imgs.std() > 0


def test_oracle_is_better_than_chance(tiny_sets):
    root, res = tiny_sets
    r = res[D.set_name('three_state', 32, 0.1, 'exact')]
    assert r['spearman_posterior_mean'] > 0.6
    assert r['knn_error_posterior_mean'] < 0.6      # ~1 at chance
    assert r['state_accuracy'] > 0.6               # 3 states, chance ~0.4
    with open(os.path.join(root, D.set_name('three_state', 32, 0.1, 'noisy'), 'oracle.json')) as f:
        assert json.load(f) == r
