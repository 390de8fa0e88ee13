"""Fault injection (issue #7): bad input, interrupted runs, safe files.

Each test feeds one fault to the worker the Scipion protocols run (the
``continuousflex-geodl`` command line, as a real subprocess or through
``cli.main``), to the core function behind it, or to a protocol's
``_validate``, and checks what the user sees -- our one-line message naming
the problem and the fix (exit status 2, no Python traceback) -- and that no
data is lost: inputs are unchanged, outputs are the old or the new version,
interrupted training resumes to the same weights.

Data: a tiny synthetic hinge set (``models.toydata``) written as a RELION
3.1 .star + .mrcs stack, with its reference as .npz and .pdb.
"""
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from continuousflex_geodl.core import cli, engine, fileio, inference, runtime
from continuousflex_geodl.core.io.mrc import read_mrc, write_mrc
from continuousflex_geodl.core.models.toydata import make_toy_particles, write_toy_dataset
from continuousflex_geodl.core.particles import (ParticleSet, load_particles,
                                                 write_particles_star)

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.usefixtures('one_thread')]  # one_thread: conftest.py

N, BOX, APIX = 64, 24, 5.0
#: a tiny model for in-process engine runs (as in test_engine)
TINY = dict(epochs=3, batch_size=16, log_every=0, calib_particles=64, sinkhorn_every=2,
            sinkhorn_points=40, zdim=2, dec_width=16, enc_width=32, enc_modes=4,
            dec_segments=4, dec_rank=4, gmm_components=8, threads=1)
#: a short CLI training
TRAIN = ['--zdim', '2', '--epochs', '1', '--batch-size', '16', '--threads', '1']


# ------------------------------------------------------------------ helpers

def _hash(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tree_state(folder):
    """{relative path: (sha256, mtime_ns, size)} of every file below ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (_hash(p), st.st_mtime_ns, st.st_size)
    return out


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Folder with particles.star/.mrcs (N particles, BOX px, APIX A/px), ref.npz,
    ref.pdb; plus the ParticleSet and the ground truth."""
    d = tmp_path_factory.mktemp('faults_data')
    pset, truth = write_toy_dataset(str(d), pdb=True, n=N, box=BOX, apix=APIX, n_atoms=50,
                                    snr=1.0, seed=1)
    return d, pset, truth


def _copy_data(data, dest):
    d = data[0]
    os.makedirs(dest, exist_ok=True)
    for name in ('particles.star', 'particles.mrcs', 'ref.npz', 'ref.pdb'):
        shutil.copy(str(d / name), os.path.join(dest, name))
    return str(dest)


@pytest.fixture(scope='module')
def trained(data, tmp_path_factory):
    """A model directory trained for one epoch by the CLI on ``data``."""
    d = data[0]
    out = str(tmp_path_factory.mktemp('faults_model') / 'model')
    assert cli.main(['train', '--particles', str(d / 'particles.star'), '--reference',
                     str(d / 'ref.npz'), '--out', out] + TRAIN) == 0
    return out


def _edit_star(src, dst, edit):
    """Read a .star with starfile, let ``edit(blocks)`` change it, write ``dst``."""
    import starfile
    blocks = starfile.read(src, always_dict=True)
    edit(blocks)
    starfile.write(blocks, dst, overwrite=True)
    return dst


def _drop(blocks, cols):
    for k, df in blocks.items():
        blocks[k] = df.drop(columns=[c for c in cols if c in df.columns])


CTF_COLS = ('rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnPhaseShift')
POSE_COLS = ('rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi', 'rlnOriginXAngst',
             'rlnOriginYAngst')


def run_cli(args, capsys):
    """``continuousflex-geodl ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def run_worker(args, env=None, timeout=240):
    """The real worker: ``python -m continuousflex_geodl ARGS`` in a subprocess."""
    e = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')
    e.update(env or {})
    return subprocess.run([sys.executable, '-m', 'continuousflex_geodl'] +
                          [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def assert_user_error(rc, err, *phrases):
    """Exit status 2, one 'ERROR: ...' line with every phrase, no traceback."""
    assert rc == 2, err
    assert 'Traceback' not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith('ERROR: ')]
    assert len(lines) == 1, err
    for p in phrases:
        assert p in lines[0], (p, lines[0])
    return lines[0]


def _train_args(folder, out, star='particles.star', ref='ref.npz'):
    return ['train', '--particles', os.path.join(folder, star), '--reference',
            os.path.join(folder, ref), '--out', out] + TRAIN


# ============================================================== bad input ===

def test_particles_without_ctf(data, tmp_path, capsys):
    """No CTF columns: the worker refuses with the fix; --no-ctf accepts CTF-free
    images (rendered here without CTF) and trains."""
    from continuousflex_geodl.core.geometry import euler_to_matrix
    from continuousflex_geodl.core.render import project
    d = _copy_data(data, tmp_path / 'd')
    _edit_star(os.path.join(d, 'particles.star'), os.path.join(d, 'noctf.star'),
               lambda b: _drop(b, CTF_COLS))
    assert load_particles(os.path.join(d, 'noctf.star')).ctf is None
    out = str(tmp_path / 'm')
    rc, _, err = run_cli(_train_args(d, out, 'noctf.star'), capsys)
    assert_user_error(rc, err, 'have no CTF parameters', 'CTFFIND')
    assert not os.path.exists(os.path.join(out, 'weights.pt'))
    # CTF-free images (e.g. simulated without CTF) are accepted when the user says so
    _, pset, truth = data
    R = torch.as_tensor(euler_to_matrix(*pset.euler.T), dtype=torch.float32)
    with torch.no_grad():
        clean = project(torch.as_tensor(truth['reference'], dtype=torch.float32),
                        torch.ones(len(truth['reference'])), truth['sigma'], R, BOX, APIX,
                        shifts=torch.as_tensor(pset.shifts, dtype=torch.float32)).numpy()
    noisy = clean / clean.std() + np.random.default_rng(0).normal(size=clean.shape)
    write_particles_star(os.path.join(d, 'free.star'),
                         ParticleSet(noisy.astype(np.float32), APIX, pset.euler, pset.shifts))
    rc, _, err = run_cli(_train_args(d, out, 'free.star') + ['--no-ctf'], capsys)
    assert rc == 0, err
    assert os.path.exists(os.path.join(out, 'weights.pt'))
    # the model remembers it was trained without CTF: its latents are inferred
    z = str(tmp_path / 'z.npy')
    rc, _, err = run_cli(['infer', '--model', out, '--particles',
                          os.path.join(d, 'free.star'), '--out', z, '--refine-steps', '2'],
                         capsys)
    assert rc == 0, err
    assert np.load(z).shape[0] == len(pset) and np.isfinite(np.load(z)).all()


def test_particles_without_poses(data, tmp_path, capsys):
    d = _copy_data(data, tmp_path / 'd')
    _edit_star(os.path.join(d, 'particles.star'), os.path.join(d, 'nopose.star'),
               lambda b: _drop(b, POSE_COLS))
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm'), 'nopose.star'), capsys)
    assert_user_error(rc, err, 'have no poses', 'consensus 3D refinement')
    # half a pose (one angle column lost) is an error, not silently 'no poses'
    _edit_star(os.path.join(d, 'particles.star'), os.path.join(d, 'half.star'),
               lambda b: _drop(b, ['rlnAngleTilt']))
    with pytest.raises(ValueError, match='not rlnAngleTilt: the angles are incomplete'):
        load_particles(os.path.join(d, 'half.star'))


def test_reference_map_with_other_pixel_size(data, tmp_path, capsys):
    """A consensus map on another grid: the message offers the resampling command."""
    from continuousflex_geodl.core.render import render_volume
    d = _copy_data(data, tmp_path / 'd')
    truth = data[2]
    vol = render_volume(torch.as_tensor(truth['reference'], dtype=torch.float32),
                        torch.ones(len(truth['reference'])), truth['sigma'], 32, 4.0).numpy()
    write_mrc(os.path.join(d, 'map.mrc'), vol, 4.0)
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm'), ref='map.mrc'), capsys)
    assert_user_error(rc, err, 'has 32 px at 4.0000 A/px but the particles have 24 px at '
                      '5.0000 A/px', 'resample the map', 'relion_image_handler',
                      '--rescale_angpix 5.0000 --new_box 24')


def test_particles_on_another_grid_than_the_model(data, trained, tmp_path, capsys):
    d = _copy_data(data, tmp_path / 'd')
    pset = data[1]
    write_particles_star(os.path.join(d, 'p4.star'),
                         ParticleSet(pset.images[np.arange(N)], 4.0, pset.euler, pset.shifts,
                                     pset.ctf))
    rc, _, err = run_cli(['infer', '--model', trained, '--particles',
                          os.path.join(d, 'p4.star'), '--out', str(tmp_path / 'z.npy')], capsys)
    assert_user_error(rc, err, 'do not match the model', 'rescale them to the training grid')
    assert not os.path.exists(str(tmp_path / 'z.npy'))


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_nan_or_inf_pixels(data, tmp_path, capsys, bad):
    d = _copy_data(data, tmp_path / 'd')
    imgs = data[1].images[np.arange(N)]
    imgs[5, 3, 7] = bad
    write_mrc(os.path.join(d, 'particles.mrcs'), imgs, APIX)
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm')), capsys)
    assert_user_error(rc, err, 'image 6 contains NaN or Inf pixels', 're-extract')


def test_nan_pixels_outside_the_checked_sample_stop_training(data, tmp_path):
    """The start-up check samples images; every batch is checked when read."""
    from continuousflex_geodl.core.models.toydata import ToyParticles
    parts, truth = make_toy_particles(n=96, box=24, apix=5.0, n_atoms=60, snr=1.0, seed=0)
    images = parts.images.copy()
    images[70, 0, 0] = np.nan
    bad = ToyParticles(images, parts.apix, parts.euler, parts.shifts, parts.ctf)
    ref = (truth['reference'], truth['amplitudes'], truth['sigma'])
    with pytest.raises(ValueError, match='Particle 71 contains NaN or Inf pixels'):
        engine.train(bad, ref, str(tmp_path / 'm'), **TINY)
    assert not os.path.exists(str(tmp_path / 'm' / 'weights.pt'))


@pytest.mark.parametrize('fault', ['missing', 'truncated', 'garbage', 'folder', 'unreadable'])
def test_bad_stack_file(data, tmp_path, capsys, fault):
    d = _copy_data(data, tmp_path / 'd')
    stack = os.path.join(d, 'particles.mrcs')
    star = os.path.join(d, 'particles.star')
    if fault == 'missing':
        os.remove(stack)
        with pytest.raises(FileNotFoundError, match='does not exist'):
            load_particles(star)
        phrase = 'does not exist (moved or deleted?)'
    elif fault == 'truncated':
        with open(stack, 'r+b') as f:
            f.truncate(1024 + 10 * BOX * BOX * 4 + 100)  # 10 images and a bit
        with pytest.raises(ValueError, match='truncated'):
            load_particles(star).check()
        phrase = 'announces 24 x 24 x 64 values'
    elif fault == 'garbage':
        with open(stack, 'wb') as f:
            f.write(np.random.default_rng(0).bytes(150000))
        phrase = "no 'MAP' identifier"
    elif fault == 'folder':
        os.remove(stack)
        os.mkdir(stack)
        phrase = 'is a folder, not an MRC file'
    else:
        if os.geteuid() == 0:
            pytest.skip('running as root: file permissions do not stop reading')
        os.chmod(stack, 0)
        phrase = 'Cannot read'
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm')), capsys)
    assert_user_error(rc, err, phrase)


def test_star_missing_and_unknown_columns(data, tmp_path, capsys):
    d = _copy_data(data, tmp_path / 'd')
    star = os.path.join(d, 'particles.star')
    ref = data[1]

    def edit(b):  # no phase shift, two columns this reader does not know
        _drop(b, ['rlnPhaseShift'])
        b['particles']['rlnFooBarScore'] = np.arange(N) * 0.5
        b['particles']['rlnMyToolLabel'] = ['cls%d' % (i % 3) for i in range(N)]

    p = load_particles(_edit_star(star, os.path.join(d, 'extra.star'), edit))
    assert np.all(p.ctf[:, 6] == 0.0)  # missing phase shift -> 0, not NaN
    np.testing.assert_allclose(p.ctf[:, :6], ref.ctf[:, :6], rtol=1e-5)
    np.testing.assert_allclose(p.metadata['rlnFooBarScore'], np.arange(N) * 0.5)
    # unknown columns survive a rewrite
    write_particles_star(os.path.join(d, 'again.star'), p)
    q = load_particles(os.path.join(d, 'again.star'))
    assert list(q.metadata['rlnMyToolLabel']) == ['cls%d' % (i % 3) for i in range(N)]
    # missing columns the reader needs: one clear message each
    cases = [(['rlnImageName'], 'no particle table with an rlnImageName column'),
             (['rlnImagePixelSize'], 'no pixel size'),
             (['rlnVoltage'], 'has defocus values but no rlnVoltage column'),
             (['rlnOriginYAngst'], 'not rlnOriginYAngst: the shifts are incomplete')]
    for k, (cols, msg) in enumerate(cases):
        bad = _edit_star(star, os.path.join(d, 'bad%d.star' % k), lambda b: _drop(b, cols))
        with pytest.raises(ValueError, match=msg):
            load_particles(bad)
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm'), 'bad2.star'), capsys)
    assert_user_error(rc, err, 'rlnVoltage')


def test_empty_set(data, tmp_path, capsys):
    d = _copy_data(data, tmp_path / 'd')
    lines = open(os.path.join(d, 'particles.star')).read().splitlines()
    head = [ln for ln in lines if '@' not in ln]  # drop every particle row
    with open(os.path.join(d, 'empty.star'), 'w') as f:
        f.write('\n'.join(head) + '\n')
    with pytest.raises(ValueError, match='the particle table is empty'):
        load_particles(os.path.join(d, 'empty.star'))
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm'), 'empty.star'), capsys)
    assert_user_error(rc, err, 'empty')
    with pytest.raises(ValueError, match='the set is empty'):
        data[1].subset(np.array([], dtype=int)).check()


def test_atomic_model_with_no_atom_in_the_box(data, tmp_path, capsys):
    """A model not in the particles' frame (here 1000 A away) or with no atom."""
    from continuousflex_geodl.core.structure import check_in_box, write_pdb
    d = _copy_data(data, tmp_path / 'd')
    ref = data[2]['reference']
    write_pdb(os.path.join(d, 'far.pdb'), ref + 1000.0)
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm'), ref='far.pdb') +
                         ['--n-atoms', 'all'], capsys)
    assert_user_error(rc, err, 'has no atom inside the particle box', 'relModel',
                      'subtract the map centre')
    with open(os.path.join(d, 'none.pdb'), 'w') as f:
        f.write('REMARK nothing here\nEND\n')
    rc, _, err = run_cli(_train_args(d, str(tmp_path / 'm2'), ref='none.pdb'), capsys)
    assert_user_error(rc, err, 'none.pdb')
    assert 'atom' in err or 'model' in err
    # a model half out of the box trains, with a warning naming the fix
    assert check_in_box(ref, BOX, APIX) == 1.0
    shifted = ref + np.array([0.5 * BOX * APIX, 0.0, 0.0])
    frac = check_in_box(shifted, BOX, APIX)
    assert 0.0 < frac < 0.9
    assert 'outside the particle box' in capsys.readouterr().err


@pytest.mark.parametrize('flag,value,phrase', [
    ('--zdim', '0', 'Invalid zdim = 0: the latent dimension must be an integer >= 1'),
    ('--epochs', '-2', 'Invalid epochs = -2: train for at least 1 epoch'),
    ('--batch-size', '0', 'Invalid batch_size = 0'),
    ('--lr', '0', 'Invalid lr = 0.0: the learning rate must be > 0'),
    ('--beta', '-1', 'Invalid beta = -1.0: loss weights must be >= 0'),
    ('--pose-start', '1', 'Invalid pose_start = 1.0: a fraction of the training in [0, 1)'),
])
def test_nonsense_parameters(data, tmp_path, capsys, flag, value, phrase):
    d = data[0]
    out = str(tmp_path / 'm')
    rc, _, err = run_cli(_train_args(str(d), out) + [flag, value], capsys)
    assert_user_error(rc, err, phrase)
    assert not os.path.exists(out)  # refused before anything was written


def test_batch_larger_than_the_set(data, tmp_path, capsys):
    d = data[0]
    out = str(tmp_path / 'm')
    rc, _, err = run_cli(_train_args(str(d), out) + ['--batch-size', '1000'], capsys)
    assert rc == 0, err
    assert 'WARNING: the batch size (1000) is larger than the set of 64 particles; using ' \
           'batches of 64' in err
    assert json.load(open(os.path.join(out, 'config.json')))['batch_size'] == N


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_requested_without_cuda(data, trained, tmp_path, capsys, monkeypatch):
    d = str(data[0])
    out = str(tmp_path / 'm')
    monkeypatch.delenv(runtime.CPU_FALLBACK_ENV, raising=False)
    rc, _, err = run_cli(_train_args(d, out) + ['--device', 'cuda'], capsys)
    assert_user_error(rc, err, "Device 'cuda' was requested but this machine has no usable "
                      "CUDA GPU", '--device cpu', '--allow-cpu-fallback')
    assert not os.path.exists(out)
    rc, _, err = run_cli(['infer', '--model', trained, '--particles',
                          os.path.join(d, 'particles.star'), '--out', str(tmp_path / 'z.npy'),
                          '--device', 'cuda:0'], capsys)
    assert_user_error(rc, err, 'no usable CUDA GPU', runtime.CPU_FALLBACK_ENV)
    # allowed fallback: a warning, and the run happens on the CPU
    rc, _, err = run_cli(_train_args(d, out) + ['--device', 'cuda', '--allow-cpu-fallback'],
                         capsys)
    assert rc == 0, err
    assert 'WARNING' in err and 'running on the CPU instead' in err
    assert json.load(open(os.path.join(out, 'config.json')))['device'] == 'cpu'
    monkeypatch.setenv(runtime.CPU_FALLBACK_ENV, '1')
    assert runtime.resolve_device('cuda') == torch.device('cpu')
    for bad in ('cuda:x', 'tpu', 'cuda0'):
        with pytest.raises(ValueError, match='Unknown device'):
            runtime.resolve_device(bad)


@pytest.mark.gpu
def test_missing_gpu_number_on_a_cuda_machine(monkeypatch):
    monkeypatch.delenv(runtime.CPU_FALLBACK_ENV, raising=False)
    n = torch.cuda.device_count()
    assert runtime.resolve_device('cuda:0') == torch.device('cuda:0')
    with pytest.raises(RuntimeError, match='has %d CUDA GPU' % n):
        runtime.resolve_device('cuda:%d' % n)
    assert runtime.resolve_device('cuda:%d' % n, allow_cpu_fallback=True) == \
        torch.device('cpu')


# ========================================================= interrupted runs ===

def _wait_for(cond, proc, timeout=180):
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError('the training ended before it could be killed:\n' +
                                 proc.stderr.read().decode())
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError('timed out waiting for the training')
        time.sleep(0.005)


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    """A CLI training killed twice with SIGKILL (after its first checkpoint, and
    mid-way through the resumed run) and resumed with --resume ends with exactly
    the weights of an uninterrupted run with the same seed."""
    folder = str(tmp_path / 'd')
    parts, truth = make_toy_particles(n=160, box=32, apix=4.0, n_atoms=60, snr=1.0, seed=3)
    write_particles_star(os.path.join(folder, 'p.star'),
                         ParticleSet(parts.images, parts.apix, parts.euler, parts.shifts,
                                     parts.ctf))
    np.savez(os.path.join(folder, 'ref.npz'), positions=truth['reference'],
             amplitudes=truth['amplitudes'], sigma=truth['sigma'])
    before = _tree_state(folder)

    def args(out):
        return [sys.executable, '-m', 'continuousflex_geodl', 'train', '--particles',
                os.path.join(folder, 'p.star'), '--reference',
                os.path.join(folder, 'ref.npz'), '--out', out, '--zdim', '2', '--epochs',
                '8', '--batch-size', '16', '--threads', '1', '--seed', '7']

    env = dict(os.environ, OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE')
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    subprocess.run(args(full), check=True, env=env, timeout=240, capture_output=True)
    last = os.path.join(part, 'checkpoints', 'last.pt')

    def epoch_of():
        return int(torch.load(last, map_location='cpu', weights_only=True)['epoch'])

    # 1st kill: shortly after the first checkpoint exists
    proc = subprocess.Popen(args(part), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _wait_for(lambda: os.path.exists(last), proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not os.path.exists(os.path.join(part, 'weights.pt'))
    e1 = epoch_of()
    assert 1 <= e1 < 8
    # 2nd kill: in the resumed run, as soon as it has saved another epoch
    proc = subprocess.Popen(args(part) + ['--resume'], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    m0 = os.stat(last).st_mtime_ns
    _wait_for(lambda: os.stat(last).st_mtime_ns != m0, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    e2 = epoch_of()
    assert e1 < e2 < 8
    assert not os.path.exists(os.path.join(part, 'weights.pt'))
    res = subprocess.run(args(part) + ['--resume'], env=env, timeout=240,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'resuming from epoch %d' % e2 in res.stdout
    a = torch.load(os.path.join(full, 'weights.pt'), weights_only=True)
    b = torch.load(os.path.join(part, 'weights.pt'), weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = json.load(open(os.path.join(full, 'history.json')))
    hb = json.load(open(os.path.join(part, 'history.json')))
    assert [r['loss'] for r in ha] == [r['loss'] for r in hb]
    assert _tree_state(folder) == before  # the inputs were not touched


@pytest.fixture(scope='module')
def engine_runs(data, tmp_path_factory):
    """An uninterrupted TINY engine run and one stopped after 2 of 3 epochs."""
    pset = load_particles(str(data[0] / 'particles.star'))
    ref = (data[2]['reference'], data[2]['amplitudes'], data[2]['sigma'])
    root = tmp_path_factory.mktemp('faults_engine')
    engine.train(pset, ref, str(root / 'full'), **TINY)
    engine.train(pset, ref, str(root / 'part'), stop_after=2, **TINY)
    return pset, ref, root


def _weights_equal(d1, d2):
    a = torch.load(os.path.join(d1, 'weights.pt'), weights_only=True)
    b = torch.load(os.path.join(d2, 'weights.pt'), weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_is_never_loaded(engine_runs, tmp_path, capsys):
    """A truncated last.pt and leftover temporary files of an interrupted write are
    never loaded: training resumes from the complete checkpoint before it and
    still reproduces the uninterrupted run."""
    pset, ref, root = engine_runs
    part = str(tmp_path / 'part')
    shutil.copytree(str(root / 'part'), part)
    ck = os.path.join(part, 'checkpoints')
    assert sorted(f for f in os.listdir(ck)) == ['last.pt', 'previous.pt']
    size = os.path.getsize(os.path.join(ck, 'last.pt'))
    with open(os.path.join(ck, 'last.pt'), 'r+b') as f:
        f.truncate(size // 2)  # half-written (e.g. a copy cut short)
    for name in ('last.pt.tmp.4242', '.last.pt.x1y2.tmp'):  # interrupted writes
        with open(os.path.join(ck, name), 'wb') as f:
            f.write(b'PK\x03\x04 half a zip')
    capsys.readouterr()
    engine.train(pset, ref, part, resume=True, **TINY)
    err = capsys.readouterr().err
    assert 'is truncated or corrupt' in err and 'previous.pt, epoch 1' in err
    assert _weights_equal(str(root / 'full'), part)
    assert not [f for f in os.listdir(ck) if '.tmp' in f]


def test_no_usable_checkpoint_is_a_clear_error(engine_runs, data, tmp_path, capsys):
    _, _, root = engine_runs
    part = str(tmp_path / 'part')
    shutil.copytree(str(root / 'part'), part)
    for name in ('last.pt', 'previous.pt'):
        with open(os.path.join(part, 'checkpoints', name), 'r+b') as f:
            f.truncate(100)
    rc, _, err = run_cli(['train', '--particles', str(data[0] / 'particles.star'),
                          '--reference', str(data[0] / 'ref.npz'), '--out', part,
                          '--resume', '--threads', '1'], capsys)
    assert_user_error(rc, err, 'no usable checkpoint', 'is truncated or corrupt',
                      'Delete the checkpoints folder')
    assert not os.path.exists(os.path.join(part, 'weights.pt'))


# =============================================================== safe files ===

def test_inputs_are_never_modified(data, tmp_path, capsys):
    """Hashes and mtimes of the input star / mrcs / pdb before and after train,
    infer and decode; nothing new appears in the input folder."""
    d = _copy_data(data, tmp_path / 'inputs')
    before = _tree_state(d)
    model, z = str(tmp_path / 'model'), str(tmp_path / 'z.npy')
    rc, _, err = run_cli(_train_args(d, model, ref='ref.pdb') + ['--n-atoms', '30'], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(['infer', '--model', model, '--particles',
                          os.path.join(d, 'particles.star'), '--out', z], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(['decode', '--model', model, '--latents', z, '--out',
                          str(tmp_path / 'dec'), '--rows', '0,1'], capsys)
    assert rc == 0, err
    assert _tree_state(d) == before


def test_outputs_are_atomic_when_a_write_fails(data, tmp_path, monkeypatch):
    """Every writer goes through a temporary file + os.replace: when the final
    rename fails (a crash at the last moment), the previous file is intact and
    no temporary file is left behind."""
    from continuousflex_geodl.core.io.mrc import StackWriter
    from continuousflex_geodl.core.structure import write_pdb
    pset = data[1]
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 8, 8)).astype(np.float32)
    B = A + 1
    outs = tmp_path / 'out'
    outs.mkdir()
    p = {k: str(outs / k) for k in ('v.mrc', 's.mrcs', 'p.star', 'p.mrcs', 'm.pdb', 'c.pt',
                                     't.txt')}

    def writers(X, sel):
        return [lambda: write_mrc(p['v.mrc'], X[:1].repeat(8, 0), 2.0),
                lambda: write_particles_star(p['p.star'], pset.subset(sel)),  # + p.mrcs
                lambda: write_pdb(p['m.pdb'], X.reshape(-1, 8)[:, :3] * 10),
                lambda: engine.atomic_torch_save({'x': torch.as_tensor(X)}, p['c.pt'])]

    for w in writers(A, np.arange(3)):
        w()
    with StackWriter(p['s.mrcs'], 4, 8, 2.0) as sw:
        sw.write(A)
    with fileio.atomic_write(p['t.txt']) as f:
        f.write('old')
    old = {k: _hash(v) for k, v in p.items()}
    listing = sorted(os.listdir(str(outs)))

    def crash(src, dst):
        raise OSError('simulated crash before the rename of %s' % dst)

    monkeypatch.setattr(os, 'replace', crash)
    for w in writers(B, np.arange(3, 6)):
        with pytest.raises(OSError, match='simulated crash'):
            w()
    sw = StackWriter(p['s.mrcs'], 4, 8, 2.0)
    sw.write(B)
    with pytest.raises(OSError, match='simulated crash'):
        sw.close()
    with pytest.raises(OSError, match='simulated crash'):
        with fileio.atomic_write(p['t.txt']) as f:
            f.write('new')
    monkeypatch.undo()
    assert {k: _hash(v) for k, v in p.items()} == old
    assert sorted(os.listdir(str(outs))) == listing  # no temporary files left
    assert np.array_equal(read_mrc(p['s.mrcs'])[0], A)


WRITER = r'''
import os, sys, numpy as np, torch
from continuousflex_geodl.core import engine, fileio
from continuousflex_geodl.core.io.mrc import write_mrc
out = sys.argv[1]
rng = np.random.default_rng(0)
V = [rng.normal(size=(96, 96, 96)).astype(np.float32) + k for k in (0, 1)]
T = [torch.as_tensor(v) for v in V]
k = 0
while True:
    write_mrc(os.path.join(out, 'vol.mrc'), V[k], 1.5)
    engine.save_checkpoint(dict(model={'w': T[k]}, optim={}, epoch=k, history=[]), out)
    with fileio.atomic_write(os.path.join(out, 'note.txt')) as f:
        f.write(('version %d\n' % k) * 200000)
    if k == 0 and not os.path.exists(os.path.join(out, 'ready')):
        open(os.path.join(out, 'ready'), 'w').close()
    k = 1 - k
'''


def test_outputs_are_old_or_new_after_sigkill_mid_write(tmp_path):
    """A process rewriting a volume, a checkpoint and a text file in a loop is
    killed at arbitrary moments: every file is then exactly the old or the new
    version (the checkpoint loads), never a mixture or a truncated file."""
    script = tmp_path / 'writer.py'
    script.write_text(textwrap.dedent(WRITER))
    rng = np.random.default_rng(0)
    V = [rng.normal(size=(96, 96, 96)).astype(np.float32) + k for k in (0, 1)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for delay in (0.0, 0.037, 0.113):
        out = tmp_path / ('run%g' % delay)
        (out / 'checkpoints').mkdir(parents=True)
        proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env,
                                stderr=subprocess.PIPE)
        _wait_for(lambda: os.path.exists(str(out / 'ready')), proc, timeout=120)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        vol, apix = read_mrc(str(out / 'vol.mrc'))
        assert any(np.array_equal(vol, v) for v in V)
        state = engine.load_checkpoint(str(out))
        assert any(torch.equal(state['model']['w'], torch.as_tensor(v)) for v in V)
        text = (out / 'note.txt').read_text()
        assert text in (('version 0\n' * 200000), ('version 1\n' * 200000))
        # temporary files of the interrupted write were removed, never loaded
        assert not [f for f in os.listdir(str(out / 'checkpoints')) if '.tmp' in f]


class _Evil:
    """Unpickling this runs ``open(marker, 'w')``: the attack weights_only stops."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_malicious_pickle_is_refused_not_executed(trained, tmp_path, data):
    model = str(tmp_path / 'model')
    shutil.copytree(trained, model)
    marker = str(tmp_path / 'PWNED')
    for kind in ('pickle', 'torch'):
        w = os.path.join(model, 'weights.pt')
        if kind == 'pickle':
            with open(w, 'wb') as f:
                pickle.dump({'weights': _Evil(marker)}, f)
        else:
            torch.save({'weights': _Evil(marker)}, w)
        with pytest.raises((pickle.UnpicklingError, ValueError)):
            inference.load_model(model)
        with pytest.raises(ValueError, match='Refusing to load the model file'):
            fileio.load_torch_state(w, 'model file')
        assert not os.path.exists(marker)
    # the real worker: a clear refusal, nothing run
    res = run_worker(['infer', '--model', model, '--particles',
                      str(data[0] / 'particles.star'), '--out', str(tmp_path / 'z.npy')])
    assert_user_error(res.returncode, res.stderr, 'Refusing to load the model weights file',
                      'nothing in the file was run')
    assert not os.path.exists(marker)
    # a booby-trapped checkpoint is refused too (and never resumed from)
    ck = os.path.join(model, 'checkpoints', 'last.pt')
    torch.save({'model': _Evil(marker), 'optim': {}, 'epoch': 1, 'history': []}, ck)
    with pytest.raises(ValueError, match='no usable checkpoint.*Refusing to load the checkpoint'):
        engine.load_checkpoint(model)
    assert not os.path.exists(marker)


def test_truncated_weights_give_a_clear_error(trained, tmp_path, data):
    model = str(tmp_path / 'model')
    shutil.copytree(trained, model)
    w = os.path.join(model, 'weights.pt')
    with open(w, 'r+b') as f:
        f.truncate(os.path.getsize(w) // 3)
    res = run_worker(['infer', '--model', model, '--particles',
                      str(data[0] / 'particles.star'), '--out', str(tmp_path / 'z.npy')])
    assert_user_error(res.returncode, res.stderr, 'truncated or corrupt', 'train again')
    assert not os.path.exists(str(tmp_path / 'z.npy'))


def _star_with_names(src_star, dst_star, names):
    import starfile
    b = starfile.read(src_star, always_dict=True)
    b['particles']['rlnImageName'] = names
    os.makedirs(os.path.dirname(dst_star), exist_ok=True)
    starfile.write(b, dst_star, overwrite=True)
    return dst_star


def test_paths_in_star_files_cannot_escape(data, tmp_path, monkeypatch, capsys):
    """Policy (core.fileio.check_data_path): relative names never climb out with
    '..'; absolute names are refused outside the data root when one is set
    (CFGEODL_DATA_ROOT, e.g. the Scipion project); symlinks inside it are
    trusted (Scipion links imported files)."""
    monkeypatch.delenv(fileio.DATA_ROOT_ENV, raising=False)
    src = str(data[0] / 'particles.star')
    project, outside = tmp_path / 'project', tmp_path / 'outside'
    (project / 'Extract' / 'job2').mkdir(parents=True)
    outside.mkdir()
    stack = str(data[0] / 'particles.mrcs')
    shutil.copy(stack, str(outside / 's.mrcs'))
    shutil.copy(stack, str(project / 'Extract' / 'job2' / 's.mrcs'))
    star_dir = str(project / 'Refine' / 'job1')

    def names(fmt):
        return ['%06d@%s' % (i + 1, fmt) for i in range(N)]

    # '..' out of the project, even to a real stack, and to /etc/passwd
    for k, bad in enumerate(['../../../outside/s.mrcs', '../../etc/passwd']):
        star = _star_with_names(src, os.path.join(star_dir, 'esc%d.star' % k), names(bad))
        with pytest.raises(ValueError, match="climbs out of the folder"):
            load_particles(star)
    rc, _, err = run_cli(_train_args(star_dir, str(tmp_path / 'm'), 'esc0.star'), capsys)
    assert_user_error(rc, err, 'Refusing image path', 'climbs out')
    # RELION's project-relative names are found in a parent folder
    ok = _star_with_names(src, os.path.join(star_dir, 'ok.star'), names('Extract/job2/s.mrcs'))
    assert len(load_particles(ok, root=str(project)).check()) == N
    # absolute names: accepted without a data root (RELION / Scipion write them) ...
    absolute = _star_with_names(src, os.path.join(star_dir, 'abs.star'),
                                names(str(outside / 's.mrcs')))
    assert len(load_particles(absolute).check()) == N
    # ... refused outside the data root, by argument or environment
    with pytest.raises(ValueError, match='lies outside the data folder'):
        load_particles(absolute, root=str(project))
    monkeypatch.setenv(fileio.DATA_ROOT_ENV, str(project))
    with pytest.raises(ValueError, match='lies outside the data folder'):
        load_particles(absolute)
    etc = _star_with_names(src, os.path.join(star_dir, 'etc.star'), names('/etc/passwd'))
    with pytest.raises(ValueError, match='lies outside the data folder'):
        load_particles(etc)
    # a link inside the project (as Scipion makes for imports) is trusted
    os.symlink(str(outside / 's.mrcs'), str(project / 'Extract' / 'linked.mrcs'))
    linked = _star_with_names(src, os.path.join(star_dir, 'lnk.star'),
                              names(str(project / 'Extract' / 'linked.mrcs')))
    assert len(load_particles(linked).check()) == N
    monkeypatch.delenv(fileio.DATA_ROOT_ENV)
    # without a root, a non-image file named absolutely is not read as particles
    with pytest.raises(ValueError, match="not an MRC|no 'MAP' identifier|Cannot read"):
        load_particles(etc).check()


def test_paths_in_xmd_files_cannot_escape(data, tmp_path):
    pytest.importorskip('xmippLib')
    from continuousflex_geodl.core.io.xmd import write_xmd
    d = _copy_data(data, tmp_path / 'd' / 'sub')
    xmd = write_xmd(os.path.join(d, 'p.xmd'), load_particles(os.path.join(d, 'particles.star')))
    text = open(xmd).read()
    assert '@particles.mrcs' in text
    with open(xmd, 'w') as f:
        f.write(text.replace('@particles.mrcs', '@../../sub/particles.mrcs'))
    with pytest.raises(ValueError, match='climbs out of the folder'):
        load_particles(xmd)


# ============================================== Scipion validation (GUI) ===

def _scipion():
    from continuousflex_geodl.tests import scipion_env
    scipion_env.configure()
    why = scipion_env.skip_reason()
    if why:
        pytest.skip(why)


def _set_of_particles(folder, n=4, box=32, apix=2.0, ctf=True, poses=True, name='p'):
    from continuousflex_geodl.tests import scipion_env
    return scipion_env.particle_set(
        os.path.join(folder, '%s.sqlite' % name), os.path.join(folder, 'stack.mrcs'), n, apix,
        box=box, ctf=ctf, transforms=[np.eye(4)] * n if poses else None)


def test_scipion_train_validation(tmp_path, monkeypatch):
    _scipion()
    monkeypatch.chdir(tmp_path)
    from pwem.objects import AtomStruct, Volume
    from continuousflex_geodl.protocols import GeoDLProtTrain
    f = str(tmp_path)
    prot = GeoDLProtTrain()
    prot.inputReference.set(AtomStruct(filename=os.path.join(f, 'ref.pdb')))
    prot.inputParticles.set(_set_of_particles(f, name='good'))
    assert prot._validate() == []
    prot.inputParticles.set(_set_of_particles(f, ctf=False, name='noctf'))
    assert any('no CTF' in e and 'CTFFIND' in e for e in prot._validate())
    prot.inputParticles.set(_set_of_particles(f, poses=False, name='nopose'))
    assert any('no 3D angles' in e and 'consensus 3D refinement' in e
               for e in prot._validate())
    prot.inputParticles.set(_set_of_particles(f, n=0, name='empty'))
    assert any('is empty' in e for e in prot._validate())
    prot.inputParticles.set(_set_of_particles(f, name='good2'))
    vol = Volume()
    vol.setFileName(os.path.join(f, 'map.mrc'))
    vol.setSamplingRate(1.0)
    write_mrc(os.path.join(f, 'map.mrc'), np.zeros((40, 40, 40), np.float32), 1.0)
    prot.inputReference.set(vol)
    errors = prot._validate()
    assert any('box (40 px) differs' in e and 'resample the map to 32 px at 2.0000 A/px' in e
               for e in errors), errors
    assert any('pixel size (1.0000 A) differs' in e and 'resample the map to 2.0000 A/px' in e
               for e in errors), errors
    # nonsensical numbers are stopped by the form's validators before launch
    bad = GeoDLProtTrain(zdim=0, epochs=-1, batchSize=0)
    msgs = ' '.join(bad.validate())
    for label in ('Latent dimension', 'Epochs', 'Batch size'):
        assert '*%s* Value should be greater than zero' % label in msgs


def test_scipion_predict_validation(tmp_path, monkeypatch):
    _scipion()
    monkeypatch.chdir(tmp_path)
    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols import GeoDLProtPredict
    f = str(tmp_path)
    (tmp_path / 'model').mkdir()
    prot = GeoDLProtPredict()
    prot.inputModel.set(GeoDLModel(modelDir=os.path.join(f, 'model'), zdim=2, box=32,
                                   apix=2.0))
    prot.inputParticles.set(_set_of_particles(f, name='good'))
    assert prot._validate() == []
    prot.inputParticles.set(_set_of_particles(f, ctf=False, name='noctf'))
    assert any('no CTF' in e for e in prot._validate())
    prot.inputParticles.set(_set_of_particles(f, poses=False, name='nopose'))
    assert any('no 3D angles' in e for e in prot._validate())
    prot.inputParticles.set(_set_of_particles(f, n=0, name='empty'))
    assert any('is empty' in e for e in prot._validate())
    # a larger box of the same 64 A field of view is cropped when read: accepted
    prot.inputParticles.set(_set_of_particles(f, box=64, apix=1.0, name='view'))
    assert prot._validate() == []
    prot.inputParticles.set(_set_of_particles(f, box=64, apix=2.0, name='grid'))
    errors = prot._validate()
    assert any('box of 64 px, 2.0000 A/px' in e and 'trained at (32 px, 2.0000 A/px' in e
               and 'resample them' in e for e in errors), errors


def test_freed_memory_is_kept_for_reuse_unless_the_user_opts_out(monkeypatch):
    """runtime.setup raises glibc's mmap / trim thresholds (rendering makes
    many same-sized temporaries); CFGEODL_MALLOC_DEFAULTS=1 leaves them."""
    import ctypes.util
    import sys
    monkeypatch.setenv(runtime.MALLOC_DEFAULTS_ENV, '1')
    assert runtime.keep_freed_memory() is False
    monkeypatch.delenv(runtime.MALLOC_DEFAULTS_ENV)
    glibc = sys.platform.startswith('linux') and 'libc.so' in (ctypes.util.find_library('c') or '')
    if not glibc:
        pytest.skip('glibc only')
    assert runtime.keep_freed_memory() is True
    # a 64 MB buffer (above glibc's largest default mmap threshold, 32 MB)
    # freed and allocated again: its pages are reused, not faulted in anew
    import resource
    import numpy as np
    n = 64 << 20
    np.ones(n, np.uint8)  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(n, np.uint8)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert int(a.sum()) == n
    # (glibc's defaults: a fresh mmap, 544 faults here even with huge pages)
    assert faults < 16, faults
