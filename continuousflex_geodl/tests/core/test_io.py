"""Files: atomic writes, safe paths, MRC maps and lazy stacks, RELION .star parsing."""
import os
import pickle

import mrcfile
import numpy as np
import pytest

from continuousflex_geodl.core.fileio import atomic_path, atomic_write, safe_join
from continuousflex_geodl.core.io.mrc import (StackWriter, mrc_info, open_stack, read_mrc,
                                              write_mrc)
from continuousflex_geodl.core.io.stack import ArrayImageSource, ImageSource
from continuousflex_geodl.core.particles import load_particles, write_particles_star


# ------------------------------------------------------------------ fileio

def test_atomic_write_replaces_whole_file_or_leaves_old_one(tmp_path):
    p = tmp_path / 'a.txt'
    with atomic_write(p) as fh:
        fh.write('first')
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write('half of the second')
            raise RuntimeError('crash while writing')
    assert p.read_text() == 'first'
    assert os.listdir(tmp_path) == ['a.txt']  # no temporary left behind
    with atomic_path(tmp_path / 'b.bin') as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith('b.bin')
        open(tmp, 'wb').write(b'xyz')
    assert (tmp_path / 'b.bin').read_bytes() == b'xyz'


def test_safe_join_refuses_escaping_paths(tmp_path):
    assert safe_join(tmp_path, 'sub/x.mrcs') == os.path.join(os.path.realpath(tmp_path),
                                                             'sub', 'x.mrcs')
    for bad in ('../x.mrcs', 'sub/../../x', '/etc/passwd'):
        with pytest.raises(ValueError):
            safe_join(tmp_path, bad)


# ------------------------------------------------------------------ MRC

def test_mrc_volume_round_trip_voxel_size_and_centred_origin(tmp_path):
    vol = np.random.default_rng(1).normal(size=(8, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / 'v.mrc', vol, 2.5)
    back, apix = read_mrc(tmp_path / 'v.mrc')
    assert apix == pytest.approx(2.5)
    np.testing.assert_array_equal(back, vol)
    info = mrc_info(tmp_path / 'v.mrc')
    # voxel D//2 = 4 is the coordinate origin: origin (voxel 0) = -4 * 2.5 A
    assert info['origin'] == pytest.approx((-10.0, -10.0, -10.0))
    assert not info['is_stack'] and info['shape'] == (8, 8, 8)
    with mrcfile.open(tmp_path / 'v.mrc') as m:  # independent reader: cell = 8 * 2.5 A
        assert float(m.header.cella.x) == pytest.approx(20.0)


def test_stack_is_lazy_memory_map_and_writer_matches(tmp_path):
    imgs = np.random.default_rng(2).normal(size=(10, 8, 8)).astype(np.float32)
    with StackWriter(tmp_path / 's.mrcs', 10, 8, 1.5) as w:
        w.write(imgs[:4])
        w.write(imgs[4:])
    s = open_stack(tmp_path / 's.mrcs')
    assert isinstance(s, np.memmap) and not s.flags.writeable
    np.testing.assert_array_equal(s[3], imgs[3])
    info = mrc_info(tmp_path / 's.mrcs')
    assert info['is_stack'] and info['apix'] == pytest.approx(1.5)
    assert info['origin'][:2] == pytest.approx((-6.0, -6.0))

    src = ImageSource.from_stack(tmp_path / 's.mrcs')
    assert src._open == {}  # nothing opened until indexed
    out = src[np.array([7, 2, 7])]
    assert out.dtype == np.float32 and out.shape == (3, 8, 8)
    np.testing.assert_array_equal(out, imgs[[7, 2, 7]])
    assert isinstance(src._open[0], np.memmap)  # read through the memory map
    np.testing.assert_array_equal(src[-1], imgs[-1:])
    np.testing.assert_array_equal(src[2:5], imgs[2:5])
    np.testing.assert_array_equal(src[np.arange(10) % 3 == 0], imgs[::3])
    # pickling (data loaders) does not copy the memory-mapped images
    assert len(pickle.dumps(src)) < 2000
    assert len(pickle.dumps(ArrayImageSource(s))) < 2000
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ArrayImageSource(s)))[:], imgs)


def test_stack_writer_refuses_wrong_count_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match='1 images written, 3 announced'):
        with StackWriter(tmp_path / 's.mrcs', 3, 4, 1.0) as w:
            w.write(np.zeros((4, 4)))
    assert os.listdir(tmp_path) == []


def test_mrc_errors_name_the_file_and_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.mrc'):
        read_mrc(tmp_path / 'missing.mrc')
    write_mrc(tmp_path / 't.mrcs', np.ones((4, 16, 16)), 1.0)
    with open(tmp_path / 't.mrcs', 'r+b') as f:
        f.truncate(1024 + 2 * 16 * 16 * 4)  # half of the data block
    for fn in (read_mrc, open_stack):
        with pytest.raises(ValueError, match=r't\.mrcs.*truncated'):
            fn(tmp_path / 't.mrcs')
    (tmp_path / 'junk.mrc').write_bytes(b'not an MRC file' * 10)
    with pytest.raises(ValueError, match='junk.mrc'):
        read_mrc(tmp_path / 'junk.mrc')
    write_mrc(tmp_path / 'rect.mrcs', np.ones((2, 8, 6)), 1.0)
    with pytest.raises(ValueError, match='square'):
        open_stack(tmp_path / 'rect.mrcs')


# ------------------------------------------------------------------ RELION .star

def _stack(path, n, box=8, seed=0):
    imgs = np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)
    write_mrc(path, imgs, 2.0)
    return imgs


STAR30 = """
data_

loop_
_rlnImageName #1
_rlnMicrographName #2
_rlnAngleRot #3
_rlnAngleTilt #4
_rlnAnglePsi #5
_rlnOriginX #6
_rlnOriginY #7
_rlnDefocusU #8
_rlnDefocusV #9
_rlnDefocusAngle #10
_rlnVoltage #11
_rlnSphericalAberration #12
_rlnAmplitudeContrast #13
_rlnDetectorPixelSize #14
_rlnMagnification #15
_rlnClassNumber #16
000002@Particles/stack.mrcs mic1.mrc 10.0 20.0 30.0 1.5 -2.0 15000 14000 45.0 300 2.7 0.1 5.0 25000 1
000001@Particles/stack.mrcs mic1.mrc 40.0 50.0 60.0 -0.5 0.25 16000 15500 10.0 300 2.7 0.1 5.0 25000 2
000003@Particles/stack.mrcs mic2.mrc 70.0 80.0 90.0 0.0 3.0 17000 16000 0.0 300 2.7 0.1 5.0 25000 1
"""


def test_read_relion30_project_relative_names_pixel_shifts(tmp_path):
    imgs = _stack(tmp_path / 'Particles' / 'stack.mrcs', 3)
    (tmp_path / 'Refine3D' / 'job001').mkdir(parents=True)
    star = tmp_path / 'Refine3D' / 'job001' / 'run_data.star'
    star.write_text(STAR30)
    ps = load_particles(star)
    assert ps.apix == pytest.approx(2.0)  # 5 um * 1e4 / 25000
    np.testing.assert_array_equal(ps.images[:], imgs[[1, 0, 2]])  # names relative to project
    np.testing.assert_allclose(ps.euler, [[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    # RELION 3.0 origin in pixels; core t = -origin * apix
    np.testing.assert_allclose(ps.shifts, [[-3.0, 4.0], [1.0, -0.5], [0.0, -6.0]])
    np.testing.assert_allclose(ps.ctf[1], [16000, 15500, 10, 300, 2.7, 0.1, 0.0])
    assert list(ps.metadata.columns) == ['rlnMicrographName', 'rlnClassNumber']
    assert list(ps.metadata['rlnMicrographName']) == ['mic1.mrc', 'mic1.mrc', 'mic2.mrc']


def _star31(stack):
    return """
# version 30001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnImagePixelSize #6
_rlnImageSize #7
_rlnImageDimensionality #8
_rlnMicrographOriginalPixelSize #9
1 opticsGroup1 300.0 2.7 0.1 2.0 8 2 1.0
2 opticsGroup2 200.0 2.0 0.07 2.0 8 2 0.5

# version 30001

data_particles

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginXAngst #5
_rlnOriginYAngst #6
_rlnDefocusU #7
_rlnDefocusV #8
_rlnDefocusAngle #9
_rlnOpticsGroup #10
_rlnRandomSubset #11
000001@{s} 1.0 2.0 3.0 4.5 -1.0 10000 9000 5.0 2 1
000002@{s} 4.0 5.0 6.0 0.0 2.0 11000 10000 15.0 1 2
000003@{s} 7.0 8.0 9.0 -3.0 0.5 12000 11000 25.0 2 1
""".format(s=stack)


def test_read_relion31_optics_groups_absolute_names_missing_phase_shift(tmp_path):
    imgs = _stack(tmp_path / 'elsewhere' / 'p.mrcs', 3)
    star = tmp_path / 'job' / 'particles.star'
    star.parent.mkdir()
    star.write_text(_star31(tmp_path / 'elsewhere' / 'p.mrcs'))  # absolute path
    ps = load_particles(star)
    assert ps.apix == pytest.approx(2.0)
    np.testing.assert_array_equal(ps.images[:], imgs)
    np.testing.assert_allclose(ps.shifts, [[-4.5, 1.0], [0.0, -2.0], [3.0, -0.5]])
    np.testing.assert_allclose(ps.ctf[:, 3:6], [[200, 2.0, 0.07], [300, 2.7, 0.1],
                                                [200, 2.0, 0.07]])  # per optics group
    assert np.all(ps.ctf[:, 6] == 0.0)  # no rlnPhaseShift column -> 0, never NaN
    assert list(ps.metadata['rlnOpticsGroup']) == [2, 1, 2]
    np.testing.assert_allclose(ps.metadata['rlnMicrographOriginalPixelSize'], [0.5, 1.0, 0.5])


def test_star31_rewrite_keeps_optics_table_and_extra_columns(tmp_path):
    import starfile
    _stack(tmp_path / 'p.mrcs', 3)
    (tmp_path / 'in.star').write_text(_star31('p.mrcs'))
    ps = load_particles(tmp_path / 'in.star')
    (tmp_path / 'out').mkdir()
    write_particles_star(tmp_path / 'out' / 'o.star', ps)
    blocks = starfile.read(tmp_path / 'out' / 'o.star', always_dict=True)
    opt, parts = blocks['optics'], blocks['particles']
    assert len(opt) == 2 and sorted(opt['rlnVoltage']) == [200.0, 300.0]
    assert 'rlnVoltage' not in parts and 'rlnMicrographOriginalPixelSize' not in parts
    g = dict(zip(opt['rlnOpticsGroup'], opt['rlnMicrographOriginalPixelSize']))
    assert [g[k] for k in parts['rlnOpticsGroup']] == [0.5, 1.0, 0.5]
    assert list(parts['rlnRandomSubset']) == [1, 2, 1]
    # the stack outside out/ is referenced by absolute path, not copied
    assert parts['rlnImageName'][0] == '000001@' + str(tmp_path / 'p.mrcs')
    assert os.listdir(tmp_path / 'out') == ['o.star']
    q = load_particles(tmp_path / 'out' / 'o.star')
    for a in ('euler', 'shifts', 'ctf'):
        np.testing.assert_allclose(getattr(q, a), getattr(ps, a), atol=1e-6)
    np.testing.assert_array_equal(q.images[:], ps.images[:])


@pytest.mark.parametrize('text, exc, pattern', [
    ('data_\nloop_\n_rlnAngleRot #1\n10\n', ValueError, 'no particle table with an '
     'rlnImageName'),
    ('not a star file at all\n', ValueError, 'rlnImageName'),
    ('data_\nloop_\n_rlnImageName #1\n_rlnAngleRot #2\n1@s.mrcs 10\n2@s.mrcs\n3@s.mrcs 1 2\n',
     ValueError, 'cannot be parsed'),
    ('data_\nloop_\n_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n'
     '_rlnImagePixelSize\n1@s.mrcs 1 abc 3 1.0\n', ValueError,
     r"column rlnAngleTilt has a non-numeric value 'abc' \(particle 1\)"),
    ('data_\nloop_\n_rlnImageName\n_rlnImagePixelSize\ns.mrcs 1.0\n', ValueError,
     'index@stack'),
    ('data_\nloop_\n_rlnImageName\n_rlnImagePixelSize\n0@s.mrcs 1.0\n', ValueError,
     'indices are integers from 1'),
    ('data_\nloop_\n_rlnImageName\n1@s.mrcs\n', ValueError, 'no pixel size'),
    ('data_\nloop_\n_rlnImageName\n_rlnImagePixelSize\n1@gone.mrcs 1.0\n', FileNotFoundError,
     'gone.mrcs'),
    ('data_\nloop_\n_rlnImageName\n_rlnImagePixelSize\n_rlnDefocusU\n1@s.mrcs 1.0 1e4\n',
     ValueError, 'no rlnVoltage column'),
    ('data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n2 1.5\n'
     'data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 1\n2@s.mrcs 2\n',
     ValueError, 'different pixel sizes'),
    ('data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n'
     'data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 3\n',
     ValueError, 'optics group'),
])
def test_malformed_star_files_give_clear_errors(tmp_path, text, exc, pattern):
    _stack(tmp_path / 's.mrcs', 2)
    (tmp_path / 'bad.star').write_text(text)
    with pytest.raises(exc, match=pattern) as info:
        load_particles(tmp_path / 'bad.star')
    assert 'bad.star' in str(info.value)


def test_missing_particle_file_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_particles(tmp_path / 'none.star')
    with pytest.raises(ValueError, match='Unknown particle file type'):
        load_particles(tmp_path / 'x.txt')


def test_star_without_poses_or_ctf_reads_none_and_check_says_so(tmp_path):
    _stack(tmp_path / 's.mrcs', 2)
    (tmp_path / 'p.star').write_text('data_particles\nloop_\n_rlnImageName\n'
                                     '_rlnImagePixelSize\n1@s.mrcs 2.0\n2@s.mrcs 2.0\n')
    ps = load_particles(tmp_path / 'p.star')
    assert ps.euler is None and ps.shifts is None and ps.ctf is None and ps.metadata is None
    with pytest.raises(ValueError, match=r'p\.star\) have no CTF parameters'):
        ps.check()
    ps.check(require_ctf=False, require_poses=False)


def test_stack_writer_rewrites_in_place_and_header_stats_match_the_data(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 8, 8)).astype(np.float32)
    w = StackWriter(tmp_path / 'r.mrcs', 6, 8, 2.0)
    w.write(a[:3]).write(a[3:])
    np.testing.assert_array_equal(w.read(2, 5), a[2:5])
    w.write(2 * a[1:4], start=1)  # rewrite images 1..3
    w.close()
    want = a.copy()
    want[1:4] *= 2
    with mrcfile.open(tmp_path / 'r.mrcs', permissive=False) as m:  # independent reader
        np.testing.assert_array_equal(m.data, want)
        assert float(m.header.dmin) == pytest.approx(want.min())
        assert float(m.header.dmax) == pytest.approx(want.max())
        assert float(m.header.dmean) == pytest.approx(want.mean(), abs=1e-6)
        assert float(m.header.rms) == pytest.approx(want.std(), rel=1e-5)
    assert sorted(os.listdir(tmp_path)) == ['r.mrcs']


def test_load_latents_formats_and_shapes(tmp_path):
    from continuousflex_geodl.core.io.latents import load_latents
    z = np.arange(24, dtype=np.float32).reshape(12, 2)
    np.save(tmp_path / 'z.npy', z)
    np.savez(tmp_path / 'z.npz', other=np.zeros(3), z=z)
    np.savetxt(tmp_path / 'z.txt', z, header='two columns')
    for name in ('z.npy', 'z.npz', 'z.txt'):
        np.testing.assert_array_equal(load_latents(tmp_path / name, dim=2, min_rows=10), z)
    np.save(tmp_path / 'v.npy', np.arange(4.0))
    assert load_latents(tmp_path / 'v.npy').shape == (4, 1)       # four 1-D latents
    assert load_latents(tmp_path / 'v.npy', dim=4).shape == (1, 4)  # one 4-D point
    with pytest.raises(ValueError, match='3 are needed'):
        load_latents(tmp_path / 'z.npy', dim=3)
    with pytest.raises(ValueError, match='N >= 20'):
        load_latents(tmp_path / 'z.npy', min_rows=20)
    with pytest.raises(FileNotFoundError, match='gone.npy'):
        load_latents(tmp_path / 'gone.npy')
