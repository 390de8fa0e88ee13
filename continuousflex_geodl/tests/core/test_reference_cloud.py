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
from continuousflex_geodl.core.models.reference import build_reference
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
