"""Half-set validation (``core.validation`` and ``continuousflex-geodl validate``).

Known answers: the FSC of a map with itself is 1 and that of independent white
noise is 0 within its sampling error 1/sqrt(n) per shell; a Procrustes /
affine alignment recovers a rotation, scale and shift generated here; the
half-set error of known differences; the command on a tiny simulated set
writes a complete, self-consistent folder.
"""
import json
import os

import numpy as np
import pytest
from scipy.stats import ortho_group

from continuousflex_geodl.core import metrics
from continuousflex_geodl.core import validation as V


# --------------------------------------------------------------------- split --

def test_split_halves_is_a_seeded_partition():
    a, b = V.split_halves(101, seed=3)
    assert len(a) == 51 and len(b) == 50
    assert np.array_equal(np.sort(np.concatenate([a, b])), np.arange(101))
    a2, b2 = V.split_halves(101, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    a3, _ = V.split_halves(101, seed=4)
    assert not np.array_equal(a, a3)
    with pytest.raises(ValueError, match='at least 4'):
        V.split_halves(3)


# ----------------------------------------------------------------------- FSC --

def _shell_counts(box):
    """Independent complex coefficients per shell (half of the full spectrum)."""
    shells = metrics.shell_index((box,) * 3)
    w = np.broadcast_to(metrics._rfft_weights((box,) * 3), shells.shape)
    return np.bincount(shells.ravel(), weights=w.ravel(), minlength=box // 2 + 1)[
        :box // 2 + 1] / 2.0


def test_fsc_of_identical_maps_is_one_and_of_independent_noise_zero():
    box, apix = 32, 1.5
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, box, box, box))
    same = V.fsc_table(m, m.copy(), apix)              # with the soft mask
    np.testing.assert_allclose(same['curves'], 1.0, atol=1e-12)
    np.testing.assert_allclose(same['resolution'][0.143], 2 * apix)  # Nyquist
    np.testing.assert_allclose(same['freqs'], np.arange(box // 2 + 1) / (box * apix))
    other = rng.normal(size=(2, box, box, box))
    ind = V.fsc_table(m, other, apix, mask_width=0)   # unmasked: white noise
    n = _shell_counts(box)
    z = ind['curves'][:, 2:] * np.sqrt(n[2:])          # ~N(0, 1) per shell
    assert np.abs(z).max() < 4.5
    assert abs(z.mean()) < 4.0 / np.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, abs=0.25)
    # and half-correlated maps: FSC = 0.5 in expectation in every shell
    half = V.fsc_table(m, m + other, apix, mask_width=0)
    expected = 1 / np.sqrt(2)
    assert np.abs(half['curves'][:, 2:] - expected).max() < 5.0 / np.sqrt(n[2:]).min()


# ----------------------------------------------------------------- alignment --

def test_procrustes_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(1)
    k = 4
    x = rng.normal(size=(500, k)) * [3.0, 2.0, 1.0, 0.5]
    q = ortho_group.rvs(k, random_state=2)
    q[:, 0] *= -1  # a reflection too
    s, t = 1.7, np.array([0.5, -2.0, 1.0, 3.0])
    y = s * x @ q + t
    ali = V.fit_alignment(x, y, 'procrustes')
    np.testing.assert_allclose(ali.matrix, s * q, atol=1e-10)
    np.testing.assert_allclose(ali.offset, t, atol=1e-10)
    assert ali.scale == pytest.approx(s)
    np.testing.assert_allclose(ali.apply(x), y, atol=1e-10)
    np.testing.assert_allclose(ali.inverse(y), x, atol=1e-10)
    # with noise on the target: the rotation is still found (error ~ noise / signal)
    y_noisy = y + rng.normal(scale=0.05, size=y.shape)
    ali = V.fit_alignment(x, y_noisy, 'procrustes')
    np.testing.assert_allclose(ali.matrix / ali.scale, q, atol=0.02)
    assert ali.scale == pytest.approx(np.sqrt(((y_noisy - y_noisy.mean(0)) ** 2).sum()
                                              / ((x - x.mean(0)) ** 2).sum()))


def test_linear_alignment_recovers_any_affine_map():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    a = rng.normal(size=(3, 3))
    t = rng.normal(size=3)
    ali = V.fit_alignment(x, x @ a + t, 'linear')
    np.testing.assert_allclose(ali.matrix, a, atol=1e-10)
    np.testing.assert_allclose(ali.offset, t, atol=1e-10)
    assert ali.scale is None
    with pytest.raises(ValueError, match='same particles'):
        V.fit_alignment(x, x[:10])
    with pytest.raises(ValueError, match='Unknown align method'):
        V.fit_alignment(x, x, 'cca')


# ---------------------------------------------------------- latent agreement --

def test_latent_agreement_of_identical_and_of_independent_latents():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2000, 3)) * [2.0, 1.0, 0.5]
    same = V.latent_agreement(z, z)
    np.testing.assert_allclose(same['pearson'], 1.0)
    np.testing.assert_allclose(same['spearman'], 1.0)
    assert same['pc1_pearson'] == pytest.approx(1.0)
    assert same['relative_error_median'] == 0.0
    np.testing.assert_allclose(np.abs(same['pc1_axis']), [1, 0, 0], atol=0.05)
    ind = V.latent_agreement(z, rng.normal(size=z.shape))
    assert np.abs(ind['pearson']).max() < 4 / np.sqrt(len(z))
    assert abs(ind['pc1_spearman']) < 4 / np.sqrt(len(z))
    # a flipped space shows as a negative correlation (not hidden by abs)
    flipped = 2 * z.mean(0) - z
    assert V.latent_agreement(z, flipped)['pc1_pearson'] == pytest.approx(-1.0)


# ---------------------------------------------------------------- landscapes --

def test_compare_states_matches_permuted_states_and_gives_the_half_set_sigma():
    c1 = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    perm = [2, 0, 1]                     # state i of landscape 1 is state perm[i] of 2
    shift = np.array([[0.3, 0.4], [0.0, 0.0], [0.6, 0.8]])   # distances 0.5, 0, 1
    c2 = np.empty_like(c1)
    c2[perm] = c1 + shift
    p1 = np.array([0.5, 0.3, 0.2])
    d = np.array([0.1, -0.1, 0.0])
    p2 = np.empty(3)
    p2[perm] = p1 + d
    g1 = np.array([0.0, 1.0, 2.0])
    g2 = np.empty(3)
    g2[perm] = g1 + [0.0, 0.5, -0.5]
    labels1 = np.array([0, 0, 1, 2, 2, 1])
    labels2 = np.array([perm[i] for i in labels1])
    labels2[-1] = perm[0]                # one particle of 6 changes state
    out = V.compare_states(c1, c2, p1, p2, g1, g2, labels1, labels2)
    assert [(r['state1'], r['state2']) for r in out['states']] == [(0, 2), (1, 0), (2, 1)]
    np.testing.assert_allclose([r['distance'] for r in out['states']], [0.5, 0.0, 1.0])
    np.testing.assert_allclose([r['population_difference'] for r in out['states']], d)
    assert out['population_sigma'] == pytest.approx(np.sqrt(np.mean(d ** 2) / 2))
    assert out['dG_sigma'] == pytest.approx(np.sqrt(np.mean([0, 0.25, 0.25]) / 2))
    assert out['position_sigma'] == pytest.approx(np.sqrt(np.mean([0.25 / 2, 0, 1 / 2]) / 2))
    assert out['same_state_fraction'] == pytest.approx(5 / 6)
    assert out['unmatched1'] == [] and out['unmatched2'] == []
    # a landscape with an extra state: it stays unmatched
    out = V.compare_states(c1, np.vstack([c2, [[20.0, 20.0]]]), p1, np.append(p2, 0.0))
    assert out['unmatched2'] == [3] and len(out['pairs']) == 3


def test_compare_maps_of_the_same_coordinates_is_zero():
    rng = np.random.default_rng(4)
    y = np.concatenate([rng.normal(size=(400, 2)), rng.normal(size=(400, 2)) + [4, 0]])
    fe1, fe2, info = V.compare_maps(y, y.copy(), max_dG=3.0)
    assert info['n_cells'] > 0 and info['rms_difference'] == 0.0 and info['sigma'] == 0.0
    assert [len(c) for c in fe1.centres] == [len(c) for c in fe2.centres]
    # shifted coordinates on the grid of the first: the maps differ
    _, _, info = V.compare_maps(y, y + [1.0, 0.0], max_dG=3.0)
    assert info['rms_difference'] > 0.3


# ------------------------------------------------------------------- command --

@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    from continuousflex_geodl.core.simulate import simulate_dataset
    d = str(tmp_path_factory.mktemp('valsim'))
    paths = simulate_dataset(d, n_particles=96, box=32, apix=4.0, snr=1.0, seed=1)
    return paths


@pytest.mark.usefixtures('one_thread', 'one_openmp_thread')
def test_validate_command_writes_a_complete_consistent_folder(tiny_set, tmp_path):
    from continuousflex_geodl.core import cli
    from continuousflex_geodl.core.artifacts import ValidationDir
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.particles import load_particles
    out = str(tmp_path / 'val')
    rc = cli.main(['validate', '--particles', tiny_set['particles_star'], '--reference',
                   tiny_set['reference_npz'], '--out', out, '--zdim', '2', '--epochs', '2',
                   '--batch-size', '16', '--threads', '1', '--refine-steps', '0',
                   '--bootstrap', '2', '--fe-bootstrap', '2', '--path-points', '3',
                   '--n-states', '2', '--split-seed', '5'])
    assert rc == 0
    v = ValidationDir(out)
    assert v.missing() == []
    rep = v.report()
    with open(v.report_path) as f:
        assert json.load(f) == rep
    # the split: the seeded halves, and their star files hold those particles
    h1, h2 = v.split()
    e1, e2 = V.split_halves(96, 5)
    assert np.array_equal(h1, e1) and np.array_equal(h2, e2)
    full = load_particles(tiny_set['particles_star'])
    for half, rows in ((1, h1), (2, h2)):
        sub = load_particles(v.half_star_path(half))
        np.testing.assert_allclose(sub.euler, full.euler[rows])
        np.testing.assert_allclose(sub.images[:3], full.images[rows[:3]])
        cfg = json.load(open(os.path.join(v.model_path(half), 'config.json')))
        assert cfg['n_particles'] == len(rows) and cfg['zdim'] == 2 and cfg['epochs'] == 2
    # latents of ALL particles from both models; the aligned ones are the map applied
    z1, z2 = np.asarray(v.latents(1)), np.asarray(v.latents(2))
    assert z1.shape == z2.shape == (96, 2)
    with np.load(v.alignment_path) as a:
        assert str(a['method']) == 'procrustes'
        np.testing.assert_array_equal(a['fit_rows'], h1)
        np.testing.assert_allclose(v.aligned(), z2 @ a['matrix'] + a['offset'], rtol=1e-5,
                                   atol=1e-6)
    ag = v.agreement()
    np.testing.assert_array_equal(np.nonzero(ag['held_out'])[0], h2)
    assert len(rep['latent_agreement']['pearson']) == 2
    # FSC: recomputed from the written maps, the same curves
    fsc = v.fsc()
    n_st, n_path = len(fsc['state_latents']), len(fsc['path_latents'])
    assert n_st == rep['landscape']['n_states_half1'] == 2 and n_path == 3
    assert len(v.map_files(1, 'state')) == len(v.map_files(2, 'state')) == n_st
    assert len(v.map_files(1, 'path')) == len(v.map_files(2, 'path')) == n_path
    m1, apix = read_mrc(v.map_files(1, 'path')[1])
    m2, _ = read_mrc(v.map_files(2, 'path')[1])
    again = V.fsc_table(m1[None], m2[None], apix, mask_width=3.0)
    np.testing.assert_allclose(again['curves'][0], fsc['path_curves'][1], atol=1e-5)
    assert fsc['state_curves'].shape == (n_st, 17)
    assert len(rep['fsc']['states']) == n_st and len(rep['fsc']['path']) == n_path
    for key in ('state_position_sigma_latent', 'population_sigma', 'dG_sigma_kT'):
        assert np.isfinite(rep['error_estimates'][key])
    md = open(v.report_md_path).read()
    assert 'FSC' in md and 'latent_agreement.png' in md
    log = open(v.run_log_path).read()
    assert 'validate' in log and 'exit status 0' in log
    # --resume into the folder with another split is refused before anything is trained
    assert cli.main(['validate', '--particles', tiny_set['particles_star'], '--reference',
                     tiny_set['reference_npz'], '--out', out, '--resume',
                     '--split-seed', '6']) == 2
    assert np.array_equal(v.split()[0], h1)
    # the figures are drawn again from the folder (what the viewer does)
    from continuousflex_geodl.core.validation_plots import save_figures
    for p in save_figures(out):
        assert os.path.getsize(p) > 10000
