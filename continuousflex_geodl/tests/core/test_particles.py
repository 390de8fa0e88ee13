"""Particle sets: .star (RELION 3.0/3.1) and .xmd round trips, lazy images, validation."""
import importlib.util
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from continuousflex_geodl.core.io.mrc import open_stack, write_mrc
from continuousflex_geodl.core.particles import (ArrayImageSource, ImageSource, ParticleSet,
                                                 load_particles, write_particles,
                                                 write_particles_star)


def _pset(n=12, box=16, seed=0, phase=0.0):
    rng = np.random.default_rng(seed)
    ctf = np.tile([15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1, phase], (n, 1))
    ctf[:, 0] += rng.uniform(0, 5000, n)
    ctf[:, 2] = rng.uniform(-90, 90, n)
    return ParticleSet(ArrayImageSource(rng.normal(size=(n, box, box))), 1.5,
                       rng.uniform(-180, 180, (n, 3)) * [1, 0.5, 1] + [0, 90, 0],
                       rng.normal(size=(n, 2)) * 3, ctf,
                       pd.DataFrame({'gt_coord': rng.uniform(size=n),
                                     'rlnMicrographName': ['m%d.mrc' % (i % 3)
                                                           for i in range(n)]}))


def _same(q, ps, images=True):
    np.testing.assert_allclose(q.euler, ps.euler, atol=1e-5)
    np.testing.assert_allclose(q.shifts, ps.shifts, atol=1e-5)
    np.testing.assert_allclose(q.ctf, ps.ctf, atol=1e-4)
    if images:
        np.testing.assert_array_equal(q.images[:], ps.images[:])
    assert q.apix == pytest.approx(ps.apix)


@pytest.mark.parametrize('version', ['3.1', '3.0'])
def test_star_round_trip(tmp_path, version):
    ps = _pset()
    path = tmp_path / ('p%s.star' % version)
    write_particles_star(path, ps, version=version)
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, path.stem + '.mrcs'])
    q = load_particles(path)
    assert isinstance(q.images, ImageSource) and len(q) == len(ps) and q.box == 16
    _same(q, ps)
    np.testing.assert_allclose(q.metadata['gt_coord'], ps.metadata['gt_coord'], atol=1e-6)
    assert list(q.metadata['rlnMicrographName']) == list(ps.metadata['rlnMicrographName'])


def test_star_shift_sign_is_minus_relion_origin(tmp_path):
    import starfile
    ps = _pset(n=3)
    write_particles_star(tmp_path / 'a.star', ps)
    write_particles_star(tmp_path / 'b.star', ps, version='3.0')
    a = starfile.read(tmp_path / 'a.star', always_dict=True)['particles']
    b = starfile.read(tmp_path / 'b.star', always_dict=True)
    b = next(iter(b.values()))
    np.testing.assert_allclose(a['rlnOriginXAngst'], -ps.shifts[:, 0], atol=1e-5)
    np.testing.assert_allclose(a['rlnOriginYAngst'], -ps.shifts[:, 1], atol=1e-5)
    np.testing.assert_allclose(b['rlnOriginX'], -ps.shifts[:, 0] / ps.apix, atol=1e-5)
    np.testing.assert_allclose(b['rlnDetectorPixelSize'] * 1e4 / b['rlnMagnification'], 1.5)


def test_relative_image_paths_survive_moving_the_folder(tmp_path):
    import starfile
    ps = _pset(n=4)
    (tmp_path / 'a').mkdir()
    write_particles_star(tmp_path / 'a' / 'p.star', ps)
    names = starfile.read(tmp_path / 'a' / 'p.star', always_dict=True)['particles']
    assert names['rlnImageName'][2] == '000003@p.mrcs'
    shutil.move(str(tmp_path / 'a'), str(tmp_path / 'b'))
    q = load_particles(tmp_path / 'b' / 'p.star')
    assert q.images.files == [str(tmp_path / 'b' / 'p.mrcs')]
    np.testing.assert_array_equal(q.images[:], ps.images[:])


def test_missing_or_empty_phase_shift_reads_as_zero(tmp_path):
    import starfile
    ps = _pset(n=4, phase=0.0)
    write_particles_star(tmp_path / 'p.star', ps)
    blocks = starfile.read(tmp_path / 'p.star', always_dict=True)
    starfile.write({'optics': blocks['optics'],
                    'particles': blocks['particles'].drop(columns=['rlnPhaseShift'])},
                   tmp_path / 'q.star', overwrite=True)
    q = load_particles(tmp_path / 'q.star')
    assert q.ctf.shape == (4, 7) and np.all(q.ctf[:, 6] == 0.0)
    _same(q, ps)


def test_images_on_disk_are_referenced_not_copied(tmp_path):
    import starfile
    ps = _pset(n=6)
    write_mrc(tmp_path / 's1.mrcs', ps.images[:3], ps.apix)
    write_mrc(tmp_path / 's2.mrcs', ps.images[3:], ps.apix)
    refs = [(str(tmp_path / 's2.mrcs'), 2), (str(tmp_path / 's1.mrcs'), 0),
            (str(tmp_path / 's2.mrcs'), 0), (str(tmp_path / 's1.mrcs'), 1)]
    multi = ParticleSet(ImageSource(refs), ps.apix, ps.euler[:4], ps.shifts[:4], ps.ctf[:4])
    assert multi.images.files == [str(tmp_path / 's2.mrcs'), str(tmp_path / 's1.mrcs')]
    np.testing.assert_array_equal(multi.images[:], ps.images[[5, 0, 3, 1]])
    write_particles_star(tmp_path / 'm.star', multi)
    names = starfile.read(tmp_path / 'm.star', always_dict=True)['particles']['rlnImageName']
    assert list(names) == ['000003@s2.mrcs', '000001@s1.mrcs', '000001@s2.mrcs',
                           '000002@s1.mrcs']
    assert not (tmp_path / 'm.mrcs').exists()
    # a memory-mapped MRC stack is referenced too; a slice of it is written out
    mm = ParticleSet(open_stack(tmp_path / 's1.mrcs'), ps.apix, ps.euler[:3])
    write_particles_star(tmp_path / 'mm.star', mm)
    assert not (tmp_path / 'mm.mrcs').exists()
    sl = ParticleSet(open_stack(tmp_path / 's1.mrcs')[1:], ps.apix, ps.euler[1:3])
    write_particles_star(tmp_path / 'sl.star', sl)
    np.testing.assert_array_equal(load_particles(tmp_path / 'sl.star').images[:],
                                  ps.images[1:3])
    # an explicit new stack_path gathers the images, in order
    write_particles_star(tmp_path / 'g.star', multi, stack_path=tmp_path / 'g_imgs.mrcs')
    g = load_particles(tmp_path / 'g.star')
    assert g.images.files == [str(tmp_path / 'g_imgs.mrcs')]
    np.testing.assert_array_equal(g.images[:], ps.images[[5, 0, 3, 1]])


def test_subset_and_rewrite(tmp_path):
    ps = _pset()
    write_particles_star(tmp_path / 'p.star', ps)
    q = load_particles(tmp_path / 'p.star').subset([7, 1, 4])
    mask = np.zeros(len(ps), bool)
    mask[[1, 4, 7]] = True
    np.testing.assert_allclose(ps.subset(mask).euler, ps.euler[[1, 4, 7]])
    assert list(q.metadata.index) == [0, 1, 2]
    write_particles_star(tmp_path / 's.star', q)
    r = load_particles(tmp_path / 's.star')
    np.testing.assert_array_equal(r.images[:], ps.images[[7, 1, 4]])
    np.testing.assert_allclose(r.euler, ps.euler[[7, 1, 4]], atol=1e-5)
    np.testing.assert_allclose(r.metadata['gt_coord'], ps.metadata['gt_coord'][[7, 1, 4]],
                               atol=1e-6)


needs_xmipp = pytest.mark.skipif(importlib.util.find_spec('xmippLib') is None,
                                 reason='Xmipp bindings (pyxmipp3) not installed')


@needs_xmipp
def test_xmd_round_trip_with_nma_amplitudes_and_extra_labels(tmp_path):
    ps = _pset(n=5, phase=20.0)
    ps.metadata = pd.DataFrame({'nma_0': [0.5, -1, 2, 0, 1.5], 'nma_1': [1, 2, 3, 4, 5.0],
                                'ctfK': [1.0, 1.0, 0.9, 1.0, 1.0],
                                'gt_coord': np.arange(5.0)})
    write_particles(tmp_path / 'p.xmd', ps)
    q = load_particles(tmp_path / 'p.xmd')
    _same(q, ps)
    np.testing.assert_allclose(q.metadata[['nma_0', 'nma_1', 'ctfK']].to_numpy(),
                               ps.metadata[['nma_0', 'nma_1', 'ctfK']].to_numpy(), atol=1e-6)
    assert 'gt_coord' not in q.metadata  # not an Xmipp label: kept only in .star files


@needs_xmipp
def test_xmd_shift_has_the_sense_of_relion_origin(tmp_path):
    import starfile
    import xmippLib
    ps = _pset(n=4)
    write_particles(tmp_path / 'p.xmd', ps)
    write_particles_star(tmp_path / 'p.star', ps)
    md = xmippLib.MetaData(str(tmp_path / 'p.xmd'))
    sx = np.array(md.getColumnValues(xmippLib.MDL_SHIFT_X))
    star = starfile.read(tmp_path / 'p.star', always_dict=True)['particles']
    np.testing.assert_allclose(sx * ps.apix, star['rlnOriginXAngst'], atol=1e-5)


XMD = """# XMIPP_STAR_1 *
#
data_noname
loop_
 _image
 _enabled
 _angleRot
 _angleTilt
 _anglePsi
 _shiftX
 _shiftY
 _ctfDefocusU
 _ctfDefocusV
 _ctfDefocusAngle
 _ctfVoltage
 _ctfSphericalAberration
 _ctfQ0
 _samplingRate
 _nmaDisplacements
000001@imgs/s.mrcs 1 10.0 20.0 30.0 1.0 -2.0 12000 11000 5.0 300 2.7 0.07 2.0 '  1.5  -0.5  2.0 '
000002@imgs/s.mrcs -1 11.0 21.0 31.0 0.0 0.0 12000 11000 5.0 300 2.7 0.07 2.0 '  9.0  9.0  9.0 '
000003@imgs/s.mrcs 1 12.0 22.0 32.0 -0.5 3.0 13000 12500 6.0 300 2.7 0.07 2.0 '  0.1  0.2  -0.3 '
"""


@needs_xmipp
def test_read_continuousflex_style_xmd(tmp_path):
    imgs = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / 'imgs' / 's.mrcs', imgs, 2.0)
    (tmp_path / 'p.xmd').write_text(XMD)
    q = load_particles(tmp_path / 'p.xmd')
    assert len(q) == 2  # the disabled particle is skipped
    np.testing.assert_array_equal(q.images[:], imgs[[0, 2]])
    np.testing.assert_allclose(q.euler, [[10, 20, 30], [12, 22, 32]])
    np.testing.assert_allclose(q.shifts, [[-2.0, 4.0], [1.0, -6.0]])  # -shift * 2 A/px
    np.testing.assert_allclose(q.ctf[1], [13000, 12500, 6.0, 300, 2.7, 0.07, 0.0])
    np.testing.assert_allclose(q.metadata[['nma_0', 'nma_1', 'nma_2']].to_numpy(),
                               [[1.5, -0.5, 2.0], [0.1, 0.2, -0.3]])


@needs_xmipp
def test_spider_stacks_are_read_through_xmipp(tmp_path):
    import xmippLib
    imgs = np.random.default_rng(4).normal(size=(3, 8, 8)).astype(np.float32)
    for k, im in enumerate(imgs):
        x = xmippLib.Image()
        x.setData(im)
        x.write('%d@%s' % (k + 1, tmp_path / 's.stk'))
    ps = ParticleSet(ImageSource([(str(tmp_path / 's.stk'), i) for i in (2, 0)]), 2.0)
    assert ps.box == 8
    np.testing.assert_array_equal(ps.images[:], imgs[[2, 0]])
    ps.check(require_ctf=False, require_poses=False)


@needs_xmipp
def test_xmd_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        load_particles(tmp_path / 'none.xmd')
    (tmp_path / 'bad.xmd').write_text('garbage\n1 2 3\n')
    with pytest.raises(ValueError, match='Cannot parse the Xmipp metadata .*bad.xmd'):
        load_particles(tmp_path / 'bad.xmd')
    (tmp_path / 'nostack.xmd').write_text(XMD)
    with pytest.raises(FileNotFoundError, match='s.mrcs'):
        load_particles(tmp_path / 'nostack.xmd')


# ------------------------------------------------------------------ validation

def test_check_names_the_problem():
    ps = _pset(n=6)
    assert ps.check() is ps
    with pytest.raises(ValueError, match='have no CTF parameters: estimate the CTF'):
        ParticleSet(ps.images, 1.5, ps.euler, ps.shifts, None).check()
    ParticleSet(ps.images, 1.5, ps.euler, ps.shifts, None).check(require_ctf=False)
    with pytest.raises(ValueError, match='have no poses'):
        ParticleSet(ps.images, 1.5, None, None, ps.ctf).check()
    ParticleSet(ps.images, 1.5, None, None, ps.ctf).check(require_poses=False)
    imgs = ps.images[:]
    imgs[3, 2, 2] = np.inf
    with pytest.raises(ValueError, match='image 4 contains NaN or Inf'):
        ParticleSet(imgs, 1.5, ps.euler, ps.shifts, ps.ctf).check()
    with pytest.raises(ValueError, match='empty'):
        ps.subset(np.array([], dtype=int)).check()
    bad = ps.euler.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match='particle 3 has NaN/Inf angles'):
        ParticleSet(ps.images, 1.5, bad, ps.shifts, ps.ctf).check()
    with pytest.raises(ValueError, match=r'shifts have shape \(5, 2\)'):
        ParticleSet(ps.images, 1.5, ps.euler, ps.shifts[:5], ps.ctf).check()
    with pytest.raises(ValueError, match='odd box size 15'):
        ParticleSet(np.zeros((2, 15, 15)), 1.5).check(False, False)
    with pytest.raises(ValueError, match='square'):
        ParticleSet(np.zeros((2, 16, 14)), 1.5)


def test_check_finds_truncated_and_missing_stacks(tmp_path):
    ps = _pset(n=4)
    write_particles_star(tmp_path / 'p.star', ps)
    with open(tmp_path / 'p.mrcs', 'r+b') as f:  # cut the stack after 2 images
        f.truncate(1024 + 2 * 16 * 16 * 4)
    with pytest.raises(ValueError, match=r'p\.mrcs.*truncated'):
        load_particles(tmp_path / 'p.star').check()
    os.remove(tmp_path / 'p.mrcs')
    with pytest.raises(FileNotFoundError, match=r"stack '.*p\.mrcs' named in the particle"):
        load_particles(tmp_path / 'p.star')
