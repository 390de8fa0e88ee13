"""Scipion <-> core conversions: poses, CTF, star files, latents, NMA amplitudes.

Known answers: Xmipp's own Euler matrix (xmippLib.Euler_angles2matrix), the
core projector geometry (point x lands at (R x)[:2] + t), exact round trips,
and pixel equality of converted image stacks.
"""
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

if _SKIP is None:
    import pwem.convert.transformations as tfs
    from pwem.constants import ALIGN_NONE, ALIGN_PROJ
    from pwem.objects import Acquisition, CTFModel, SetOfParticles, SetOfParticlesFlex
    from pyworkflow.object import CsvList

    from continuousflex_geodl import constants as const
    from continuousflex_geodl import convert
    from continuousflex_geodl.core.geometry import euler_to_matrix

RNG = np.random.default_rng(7)


def _random_poses(n):
    rot = RNG.uniform(-180, 180, n)
    tilt = RNG.uniform(1, 179, n)
    psi = RNG.uniform(-180, 180, n)
    shifts = RNG.uniform(-6, 6, (n, 3))
    shifts[:, 2] = 0
    return np.stack([rot, tilt, psi], 1), shifts


# ---------------------------------------------------------------- poses -----

def test_matrix_geometry_round_trip_both_conventions():
    angles, shifts = _random_poses(50)
    for inverse in (True, False):
        for a, s in zip(angles, shifts):
            M = convert.matrixFromGeometry(s, a, inverse)
            s2, a2 = convert.geometryFromMatrix(M, inverse)
            np.testing.assert_allclose(s2, s, atol=1e-9)
            # Euler angles are not unique: compare the rotations they encode
            np.testing.assert_allclose(euler_to_matrix(*a2), euler_to_matrix(*a), atol=1e-9)


def test_align_proj_matrix_is_xmipp_euler_matrix_and_shift():
    """M^-1 = [R | -s] with R = Xmipp Euler_angles2matrix (independent library)."""
    import xmippLib
    angles, shifts = _random_poses(20)
    for a, s in zip(angles, shifts):
        M = convert.matrixFromGeometry(s, a, True)
        Minv = np.linalg.inv(M)
        R_xmipp = np.array(xmippLib.Euler_angles2matrix(*a))
        np.testing.assert_allclose(Minv[:3, :3], R_xmipp, atol=1e-9)
        np.testing.assert_allclose(Minv[:3, 3], -s, atol=1e-9)


def test_scipion_matrix_and_core_pose_place_points_identically():
    """A 3D point projects to the same image position through both conventions."""
    apix = 1.7
    angles, shifts = _random_poses(10)
    x = RNG.normal(scale=20.0, size=(30, 3))  # A, about the box centre
    for a, s in zip(angles, shifts):
        M = convert.matrixFromGeometry(s, a, True)
        euler, t = convert.matrixToCorePose(M, apix)
        core_pos = (euler_to_matrix(*euler) @ x.T).T[:, :2] + t
        # Scipion / Xmipp: image (px) = M^-1 applied to the volume point (px)
        hom = np.c_[x / apix, np.ones(len(x))]
        scipion_pos = (np.linalg.inv(M) @ hom.T).T[:, :2] * apix
        np.testing.assert_allclose(core_pos, scipion_pos, atol=1e-9)


def test_relion_origin_sign_matches_scipion_em_relion():
    """rlnOriginXAngst = +shift(px) * apix (Xmipp shift sign); core t = -origin."""
    apix = 2.0
    M = convert.matrixFromGeometry([3.0, -1.5, 0.0], [10.0, 20.0, 30.0], True)
    rot, tilt, psi, ox, oy = convert.matrixToRelion(M, apix)
    assert (ox, oy) == pytest.approx((6.0, -3.0))
    np.testing.assert_allclose(euler_to_matrix(rot, tilt, psi),
                               euler_to_matrix(10.0, 20.0, 30.0), atol=1e-9)
    M2 = convert.relionToMatrix(rot, tilt, psi, ox, oy, apix)
    np.testing.assert_allclose(M2, M, atol=1e-9)
    euler, t = convert.matrixToCorePose(M, apix)
    np.testing.assert_allclose(t, [-6.0, 3.0])
    np.testing.assert_allclose(convert.corePoseToMatrix(euler, t, apix), M, atol=1e-9)


def test_geometry_from_matrix_equals_xmipp_plugin_formula():
    """Same numbers as scipion-em-xmipp's geometryFromMatrix (formula inlined)."""
    angles, shifts = _random_poses(10)
    for a, s in zip(angles, shifts):
        M = tfs.euler_matrix(*np.deg2rad(-a), 'szyz')
        M[:3, 3] = -s
        M = np.linalg.inv(M)   # how scipion-em-relion's reader builds ALIGN_PROJ
        inv = np.linalg.inv(M)
        ref_shifts = -tfs.translation_from_matrix(inv)
        ref_angles = -np.rad2deg(tfs.euler_from_matrix(inv, axes='szyz'))
        s2, a2 = convert.geometryFromMatrix(M, True)
        np.testing.assert_allclose(s2, ref_shifts, atol=1e-12)
        np.testing.assert_allclose(a2, ref_angles, atol=1e-12)


# ---------------------------------------------------------------- CTF -------

def test_ctf_row_from_ctfmodel_and_acquisition():
    ctf = CTFModel()
    ctf.setStandardDefocus(21000.0, 19500.0, 33.0)
    acq = Acquisition(voltage=200.0, sphericalAberration=1.4, amplitudeContrast=0.07)
    row = convert.ctfToCoreRow(ctf, acq)
    assert row == pytest.approx((21000.0, 19500.0, 33.0, 200.0, 1.4, 0.07, 0.0))
    ctf.setPhaseShift(45.0)
    assert convert.ctfToCoreRow(ctf, acq)[6] == pytest.approx(45.0)
    back = convert.coreRowToCtf(convert.ctfToCoreRow(ctf, acq))
    assert (back.getDefocusU(), back.getDefocusV(), back.getDefocusAngle(),
            back.getPhaseShift()) == pytest.approx((21000.0, 19500.0, 33.0, 45.0))


def test_ctf_values_give_core_ctf_of_known_zero():
    """The converted row drives core.ctf: first zero where gamma = -pi (isotropic)."""
    from continuousflex_geodl.core import ctf as core_ctf
    ctf = CTFModel()
    ctf.setStandardDefocus(15000.0, 15000.0, 0.0)
    acq = Acquisition(voltage=300.0, sphericalAberration=0.0, amplitudeContrast=0.0)
    dfu, dfv, dfang, kv, cs, w, ps = convert.ctfToCoreRow(ctf, acq)
    lam = 12.2643247 / np.sqrt(kv * 1e3 * (1 + kv * 1e3 * 0.978466e-6))  # A
    s0 = np.sqrt(1.0 / (lam * dfu))
    freqs = np.array([[s0, 0.0], [0.5 * s0, 0.0]])
    c = np.asarray(core_ctf.compute_ctf(freqs, dfu, dfv, dfang, kv, cs, w, ps))
    assert abs(c[0]) < 1e-6
    assert abs(c[1]) > 0.5


# ---------------------------------------------------------- particle sets ---

def _write_stack(fn, n, box, apix):
    import mrcfile
    data = RNG.normal(size=(n, box, box)).astype(np.float32)
    with mrcfile.new(fn, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = apix
    return data


def _make_set(tmp_path, n=6, box=16, apix=1.5, align=True, ctf=True, stack=None):
    stack = stack or str(tmp_path / 'parts.mrcs')
    data = _write_stack(stack, n, box, apix) if stack.endswith('.mrcs') else None
    angles, shifts = _random_poses(n)
    mats = [convert.matrixFromGeometry(shifts[i], angles[i], True) for i in range(n)]

    def hemnma(i, p):
        vec = CsvList(pType=float)
        vec.set([0.1 * i, -0.2 * i, 0.3])
        setattr(p, const.ATTR_HEMNMA, vec)

    pset = scipion_env.particle_set(
        str(tmp_path / 'particles.sqlite'), stack, n, apix, ctf=ctf,
        alignment=ALIGN_PROJ if align else ALIGN_NONE, transforms=mats if align else None,
        defocus=lambda i: (15000.0 + 100 * i, 14000.0 + 100 * i, 10.0 * i), extra=hemnma)
    return pset, data, [(angles[i], shifts[i], mats[i]) for i in range(n)]


def test_star_round_trip_keeps_poses_ctf_and_images(tmp_path):
    pset, data, truth = _make_set(tmp_path)
    star = str(tmp_path / 'out.star')
    ids = convert.writeParticlesStar(pset, star, requirePoses=True, requireCtf=True)
    assert ids == list(range(1, 7))
    back = SetOfParticles(filename=str(tmp_path / 'back.sqlite'))
    n = convert.readParticlesStar(star, back)
    assert n == 6 and back.getSamplingRate() == pytest.approx(1.5)
    assert back.getAlignment() == ALIGN_PROJ and back.hasCTF()
    for p, (a, s, M) in zip(back.iterItems(orderBy='id'), truth):
        np.testing.assert_allclose(p.getTransform().getMatrix(), M, atol=1e-5)
        assert p.getLocation()[0] == p.getObjId()
        assert os.path.samefile(p.getFileName(), str(tmp_path / 'parts.mrcs'))
        i = p.getObjId() - 1
        assert p.getCTF().getDefocusU() == pytest.approx(15000.0 + 100 * i)
        assert p.getCTF().getDefocusAngle() == pytest.approx(10.0 * i)
        assert p.getAcquisition().getVoltage() == pytest.approx(300.0)


def test_star_is_read_by_core_load_particles(tmp_path):
    from continuousflex_geodl.core import particles
    pset, data, truth = _make_set(tmp_path)
    star = str(tmp_path / 'core.star')
    convert.writeParticlesStar(pset, star)
    ps = particles.load_particles(star)
    assert len(ps) == 6 and ps.box == 16 and ps.apix == pytest.approx(1.5)
    np.testing.assert_allclose(ps.images[np.arange(6)], data, atol=1e-6)
    for i, (a, s, M) in enumerate(truth):
        np.testing.assert_allclose(euler_to_matrix(*ps.euler[i]), euler_to_matrix(*a),
                                   atol=1e-4)
        np.testing.assert_allclose(ps.shifts[i], -s[:2] * 1.5, atol=1e-4)  # t = -origin
        np.testing.assert_allclose(ps.ctf[i], [15000.0 + 100 * i, 14000.0 + 100 * i,
                                               10.0 * i, 300.0, 2.7, 0.1, 0.0], atol=1e-4)


def test_optics_groups_survive_write_and_read(tmp_path):
    """Two acquisitions -> two RELION 3.1 optics groups (checked with emtable, a
    reader independent of the package's), and back per particle."""
    from emtable import Table

    from continuousflex_geodl.core import particles
    pset, data, truth = _make_set(tmp_path)
    other = Acquisition(voltage=200.0, sphericalAberration=2.0, amplitudeContrast=0.07)
    mixed = SetOfParticles(filename=str(tmp_path / 'mixed.sqlite'))
    mixed.copyInfo(pset)
    for p in pset.iterItems(orderBy='id'):
        q = p.clone()
        if p.getObjId() % 2 == 0:
            q.setAcquisition(other)
        mixed.append(q)
    mixed.write()
    star = str(tmp_path / 'mixed.star')
    convert.writeParticlesStar(mixed, star, requireCtf=True)
    optics = {int(r.rlnOpticsGroup): (float(r.rlnVoltage), float(r.rlnSphericalAberration),
                                      float(r.rlnAmplitudeContrast))
              for r in Table(fileName=star, tableName='optics')}
    assert sorted(optics.values()) == [(200.0, 2.0, 0.07), (300.0, 2.7, 0.1)]
    groups = [int(r.rlnOpticsGroup) for r in Table(fileName=star, tableName='particles')]
    assert [optics[g][0] for g in groups] == [300.0, 200.0] * 3
    back = SetOfParticles(filename=str(tmp_path / 'back.sqlite'))
    assert convert.readParticlesStar(star, back) == 6
    for p in back.iterItems(orderBy='id'):
        acq = p.getAcquisition()
        want = (200.0, 2.0, 0.07) if p.getObjId() % 2 == 0 else (300.0, 2.7, 0.1)
        assert (acq.getVoltage(), acq.getSphericalAberration(),
                acq.getAmplitudeContrast()) == pytest.approx(want)
    ps = particles.load_particles(star)
    np.testing.assert_allclose(ps.ctf[:, 3], [300.0, 200.0] * 3)
    np.testing.assert_allclose(ps.ctf[:, 4:6], [[2.7, 0.1], [2.0, 0.07]] * 3)


def test_non_mrc_images_are_converted_pixel_exact(tmp_path):
    import mrcfile
    import xmippLib
    n, box = 4, 16
    stk = str(tmp_path / 'parts.stk')
    data = RNG.normal(size=(n, box, box)).astype(np.float32)
    for i in range(n):
        img = xmippLib.Image()
        img.setData(data[i])
        img.write('%d@%s' % (i + 1, stk))
    pset, _, _ = _make_set(tmp_path, n=n, box=box, stack=stk)
    star = str(tmp_path / 'conv.star')
    convert.writeParticlesStar(pset, star, convertDir=str(tmp_path))
    conv = str(tmp_path / 'particles_converted.mrcs')
    with mrcfile.open(conv) as mrc:
        np.testing.assert_allclose(mrc.data, data, atol=1e-6)
        assert float(mrc.voxel_size.x) == pytest.approx(1.5)
    text = open(star).read()
    assert '000004@%s' % conv in text


def test_missing_poses_or_ctf_are_reported_clearly(tmp_path):
    pset, _, _ = _make_set(tmp_path, align=False, ctf=False)
    with pytest.raises(ValueError, match='3D angular assignment'):
        convert.writeParticlesStar(pset, str(tmp_path / 'a.star'), requirePoses=True)
    with pytest.raises(ValueError, match='no CTF'):
        convert.writeParticlesStar(pset, str(tmp_path / 'a.star'), requireCtf=True)
    # without requirements: a star without angle / defocus columns
    convert.writeParticlesStar(pset, str(tmp_path / 'b.star'))
    text = open(str(tmp_path / 'b.star')).read()
    assert 'rlnAngleRot' not in text and 'rlnDefocusU' not in text


# ---------------------------------------------------------- latents ---------

def test_latents_to_particles_flex_keeps_order_and_attributes(tmp_path):
    pset, _, truth = _make_set(tmp_path)
    Z = RNG.normal(size=(6, 3))
    out = SetOfParticlesFlex(filename=str(tmp_path / 'flex.sqlite'))
    convert.latentsToParticlesFlex(pset, out, Z, ids=list(range(1, 7)),
                                   flexAttrs={const.FLEX_ZDIM: 3,
                                              const.FLEX_MODEL_DIR: '/some/model'})
    out.write()
    assert out.getSize() == 6
    assert out.getFlexInfo().getProgName() == const.PROG_NAME
    assert out.getFlexInfo().getAttr(const.FLEX_ZDIM) == 3
    for p in out.iterItems(orderBy='id'):
        i = p.getObjId() - 1
        np.testing.assert_allclose(p.getZFlex(), Z[i], rtol=1e-6)
        np.testing.assert_allclose(p.getTransform().getMatrix(), truth[i][2], atol=1e-9)
        np.testing.assert_allclose(convert.getParticleVector(p, const.ATTR_HEMNMA),
                                   [0.1 * i, -0.2 * i, 0.3])
    with pytest.raises(ValueError, match='order changed'):
        convert.latentsToParticlesFlex(
            pset, SetOfParticlesFlex(filename=str(tmp_path / 'f2.sqlite')), Z,
            ids=[2, 1, 3, 4, 5, 6])
    with pytest.raises(ValueError, match='latent rows'):
        convert.latentsToParticlesFlex(
            pset, SetOfParticlesFlex(filename=str(tmp_path / 'f3.sqlite')), Z[:5])


def test_hemnma_amplitudes_from_attribute_and_xmd(tmp_path):
    import xmippLib
    pset, _, _ = _make_set(tmp_path)
    ids, A = convert.particleVectors(pset, const.ATTR_HEMNMA)
    assert ids == list(range(1, 7))
    np.testing.assert_allclose(A, [[0.1 * i, -0.2 * i, 0.3] for i in range(6)])
    # HEMNMA writes string CsvLists (from Xmipp metadata): same numbers
    md = xmippLib.MetaData()
    for i in range(6):
        oid = md.addObject()
        md.setValue(xmippLib.MDL_ITEM_ID, i + 1, oid)
        md.setValue(xmippLib.MDL_NMA, [float(v) for v in A[i]], oid)
    xmd = str(tmp_path / 'images.xmd')
    md.write(xmd)
    ids2, A2 = convert.readXmdVectors(xmd)
    assert list(ids2) == ids
    np.testing.assert_allclose(A2, A, atol=1e-6)
    with pytest.raises(ValueError, match="no column 'cost'"):
        convert.readXmdVectors(xmd, 'cost')


def test_normal_modes_to_npz(tmp_path):
    from pwem.objects import AtomStruct, NormalMode, SetOfNormalModes
    pos = RNG.normal(scale=10.0, size=(5, 3))
    pdb = tmp_path / 'atoms.pdb'
    with open(pdb, 'w') as f:
        for i, (x, y, z) in enumerate(pos):
            f.write('ATOM  %5d  CA  ALA A%4d    %8.3f%8.3f%8.3f  1.00  0.00           C\n'
                    % (i + 1, i + 1, x, y, z))
        f.write('END\n')
    (tmp_path / 'modes').mkdir()
    vecs = RNG.normal(size=(9, 5, 3))
    modes = SetOfNormalModes(filename=str(tmp_path / 'modes.sqlite'))
    atom = AtomStruct(filename=str(pdb))
    modes.setPdb(atom)
    for k in range(9):
        fn = tmp_path / 'modes' / ('vec.%d' % (k + 1))
        np.savetxt(fn, vecs[k])
        modes.append(NormalMode(modeFile=str(fn), collectivity=0.5, score=1.0))
    out = str(tmp_path / 'modes.npz')
    used = convert.normalModesToNpz(modes, out)
    assert [os.path.basename(u) for u in used] == ['vec.7', 'vec.8', 'vec.9']
    npz = np.load(out)
    np.testing.assert_allclose(npz['positions'], pos, atol=1e-3)
    assert npz['modes'].shape == (5, 3, 3)
    np.testing.assert_allclose(npz['modes'][:, :, 1], vecs[7], atol=1e-12)
    np.savetxt(tmp_path / 'modes' / 'vec.8', vecs[7][:4])
    with pytest.raises(ValueError, match='do not match'):
        convert.normalModesToNpz(modes, out)
