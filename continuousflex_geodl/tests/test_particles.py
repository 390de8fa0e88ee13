"""Particle sets: MRC stacks, RELION .star (3.0/3.1) and Xmipp .xmd round trips, errors."""
import os

import numpy as np
import pandas as pd
import pytest

from continuousflex_geodl.core.io.mrc import StackWriter, open_stack, read_mrc, write_mrc
from continuousflex_geodl.core.particles import (ArrayImageSource, ImageSource, ParticleSet,
                                                 load_particles, write_particles_star)


def _pset(n=12, box=16, seed=0):
    rng = np.random.default_rng(seed)
    ctf = np.tile([15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, 0.0], (n, 1))
    ctf[:, 0] += rng.uniform(0, 5000, n)
    return ParticleSet(ArrayImageSource(rng.normal(size=(n, box, box))), 1.5,
                       rng.uniform(0, 180, (n, 3)), rng.normal(size=(n, 2)) * 3, ctf,
                       pd.DataFrame({'gt_coord': rng.uniform(size=n)}))


def test_mrc_volume_round_trip_keeps_data_and_voxel_size(tmp_path):
    vol = np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / 'v.mrc', vol, 2.5)
    back, apix = read_mrc(tmp_path / 'v.mrc')
    assert apix == pytest.approx(2.5)
    np.testing.assert_array_equal(back, vol)
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]  # no temp left


def test_stack_is_memory_mapped_and_chunked_writer_matches(tmp_path):
    imgs = np.random.default_rng(2).normal(size=(10, 8, 8)).astype(np.float32)
    with StackWriter(tmp_path / 's.mrcs', 10, 8, 1.0) as w:
        w.write(imgs[:4])
        w.write(imgs[4:])
    s = open_stack(tmp_path / 's.mrcs')
    assert isinstance(s, np.memmap)
    np.testing.assert_array_equal(s[3], imgs[3])


@pytest.mark.parametrize('version', ['3.1', '3.0'])
def test_star_round_trip(tmp_path, version):
    ps = _pset()
    path = tmp_path / ('p%s.star' % version)
    write_particles_star(path, ps, version=version)
    q = load_particles(path)
    assert isinstance(q.images, ImageSource) and len(q) == len(ps)
    np.testing.assert_allclose(q.euler, ps.euler, atol=1e-5)
    np.testing.assert_allclose(q.shifts, ps.shifts, atol=1e-5)
    np.testing.assert_allclose(q.ctf, ps.ctf, atol=1e-4)
    np.testing.assert_allclose(q.metadata['gt_coord'], ps.metadata['gt_coord'], atol=1e-6)
    np.testing.assert_array_equal(q.images[[5, 2]], ps.images[[5, 2]])
    assert q.apix == pytest.approx(1.5)


def test_star_shift_sign_is_minus_relion_origin(tmp_path):
    import starfile
    ps = _pset(n=3)
    write_particles_star(tmp_path / 'p.star', ps)
    df = starfile.read(tmp_path / 'p.star', always_dict=True)['particles']
    np.testing.assert_allclose(df['rlnOriginXAngst'], -ps.shifts[:, 0], atol=1e-5)


def test_missing_phase_shift_is_zero_and_relative_paths_resolve(tmp_path):
    import starfile
    ps = _pset(n=4)
    (tmp_path / 'sub').mkdir()
    write_particles_star(tmp_path / 'sub' / 'p.star', ps)
    blocks = starfile.read(tmp_path / 'sub' / 'p.star', always_dict=True)
    parts = blocks['particles'].drop(columns=['rlnPhaseShift'])
    starfile.write({'optics': blocks['optics'], 'particles': parts},
                   tmp_path / 'sub' / 'q.star', overwrite=True)
    q = load_particles(tmp_path / 'sub' / 'q.star')
    assert np.all(q.ctf[:, 6] == 0.0)
    np.testing.assert_array_equal(q.images[0], ps.images[0])


def test_subset_and_rewrite(tmp_path):
    ps = _pset()
    write_particles_star(tmp_path / 'p.star', ps)
    q = load_particles(tmp_path / 'p.star').subset([7, 1, 4])
    write_particles_star(tmp_path / 's.star', q)
    r = load_particles(tmp_path / 's.star')
    np.testing.assert_array_equal(r.images[:], ps.images[[7, 1, 4]])
    np.testing.assert_allclose(r.euler, ps.euler[[7, 1, 4]], atol=1e-5)


def test_xmd_round_trip_with_nma_amplitudes(tmp_path):
    pytest.importorskip('xmippLib', reason='Xmipp bindings (pyxmipp3) not installed')
    from continuousflex_geodl.core.io.xmd import write_xmd
    ps = _pset(n=5)
    ps.metadata = pd.DataFrame({'nma_0': [0.5, -1, 2, 0, 1.5], 'nma_1': [1, 2, 3, 4, 5.0]})
    write_xmd(tmp_path / 'p.xmd', ps)
    q = load_particles(tmp_path / 'p.xmd')
    np.testing.assert_allclose(q.euler, ps.euler, atol=1e-5)   # xmd keeps 6 decimals
    np.testing.assert_allclose(q.shifts, ps.shifts, atol=1e-5)
    np.testing.assert_allclose(q.metadata[['nma_0', 'nma_1']].to_numpy(),
                               ps.metadata.to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(q.images[:], ps.images[:])


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_particles(tmp_path / 'none.star')
    (tmp_path / 'bad.star').write_text('data_\nloop_\n_rlnAngleRot #1\n10\n')
    with pytest.raises(ValueError, match='rlnImageName'):
        load_particles(tmp_path / 'bad.star')
    ps = _pset(n=4)
    write_particles_star(tmp_path / 'p.star', ps)
    with open(tmp_path / 'p.mrcs', 'r+b') as f:  # truncate the stack
        f.truncate(1024 + 4 * 16 * 16 * 2)
    with pytest.raises(ValueError, match='p.mrcs'):
        load_particles(tmp_path / 'p.star').check()
    os.remove(tmp_path / 'p.mrcs')
    with pytest.raises(FileNotFoundError, match='p.mrcs'):
        load_particles(tmp_path / 'p.star')
    with pytest.raises(ValueError, match='Unknown particle file type'):
        load_particles(tmp_path / 'x.txt')


def test_check_names_missing_ctf_poses_nan_and_empty():
    ps = _pset(n=6)
    ps.check()
    with pytest.raises(ValueError, match='no CTF'):
        ParticleSet(ps.images, 1.5, ps.euler, ps.shifts, None).check()
    with pytest.raises(ValueError, match='no poses'):
        ParticleSet(ps.images, 1.5, None, None, ps.ctf).check()
    imgs = ps.images[:]
    imgs[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match='image 4 contains NaN'):
        ParticleSet(ArrayImageSource(imgs), 1.5, ps.euler, ps.shifts, ps.ctf).check()
    with pytest.raises(ValueError, match='empty'):
        ps.subset(np.array([], dtype=int)).check()
