"""Training at a smaller box (``train --train-box``), inference on the full-size
particles, decoding at the full box; the background batch reader; migration
of configs written before ``train_box``."""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.core import cli
from continuousflex_geodl.core import settings as S
from continuousflex_geodl.core.models.toydata import write_toy_dataset

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """48-px toy particles (2.5 A/px) and the same particles Fourier-cropped to
    24 px (5 A/px), written as a second star file."""
    from continuousflex_geodl.core.particles import at_box, load_particles, write_particles_star
    d = tmp_path_factory.mktemp('trainbox')
    write_toy_dataset(str(d), n=48, box=48, apix=2.5, n_atoms=40, snr=1.0, seed=2)
    full = str(d / 'particles.star')
    small = str(d / 'small.star')
    write_particles_star(small, at_box(load_particles(full), 24),
                         stack_path=str(d / 'small.mrcs'))
    return d, full, small


def _train(d, star, out, *extra):
    assert cli.main(['train', '--particles', star, '--reference', str(d / 'ref.npz'),
                     '--out', out, '--zdim', '2', '--epochs', '1', '--batch-size', '16',
                     '--threads', '1', '--prior', 'gaussian', '--w-sinkhorn', '0',
                     '--seed', '0'] + list(extra)) == 0


def test_train_box_round_trip(data, tmp_path):
    from continuousflex_geodl.core.io.mrc import read_mrc
    d, full, small = data
    model = str(tmp_path / 'model')
    _train(d, full, model, '--train-box', '24')
    cfg = json.load(open(os.path.join(model, 'config.json')))
    assert cfg['box'] == 24 and abs(cfg['apix'] - 5.0) < 1e-9
    assert cfg['train_box'] == 24 and cfg['particle_box'] == 48
    # the same training on particles cropped beforehand gives the same model
    model_b = str(tmp_path / 'model_b')
    _train(d, small, model_b)
    hist = json.load(open(os.path.join(model, 'history.json')))
    hist_b = json.load(open(os.path.join(model_b, 'history.json')))
    assert hist[0]['loss'] == pytest.approx(hist_b[0]['loss'], rel=1e-5)
    # inference on the full-size particles crops them to the model's box
    z_full, z_small = str(tmp_path / 'zf.npy'), str(tmp_path / 'zs.npy')
    for star, z in ((full, z_full), (small, z_small)):
        assert cli.main(['infer', '--model', model, '--particles', star, '--out', z,
                         '--refine-steps', '2']) == 0
    np.testing.assert_allclose(np.load(z_full), np.load(z_small), atol=1e-5)
    # volumes: the particles' full grid by default, the training grid on request
    v_full, v_small = str(tmp_path / 'vf'), str(tmp_path / 'vs')
    assert cli.main(['decode', '--model', model, '--latents', z_full, '--out', v_full,
                     '--rows', '0,3']) == 0
    assert cli.main(['decode', '--model', model, '--latents', z_full, '--out', v_small,
                     '--rows', '0,3', '--box', '24']) == 0
    vf, af = read_mrc(os.path.join(v_full, 'vol_001.mrc'))
    vs, as_ = read_mrc(os.path.join(v_small, 'vol_001.mrc'))
    assert vf.shape == (48,) * 3 and abs(af - 2.5) < 1e-4
    assert vs.shape == (24,) * 3 and abs(as_ - 5.0) < 1e-4
    # the same density: every other voxel of the fine grid is a voxel of the coarse one
    np.testing.assert_allclose(vf[::2, ::2, ::2], vs, atol=1e-5 * np.abs(vs).max())


def test_particles_of_another_field_of_view_are_refused(data, tmp_path):
    from continuousflex_geodl.core.inference import load_model, on_model_grid
    from continuousflex_geodl.core.particles import load_particles
    d, full, small = data
    model = str(tmp_path / 'model')
    _train(d, small, model)
    m = load_model(model)
    pset = load_particles(full)
    assert on_model_grid(m, pset).box == 24  # same 120 A field of view: cropped
    pset.apix = 3.0  # 144 A: another field of view
    with pytest.raises(ValueError, match='do not match the model'):
        on_model_grid(m, pset)


def test_bad_train_box_is_refused(data, tmp_path):
    d, full, _ = data
    for bad in ('50', '23', '6'):
        rc = cli.main(['train', '--particles', full, '--reference', str(d / 'ref.npz'),
                       '--out', str(tmp_path / ('m' + bad)), '--epochs', '1',
                       '--train-box', bad])
        assert rc == 2


def test_batch_reader_thread_and_processes_give_the_batches_in_order(data):
    import torch
    from continuousflex_geodl.core.models.data import read_images
    from continuousflex_geodl.core.particles import at_box, load_particles
    from continuousflex_geodl.core.training.loader import BatchReader
    _, full, _ = data
    pset = at_box(load_particles(full), 24)
    lists = [np.array([5, 1, 9]), np.array([0]), np.array([47, 3, 3, 20])]
    for workers in (0, 1):
        got = list(BatchReader(pset, workers=workers).batches(lists))
        assert len(got) == 3
        for want, (idx, imgs) in zip(lists, got):
            assert np.array_equal(idx, want)
            assert torch.equal(torch.as_tensor(imgs), torch.from_numpy(read_images(pset, want)))
    # an error while reading reaches the consumer
    with pytest.raises(IndexError):
        list(BatchReader(pset, workers=0).batches([np.array([0]), np.array([480])]))
    # stopping early stops the background thread
    it = BatchReader(pset, workers=0, prefetch=1).batches([np.array([i]) for i in range(40)])
    next(it)
    it.close()


def test_a_config_written_before_train_box_migrates(tmp_path):
    """A schema-3 config (no train_box / particle_box) reads as trained at the
    particle box, and its volumes default to the model's grid."""
    from continuousflex_geodl.core.inference import volume_grid
    old = dict(S.ModelSettings.defaults(), **S.TrainSettings.defaults())
    for key in ('train_box', 'particle_box', 'data_workers', 'learn_amplitudes',
                'w_amplitudes'):
        old.pop(key, None)
    old.update(zdim=2, box=32, apix=4.0, sigma=3.0, n_particles=100, config_schema=3,
               package_version='0.3', command_line=['x'])
    new = S.migrate_config(old)
    assert new['config_schema'] == S.CONFIG_SCHEMA
    assert new['train_box'] is None and new['particle_box'] is None

    class M:
        box, apix = 32, 4.0
    assert volume_grid(M, particle_box=new['particle_box']) == (32, 4.0)
    assert volume_grid(M, particle_box=64) == (64, 2.0)
    assert volume_grid(M, box=16) == (16, 8.0)
    assert volume_grid(M, apix=1.0) == (32, 1.0)


def test_repeated_star_text_columns_are_kept_as_categories(tmp_path):
    """Per-particle text columns that repeat (micrograph names) are held as
    categories (small in memory for 10^6 particles) and written back as they
    were read."""
    import starfile
    from continuousflex_geodl.core.particles import load_particles, write_particles_star
    from continuousflex_geodl.core.io.mrc import write_mrc
    n = 400
    write_mrc(str(tmp_path / 's.mrcs'), np.zeros((n, 8, 8), np.float32), 2.0)
    mics = ['MotionCorr/job002/mic%03d.mrc' % (i // 40) for i in range(n)]
    df = dict(rlnImageName=['%06d@s.mrcs' % (i + 1) for i in range(n)],
              rlnMicrographName=mics, rlnCoordinateX=np.arange(n, dtype=float),
              rlnAngleRot=np.zeros(n), rlnAngleTilt=np.zeros(n), rlnAnglePsi=np.zeros(n),
              rlnDetectorPixelSize=np.full(n, 2.0), rlnMagnification=np.full(n, 10000.0))
    import pandas as pd
    starfile.write(pd.DataFrame(df), str(tmp_path / 'in.star'), overwrite=True)
    pset = load_particles(str(tmp_path / 'in.star'))
    meta = pset.metadata
    assert str(meta['rlnMicrographName'].dtype) == 'category'
    assert meta['rlnCoordinateX'].dtype == np.float64
    plain = pd.Series(mics, dtype=object)
    assert meta['rlnMicrographName'].memory_usage(deep=True) < \
        plain.memory_usage(deep=True) / 10
    write_particles_star(str(tmp_path / 'out.star'), pset)
    back = starfile.read(str(tmp_path / 'out.star'))['particles']
    assert list(back['rlnMicrographName']) == mics


def test_feature_cache_filled_through_the_reader_with_progress(data, tmp_path):
    """The encoder inputs cached before epoch 1 (images read ahead by the
    background reader, cropped to the training box) equal those computed
    directly, and the fill reports its progress with the time left."""
    import torch
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.inference import load_model
    from continuousflex_geodl.core.models.data import make_batch
    from continuousflex_geodl.core.particles import at_box, load_particles
    from continuousflex_geodl.core.training.feature_cache import FeatureCache
    from continuousflex_geodl.core.training.loader import BatchReader
    d, full, _ = data
    model = str(tmp_path / 'model')
    _train(d, full, model, '--train-box', '24')
    m = load_model(model)
    pset = at_box(load_particles(full), 24)
    lines = []
    cache = FeatureCache(ModelDir(str(tmp_path / 'c')), len(pset), m)
    cache.fill(pset, 'cpu', batch_size=10, log=lines.append, reader=BatchReader(pset),
               progress_every=0)
    assert any('encoder inputs: 10/48 particles' in s and 'ETA' in s for s in lines)
    idx = np.array([3, 17, 40])
    feats, images = m.encoder_inputs(make_batch(pset, idx, m))
    got = cache.inputs(make_batch(pset, idx, m))
    for a, b in zip((feats, images), got):
        if a is not None:
            torch.testing.assert_close(b, a)
