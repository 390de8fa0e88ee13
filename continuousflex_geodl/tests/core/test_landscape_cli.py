"""`continuousflex-geodl landscape ...`: the documented files, their contents and
their consistency; structures written along paths; decoding through a model."""
import json
import os

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from continuousflex_geodl.core.cli import main as cli
from continuousflex_geodl.core.landscape.toy import STATE_POPULATIONS, three_state_curve


pytestmark = pytest.mark.usefixtures('one_openmp_thread')  # conftest.py


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """Latents of the three-state toy, analysed once through the CLI."""
    d = tmp_path_factory.mktemp('land')
    toy = three_state_curve(3000, dim=3, seed=21)
    np.save(str(d / 'z.npy'), toy.latents)
    with threadpool_limits(1, user_api='openmp'):
        rc = cli(['landscape', 'analyze', '--latents', str(d / 'z.npy'), '--out',
                  str(d / 'land'), '--bootstrap', '4', '--fe-bootstrap', '5', '--latent-dG'])
    assert rc == 0
    return d, toy


def test_analyze_writes_documented_files(toy_run):
    d, toy = toy_run
    land = d / 'land'
    for name in ('embedding.npy', 'embedding_model.npz', 'pca.npy', 'pca_model.npz',
                 'free_energy.npz', 'labels.npy', 'states.json', 'states_model.npz',
                 'state_centres.npy', 'state_centres_embedding.npy', 'landscape.png',
                 'summary.json'):
        assert (land / name).exists(), name
    n = len(toy.latents)
    y = np.load(str(land / 'embedding.npy'))
    lab = np.load(str(land / 'labels.npy'))
    assert y.shape == (n, 2) and lab.shape == (n,)
    states = json.loads((land / 'states.json').read_text())
    pops = np.array(states['populations'])
    assert states['n_states'] == 3 and pops.sum() == pytest.approx(1.0)
    assert np.bincount(lab).tolist() == states['counts']
    tab = np.zeros((3, 3))
    np.add.at(tab, (lab, toy.labels), 1)
    for s in range(3):
        assert abs(pops[s] - STATE_POPULATIONS[tab[s].argmax()]) < 0.05
        lo, hi = states['population_ci95'][s]
        assert lo <= pops[s] <= hi
    with np.load(str(land / 'free_energy.npz')) as f:
        assert f['dG'].shape == (len(f['y']), len(f['x']))
        assert np.nanmin(f['dG']) == 0.0 and str(f['units']) == 'kT'
        assert f['particle_dG'].shape == (n,)
        assert np.nanmedian(f['particle_dG']) < 3.0
    from continuousflex_geodl.core.landscape.density import latent_free_energy
    with np.load(str(land / 'latent_dG.npz')) as f:
        np.testing.assert_allclose(f['dG'], latent_free_energy(toy.latents)[0], atol=1e-5)
        assert f['dG'].min() >= 0
    import matplotlib.image as mpimg
    img = mpimg.imread(str(land / 'landscape.png'))
    assert img.ndim == 3 and img.shape[0] > 200
    # PCA map: the embedding is (z - mean) @ components.T of the saved model
    with np.load(str(land / 'embedding_model.npz')) as f:
        np.testing.assert_allclose(y, (toy.latents - f['mean']) @ f['components'].T,
                                   rtol=1e-5, atol=1e-5)


def test_apply_reproduces_the_analysis(toy_run, tmp_path):
    d, toy = toy_run
    assert cli(['landscape', 'apply', '--landscape', str(d / 'land'), '--latents',
                str(d / 'z.npy'), '--out', str(tmp_path)]) == 0
    np.testing.assert_array_equal(np.load(str(tmp_path / 'labels.npy')),
                                  np.load(str(d / 'land' / 'labels.npy')))
    np.testing.assert_allclose(np.load(str(tmp_path / 'embedding.npy')),
                               np.load(str(d / 'land' / 'embedding.npy')), atol=1e-5)
    with np.load(str(d / 'land' / 'free_energy.npz')) as f:
        np.testing.assert_allclose(np.load(str(tmp_path / 'particle_dG.npy')),
                                   f['particle_dG'], atol=1e-4)


@pytest.mark.parametrize('kind,n_points', [('density', 20), ('ridgeline', 12), ('pca', 10)])
def test_path_command(toy_run, tmp_path, kind, n_points):
    d, toy = toy_run
    out = tmp_path / kind
    assert cli(['landscape', 'path', '--latents', str(d / 'z.npy'), '--landscape',
                str(d / 'land'), '--out', str(out), '--kind', kind]) == 0
    lat = np.load(str(out / 'path_latents.npy'))
    assert lat.shape == (n_points, 3)
    info = json.loads((out / 'path.json').read_text())
    assert info['kind'] == kind and info['n_points'] == n_points
    assert (out / 'path.png').exists() and np.load(str(out / 'path_embedding.npy')).shape == \
        (n_points, 2)
    if kind != 'pca':
        # default: the two states farthest apart, i.e. the two end states of the curve
        centres = np.load(str(d / 'land' / 'state_centres.npy'))
        lab = np.load(str(d / 'land' / 'labels.npy'))
        tab = np.zeros((3, 3))
        np.add.at(tab, (lab, toy.labels), 1)
        ends = {int(np.nonzero(tab.argmax(1) == t)[0][0]) for t in (0, 2)}
        assert {info['from_state'], info['to_state']} == ends
        np.testing.assert_allclose(info['start'], centres[info['from_state']], rtol=1e-5)


def test_path_errors_are_clear(toy_run, tmp_path, capsys):
    d, _ = toy_run
    rc = cli(['landscape', 'path', '--latents', str(d / 'z.npy'), '--landscape',
              str(d / 'land'), '--out', str(tmp_path), '--kind', 'density',
              '--from-state', '1', '--to-state', '7'])
    assert rc == 2 and 'State 7 does not exist' in capsys.readouterr().err
    rc = cli(['landscape', 'analyze', '--latents', str(tmp_path / 'missing.npy'), '--out',
              str(tmp_path)])
    assert rc == 2 and 'not found' in capsys.readouterr().err


def test_subset_command_with_star(toy_run, tmp_path):
    from continuousflex_geodl.core.particles import ParticleSet, load_particles, \
        write_particles_star
    d, toy = toy_run
    n = len(toy.latents)
    rng = np.random.default_rng(0)
    pset = ParticleSet(rng.standard_normal((n, 8, 8)).astype(np.float32), 3.0,
                       rng.uniform(0, 90, (n, 3)), np.zeros((n, 2)),
                       np.tile([12000, 12000, 0, 300, 2.7, 0.1, 0], (n, 1)).astype(float))
    star = write_particles_star(str(tmp_path / 'p.star'), pset)
    out = tmp_path / 'sub'
    assert cli(['landscape', 'subset', '--landscape', str(d / 'land'), '--out', str(out),
                '--states', '2', '--particles', star]) == 0
    lab = np.load(str(d / 'land' / 'labels.npy'))
    idx = np.load(str(out / 'subset_indices.npy'))
    np.testing.assert_array_equal(idx, np.nonzero(lab == 2)[0])
    np.testing.assert_array_equal(np.loadtxt(str(out / 'subset_indices.txt'), dtype=int), idx)
    sub = load_particles(str(out / 'particles.star'))
    assert len(sub) == len(idx)
    np.testing.assert_allclose(sub.euler, pset.euler[idx], atol=1e-4)
    # polygon around the whole map and a free-energy cut: intersection semantics
    y = np.load(str(d / 'land' / 'embedding.npy'))
    lo, hi = y.min(0) - 1, y.max(0) + 1
    poly = '%g,%g %g,%g %g,%g %g,%g' % (lo[0], lo[1], hi[0], lo[1], hi[0], hi[1], lo[0], hi[1])
    out2 = tmp_path / 'sub2'
    assert cli(['landscape', 'subset', '--landscape', str(d / 'land'), '--out', str(out2),
                '--polygon', poly, '--max-dG', '1.0']) == 0
    with np.load(str(d / 'land' / 'free_energy.npz')) as f:
        expect = np.nonzero(f['particle_dG'] <= 1.0)[0]
    np.testing.assert_array_equal(np.load(str(out2 / 'subset_indices.npy')), expect)


def test_diagnostics_command(toy_run, tmp_path):
    from continuousflex_geodl.core.landscape.mixture import Mixture
    d, toy = toy_run
    z = toy.latents.astype(float)
    prior = Mixture(z.mean(0, keepdims=True), np.cov(z.T)[None], [1.0])
    prior.save(str(tmp_path / 'prior.npz'))
    np.save(str(tmp_path / 'z2.npy'), z @ np.diag([2.0, -1.0, 0.5]))
    assert cli(['landscape', 'diagnostics', '--latents', str(d / 'z.npy'), '--out',
                str(tmp_path), '--prior', str(tmp_path / 'prior.npz'), '--compare',
                str(tmp_path / 'z2.npy')]) == 0
    out = json.loads((tmp_path / 'diagnostics.json').read_text())
    assert out['prior_fit']['kl_q_p'] > 0.1  # one Gaussian is a poor prior for 3 states
    assert min(out['agreement']['canonical_correlations']) > 0.999


def test_decode_series_pdb_and_volumes(tmp_path):
    """Structures along latent points: PDB models equal the decoded clouds and
    each rendered MRC's centre of mass is the cloud's centre."""
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.landscape.series import decode_series
    from continuousflex_geodl.core.structure import read_pdb
    rng = np.random.default_rng(3)
    base = rng.normal(0, 4, (30, 3))

    def decode_fn(z):
        return base[None] + np.asarray(z)[:, None, :] * 3.0

    lat = np.array([[0, 0, 0], [1, -1, 0.5], [2, -2, 1.0]], np.float32)
    res = decode_series(lat, decode_fn, str(tmp_path), 'path', amplitudes=np.ones(30),
                        sigma=2.0, box=32, apix=2.0)
    np.testing.assert_allclose(read_pdb(res['pdb']), decode_fn(lat), atol=1e-3)
    assert len(res['mrc']) == 3
    for m, f in enumerate(res['mrc']):
        vol, apix = read_mrc(f)
        assert apix == pytest.approx(2.0)
        g = (np.arange(32) - 16) * 2.0
        zz, yy, xx = np.meshgrid(g, g, g, indexing='ij')
        com = np.array([(vol * xx).sum(), (vol * yy).sum(), (vol * zz).sum()]) / vol.sum()
        np.testing.assert_allclose(com, decode_fn(lat)[m].mean(0), atol=0.05)


def test_analyze_and_path_decode_with_a_model(tmp_path):
    """--model: states and path structures come from core.inference and equal
    decode_positions at the saved latent points; the model's prior can be
    used for the states (--prior MODEL_DIR)."""
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.inference import decode_positions, load_model
    from continuousflex_geodl.core.models.flexmodel import build_model
    from continuousflex_geodl.core.structure import read_pdb
    rng = np.random.default_rng(0)
    model = build_model(dict(zdim=3, box=32, apix=2.0, sigma=2.0, prior='gmm',
                             gmm_components=5, enc_modes=4, encoder_inputs='image'),
                        rng.normal(0, 5, (40, 3)).astype(np.float32),
                        np.ones(40, np.float32))
    mdir = tmp_path / 'model'
    mdir.mkdir()
    md = ModelDir(str(mdir))
    md.write_config(model.config)
    md.write_reference(**model.arrays())
    md.write_weights(model.state_dict())
    toy = three_state_curve(1500, dim=3, seed=5)
    np.save(str(tmp_path / 'z.npy'), toy.latents)
    land, path = tmp_path / 'land', tmp_path / 'path'
    assert cli(['landscape', 'analyze', '--latents', str(tmp_path / 'z.npy'), '--out',
                str(land), '--model', str(mdir), '--bootstrap', '2', '--fe-bootstrap',
                '2']) == 0
    assert cli(['landscape', 'path', '--latents', str(tmp_path / 'z.npy'), '--out', str(path),
                '--landscape', str(land), '--kind', 'pca', '--n-points', '4', '--model',
                str(mdir)]) == 0
    m = load_model(str(mdir))
    cen = np.load(str(land / 'state_centres.npy'))
    np.testing.assert_allclose(read_pdb(str(land / 'states' / 'states.pdb')),
                               decode_positions(m, cen), atol=2e-3)
    np.testing.assert_allclose(read_pdb(str(path / 'path.pdb')),
                               decode_positions(m, np.load(str(path / 'path_latents.npy'))),
                               atol=2e-3)
    assert len([f for f in os.listdir(str(path)) if f.endswith('.mrc')]) == 4
    # the model's own (untrained, 5-component) prior as the state model
    assert cli(['landscape', 'analyze', '--latents', str(tmp_path / 'z.npy'), '--out',
                str(tmp_path / 'land_prior'), '--prior', str(mdir), '--bootstrap', '0',
                '--fe-bootstrap', '0']) == 0
    st = json.loads((tmp_path / 'land_prior' / 'states.json').read_text())
    assert st['method'] == 'prior' and st['mixture_components'] == 5
