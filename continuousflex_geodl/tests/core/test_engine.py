"""Training engine: checkpoints, resume, determinism, inference, DDP.

A tiny in-memory hinge data set (``models.toydata``) and a tiny model keep
each training run to a few seconds.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from continuousflex_geodl.core import engine, inference
from continuousflex_geodl.core.models.toydata import make_toy_particles

TINY = dict(epochs=3, batch_size=16, log_every=0, calib_particles=64, sinkhorn_every=2,
            sinkhorn_points=40, zdim=2, dec_width=16, enc_width=32, enc_modes=4,
            dec_segments=4, dec_rank=4, gmm_components=8, threads=1)


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def toy():
    parts, truth = make_toy_particles(n=96, box=24, apix=5.0, n_atoms=60, snr=1.0,
                                      max_angle=30.0, seed=0)
    ref = (truth['reference'], truth['amplitudes'], truth['sigma'])
    return parts, ref


def _state(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def test_train_writes_model_directory(toy, tmp_path, capsys):
    parts, ref = toy
    out = str(tmp_path / 'model')
    model, hist = engine.train(parts, ref, out, **dict(TINY, log_every=2))
    for name in ('config.json', 'reference.npz', 'weights.pt', 'history.json',
                 os.path.join('checkpoints', 'last.pt')):
        assert os.path.exists(os.path.join(out, name)), name
    # no temporary files left behind by the atomic writes
    leftovers = [f for root, _, files in os.walk(out) for f in files if '.tmp' in f]
    assert leftovers == []
    with open(os.path.join(out, 'history.json')) as f:
        h = json.load(f)
    assert [r['epoch'] for r in h] == [1, 2, 3]
    assert all(np.isfinite(r['loss']) and r['images_per_s'] > 0 for r in h)
    ck = _state(os.path.join(out, 'checkpoints', 'last.pt'))
    assert int(ck['epoch']) == 3
    w = _state(os.path.join(out, 'weights.pt'))
    for k, v in model.state_dict().items():
        assert torch.equal(w[k], v), k
    # progress lines: epoch, loss, images/s and ETA
    text = capsys.readouterr().out
    assert 'epoch 1/3 step 2/6 loss' in text and 'images/s' in text and 'ETA' in text
    # the data term decreased (the model learns something)
    assert h[-1]['data'] < h[0]['data']


def test_resume_reproduces_uninterrupted_run(toy, tmp_path):
    parts, ref = toy
    full = str(tmp_path / 'full')
    part = str(tmp_path / 'part')
    engine.train(parts, ref, full, **TINY)
    _, h1 = engine.train(parts, ref, part, stop_after=2, **TINY)
    assert len(h1) == 2 and not os.path.exists(os.path.join(part, 'weights.pt'))
    # interrupted mid-way: the next checkpoint write must not corrupt the last one
    _, h2 = engine.train(parts, ref, part, resume=True, **TINY)
    assert len(h2) == 3
    a, b = _state(os.path.join(full, 'weights.pt')), _state(os.path.join(part, 'weights.pt'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ha = json.load(open(os.path.join(full, 'history.json')))
    assert [r['loss'] for r in ha] == [r['loss'] for r in h2]


def test_same_seed_same_run_other_seed_differs(toy, tmp_path):
    parts, ref = toy
    s = dict(TINY, epochs=1)
    _, h1 = engine.train(parts, ref, str(tmp_path / 'a'), **s)
    _, h2 = engine.train(parts, ref, str(tmp_path / 'b'), **s)
    _, h3 = engine.train(parts, ref, str(tmp_path / 'c'), **dict(s, seed=5))
    assert h1[0]['loss'] == h2[0]['loss']
    assert h1[0]['loss'] != h3[0]['loss']


def test_inference_chunks_and_decoding(toy, tmp_path):
    from continuousflex_geodl.core.render import render_volume
    parts, ref = toy
    out = str(tmp_path / 'm')
    engine.train(parts, ref, out, **dict(TINY, epochs=1))
    model = inference.load_model(out)
    z_all = inference.infer_latents(model, parts, batch_size=1000)
    zfile = str(tmp_path / 'z.npy')
    z_chunks = inference.infer_latents(model, parts, batch_size=7, out=zfile)
    assert z_all.shape == (len(parts), 2)
    assert np.allclose(np.load(zfile), z_all, atol=1e-5)
    assert np.allclose(np.asarray(z_chunks), z_all, atol=1e-5)
    pos = inference.decode_positions(model, z_all[:3])
    assert pos.shape == (3, 60, 3)
    vols = inference.decode_volumes(model, z_all[:2])
    assert vols.shape == (2, 24, 24, 24)
    expect = render_volume(torch.as_tensor(pos[1]), model.ref_amp, float(model.sigma),
                           24, 5.0).numpy() * float(torch.exp(model.log_scale))
    assert np.allclose(vols[1], expect, rtol=1e-4, atol=1e-6 * np.abs(expect).max())
    with pytest.raises(ValueError):
        inference.decode_positions(model, np.zeros((2, 5)))


def test_untrained_decoder_returns_the_reference(toy):
    parts, ref = toy
    cfg = dict(zdim=3, box=24, apix=5.0, sigma=ref[2], enc_modes=4)
    model = engine.build_model(cfg, ref[0], ref[1])
    model.eval()
    pos = inference.decode_positions(model, np.random.default_rng(0).normal(size=(4, 3)))
    assert np.allclose(pos, ref[0][None].astype(np.float32), atol=1e-5)


def test_calibration_recovers_scale_and_noise(toy):
    """Toy images: unit noise variance; the intensity scale of the renders is known."""
    parts, truth = make_toy_particles(n=200, box=32, apix=4.0, n_atoms=80, snr=0.2,
                                      max_angle=5.0, seed=4)
    model = engine.build_model(dict(zdim=2, box=32, apix=4.0, sigma=truth['sigma']),
                               truth['reference'], truth['amplitudes'])
    cal = engine.calibrate(model, parts, n=200, mask_radius=0)
    assert abs(cal['noise_var'] - 1.0) < 0.05
    assert abs(cal['scale'] / truth['image_scale'] - 1.0) < 0.05


def test_clear_errors(toy, tmp_path):
    parts, ref = toy
    no_pose = parts.subset(np.arange(40))
    no_pose.euler = None
    with pytest.raises(ValueError, match='poses'):
        engine.train(no_pose, ref, str(tmp_path / 'x'), **TINY)
    with pytest.raises(ValueError, match='Unknown training setting'):
        engine.train(parts, ref, str(tmp_path / 'y'), bogus=1)
    with pytest.raises(FileNotFoundError):
        inference.load_model(str(tmp_path / 'nothing'))


RUNNER = r'''
import json, sys, numpy as np
from continuousflex_geodl.core import engine, runtime
from continuousflex_geodl.core.models.toydata import ToyParticles
runtime.setup(1)
d = np.load(sys.argv[1])
parts = ToyParticles(d['images'], float(d['apix']), d['euler'], d['shifts'], d['ctf'])
settings = json.loads(sys.argv[3])
engine.train(parts, (d['ref'], d['amp'], float(d['sigma'])), sys.argv[2], **settings)
import os
open(sys.argv[2] + '.rank' + os.environ.get('RANK', '0'), 'w').close()
'''


# torchrun + 2 gloo processes, launched twice (interrupted, resumed), and one
# process: about 60 s on a busy 2-core machine (teardown history below).  Before the
# fix, 1 run in 6 aborted at exit after training ('terminate called without an
# active exception', gloo teardown).  Teardown now releases the DDP wrapper (it
# holds the process group), collects cycles, waits at a barrier and destroys the
# group before the interpreter finalises (Trainer._close, Dist.close): 10 of 10
# runs under load and then 20 of 20 on a quiet machine passed.
def test_ddp_two_processes_match_one(toy, tmp_path):
    """torchrun, 2 gloo processes at equal global batch = 1 process; the 2
    processes are interrupted after epoch 1 and resumed (as ``--resume``)."""
    parts, ref = toy
    data = str(tmp_path / 'toy.npz')
    np.savez(data, images=parts.images, apix=parts.apix, euler=parts.euler,
             shifts=parts.shifts, ctf=parts.ctf, ref=ref[0], amp=ref[1], sigma=ref[2])
    runner = str(tmp_path / 'runner.py')
    with open(runner, 'w') as f:
        f.write(RUNNER)
    settings = json.dumps(dict(TINY, epochs=2))
    env = dict(os.environ, OMP_NUM_THREADS='1')
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    subprocess.run([sys.executable, runner, data, one, settings], check=True, env=env,
                   timeout=300)
    from continuousflex_geodl.core.launch import launch_command
    first = json.dumps(dict(TINY, epochs=2, stop_after=1))
    subprocess.run(launch_command(2, target=[runner, data, two, first]),
                   check=True, env=env, timeout=300)
    assert len(json.load(open(os.path.join(two, 'history.json')))) == 1
    assert not os.path.exists(os.path.join(two, 'weights.pt'))
    resume = json.dumps(dict(TINY, epochs=2, resume=True))
    subprocess.run(launch_command(2, target=[runner, data, two, resume]),
                   check=True, env=env, timeout=300)
    # two ranks really ran, and shared one encoder-input cache (each computed
    # its share of the particles; every particle is in it)
    assert os.path.exists(two + '.rank1') and not os.path.exists(one + '.rank1')
    assert not os.path.exists(os.path.join(two, 'cache', 'encoder_done.rank1.npy'))
    assert np.load(os.path.join(two, 'cache', 'encoder_done.rank0.npy')).all()
    h1 = json.load(open(os.path.join(one, 'history.json')))
    h2 = json.load(open(os.path.join(two, 'history.json')))
    for a, b in zip(h1, h2):
        for key in ('loss', 'data', 'strain'):
            assert abs(a[key] - b[key]) <= 1e-4 * abs(a[key]) + 1e-6, (key, a[key], b[key])
        # The Gaussian prior's KL rate is ~2e-3 nats here, 4 orders below the loss.
        # The two runs differ by float32 summation order (measured at epoch 2: data
        # term 2.8e-4 apart, 4e-6 relative), which moves the tiny rate by ~1.5e-6 in
        # absolute terms (7e-4 of itself); computing it with expm1 does not change
        # that.  So its tolerance is absolute, 1e-5 (0.5 % of the rate), like the
        # Sinkhorn term's below.
        assert abs(a['rate'] - b['rate']) <= 1e-4 * abs(a['rate']) + 1e-5, \
            ('rate', a['rate'], b['rate'])
        # The debiased Sinkhorn divergence is a small difference of entropic OT
        # costs of size ~ (cloud radius)^2 ~ 1e2 A^2 computed in float32 (eps 6e-8),
        # so its rounding error is absolute, ~1e-5, whatever its own (small) value.
        assert abs(a['sinkhorn'] - b['sinkhorn']) <= 1e-4 * abs(a['sinkhorn']) + 1e-5, \
            ('sinkhorn', a['sinkhorn'], b['sinkhorn'])
    # final weights: the same up to float32 summation order (Adam rescales the
    # gradients, so parameters whose gradient is ~0 move by rounding-level
    # amounts; compare the weights as a whole)
    w1, w2 = _state(os.path.join(one, 'weights.pt')), _state(os.path.join(two, 'weights.pt'))
    num = sum(float(((w1[k].double() - w2[k].double()) ** 2).sum()) for k in w1)
    den = sum(float((w1[k].double() ** 2).sum()) for k in w1)
    assert np.sqrt(num / den) < 1e-3


def test_pose_refinement_moves_poses_towards_the_truth(tmp_path):
    """Homogeneous particles given perturbed poses (3 deg, 1 A): the refined
    poses written by train are closer to the true ones."""
    from scipy.spatial.transform import Rotation
    from continuousflex_geodl.core.geometry import (euler_to_matrix, matrix_to_euler,
                                                    rotation_angle_deg)
    parts, truth = make_toy_particles(n=192, box=32, apix=4.0, n_atoms=100, snr=1.0,
                                      max_angle=0.0, seed=5)
    rng = np.random.default_rng(0)
    n = len(parts)
    R_true = euler_to_matrix(*parts.euler.T)
    R_bad = Rotation.from_rotvec(rng.normal(size=(n, 3)) * np.radians(3.0) / np.sqrt(3)) \
        .as_matrix() @ R_true
    bad = parts.subset(np.arange(n))
    bad.euler = np.stack(matrix_to_euler(R_bad), 1)
    bad.shifts = parts.shifts + rng.normal(0, 1.0, (n, 2))
    out = str(tmp_path / 'm')
    engine.train(bad, (truth['reference'], truth['amplitudes'], truth['sigma']), out,
                 refine_poses=True, epochs=10, log_every=0, zdim=2, threads=1)
    d = np.load(os.path.join(out, 'refined_poses.npz'))
    ang0 = rotation_angle_deg(R_bad, R_true).mean()
    ang1 = rotation_angle_deg(euler_to_matrix(*d['euler'].T), R_true).mean()
    sh0 = np.linalg.norm(bad.shifts - parts.shifts, axis=1).mean()
    sh1 = np.linalg.norm(d['shifts'] - parts.shifts, axis=1).mean()
    assert ang1 < 0.85 * ang0, (ang0, ang1)
    assert sh1 < 0.6 * sh0, (sh0, sh1)


@pytest.mark.gpu
def test_cuda_training_matches_cpu(toy, tmp_path):
    """The same code on CUDA follows the CPU loss trajectory (float32 tolerance)."""
    parts, ref = toy
    _, hc = engine.train(parts, ref, str(tmp_path / 'cpu'), **dict(TINY, epochs=2))
    _, hg = engine.train(parts, ref, str(tmp_path / 'gpu'), **dict(TINY, epochs=2,
                                                                   device='cuda'))
    for a, b in zip(hc, hg):
        assert abs(a['loss'] - b['loss']) <= 1e-3 * abs(a['loss'])
    model = inference.load_model(str(tmp_path / 'gpu'), device='cuda')
    z = inference.infer_latents(model, parts)
    assert np.all(np.isfinite(z)) and z.shape == (len(parts), 2)
