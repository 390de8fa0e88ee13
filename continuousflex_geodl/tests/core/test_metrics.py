"""Tests of core.metrics against analytic results and independent libraries.

FSC: identical maps, white signal + white noise (FSC = SNR / (1 + SNR) for
half maps with independent noise, sqrt(SNR / (1 + SNR)) for a map against
itself plus noise), the resolution of a Gaussian-low-passed half-map pair
(analytic crossing).  Latents: Spearman invariance under monotone maps,
oracle and random baselines of the kNN error.  Populations: EMD of a shift is
the shift, agreement with scipy and POT.  RMSD: Kabsch against scipy.
"""
import numpy as np
import pytest

from continuousflex_geodl.core import metrics


def _white_map(rng, D, sigma=1.0):
    return rng.normal(0.0, sigma, (D, D, D))


def _shell_counts(D):
    """Number of independent complex Fourier coefficients per shell (half space)."""
    shells = metrics.shell_index((D, D, D))
    return np.bincount(shells.ravel(), minlength=D // 2 + 1)[:D // 2 + 1]


# ----------------------------------------------------------------------------
# FSC and resolution
# ----------------------------------------------------------------------------

def test_fsc_identical_and_negated_maps():
    rng = np.random.default_rng(0)
    m = _white_map(rng, 32)
    freqs, curve = metrics.fsc(m, m, apix=2.0)
    assert len(freqs) == 17 and freqs[0] == 0.0
    assert freqs[-1] == pytest.approx(1.0 / (2 * 2.0))   # Nyquist = 1 / (2 apix)
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    _, neg = metrics.fsc(m, -m)
    np.testing.assert_allclose(neg, -1.0, atol=1e-12)
    # FSC is symmetric and scale invariant
    m2 = m + _white_map(rng, 32)
    np.testing.assert_allclose(metrics.fsc(m, m2)[1], metrics.fsc(3.0 * m2, m)[1],
                               atol=1e-12)


def test_fsc_white_signal_plus_noise_follows_snr():
    rng = np.random.default_rng(1)
    D, snr = 48, 0.5
    signal = _white_map(rng, D)
    half1 = signal + _white_map(rng, D, np.sqrt(1 / snr))
    half2 = signal + _white_map(rng, D, np.sqrt(1 / snr))
    counts = _shell_counts(D)
    use = np.arange(len(counts)) >= 4
    # half maps with independent noise: SNR / (1 + SNR) per shell
    expected = snr / (1 + snr)
    _, c = metrics.fsc(half1, half2)
    sd = (1 - expected ** 2) / np.sqrt(counts)
    assert np.all(np.abs(c[use] - expected) < 5 * sd[use])
    assert c[use].mean() == pytest.approx(expected, abs=0.02)
    # map against the same map plus noise: sqrt(SNR / (1 + SNR))
    expected = np.sqrt(snr / (1 + snr))
    _, c = metrics.fsc(signal, half1)
    sd = (1 - expected ** 2) / np.sqrt(counts)
    assert np.all(np.abs(c[use] - expected) < 5 * sd[use])
    assert c[use].mean() == pytest.approx(expected, abs=0.02)


def test_fsc_2d_ring_correlation():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(64, 64))
    freqs, curve = metrics.fsc(img, img, apix=1.5)
    assert len(curve) == 33
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)


def test_resolution_at_linear_curve_is_exact():
    freqs = np.arange(33) / (64 * 1.0)
    curve = 1.0 - 1.6 * freqs          # crosses 0.5 at f = 0.3125, 0.143 at 0.5356
    assert metrics.resolution_at(freqs, curve, 0.5) == pytest.approx(1 / 0.3125)
    # never below 0.143 up to Nyquist (0.5): reports Nyquist = 2 apix
    assert metrics.resolution_at(freqs, curve, 0.143) == pytest.approx(2.0)


def test_resolution_of_gaussian_low_passed_half_maps():
    """Half maps = G * X + N_i, X and N_i white: SNR(k) = G(k)^2 / n^2, so the
    FSC crosses 0.5 where G = n: k* = s sqrt(2 ln(1/n)) Fourier pixels."""
    rng = np.random.default_rng(3)
    D, apix, s, n = 64, 2.0, 8.0, 0.3
    k = np.sqrt(sum(g ** 2 for g in np.meshgrid(*([np.fft.fftfreq(D) * D] * 3),
                                                 indexing='ij')))
    G = np.exp(-k ** 2 / (2 * s ** 2))
    low = np.fft.ifftn(np.fft.fftn(_white_map(rng, D)) * G).real
    half1 = low + _white_map(rng, D, n)
    half2 = low + _white_map(rng, D, n)
    freqs, curve = metrics.fsc(half1, half2, apix)
    k_star = s * np.sqrt(2 * np.log(1 / n))
    expected = D * apix / k_star
    assert metrics.resolution_at(freqs, curve, 0.5) == pytest.approx(expected, rel=0.05)
    # and 0.143 where SNR = 0.143 / 0.857
    k_143 = s * np.sqrt(np.log(0.857 / (0.143 * n ** 2)))
    assert metrics.resolution_at(freqs, curve, 0.143) == pytest.approx(
        D * apix / k_143, rel=0.05)


def test_fsc_auc_perfect_and_unrelated_maps():
    rng = np.random.default_rng(4)
    a, b = _white_map(rng, 32), _white_map(rng, 32)
    f, c = metrics.fsc(a, a, apix=3.0)
    assert metrics.fsc_auc(f, c) == pytest.approx(0.5)
    assert metrics.fsc_auc(f, c, apix=3.0) == pytest.approx(0.5)
    f, c = metrics.fsc(a, b, apix=3.0)
    assert abs(metrics.fsc_auc(f, c)) < 0.03
    per = metrics.fsc_auc_per_conformation([a, b], [a, a], apix=3.0)
    assert per[0] == pytest.approx(0.5) and abs(per[1]) < 0.03


def test_fsc_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match='different shapes'):
        metrics.fsc(np.zeros((8, 8, 8)), np.zeros((16, 16, 16)))


# ----------------------------------------------------------------------------
# Masks and map-to-map distances
# ----------------------------------------------------------------------------

def test_soft_spherical_mask_profile():
    m = metrics.soft_spherical_mask(32, radius=10, width=4)
    c = 16
    assert m[c, c, c] == 1.0 and m[c, c, c + 10] == 1.0
    assert m[c, c, c + 12] == pytest.approx(0.5)   # half-way through the edge
    assert m[c, c, c + 14] == 0.0 and m[0, 0, 0] == 0.0
    profile = m[c, c, c:]
    assert np.all(np.diff(profile) <= 0)
    assert np.allclose(m, m.transpose(2, 1, 0))


def test_map_distances_identical_and_correlation_equals_pearson():
    rng = np.random.default_rng(5)
    D = 24
    a = _white_map(rng, D) + 3.0
    d = metrics.map_distances(a, a, apix=2.0, mask=True)
    assert d['l2'] == pytest.approx(0.0, abs=1e-9)
    assert d['correlation'] == pytest.approx(1.0)
    assert d['one_minus_mean_fsc'] == pytest.approx(0.0, abs=1e-9)
    assert d['res_fsc05'] == pytest.approx(4.0)          # Nyquist, 2 * apix
    assert d['fsc_auc'] == pytest.approx(0.5)
    # the correlation is Pearson's r of the masked voxels; with a binary mask and
    # z-score normalisation the squared L2 distance is 2 n (1 - r)
    b = 0.6 * a + 0.8 * _white_map(rng, D)
    mask = metrics.soft_spherical_mask(D, radius=9, width=0)
    sel = mask > 0.5
    d = metrics.map_distances(a, b, mask=mask, normalise='zscore')
    r = np.corrcoef(a[sel], b[sel])[0, 1]
    assert d['correlation'] == pytest.approx(r, rel=1e-9)
    assert metrics.map_distances(a, b, mask=mask)['correlation'] == pytest.approx(r, rel=1e-9)
    assert d['l2'] == pytest.approx(2 * sel.sum() * (1 - r), rel=1e-9)


def test_map_distances_invariant_to_intensity_scale_and_offset():
    rng = np.random.default_rng(6)
    a, b = _white_map(rng, 20), _white_map(rng, 20)
    b = a + 0.5 * b
    d1 = metrics.map_distances(a, b, apix=1.0, mask=True)
    d2 = metrics.map_distances(4.0 * a - 7.0, 0.1 * b + 2.0, apix=1.0, mask=True)
    for key in d1:
        assert d2[key] == pytest.approx(d1[key], rel=1e-9, abs=1e-12)
    assert d1['l2'] > 0 and 0 < d1['correlation'] < 1


def test_normalise_map_rejects_constant_maps():
    with pytest.raises(ValueError, match='constant'):
        metrics.normalise_map(np.ones((8, 8, 8)))


# ----------------------------------------------------------------------------
# Latent recovery
# ----------------------------------------------------------------------------

def _embedded_coordinate(rng, n=2000, K=4, noise=0.05):
    c = rng.uniform(-1, 1, n)
    u = rng.normal(size=K)
    u /= np.linalg.norm(u)
    z = np.outer(c, u) + noise * rng.normal(size=(n, K))
    return c, z


def test_latent_spearman_pc1_matches_scipy_and_is_monotone_invariant():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(7)
    c, z = _embedded_coordinate(rng)
    rho = metrics.latent_spearman_pc1(z, c)
    pc1 = metrics.principal_axes(z)[:, 0]
    assert rho == pytest.approx(abs(spearmanr(pc1, c).correlation), rel=1e-12)
    assert rho > 0.97
    # invariant under monotone transforms of the coordinate and sign flips of z
    assert metrics.latent_spearman_pc1(z, np.exp(3 * c)) == pytest.approx(rho, rel=1e-12)
    assert metrics.latent_spearman_pc1(-z, c ** 3) == pytest.approx(rho, rel=1e-12)
    # unrelated latents
    assert metrics.latent_spearman_pc1(rng.normal(size=z.shape), c) < 0.1


def test_latent_spearman_axes_two_coordinates():
    rng = np.random.default_rng(8)
    n = 3000
    c = rng.uniform(-1, 1, (n, 2))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    # distinct variances: principal axes line up with the true axes
    z = np.column_stack([3 * c[:, 0], c[:, 1], 0.05 * rng.normal(size=(n, 3))]) @ Q.T
    assert np.all(metrics.latent_spearman_axes(z, c, method='pca') > 0.98)
    assert np.all(metrics.latent_spearman_axes(z, c) > 0.98)
    # equal variances mixed by a 45 degree rotation: principal axes are arbitrary,
    # the regression form is invariant to any invertible linear map of z
    rot = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
    z2 = np.column_stack([c @ rot.T, 0.05 * rng.normal(size=(n, 2))])
    assert np.all(metrics.latent_spearman_axes(z2, c) > 0.98)
    A = rng.normal(size=(4, 4))
    np.testing.assert_allclose(metrics.latent_spearman_axes(z2 @ A.T + 1.0, c),
                               metrics.latent_spearman_axes(z2, c), rtol=1e-9)
    # unrelated latents
    assert np.all(metrics.latent_spearman_axes(rng.normal(size=(n, 4)), c) < 0.1)


def test_knn_neighbourhood_error_oracle_random_and_invariance():
    rng = np.random.default_rng(9)
    n, k = 3000, 10
    c = rng.uniform(0, 1, n)
    # random pairs of U(0, 1) are 1/3 apart on average
    raw = metrics.knn_neighbourhood_error(rng.normal(size=(n, 3)), c, k, normalise=False)
    assert raw == pytest.approx(1 / 3, abs=0.02)
    assert metrics.knn_neighbourhood_error(rng.normal(size=(n, 3)), c, k) == pytest.approx(
        1.0, abs=0.06)
    # the oracle z = c: neighbours in z are the true neighbours
    best = metrics.knn_neighbourhood_error(c, c, k)
    assert best < 0.02
    # the error depends on neighbourhoods only: rigid motions and scaling of z
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    z = np.outer(c, [1.0, 0.0, 0.0])
    e1 = metrics.knn_neighbourhood_error(z, c, k)
    e2 = metrics.knn_neighbourhood_error(5.0 * z @ Q.T + 2.0, c, k)
    assert e1 == pytest.approx(best, rel=1e-9) and e2 == pytest.approx(e1, rel=1e-9)


def test_neighbourhood_overlap_bounds():
    rng = np.random.default_rng(10)
    n, k = 2000, 10
    c = rng.uniform(0, 1, (n, 2))
    assert metrics.neighbourhood_overlap(2.0 * c + 1.0, c, k) == pytest.approx(1.0)
    rand = metrics.neighbourhood_overlap(rng.normal(size=(n, 2)), c, k)
    assert rand < 0.02


def test_latent_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match='latents'):
        metrics.latent_spearman_pc1(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match='k='):
        metrics.knn_neighbourhood_error(np.zeros((10, 2)), np.arange(10.0), k=10)


# ----------------------------------------------------------------------------
# Populations
# ----------------------------------------------------------------------------

def test_population_emd_of_a_shift_is_the_shift():
    rng = np.random.default_rng(11)
    x = rng.normal(size=500)
    assert metrics.population_emd(x + 0.7, x) == pytest.approx(0.7)
    assert metrics.population_emd([0.0], [1.0]) == pytest.approx(1.0)
    assert metrics.population_emd(x, x) == pytest.approx(0.0, abs=1e-12)


def test_population_emd_agrees_with_scipy_and_pot():
    from scipy.stats import wasserstein_distance
    rng = np.random.default_rng(12)
    u, v = rng.normal(size=300), rng.gamma(2.0, size=200)
    wu, wv = rng.uniform(size=300), rng.uniform(size=200)
    ours = metrics.population_emd(u, v, wu, wv)
    assert ours == pytest.approx(wasserstein_distance(u, v, wu, wv), rel=1e-9)
    ot = pytest.importorskip('ot')
    pot = ot.emd2_1d(u, v, wu / wu.sum(), wv / wv.sum(), metric='euclidean')
    assert ours == pytest.approx(float(pot), rel=1e-6)
    pot_w1 = ot.wasserstein_1d(u, v, wu / wu.sum(), wv / wv.sum(), p=1)
    assert ours == pytest.approx(float(pot_w1), rel=1e-6)
    # the exact transport linear program on the same problem
    cost = np.abs(u[:, None] - v[None, :])
    assert metrics.ensemble_emd(cost, wu, wv)[0] == pytest.approx(ours, rel=1e-6)


def test_histogram_emd_moves_mass_between_bins():
    centres = np.array([0.0, 0.5, 1.0])
    # 30 % of the mass moves from the first to the last bin: cost 0.3 * 1.0
    assert metrics.histogram_emd([0.5, 0.2, 0.3], [0.2, 0.2, 0.6], centres) == pytest.approx(0.3)


def test_ensemble_emd_matches_assignment_and_pot():
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(13)
    cost = rng.uniform(size=(12, 12))
    r, c = linear_sum_assignment(cost)
    emd, plan = metrics.ensemble_emd(cost)
    assert emd == pytest.approx(cost[r, c].mean(), rel=1e-7)
    np.testing.assert_allclose(plan.sum(1), 1 / 12, atol=1e-9)
    ot = pytest.importorskip('ot')
    cost = rng.uniform(size=(7, 5))
    a, b = rng.uniform(size=7), rng.uniform(size=5)
    ref = ot.emd2(a / a.sum(), b / b.sum(), cost)
    assert metrics.ensemble_emd(cost, a, b)[0] == pytest.approx(float(ref), rel=1e-6)


# ----------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------

def test_rmsd_with_and_without_superposition():
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(14)
    p = rng.normal(scale=10.0, size=(200, 3))
    R = Rotation.random(random_state=3).as_matrix()
    t = np.array([1.0, -2.0, 2.0])
    q = p @ R.T + t
    assert metrics.rmsd(p, q, superpose=True) == pytest.approx(0.0, abs=1e-9)
    assert metrics.rmsd(p, p + t) == pytest.approx(3.0)      # |t| = 3
    # noisy copy: superposed RMSD equals scipy's optimal rssd / sqrt(N)
    qn = q + rng.normal(scale=0.5, size=q.shape)
    _, rssd = Rotation.align_vectors(qn - qn.mean(0), p - p.mean(0))
    assert metrics.rmsd(p, qn, superpose=True) == pytest.approx(rssd / np.sqrt(len(p)),
                                                                 rel=1e-6)
    # a mirror image cannot be superposed by a proper rotation
    mirror = p * np.array([1.0, 1.0, -1.0])
    assert metrics.rmsd(p, mirror, superpose=True) > 1.0
    # stacks give one value per pair
    out = metrics.rmsd(np.stack([p, p]), np.stack([p, p + t]))
    np.testing.assert_allclose(out, [0.0, 3.0])
    with pytest.raises(ValueError, match='correspondence'):
        metrics.rmsd(p, p[:10])
