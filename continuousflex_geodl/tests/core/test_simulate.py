"""Synthetic particle sets with ground truth (core.simulate).

Known answers: the SNR measured independently from the clean and noisy stacks,
the population law's exact CDF, the RMSD asked for between the ends of each
motion, rigid-body geometry of the hinge, a star file read back through
core.particles, and an independent numpy rendering of the clean images from
the ground truth (pose, shift, CTF conventions).
"""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.core import simulate as S

N, BOX, APIX, SNR = 400, 32, 3.0, 0.05


def _read_stack(path):
    import mrcfile
    with mrcfile.open(path, permissive=False) as m:
        return np.array(m.data, dtype=np.float64)


@pytest.fixture(scope='module')
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp('sim')
    paths = S.simulate_dataset(out, n_particles=N, box=BOX, apix=APIX, snr=SNR,
                               motion='hinge', population='three_mode', seed=7,
                               keep_clean=True, chunk_size=64)
    return paths, S.load_ground_truth(paths['ground_truth'])


# ---------------------------------------------------------------- noise / SNR
def test_measured_snr_matches_target_and_noise_is_white_unit(sim):
    paths, _ = sim
    clean = _read_stack(paths['clean_mrcs'])
    noisy = _read_stack(paths['particles_mrcs'])
    assert clean.shape == noisy.shape == (N, BOX, BOX)
    noise = noisy - clean
    snr = clean.var() / noise.var()            # definition: whole box, pooled
    assert abs(snr / SNR - 1) < 0.10
    n = noise.size
    assert abs(noise.var() - 1.0) < 10 * np.sqrt(2.0 / n)   # unit-variance noise
    assert abs(noise.mean()) < 6 / np.sqrt(n)
    # white: neighbouring pixels uncorrelated
    r = np.mean(noise[:, :, 1:] * noise[:, :, :-1]) / noise.var()
    assert abs(r) < 6 / np.sqrt(n)
    summary = json.load(open(paths['summary']))
    assert summary['snr_measured'] == pytest.approx(snr, rel=1e-3)
    assert summary['snr_in_particle_mask'] > summary['snr_measured']


def test_low_snr_target(tmp_path):
    paths = S.simulate_dataset(tmp_path, n_particles=60, box=24, apix=4.0, snr=0.01,
                               motion='linear', population='uniform', seed=1, keep_clean=True)
    clean = _read_stack(paths['clean_mrcs'])
    noise = _read_stack(paths['particles_mrcs']) - clean
    assert abs(clean.var() / noise.var() / 0.01 - 1) < 0.10


# ---------------------------------------------------------------- populations
def _chi2_pvalue(sample, pop, edges):
    from scipy.stats import chisquare
    obs = np.histogram(sample, bins=edges)[0]
    F = pop.cdf(edges)
    F[0], F[-1] = 0.0, 1.0
    exp = np.diff(F) * len(sample)
    return chisquare(obs, exp).pvalue


def test_three_mode_population_matches_law(sim):
    _, gt = sim
    u = gt['coords_unit'][:, 0]
    # the minor middle state: 20 % of the particles, within 4 binomial sd
    frac_mid = np.mean((u > 0.3) & (u < 0.7))
    assert abs(frac_mid - 0.2) < 4 * np.sqrt(0.2 * 0.8 / N)
    assert abs(np.mean(gt['states'] == 1) - 0.2) < 4 * np.sqrt(0.2 * 0.8 / N)
    assert np.all((u >= 0) & (u <= 1))
    np.testing.assert_allclose(gt['coords'][:, 0], u)   # hinge coordinates are unit
    # large sample against the exact (clipped) mixture CDF
    pop = S.Population('three_mode')
    big, labels = pop.sample(20000, np.random.default_rng(0))
    assert _chi2_pvalue(big[:, 0], pop, np.linspace(0, 1, 21)) > 1e-3
    for k, w in enumerate(S.THREE_MODE_WEIGHTS):
        assert abs(np.mean(labels == k) - w) < 4 * np.sqrt(w * (1 - w) / 20000)
    sd = np.std(big[labels == 1, 0] - 0.5)
    assert sd == pytest.approx(S.THREE_MODE_SD, rel=0.05)


def test_uniform_grid_and_2d_populations():
    from scipy.stats import kstest
    rng = np.random.default_rng(3)
    u, lab = S.Population('uniform').sample(5000, rng)
    assert kstest(u[:, 0], 'uniform').pvalue > 1e-3 and np.all(lab == -1)
    g = S.Population('grid', n_states=5)
    u, lab = g.sample(5000, rng)
    np.testing.assert_allclose(u[:, 0], np.linspace(0, 1, 5)[lab])
    for k in range(5):
        assert abs(np.mean(lab == k) - 0.2) < 4 * np.sqrt(0.16 / 5000)
    w = (0.5, 0.3, 0.2)
    p2 = S.Population('three_mode', dim=2, weights=w)
    u, lab = p2.sample(5000, rng)
    assert u.shape == (5000, 2)
    for k in range(3):
        assert abs(np.mean(lab == k) - w[k]) < 4 * np.sqrt(w[k] * (1 - w[k]) / 5000)
        np.testing.assert_allclose(np.median(u[lab == k], 0), p2.centres[k], atol=0.01)
    with pytest.raises(ValueError, match='weights'):
        S.Population('three_mode', weights=(1, 1))


# ---------------------------------------------------------------- motions
@pytest.mark.parametrize('kind', ['hinge', 'linear', 'nma'])
def test_motion_ends_differ_by_the_rmsd_asked(kind):
    mot = S.make_motion(kind, end_rmsd=5.0, n_modes=1 if kind == 'nma' else 2)
    lo, hi = mot.coord_range[0]
    a, b = mot.conformation(lo), mot.conformation(hi)
    assert a.shape == b.shape == mot.reference.shape
    assert S.rmsd(a, b) == pytest.approx(5.0, rel=1e-6)
    assert S.rmsd(mot.conformation(0.0), mot.reference) == pytest.approx(0.0, abs=1e-9)
    # batched evaluation agrees with single points
    cs = np.linspace(lo, hi, 4)
    batch = mot.conformation(cs)
    assert batch.shape == (4,) + mot.reference.shape
    np.testing.assert_allclose(batch[2], mot.conformation(cs[2]))


def test_hinge_is_a_rigid_rotation_of_one_domain():
    mot = S.make_motion('hinge', end_rmsd=6.0)
    m = mot.params['moving_mask'].astype(bool)
    assert 0 < m.sum() < len(m)
    x0, x1 = mot.reference, mot.conformation(1.0)
    np.testing.assert_allclose(x1[~m], x0[~m])                  # fixed domain still
    d0 = np.linalg.norm(x0[m][:, None] - x0[m][None], axis=-1)
    d1 = np.linalg.norm(x1[m][:, None] - x1[m][None], axis=-1)
    np.testing.assert_allclose(d1, d0, atol=1e-9)               # rigid
    # the rotation found by Kabsch is max_angle about the hinge axis
    p = mot.params['hinge_point']
    H = (x0[m] - p).T @ (x1[m] - p)
    U, _, Vt = np.linalg.svd(H)
    R = Vt.T @ np.diag([1, 1, np.linalg.det(Vt.T @ U.T)]) @ U.T
    angle = np.rad2deg(np.arccos((np.trace(R) - 1) / 2))
    assert angle == pytest.approx(float(mot.params['max_angle_deg']), abs=1e-6)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    np.testing.assert_allclose(w / np.linalg.norm(w), mot.params['hinge_axis'], atol=1e-6)
    # it opens: rotating the other way would bring the domains closer
    from scipy.spatial import cKDTree
    tree = cKDTree(x0[~m])
    gap = lambda x: tree.query(x[m])[0].mean()
    back = S.Motion('hinge', x0, mot.amplitudes, mot.sigma,
                    dict(mot.params, hinge_axis=-mot.params['hinge_axis']))
    assert gap(x1) > gap(back.conformation(1.0))
    assert gap(x1) > gap(x0)


def test_nma_two_modes_amplitudes_are_rmsd():
    mot = S.make_motion('nma', n_modes=2, end_rmsd=6.0)
    assert mot.n_coords == 2
    np.testing.assert_allclose(mot.coord_range, [[-3, 3], [-3, 3]])
    for a in (np.array([2.0, 0.0]), np.array([0.0, -1.5])):
        assert S.rmsd(mot.conformation(a), mot.reference) == pytest.approx(np.abs(a).sum())
    with pytest.raises(ValueError, match='coordinate'):
        mot.conformation(np.zeros(3))


# ---------------------------------------------------------------- files
def test_star_round_trip_gives_ground_truth_poses_and_ctf(sim):
    from continuousflex_geodl.core.geometry import euler_to_matrix
    paths, gt = sim
    try:
        from continuousflex_geodl.core.particles import load_particles
    except ImportError:
        pytest.skip('core.particles.load_particles not available yet')
    pset = load_particles(paths['particles_star'])
    assert len(pset) == N and pset.box == BOX and pset.apix == pytest.approx(APIX)
    np.testing.assert_allclose(euler_to_matrix(*pset.euler.T),
                               euler_to_matrix(*gt['euler'].T), atol=1e-5)
    np.testing.assert_allclose(pset.shifts, gt['shifts'], atol=1e-4)
    np.testing.assert_allclose(pset.ctf, gt['ctf'], rtol=1e-6, atol=1e-3)
    idx = np.array([0, 5, N - 1])
    np.testing.assert_array_equal(pset.images[idx], _read_stack(paths['particles_mrcs'])[idx])


def test_star_columns_follow_relion_conventions(sim):
    import starfile
    paths, gt = sim
    star = starfile.read(paths['particles_star'])
    parts = star['particles']
    np.testing.assert_allclose(parts['rlnOriginXAngst'], -gt['shifts'][:, 0], atol=1e-4)
    np.testing.assert_allclose(parts['rlnOriginYAngst'], -gt['shifts'][:, 1], atol=1e-4)
    np.testing.assert_allclose(parts['rlnDefocusU'], gt['ctf'][:, 0], rtol=1e-6)
    assert np.all(parts['rlnDefocusU'] >= parts['rlnDefocusV'])
    d = 0.5 * (gt['ctf'][:, 0] + gt['ctf'][:, 1])
    assert d.min() >= 10000 and d.max() <= 25000
    assert star['optics']['rlnImagePixelSize'][0] == pytest.approx(APIX)


def test_same_seed_same_data_independent_of_chunking(tmp_path):
    kw = dict(n_particles=24, box=24, apix=4.0, snr=0.1, motion='nma', seed=11)
    a = S.simulate_dataset(tmp_path / 'a', chunk_size=5, **kw)
    b = S.simulate_dataset(tmp_path / 'b', chunk_size=24, **kw)
    c = S.simulate_dataset(tmp_path / 'c', **dict(kw, seed=12))
    ia, ib, ic = (_read_stack(p['particles_mrcs']) for p in (a, b, c))
    np.testing.assert_allclose(ia, ib, rtol=1e-5, atol=1e-5)
    ga, gb, gc = (S.load_ground_truth(p['ground_truth']) for p in (a, b, c))
    for key in ('coords', 'euler', 'shifts', 'ctf', 'state_positions'):
        np.testing.assert_array_equal(ga[key], gb[key])
    # the image scale is a sum over chunks: equal up to the order of float additions
    np.testing.assert_allclose(ga['amplitudes'], gb['amplitudes'], rtol=1e-12)
    assert not np.allclose(ga['coords'], gc['coords'])
    assert not np.allclose(ia, ic)


def _numpy_image(x, amps, sigma, euler, t, ctf_row, box, apix):
    """Independent renderer: sum of 2D Gaussians at (R x)[:2] + t, then -C."""
    from continuousflex_geodl.core.ctf import compute_ctf, frequency_grid
    from continuousflex_geodl.core.geometry import euler_to_matrix
    R = euler_to_matrix(*euler)
    uv = x @ R.T[:, :2] + t
    g = (np.arange(box) - box // 2) * apix
    d2 = (g[None, None, :] - uv[:, 0, None, None]) ** 2 + \
         (g[None, :, None] - uv[:, 1, None, None]) ** 2          # (N, y, x)
    img = np.einsum('n,nyx->yx', amps * np.sqrt(2 * np.pi) * sigma,
                    np.exp(-d2 / (2 * sigma ** 2)))
    C = compute_ctf(frequency_grid(box, apix), *ctf_row)
    return np.fft.ifft2(np.fft.fft2(img) * -C).real


def test_clean_images_are_projections_of_the_ground_truth(sim):
    import torch
    from continuousflex_geodl.core.ctf import compute_ctf, frequency_grid
    from continuousflex_geodl.core.geometry import euler_to_matrix
    from continuousflex_geodl.core.render import project
    paths, gt = sim
    clean = _read_stack(paths['clean_mrcs'])
    idx = np.array([0, 17, 123, N - 1])
    X = S.ground_truth_positions(paths['ground_truth'], indices=idx)
    assert X.shape == (len(idx),) + gt['reference_positions'].shape
    sigma = float(gt['sigma'])
    for j, i in enumerate(idx):
        ref = _numpy_image(X[j], gt['amplitudes'], sigma, gt['euler'][i], gt['shifts'][i],
                           gt['ctf'][i], BOX, APIX)
        scale = np.abs(ref).max()
        np.testing.assert_allclose(clean[i], ref, atol=2e-5 * scale)
    # and core.render.project with the ground-truth pose / CTF
    R = torch.as_tensor(euler_to_matrix(*gt['euler'][idx].T), dtype=torch.float64)
    C = torch.as_tensor(compute_ctf(frequency_grid(BOX, APIX), *gt['ctf'][idx].T))
    img = project(torch.as_tensor(X), torch.as_tensor(gt['amplitudes']), sigma, R, BOX, APIX,
                  shifts=torch.as_tensor(gt['shifts'][idx]), ctf=C).numpy()
    np.testing.assert_allclose(clean[idx], img, atol=2e-5 * np.abs(img).max())


def test_ground_truth_positions_any_coordinate_and_states(sim):
    paths, gt = sim
    mot = S.motion_from_ground_truth(paths['ground_truth'])
    c = np.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(S.ground_truth_positions(gt, coords=c), mot.conformation(c))
    np.testing.assert_allclose(gt['reference_positions'], mot.conformation(0.0))
    np.testing.assert_allclose(gt['state_coords'][:, 0], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(gt['state_positions'], mot.conformation(gt['state_coords'][:, 0]))
    assert len(paths['states_pdb']) == len(paths['states_mrc']) == 3
    assert all(os.path.exists(p) for p in paths['states_pdb'] + paths['states_mrc'])
    import gemmi
    st = gemmi.read_structure(paths['states_pdb'][2])
    xyz = np.array([a.pos.tolist() for r in st[0][0] for a in r]) if len(st[0]) == 1 else \
        np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
    np.testing.assert_allclose(xyz, gt['state_positions'][2], atol=2e-3)


def test_reference_map_projects_to_the_image_scale(sim):
    """reference.mrc is V(r) of the reference with the images' amplitudes:
    its line integral along z equals the exact projection (identity pose)."""
    import mrcfile
    import torch
    from continuousflex_geodl.core.render import project
    paths, gt = sim
    with mrcfile.open(paths['reference_mrc']) as m:
        vol = np.array(m.data, dtype=np.float64)
        assert float(m.voxel_size.x) == pytest.approx(APIX)
    assert vol.shape == (BOX,) * 3
    img = project(torch.as_tensor(gt['reference_positions']), torch.as_tensor(gt['amplitudes']),
                  float(gt['sigma']), torch.eye(3, dtype=torch.float64)[None], BOX, APIX)[0]
    # Riemann sum of a Gaussian of width sigma at spacing h: relative error
    # <= 2 exp(-2 pi^2 sigma^2 / h^2) (Poisson summation), all terms positive
    sigma = float(gt['sigma'])
    bound = 2 * np.exp(-2 * np.pi ** 2 * sigma ** 2 / APIX ** 2)
    img = img.numpy()
    assert np.all(np.abs(vol.sum(0) * APIX - img) <= bound * img + 1e-5 * img.max())
    ref = np.load(paths['reference_npz'])
    np.testing.assert_allclose(ref['positions'], gt['reference_positions'])


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match='even'):
        S.simulate_dataset(tmp_path, n_particles=4, box=31)
    with pytest.raises(ValueError, match='motion'):
        S.make_motion('twist')
    with pytest.raises(ValueError, match='population'):
        S.Population('bimodal')
    with pytest.raises(FileNotFoundError, match='ground truth'):
        S.load_ground_truth(tmp_path / 'nothing.npz')


def test_cli_simulate(tmp_path, capsys):
    from continuousflex_geodl.core.cli import main
    out = tmp_path / 'cli'
    rc = main(['simulate', '--out', str(out), '--n-particles', '16', '--box', '24',
               '--apix', '4', '--snr', '0.1', '--motion', 'nma', '--population', 'grid',
               '--seed', '2'])
    assert rc == 0
    text = capsys.readouterr().out
    assert str(out / 'particles.star') in text
    gt = S.load_ground_truth(out)
    assert gt['coords'].shape == (16, 2)
    # grid states: every particle sits exactly on one of the 3 x 3 states
    d = np.abs(gt['coords'][:, None, :] - gt['state_coords'][None]).sum(-1)
    np.testing.assert_allclose(d.min(1), 0, atol=1e-12)
    assert len(os.listdir(out / 'states')) == 2 * 9
    np.testing.assert_allclose(S.ground_truth_positions(gt, coords=gt['state_coords']),
                               gt['state_positions'])


def test_linear_motion_between_two_given_structures():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)) * 10, rng.normal(size=(50, 3)) * 10
    from continuousflex_geodl.core.structure import Structure
    mot = S.make_motion('linear', structure=Structure(a, np.ones(50), 2.0),
                        end_positions=b)
    np.testing.assert_allclose(mot.conformation(0.0), a)
    np.testing.assert_allclose(mot.conformation(1.0), b)
    np.testing.assert_allclose(mot.conformation(0.25), 0.75 * a + 0.25 * b)
    assert mot.end_to_end_rmsd() == pytest.approx(S.rmsd(a, b))
    with pytest.raises(ValueError, match='same atoms'):
        S.make_motion('linear', structure=Structure(a, np.ones(50), 2.0), end_positions=b[:40])
