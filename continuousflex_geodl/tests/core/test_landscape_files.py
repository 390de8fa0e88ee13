"""Landscape folders (``core.artifacts``): what the pipeline writes is what the
readers return, and the file names are those the writers used."""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.core.artifacts import (ApplyDir, LandscapeDir, PathDir, SubsetDir,
                                                 series_paths)
from continuousflex_geodl.core.landscape import pipeline as P
from continuousflex_geodl.core.landscape.series import decode_series
from continuousflex_geodl.core.landscape.states import load_states
from continuousflex_geodl.core.landscape.toy import three_state_curve

pytestmark = pytest.mark.usefixtures('one_openmp_thread')  # conftest.py


def _quiet(*a):
    pass


@pytest.fixture(scope='module')
def analysed(tmp_path_factory):
    from threadpoolctl import threadpool_limits
    d = tmp_path_factory.mktemp('files')
    toy = three_state_curve(1500, dim=3, seed=4)
    with threadpool_limits(1, user_api='openmp'):
        summary = P.analyze(toy.latents, str(d / 'land'), n_boot=2, fe_boot=2, log=_quiet)
    return d, toy, summary


def test_landscape_dir_reads_what_analyze_wrote(analysed):
    d, toy, summary = analysed
    land = LandscapeDir(d / 'land')
    assert land.exists() and land.require() is land
    for name in (land.EMBEDDING, land.EMBEDDING_MODEL, land.PCA, land.PCA_MODEL,
                 land.FREE_ENERGY, land.LABELS, land.STATES, land.STATES_MODEL,
                 land.STATE_CENTRES, land.STATE_CENTRES_EMBEDDING, land.FIGURE, land.SUMMARY):
        assert os.path.isfile(os.path.join(land.path, name)), name
    raw = str(d / 'land')
    np.testing.assert_array_equal(land.embedding(), np.load(os.path.join(raw, 'embedding.npy')))
    np.testing.assert_array_equal(land.labels(), load_states(raw).labels)
    with open(os.path.join(raw, 'states.json')) as f:
        assert land.states() == json.load(f)
    assert land.summary() == json.loads(json.dumps(summary))
    assert land.method() == 'pca' == summary['embedding']
    # the saved mapping reproduces the embedding; the per-particle dG is the map at it
    y = land.embedding()
    np.testing.assert_allclose(land.embedding_model().transform(toy.latents), y, atol=1e-4)
    dG, units = land.particle_dG()
    fe = land.free_energy()
    assert units == 'kT'
    np.testing.assert_allclose(dG, fe.at(y), rtol=1e-5, atol=1e-5)
    n = land.states()['n_states']
    assert land.state_centres().shape == (n, 3) and land.state_points().shape == (n, 2)
    # no model given: no structures
    assert land.state_files('mrc') == [] and land.states_pdb() is None


def test_missing_landscape_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='free_energy.npz missing'):
        LandscapeDir(tmp_path).require()
    with pytest.raises(FileNotFoundError, match='states_model.npz'):
        load_states(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='path_latents.npy missing'):
        PathDir(tmp_path).latents()


def test_structure_series_names(tmp_path):
    """decode_series writes the files LandscapeDir / PathDir list, in order."""
    z = np.array([[0.0], [1.0], [2.0]], np.float32)

    def decode_fn(zz):
        return np.repeat(zz[:, None, :], 3, axis=2) + np.zeros((len(zz), 4, 3), np.float32)

    def volume_fn(zz):
        return np.ones((len(zz), 8, 8, 8), np.float32) * zz[:, :, None, None]

    land = LandscapeDir(tmp_path / 'land')
    res = decode_series(z, decode_fn, land.structures_dir, land.STRUCTURES,
                        volume_fn=volume_fn, apix=1.0)
    assert (res['pdb'], res['mrc']) == land.structure_paths(3)
    assert land.states_pdb() == res['pdb'] and land.state_files('mrc') == res['mrc']
    pdir = PathDir(tmp_path / 'path')
    res = decode_series(z, decode_fn, pdir.path, pdir.STRUCTURES, volume_fn=volume_fn, apix=1.0)
    assert pdir.structure_files('mrc') == res['mrc'] == series_paths(pdir.path, 'path', 3)[1]


def test_path_subset_and_apply_folders(analysed, tmp_path):
    d, toy, _ = analysed
    land = LandscapeDir(d / 'land')
    info = P.compute_path(toy.latents, str(tmp_path / 'p'), kind='pca', n_points=7, log=_quiet)
    pdir = PathDir(tmp_path / 'p')
    assert pdir.latents().shape == (7, 3) and pdir.embedding().shape == (7, 2)
    assert pdir.info()['n_points'] == 7 == info['n_points']
    P.make_subset(land.path, str(tmp_path / 's'), states=[0], log=_quiet)
    sub = SubsetDir(tmp_path / 's')
    np.testing.assert_array_equal(sub.indices(), np.nonzero(land.labels() == 0)[0])
    assert sub.info()['n_selected'] == int((land.labels() == 0).sum())
    # the same particles placed again land where the analysis put them
    P.apply_landscape(land.path, toy.latents, str(tmp_path / 'a'), log=_quiet)
    app = ApplyDir(tmp_path / 'a')
    np.testing.assert_array_equal(app.labels(), land.labels())
    np.testing.assert_allclose(app.embedding(), land.embedding(), atol=1e-4)
    np.testing.assert_allclose(app.particle_dG(), land.particle_dG()[0], atol=1e-4)
