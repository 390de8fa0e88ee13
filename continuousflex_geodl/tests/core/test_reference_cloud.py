"""One rule turns a file into a pseudo-atom cloud: ``simulate --structure`` and
``train --reference`` build the same cloud from the same atomic model or map,
and ``structure.fit_to_map`` follows the same rule (``core.cloud``)."""
import numpy as np
import pytest
import torch

from continuousflex_geodl.core import cli, cloud
from continuousflex_geodl.core import structure as st
from continuousflex_geodl.core.artifacts import ModelDir
from continuousflex_geodl.core.io.mrc import write_mrc
from continuousflex_geodl.core.models.reference import (RESIDUE_VOLUME, build_reference,
                                                        from_map, map_fit_quality,
                                                        reference_fit_quality)
from continuousflex_geodl.core.render import render_volume

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py

BOX, APIX = 32, 4.0


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """The built-in molecule as a PDB (more atoms than the default cloud size,
    so it is coarse-grained) and as a density map on the particles' grid."""
    d = tmp_path_factory.mktemp('refcloud')
    mol = st.builtin_molecule()
    pdb = str(d / 'molecule.pdb')
    st.write_pdb(pdb, mol.positions[None])
    vol = render_volume(torch.as_tensor(mol.positions, dtype=torch.float32),
                        torch.ones(len(mol)), 3.0, BOX, APIX).numpy()
    mrc = str(d / 'molecule.mrc')
    write_mrc(mrc, vol, APIX)
    return dict(pdb=pdb, mrc=mrc, n_atoms=len(mol))


@pytest.mark.parametrize('kind', ['pdb', 'mrc'])
def test_simulate_and_train_build_the_same_cloud(inputs, kind, tmp_path):
    src = inputs[kind]
    expected = build_reference(src, apix=APIX)
    if kind == 'pdb':  # coarse-grained, not the atoms themselves
        assert 4 <= len(expected.positions) < inputs['n_atoms']
    sim = str(tmp_path / 'sim')
    assert cli.main(['simulate', '--out', sim, '--structure', src, '--n-particles', '16',
                     '--box', str(BOX), '--apix', str(APIX), '--snr', '1',
                     '--motion', 'linear', '--end-rmsd', '2']) == 0
    model = str(tmp_path / 'model')
    assert cli.main(['train', '--particles', sim + '/particles.star', '--reference', src,
                     '--out', model, '--zdim', '1', '--epochs', '1', '--batch-size', '8',
                     '--threads', '1', '--seed', '5']) == 0
    with np.load(sim + '/reference.npz') as f:
        simulated = {k: f[k] for k in ('positions', 'amplitudes', 'sigma')}
    trained = ModelDir(model).read_reference()
    for got in (simulated, trained):
        np.testing.assert_array_equal(np.asarray(got['positions'], np.float32),
                                      expected.positions)
        assert float(got['sigma']) == pytest.approx(expected.sigma, rel=1e-6)
    np.testing.assert_allclose(trained['amplitudes'], expected.amplitudes, rtol=1e-6)
    # the simulation scales the amplitudes to its image intensity (one factor)
    ratio = simulated['amplitudes'] / expected.amplitudes
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    # the quality of the reference's fit is in the model folder: against the
    # map, or against a map simulated from the model on the particles' grid
    fit = ModelDir(model).read_reference_fit()
    if kind == 'pdb':
        q = reference_fit_quality(src, expected, apix=APIX, box=BOX)
        assert fit['against'] == 'model' and fit['residue_equivalents'] == inputs['n_atoms']
    else:
        from continuousflex_geodl.core.io.mrc import read_mrc
        vol, apix = read_mrc(src)
        q = map_fit_quality(vol, apix, expected.positions, expected.amplitudes,
                            expected.sigma)
        assert fit['against'] == 'map'
    assert fit['n_atoms'] == len(expected.positions) and fit['box'] == BOX
    for key in ('resolution_fsc05', 'resolution_fsc0143', 'real_space_cc',
                'atoms_per_residue', 'residue_equivalents'):
        assert fit[key] == pytest.approx(q[key], rel=1e-6), key
    np.testing.assert_allclose(fit['fsc'], q['fsc'], atol=1e-9)


def test_fit_to_map_follows_the_reference_rule(inputs):
    """structure.fit_to_map at the reference size gives the reference cloud:
    same positions and sigma; amplitudes are the Voronoi-cell masses (their
    sum is the thresholded map integral), the reference's are those masses
    normalised to mean 1."""
    from continuousflex_geodl.core.io.mrc import read_mrc
    ref = build_reference(inputs['mrc'], apix=APIX)
    vol, apix = read_mrc(inputs['mrc'])
    fit = st.fit_to_map(vol, apix, len(ref.positions))
    np.testing.assert_allclose(fit.positions, ref.positions, atol=1e-4)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-6)
    np.testing.assert_allclose(fit.amplitudes / fit.amplitudes.mean(), ref.amplitudes,
                               rtol=1e-5)
    thr = cloud.map_threshold(vol)
    v = np.asarray(vol, np.float64)
    np.testing.assert_allclose(fit.amplitudes.sum(), v[v > thr].sum() * apix ** 3,
                               rtol=1e-9)


def test_weighted_kmeans_restarts_keep_the_lowest_inertia():
    """The best of n runs has an inertia no larger than run 0 alone (which is
    the single-run result), and is one of the runs (independent recomputation)."""
    from scipy.spatial import cKDTree
    rng = np.random.default_rng(0)
    blobs = rng.uniform(-30, 30, (10, 3))
    pts = np.concatenate([b + rng.normal(0, 1.0, (40, 3)) for b in blobs])
    w = rng.uniform(0.5, 1.5, len(pts))

    def inertia(c):
        d, _ = cKDTree(c).query(pts)
        return float(w @ d ** 2)

    one, _ = cloud.weighted_kmeans(pts, w, 10, seed=3)
    best, mass = cloud.weighted_kmeans(pts, w, 10, seed=3, n_init=4)
    runs = [one] + [cloud.weighted_kmeans(pts, w, 10, seed=[3, r])[0] for r in (1, 2, 3)]
    assert inertia(best) <= inertia(one) + 1e-9
    assert inertia(best) == pytest.approx(min(inertia(c) for c in runs), rel=1e-12)
    np.testing.assert_allclose(mass.sum(), w.sum())


# ------------------------------------------------ quality of a map's fit
def _render(positions, sigma, box, apix):
    return render_volume(torch.as_tensor(np.asarray(positions, np.float64)),
                         torch.ones(len(positions), dtype=torch.float64), sigma, box,
                         apix).numpy()


def test_fit_of_separated_blobs_recovers_the_map_to_nyquist():
    """A map rendered from 32 Gaussians 10 A apart (5 sigma): fitted with 32
    pseudo-atoms of that sigma, k-means finds the blob centres and equal
    masses, so the rendered cloud is the map (FSC ~1 in every shell, both
    resolutions at Nyquist); with fewer pseudo-atoms than blobs it is not."""
    box, apix, sigma = 40, 2.0, 2.0
    g = np.array([-15.0, -5.0, 5.0, 15.0])
    pos = np.stack(np.meshgrid(g, g, g[:2] + 5, indexing='ij'), -1).reshape(-1, 3)
    vol = _render(pos, sigma, box, apix)
    ref = from_map(vol, apix, n_atoms=len(pos), sigma=sigma)
    q = map_fit_quality(vol, apix, ref.positions, ref.amplitudes, ref.sigma)
    assert min(q['fsc']) > 0.999
    assert q['resolution_fsc05'] == pytest.approx(2 * apix)
    assert q['resolution_fsc0143'] == pytest.approx(2 * apix)
    assert q['real_space_cc'] > 0.999
    assert q['n_atoms'] == len(pos)
    half = from_map(vol, apix, n_atoms=len(pos) // 2, sigma=sigma)
    qh = map_fit_quality(vol, apix, half.positions, half.amplitudes, half.sigma)
    assert qh['resolution_fsc05'] > 2 * q['resolution_fsc05']
    assert qh['real_space_cc'] < 0.5


def test_fit_resolution_degrades_with_fewer_pseudo_atoms():
    """The built-in molecule (300 beads, sigma 1.5 A: power up to Nyquist)
    rendered at 2 A/px and fitted at the same sigma with one pseudo-atom per
    bead: FSC 0.5 within a quarter of Nyquist, 0.143 at Nyquist; with
    100, 30, 10 pseudo-atoms both resolutions and the real-space correlation
    get strictly worse."""
    box, apix, sigma = 40, 2.0, 1.5
    mol = st.builtin_molecule()
    vol = _render(mol.positions, sigma, box, apix)
    qs = []
    for n in (len(mol), 100, 30, 10):
        ref = from_map(vol, apix, n_atoms=n, sigma=sigma)
        qs.append(map_fit_quality(vol, apix, ref.positions, ref.amplitudes, ref.sigma))
    assert qs[0]['resolution_fsc05'] < 1.25 * 2 * apix
    assert qs[0]['resolution_fsc0143'] == pytest.approx(2 * apix)
    for key in ('resolution_fsc05', 'resolution_fsc0143'):
        r = [q[key] for q in qs]
        assert all(a < b for a, b in zip(r, r[1:])), (key, r)
    cc = [q['real_space_cc'] for q in qs]
    assert all(a > b for a, b in zip(cc, cc[1:])), cc
    assert [q['n_atoms'] for q in qs] == [len(mol), 100, 30, 10]


def test_residue_equivalents_of_a_map_of_known_volume():
    """A block of 10 x 12 x 15 voxels of density 1 (2 A/px) over a background
    of 0.05 (under the default threshold of 0.1): 1800 voxels, 14400 A^3,
    14400 / 135 residue-equivalents; a non-cubic box is padded to a cube."""
    apix = 2.0
    vol = np.full((30, 36, 40), 0.05)
    vol[10:20, 12:24, 15:30] = 1.0
    ref = from_map(vol, apix, n_atoms=60, sigma=3.0)
    q = map_fit_quality(vol, apix, ref.positions, ref.amplitudes, ref.sigma)
    assert q['threshold'] == pytest.approx(0.1)
    assert q['molecular_volume_a3'] == pytest.approx(1800 * apix ** 3)
    assert q['residue_equivalents'] == pytest.approx(14400.0 / RESIDUE_VOLUME)
    assert q['atoms_per_residue'] == pytest.approx(60 / (14400.0 / RESIDUE_VOLUME))
    assert q['box'] == 40 and len(q['fsc']) == 21
    assert np.isnan(q['real_space_cc'])  # the map is flat above its threshold
    # the cloud is rendered where it was fitted: inside the block, not shifted
    # by the padding (the rendered mass centre is the block centre)
    model = _render(ref.positions, ref.sigma, 40, apix)
    com = (np.argwhere(model > 0.5 * model.max()).mean(0) - 20) * apix
    block_centre = (np.array([15.0, 18.0, 22.5]) - np.array([15, 18, 20])) * apix
    np.testing.assert_allclose(com, block_centre, atol=apix)


def test_fit_of_an_atomic_model_against_its_simulated_map(inputs):
    """The built-in molecule (one atom per residue) kept atom for atom, at the
    sigma of the simulated map (apix): the rendered cloud is that map (FSC 1,
    correlation 1, one pseudo-atom per residue).  Coarse-grained to fewer
    beads, the resolution gets worse."""
    full = build_reference(inputs['pdb'], apix=APIX, n_atoms='all', sigma=APIX)
    q = reference_fit_quality(inputs['pdb'], full, apix=APIX)
    assert q['against'] == 'model'
    assert min(q['fsc']) > 1 - 1e-9 and q['real_space_cc'] > 1 - 1e-9
    assert q['resolution_fsc05'] == pytest.approx(2 * APIX)
    assert q['residue_equivalents'] == inputs['n_atoms'] and q['atoms_per_residue'] == 1.0
    coarse = build_reference(inputs['pdb'], apix=APIX, n_atoms=30)
    qc = reference_fit_quality(inputs['pdb'], coarse, apix=APIX)
    assert qc['resolution_fsc05'] > 2 * APIX and qc['atoms_per_residue'] == 30 / inputs['n_atoms']
    assert reference_fit_quality(inputs['pdb'].replace('.pdb', '.npz'), full) is None


def test_reference_command_logs_the_fit_quality(inputs, tmp_path):
    out = str(tmp_path / 'ref.npz')
    assert cli.main(['reference', '--input', inputs['mrc'], '--out', out, '--apix',
                     str(APIX)]) == 0
    ref = build_reference(inputs['mrc'], apix=APIX)
    with open(out + '.log') as f:
        log = f.read()
    assert 'fit to the map: FSC 0.5 at' in log
    assert '%d pseudo-atoms for' % len(ref.positions) in log
