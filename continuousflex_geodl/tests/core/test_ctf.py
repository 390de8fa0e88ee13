"""CTF (core.ctf) against analytic zeros, values and the wavelength formula."""
import numpy as np
import pytest

from continuousflex_geodl.core import ctf

LAM300 = ctf.electron_wavelength(300.0)


def _radial_freqs(angle_deg, s):
    """(n, 2) frequencies (fx, fy) along direction ``angle_deg`` at radii ``s``."""
    a = np.deg2rad(angle_deg)
    return np.stack([s * np.cos(a), s * np.sin(a)], axis=-1)


def _sign_change_intervals(s, c):
    """Intervals [s_k, s_k+1] of a sampled profile where the sign changes."""
    k = np.nonzero(np.sign(c[:-1]) * np.sign(c[1:]) < 0)[0]
    return s[k], s[k + 1]


def _assert_zeros_at(s, c, expected):
    lo, hi = _sign_change_intervals(s, c)
    expected = np.asarray(expected)
    assert len(lo) == len(expected), (len(lo), len(expected))
    step = s[1] - s[0]
    # each analytic zero lies inside its sampled sign-change interval (within one sample)
    assert np.all(expected >= lo - 1e-12 * step) and np.all(expected <= hi + 1e-12 * step)


def test_wavelengths():
    # relativistic de Broglie wavelengths (International Tables / standard EM values)
    assert ctf.electron_wavelength(300.0) == pytest.approx(0.019687, abs=2e-6)
    assert ctf.electron_wavelength(200.0) == pytest.approx(0.025079, abs=2e-6)
    assert ctf.electron_wavelength(100.0) == pytest.approx(0.037014, abs=2e-6)
    assert round(float(LAM300), 4) == 0.0197


def test_zero_crossings_pure_defocus():
    df = 15000.0
    s = np.linspace(0.0, 0.25, 20001)
    c = ctf.compute_ctf(_radial_freqs(0.0, s), df, df, 0.0, 300.0, 0.0, 0.0)
    k = np.arange(1, 200)
    zeros = np.sqrt(k / (df * LAM300))     # gamma = -pi df lambda s^2 = -k pi
    _assert_zeros_at(s, c, zeros[zeros < s[-1]])
    # also the value: C = sin(-pi df lambda s^2)
    np.testing.assert_allclose(c, np.sin(-np.pi * df * LAM300 * s ** 2), atol=1e-12)


def test_zero_crossings_with_spherical_aberration():
    df, cs_mm = 12000.0, 2.7
    cs = cs_mm * 1e7
    s = np.linspace(0.0, 0.3, 30001)
    c = ctf.compute_ctf(_radial_freqs(17.0, s), df, df, 0.0, 300.0, cs_mm, 0.0)
    # gamma = -k pi  <=>  (Cs lam^3 / 4) x^2 - (df lam / 2) x + k / 2 = 0, x = s^2
    # (smaller root: the branch before the Cs term turns gamma round)
    a, b = cs * LAM300 ** 3 / 4, df * LAM300 / 2
    zeros = []
    for k in range(1, 400):
        disc = b * b - 2 * a * k
        if disc < 0:
            break
        x = (b - np.sqrt(disc)) / (2 * a)
        if np.sqrt(x) < s[-1]:
            zeros.append(np.sqrt(x))
    assert len(zeros) > 10
    _assert_zeros_at(s, c, zeros)


def test_astigmatism_zeros_follow_dfu_and_dfv():
    dfu, dfv, ang = 21000.0, 14000.0, 33.0
    s = np.linspace(0.0, 0.2, 20001)
    k = np.arange(1, 300)
    for direction, df in ((ang, dfu), (ang + 90.0, dfv), (ang + 180.0, dfu)):
        c = ctf.compute_ctf(_radial_freqs(direction, s), dfu, dfv, ang, 300.0, 0.0, 0.0)
        zeros = np.sqrt(k / (df * LAM300))
        _assert_zeros_at(s, c, zeros[zeros < s[-1]])
    # at 45 degrees from the axes the defocus is the mean
    c = ctf.compute_ctf(_radial_freqs(ang + 45.0, s), dfu, dfv, ang, 300.0, 0.0, 0.0)
    zeros = np.sqrt(k / (0.5 * (dfu + dfv) * LAM300))
    _assert_zeros_at(s, c, zeros[zeros < s[-1]])


def test_value_at_zero_frequency_is_minus_w():
    f0 = np.zeros((1, 2))
    for w in (0.0, 0.07, 0.1, 0.3):
        c = ctf.compute_ctf(f0, 15000.0, 14000.0, 10.0, 300.0, 2.7, w)
        assert c[0] == pytest.approx(-w, abs=1e-12)


def test_phase_shift_90_degrees():
    df, w = 8000.0, 0.1
    f0 = np.zeros((1, 2))
    c0 = ctf.compute_ctf(f0, df, df, 0.0, 300.0, 2.7, w, phase_shift=90.0)
    assert c0[0] == pytest.approx(-np.sqrt(1 - w ** 2), abs=1e-12)  # full contrast at DC
    # w = 0, Cs = 0: C = sin(gamma0 - pi/2) = -cos(gamma0); zeros at gamma0 = -(k + 1/2) pi
    s = np.linspace(0.0, 0.25, 20001)
    c = ctf.compute_ctf(_radial_freqs(60.0, s), df, df, 0.0, 300.0, 0.0, 0.0,
                        phase_shift=90.0)
    np.testing.assert_allclose(c, -np.cos(-np.pi * df * LAM300 * s ** 2), atol=1e-12)
    zeros = np.sqrt((np.arange(0, 200) + 0.5) / (df * LAM300))
    _assert_zeros_at(s, c, zeros[zeros < s[-1]])


def test_bfactor_envelope():
    freqs = ctf.frequency_grid(32, 1.5)
    c = ctf.compute_ctf(freqs, 15000.0, 13000.0, 20.0, 300.0, 2.7, 0.1)
    cb = ctf.compute_ctf(freqs, 15000.0, 13000.0, 20.0, 300.0, 2.7, 0.1, bfactor=100.0)
    s2 = (freqs ** 2).sum(-1)
    np.testing.assert_allclose(cb, c * np.exp(-100.0 / 4 * s2), atol=1e-12)


def test_frequency_grid_layout():
    g = ctf.frequency_grid(8, 2.0)
    assert g.shape == (8, 8, 2)
    np.testing.assert_allclose(g[0, 1], [1 / 16.0, 0.0])     # [iy, ix]; fx along ix
    np.testing.assert_allclose(g[1, 0], [0.0, 1 / 16.0])
    np.testing.assert_allclose(g[4, 4], [-0.25, -0.25])       # Nyquist, unshifted layout


def test_torch_batched_matches_numpy():
    torch = pytest.importorskip('torch')
    freqs = ctf.frequency_grid(16, 2.0)
    p = np.array([[15000., 14000., 30., 300., 2.7, 0.1, 0.],
                  [22000., 25000., -70., 200., 2.0, 0.07, 45.]])
    ref = np.stack([ctf.compute_ctf(freqs, *row) for row in p])
    got = ctf.compute_ctf(torch.as_tensor(freqs), *[torch.as_tensor(p[:, k]) for k in range(7)])
    assert got.shape == (2, 16, 16)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    got_np = ctf.compute_ctf(freqs, *[p[:, k] for k in range(7)])
    np.testing.assert_allclose(got_np, ref, atol=1e-12)
