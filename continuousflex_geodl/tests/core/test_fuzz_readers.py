"""Fuzzing the particle readers (issue #7): RELION .star, Xmipp .xmd, MRC.

Valid files are mutated at random (bytes flipped, spans deleted or
truncated, nasty tokens inserted, lines duplicated or dropped, header words
set to extreme values) and read through the public entry points, then
checked and fully read.  The only acceptable outcomes are success or our own
clear error: a ValueError / FileNotFoundError whose message names the file
being read -- never an IndexError, KeyError, struct.error,
UnicodeDecodeError or a ValueError from deep inside numpy / pandas, and
never a hang (hypothesis deadline per example, pytest timeout per test).

Deterministic (``derandomize=True``, no example database written).
"""
import atexit
import os
import shutil
import struct
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

# hypothesis caches constants under ./.hypothesis: keep it out of the repository
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix='cfgeodl_hypothesis_')
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

from continuousflex_geodl.core.io.mrc import mrc_info, open_stack, read_mrc, write_mrc
from continuousflex_geodl.core.particles import (ParticleSet, load_particles,
                                                 write_particles_star)

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=10000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

N, BOX, APIX = 6, 16, 2.5

#: tokens that break parsers
TOKENS = [b'nan', b'inf', b'-inf', b'1e400', b'-1', b'0', b'\t', b' ', b'\n', b'\r\n', b'@',
          b'..', b'../', b'/', b'#', b'"', b"'", b'\x00', b'\xff\xfe', b'\xc3(', b'data_\n',
          b'loop_\n', b'_rlnFooBar #99\n', b'_rlnAngleRot #3\n', b'_rlnImageName\n',
          b'000099@', b'999999999999999999999@', b'-3@', b'0@', b'@@', b'\xe2\x82\xac']


def _ours(exc, folder):
    """Our clear error: ValueError / FileNotFoundError naming a file in ``folder``."""
    return isinstance(exc, (ValueError, FileNotFoundError)) and folder in str(exc)


@pytest.fixture(scope='module')
def folder():
    d = tempfile.mkdtemp(prefix='cfgeodl_fuzz_')
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(N, BOX, BOX)).astype(np.float32)
    ctf = np.tile([15000.0, 14500.0, 30.0, 300.0, 2.7, 0.1, 0.0], (N, 1))
    pset = ParticleSet(imgs, APIX, rng.uniform(-180, 180, (N, 3)), rng.normal(0, 2, (N, 2)),
                       ctf)
    write_particles_star(os.path.join(d, 'valid.star'), pset, stack_path=os.path.join(
        d, 'stack.mrcs'))
    write_particles_star(os.path.join(d, 'valid30.star'), load_particles(
        os.path.join(d, 'valid.star')), version='3.0')
    write_mrc(os.path.join(d, 'vol.mrc'), rng.normal(size=(BOX, BOX, BOX)), APIX)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _mutation():
    return st.tuples(st.sampled_from(['truncate', 'delete', 'insert', 'byte', 'dup_line',
                                      'drop_line', 'swap_lines']),
                     st.floats(0, 1, allow_subnormal=False), st.floats(0, 1, allow_subnormal=False),
                     st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)))


def _mutated_copy(folder, source, name, mutate):
    """Write ``mutate(bytes of folder/source)`` to folder/name; returns its path."""
    with open(os.path.join(folder, source), 'rb') as f:
        data = mutate(f.read())
    path = os.path.join(folder, name)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _mutate(data, ops):
    b = bytearray(data)
    for op, u, v, tok in ops:
        i = int(u * len(b)) if b else 0
        if op == 'truncate':
            b = b[:i]
        elif op == 'delete':
            del b[i:i + 1 + int(v * 40)]
        elif op == 'insert':
            b[i:i] = tok
        elif op == 'byte' and b:
            b[min(i, len(b) - 1)] = int(v * 255)
        else:
            lines = bytes(b).split(b'\n')
            k = min(int(u * len(lines)), len(lines) - 1)
            j = min(int(v * len(lines)), len(lines) - 1)
            if op == 'dup_line':
                lines.insert(k, lines[k])
            elif op == 'drop_line':
                del lines[k]
            else:
                lines[k], lines[j] = lines[j], lines[k]
            b = bytearray(b'\n'.join(lines))
    return bytes(b)


def _read_everything(path, folder):
    """load -> check -> read every image; returns the set or raises."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        p = load_particles(path)
        p.check(require_ctf=False, require_poses=False)
        imgs = p.images[np.arange(len(p))]
    assert imgs.shape == (len(p), p.box, p.box)
    for arr in (p.euler, p.shifts, p.ctf):
        assert arr is None or (arr.shape[0] == len(p) and np.isfinite(arr).all())
    if p.ctf is not None:  # phase shift: a number (0 when missing or empty), never NaN
        assert np.isfinite(p.ctf[:, 6]).all()
    return p


def _expect_clean(fn, folder):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 -- the point of the test
        if not _ours(exc, folder):
            raise AssertionError('not our clear error: %s: %s'
                                 % (type(exc).__name__, exc)) from exc
        return None


@pytest.mark.parametrize('source', ['valid.star', 'valid30.star'])
@FUZZ
@given(ops=st.lists(_mutation(), min_size=1, max_size=4))
def test_fuzz_star_reader(folder, source, ops):
    path = _mutated_copy(folder, source, 'fuzz.star', lambda b: _mutate(b, ops))
    _expect_clean(lambda: _read_everything(path, folder), folder)


_COLUMNS = ['rlnImageName', 'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi', 'rlnOriginXAngst',
            'rlnOriginYAngst', 'rlnOriginX', 'rlnOriginY', 'rlnDefocusU', 'rlnDefocusV',
            'rlnDefocusAngle', 'rlnVoltage', 'rlnSphericalAberration',
            'rlnAmplitudeContrast', 'rlnPhaseShift', 'rlnImagePixelSize',
            'rlnDetectorPixelSize', 'rlnMagnification', 'rlnOpticsGroup', 'rlnFooBar',
            'rlnClassNumber']
_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32, allow_subnormal=False),
                    st.integers(-3, 10), st.sampled_from(['', 'abc', '1@stack.mrcs',
                                                          '3@stack.mrcs', '9@stack.mrcs',
                                                          'x@y', '"', 'nan']))


@FUZZ
@given(cols=st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=12, unique=True),
       rows=st.integers(0, 4), data=st.data(), optics=st.booleans())
def test_fuzz_star_columns(folder, cols, rows, data, optics):
    """Random column sets with random values (as other tools might write)."""
    lines = []
    if optics:
        lines += ['data_optics', '', 'loop_', '_rlnOpticsGroup #1',
                  '_rlnImagePixelSize #2', '_rlnVoltage #3', '_rlnSphericalAberration #4',
                  '_rlnAmplitudeContrast #5', '1 2.5 300 2.7 0.1', '']
    lines += ['data_particles', '', 'loop_'] + ['_%s #%d' % (c, k + 1)
                                               for k, c in enumerate(cols)]
    for _ in range(rows):
        vals = []
        for c in cols:
            if c == 'rlnImageName' and data.draw(st.booleans()):
                v = '%d@stack.mrcs' % data.draw(st.integers(-1, N + 2))
            else:
                v = data.draw(_VALUES)
            v = str(v)
            vals.append(v if v.strip() and '"' not in v else '""')
        lines.append(' '.join(vals))
    path = os.path.join(folder, 'cols.star')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    p = _expect_clean(lambda: _read_everything(path, folder), folder)
    if p is not None and 'rlnDefocusU' in cols and 'rlnPhaseShift' not in cols:
        assert np.all(p.ctf[:, 6] == 0.0)


def _valid_xmd(folder):
    pytest.importorskip('xmippLib')
    from continuousflex_geodl.core.io.xmd import write_xmd
    src = os.path.join(folder, 'valid.xmd')
    if not os.path.exists(src):
        write_xmd(src, load_particles(os.path.join(folder, 'valid.star')))
    with open(src, 'rb') as f:
        return f.read()


# files found by this fuzzer that abort (SIGABRT) or segfault Xmipp's own parser
XMD_CRASHERS = {'rows before the data_ line': None,  # valid file, data_ line moved last
                'truncated block name': b'# XMIPP_STAR_1 * \ndata_no',
                'block without loop_': b'# XMIPP_STAR_1 * \nl\ndata_noname\n# '}


@pytest.mark.parametrize('case', sorted(XMD_CRASHERS))
def test_xmd_files_that_crash_xmipp_are_refused(folder, case):
    data = XMD_CRASHERS[case] or \
        _valid_xmd(folder).replace(b'data_noname\n', b'', 1) + b'\ndata_noname'
    path = os.path.join(folder, 'crash.xmd')
    with open(path, 'wb') as f:
        f.write(data)
    with pytest.raises(ValueError, match='Xmipp parser crashed on it'):
        load_particles(path)


# each example parses the file in a probe process (~0.2 s): fewer examples
@settings(FUZZ, max_examples=60)
@given(ops=st.lists(_mutation(), min_size=1, max_size=4))
def test_fuzz_xmd_reader(folder, ops):
    data = _mutate(_valid_xmd(folder), ops)
    path = os.path.join(folder, 'fuzz.xmd')
    with open(path, 'wb') as f:
        f.write(data)
    _expect_clean(lambda: _read_everything(path, folder), folder)


_INT_WORDS = list(range(0, 10)) + [23, 24, 25, 26, 27, 49, 52, 53, 54]  # dims, mode, ext...
_FLOAT_WORDS = [10, 11, 12, 19, 20, 21, 49, 50, 51, 54]  # cell, stats, origin, rms


def _header_edit():
    return st.one_of(
        st.tuples(st.just('int'), st.sampled_from(_INT_WORDS),
                  st.sampled_from([0, -1, 1, 2, 3, 5, 101, 2 ** 31 - 1, -2 ** 31, 10 ** 6,
                                   16, 17, 1024])),
        st.tuples(st.just('float'), st.sampled_from(_FLOAT_WORDS),
                  st.sampled_from([float('nan'), float('inf'), -1.0, 0.0, 1e30, -1e30])),
        st.tuples(st.just('byte'), st.integers(0, 1023), st.integers(0, 255)),
        st.tuples(st.just('truncate'), st.floats(0, 1, allow_subnormal=False), st.just(0)),
        st.tuples(st.just('append'), st.integers(1, 3000), st.just(0)))


def _mutate_mrc(data, edits):
    b = bytearray(data)
    for kind, a, v in edits:
        if kind == 'int' and len(b) >= 4 * a + 4:
            b[4 * a:4 * a + 4] = struct.pack('<i', v)
        elif kind == 'float' and len(b) >= 4 * a + 4:
            b[4 * a:4 * a + 4] = struct.pack('<f', v)
        elif kind == 'byte' and a < len(b):
            b[a] = v
        elif kind == 'truncate':
            b = b[:int(a * len(b))]
        elif kind == 'append':
            b += bytes(a)
    return bytes(b)


@pytest.mark.parametrize('source', ['stack.mrcs', 'vol.mrc'])
@FUZZ
@given(edits=st.lists(_header_edit(), min_size=1, max_size=4))
def test_fuzz_mrc_reader(folder, source, edits):
    path = _mutated_copy(folder, source, 'fuzz_' + source, lambda b: _mutate_mrc(b, edits))

    def read_all():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            arr, apix = read_mrc(path)
            info = mrc_info(path)
            assert tuple(arr.shape) == info['shape'] and apix > 0
            if arr.ndim == 3 and arr.shape[1] == arr.shape[2]:
                s = open_stack(path)
                assert np.array_equal(np.asarray(s[:]), arr, equal_nan=True)

    _expect_clean(read_all, folder)
    if source == 'stack.mrcs':  # and the same file as the stack of a particle set
        star = os.path.join(folder, 'fz_stack.star')
        if not os.path.exists(star):
            with open(os.path.join(folder, 'valid.star')) as f:
                text = f.read().replace('@stack.mrcs', '@fuzz_stack.mrcs')
            with open(star, 'w') as f:
                f.write(text)
        _expect_clean(lambda: _read_everything(star, folder), folder)
