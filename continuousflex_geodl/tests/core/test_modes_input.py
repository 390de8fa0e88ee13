"""Training on a given normal-mode basis (ContinuousFlex NMA modes, --modes)."""
import json
import os

import numpy as np
import pytest
import torch

from continuousflex_geodl.core import cli
from continuousflex_geodl.core.models.nma import anm_modes, modes_on_cloud
from continuousflex_geodl.core.models.toydata import make_toy_particles


def _cloud(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=8.0, size=(n, 3))


def test_modes_on_same_cloud_are_normalised_copies(tmp_path):
    pos = _cloud()
    modes = np.random.default_rng(1).normal(size=(60, 3, 3)) * np.array([1.0, 5.0, 0.2])
    path = str(tmp_path / 'm.npz')
    np.savez(path, positions=pos, modes=modes)
    out = modes_on_cloud(path, pos)
    rms = np.sqrt((out ** 2).sum((0, 1)) / 60)
    assert np.allclose(rms, 1.0, atol=1e-5)
    # same directions as the input modes (cosine 1)
    for m in range(3):
        a, b = out[..., m].ravel(), modes[..., m].ravel()
        assert abs(a @ b / np.linalg.norm(a) / np.linalg.norm(b) - 1) < 1e-6


def test_interpolated_translation_stays_a_translation(tmp_path):
    # a rigid translation is reproduced exactly by any convex interpolation
    src = _cloud(200)
    t = np.array([0.3, -0.5, 0.8])
    modes = np.repeat(t[None, :, None], 200, axis=0)
    path = str(tmp_path / 't.npz')
    np.savez(path, positions=src, modes=modes)
    dst = src[::3] + 0.5
    out = modes_on_cloud(path, dst)[..., 0]
    expect = t / np.linalg.norm(t)
    assert np.allclose(out, expect[None], atol=1e-5)


def test_mode_file_errors(tmp_path):
    pos = _cloud()
    good = np.zeros((60, 3, 2)) + 1.0
    far = str(tmp_path / 'far.npz')
    np.savez(far, positions=pos + 100.0, modes=good)
    with pytest.raises(ValueError, match='does not overlap'):
        modes_on_cloud(far, pos)
    bad = str(tmp_path / 'bad.npz')
    np.savez(bad, positions=pos, modes=good[:10])
    with pytest.raises(ValueError, match='do not match'):
        modes_on_cloud(bad, pos)
    nokey = str(tmp_path / 'nokey.npz')
    np.savez(nokey, positions=pos)
    with pytest.raises(ValueError, match='not a normal-mode file'):
        modes_on_cloud(nokey, pos)
    with pytest.raises(FileNotFoundError):
        modes_on_cloud(str(tmp_path / 'missing.npz'), pos)


def test_train_cli_with_given_modes(tmp_path):
    from continuousflex_geodl.core.inference import decode_positions, load_model
    from continuousflex_geodl.core.particles import (ArrayImageSource, ParticleSet,
                                                     write_particles_star)
    torch.set_num_threads(1)
    parts, truth = make_toy_particles(n=48, box=24, apix=5.0, n_atoms=50, snr=1.0, seed=3)
    star = str(tmp_path / 'p.star')
    write_particles_star(star, ParticleSet(ArrayImageSource(parts.images), parts.apix,
                                           parts.euler, parts.shifts, parts.ctf))
    ref = str(tmp_path / 'ref.npz')
    np.savez(ref, positions=truth['reference'], amplitudes=truth['amplitudes'],
             sigma=truth['sigma'])
    given, _ = anm_modes(truth['reference'], n_modes=3)
    mfile = str(tmp_path / 'modes.npz')
    np.savez(mfile, positions=truth['reference'], modes=given * 2.5)
    out = str(tmp_path / 'model')
    assert cli.main(['train', '--particles', star, '--reference', ref, '--out', out,
                     '--zdim', '2', '--epochs', '1', '--batch-size', '16', '--threads', '1',
                     '--modes', mfile]) == 0
    cfg = json.load(open(os.path.join(out, 'config.json')))
    assert cfg['decoder'] == 'nma' and cfg['nma_modes'] == 3
    saved = np.load(os.path.join(out, 'reference.npz'))['dec_modes']
    assert np.allclose(saved, given, atol=1e-5)   # the given basis, unit RMS
    # every decoded displacement lies in the span of the given modes
    model = load_model(out)
    d = decode_positions(model, np.random.default_rng(0).normal(size=(4, 2))) \
        - truth['reference'][None]
    basis = given.reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(basis, d.reshape(4, -1).T, rcond=None)
    resid = d.reshape(4, -1).T - basis @ coef
    assert np.abs(resid).max() <= 1e-4 * max(1e-6, np.abs(d).max()) + 1e-5
