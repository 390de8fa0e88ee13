"""Learned per-pseudo-atom amplitudes (``learn_amplitudes``, issue 15 point 3):
compositional heterogeneity.

* the amplitude head starts at the same value (0.98) for every atom and
  latent, and leaves every other weight as without it;
* on a small set of the built-in molecule rendered in memory in which a
  blob of 50 of its 300 pseudo-atoms is absent from 40 % of the particles
  (ground truth drawn here), training with the option drives the blob's
  amplitudes down for the particles that lack it, and only for them; the
  default model has no learned amplitude at all;
* model folders written before the option (config schema 3) still load,
  without learned amplitudes;
* ``decode`` writes the learned amplitudes (PDB occupancy and B-factor,
  amplitudes.npy) and renders the volumes with them;
* the structures of the landscape (``decode_series``, state centres, paths,
  the explorer's points and path GIF, ``make_decoder``'s ``amplitude_fn``)
  carry the amplitudes decoded at their own latent point (ground truth:
  ``FlexModel.decode`` of each row alone, ``render_volume`` / ``project``
  of that row); with amplitudes independent of z the files are the same
  as with the single amplitudes vector.
"""
import json
import os

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py

BOX, N_PART, ABSENT, SNR, EPOCHS = 32, 300, 0.4, 1.0, 8


def _build(learn, zdim=2, seed=0, n=60):
    from continuousflex_geodl.core.models.flexmodel import build_model
    rng = np.random.default_rng(1)
    pos = rng.normal(0, 8, (n, 3)).astype(np.float32)
    amp = rng.uniform(0.5, 1.5, n).astype(np.float32)
    cfg = dict(zdim=zdim, box=32, apix=4.0, sigma=3.0, encoder_inputs='image', seed=seed,
               learn_amplitudes=learn)
    return build_model(cfg, pos, amp), pos, amp


def test_amplitude_head_starts_at_one_and_changes_nothing_else():
    from continuousflex_geodl.core.models.decoder import AMPLITUDE_INIT
    model, pos, amp = _build(True)
    plain, _, _ = _build(False)
    z = torch.randn(7, 2)
    with torch.no_grad():
        p, a, learned = model.decode_all(z)
        p0, a0, none = plain.decode_all(z)
    assert none is None and learned.shape == (7, len(pos))
    assert AMPLITUDE_INIT == pytest.approx(1 / (1 + np.exp(-4.0))) and AMPLITUDE_INIT > 0.98
    np.testing.assert_allclose(learned.numpy(), AMPLITUDE_INIT, rtol=1e-6)
    np.testing.assert_allclose(a.numpy(), np.tile(amp * AMPLITUDE_INIT, (7, 1)), rtol=1e-6)
    assert torch.equal(p, p0) and torch.equal(a0, torch.as_tensor(amp))
    # every weight shared with the default model is the same (own random stream)
    sd, sd0 = model.state_dict(), plain.state_dict()
    assert set(sd) - set(sd0) and all(k.startswith('decoder.amplitude_head.')
                                      for k in set(sd) - set(sd0))
    assert all(torch.equal(sd[k], sd0[k]) for k in sd0)
    # whatever the head's weights, amplitudes stay in [0, 1]
    with torch.no_grad():
        for prm in model.decoder.amplitude_head.parameters():
            prm.normal_(0, 5)
        learned = model.decode_all(torch.randn(50, 2) * 3)[2]
    assert learned.min() >= 0 and learned.max() <= 1 and learned.std() > 0.1


def test_nma_decoder_refuses_learned_amplitudes():
    from continuousflex_geodl.core.models.flexmodel import build_model
    pos = np.random.default_rng(0).normal(0, 8, (40, 3)).astype(np.float32)
    with pytest.raises(ValueError, match='learn_amplitudes needs the free-form decoder'):
        build_model(dict(zdim=2, box=32, apix=4.0, sigma=3.0, encoder_inputs='image',
                         decoder='nma', learn_amplitudes=True), pos, np.ones(40, np.float32))


# ------------------------------------------------- a blob absent from 40 % --
@pytest.fixture(scope='module')
def blob_set():
    """300 particles of the built-in molecule (32 px, SNR 1, CTF, known poses);
    the 50 pseudo-atoms farthest along the inter-domain axis are absent from
    the particles with ``present`` False."""
    from continuousflex_geodl.core import simulate as sim
    from continuousflex_geodl.core.models.toydata import ToyParticles
    from continuousflex_geodl.core.structure import builtin_molecule
    apix = 128.0 / BOX
    mol = builtin_molecule()
    pos = mol.positions.astype(np.float32)
    axis = pos[mol.domains == 1].mean(0) - pos[mol.domains == 0].mean(0)
    blob = np.zeros(len(pos), bool)
    blob[np.argsort(pos @ axis)[-50:]] = True
    rng = np.random.default_rng(0)
    present = rng.random(N_PART) >= ABSENT
    euler, shifts = sim.random_poses(N_PART, rng)
    ctf = sim.random_ctf(N_PART, rng)
    amp = np.ones(len(pos), np.float32)
    imgs = np.empty((N_PART, BOX, BOX), np.float32)
    for flag in (True, False):
        i = np.nonzero(present == flag)[0]
        imgs[i] = sim.render_images(pos, amp if flag else amp * ~blob, mol.sigma, euler[i],
                                    shifts[i], ctf[i], BOX, apix)
    imgs = imgs / np.sqrt(imgs.var() / SNR)
    imgs = (imgs + rng.normal(size=imgs.shape)).astype(np.float32)
    return dict(parts=ToyParticles(imgs, apix, euler, shifts, ctf), present=present,
                blob=blob, reference=(pos, amp, mol.sigma))


def _train(blob_set, folder, **kw):
    from continuousflex_geodl.core import engine, inference
    torch.set_num_threads(1)
    model, hist = engine.train(blob_set['parts'], blob_set['reference'], str(folder),
                               epochs=EPOCHS, log_every=0, threads=1, **kw)
    z = inference.infer_latents(model, blob_set['parts'])
    return model, hist, z


def test_training_drives_the_absent_blob_amplitudes_down(blob_set, tmp_path):
    from continuousflex_geodl.core import inference
    from continuousflex_geodl.core.artifacts import ModelDir
    model, hist, z = _train(blob_set, tmp_path / 'amp', learn_amplitudes=True)
    assert ModelDir(tmp_path / 'amp').read_config()['learn_amplitudes'] is True
    present, blob = blob_set['present'], blob_set['blob']
    learned = inference.decode_learned_amplitudes(model, z)
    on_blob, rest = learned[:, blob].mean(1), learned[:, ~blob].mean(1)
    # truth: blob amplitude 1 in present particles, 0 in the others; rest 1
    assert on_blob[~present].mean() < 0.5 < on_blob[present].mean()
    assert on_blob[present].mean() > 0.8 and rest.mean() > 0.9
    # per particle, the blob's amplitude tells presence for most particles
    assert np.mean((on_blob > 0.5) == present) >= 0.85
    assert hist[-1]['data'] < hist[0]['data']


def test_default_training_learns_no_amplitude(blob_set, tmp_path):
    from continuousflex_geodl.core import inference
    from continuousflex_geodl.core.artifacts import ModelDir
    model, hist, z = _train(blob_set, tmp_path / 'plain')
    cfg = ModelDir(tmp_path / 'plain').read_config()
    assert cfg['learn_amplitudes'] is False and not model.learns_amplitudes
    assert not any('amplitude_head' in k for k in model.state_dict())
    assert inference.decode_learned_amplitudes(model, z) is None
    amp = inference.decode_amplitudes(model, z[:20])
    np.testing.assert_array_equal(amp, np.broadcast_to(blob_set['reference'][1], amp.shape))


# -------------------------------------------------------------- model folders --
def _write_folder(path, model, config):
    from continuousflex_geodl.core.artifacts import ModelDir
    md = ModelDir(path)
    os.makedirs(md.path)
    with open(md.config_path, 'w') as f:
        json.dump(config, f)
    md.write_reference(**model.arrays())
    md.write_weights(model.state_dict())
    return md


def test_a_schema_3_model_folder_loads_without_learned_amplitudes(tmp_path):
    from continuousflex_geodl.core import settings as S
    from continuousflex_geodl.core.inference import decode_learned_amplitudes, load_model
    model, pos, amp = _build(False)
    old = {k: v for k, v in model.config.items()}
    old.update({k: v for k, v in S.TrainSettings.defaults().items() if k != 'w_amplitudes'})
    del old['learn_amplitudes']
    old.update(config_schema=3, package_version='0.old', command_line=['train'])
    assert S.migrate_config(old)['learn_amplitudes'] is False
    assert S.migrate_config(old)['config_schema'] == S.CONFIG_SCHEMA == 4
    md = _write_folder(tmp_path / 'old', model, old)
    loaded = load_model(md.path)
    assert loaded.config['learn_amplitudes'] is False and not loaded.learns_amplitudes
    z = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    assert decode_learned_amplitudes(loaded, z) is None
    with torch.no_grad():
        a, b = model.decode(torch.as_tensor(z)), loaded.decode(torch.as_tensor(z))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_decode_writes_the_learned_amplitudes(tmp_path):
    from continuousflex_geodl.core import cli, settings as S
    from continuousflex_geodl.core.artifacts import DecodeDir
    from continuousflex_geodl.core.inference import decode_learned_amplitudes, load_model
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.io.pdb import read_structure
    model, pos, amp = _build(True, n=40)
    assert np.abs(pos).max() < 0.35 * 32 * 4.0  # all Gaussians well inside the box
    with torch.no_grad():  # amplitudes that change with z
        torch.manual_seed(3)
        for prm in model.decoder.amplitude_head.parameters():
            prm.normal_(0, 3.0)
    cfg = S.with_provenance(dict(model.config, **S.TrainSettings.defaults()), ['test'])
    md = _write_folder(tmp_path / 'model', model, cfg)
    z = np.array([[0, 0], [2.5, -1], [-2, 2]], np.float32)
    np.save(tmp_path / 'z.npy', z)
    out = tmp_path / 'dec'
    assert cli.main(['decode', '--model', md.path, '--latents', str(tmp_path / 'z.npy'),
                     '--out', str(out)]) == 0
    expect = decode_learned_amplitudes(load_model(md.path), z)
    assert expect.std(0).max() > 0.05  # the latents differ in amplitude
    dd = DecodeDir(out)
    np.testing.assert_allclose(dd.amplitudes(), expect, rtol=1e-6)
    st = read_structure(dd.pdb_path)
    occ = np.array([[at.occ for ch in m for r in ch for at in r] for m in st])
    bfac = np.array([[at.b_iso for ch in m for r in ch for at in r] for m in st])
    np.testing.assert_allclose(occ, expect, atol=0.006)  # PDB: 2 decimals
    np.testing.assert_allclose(bfac, amp[None] * expect, atol=0.006)
    # volumes rendered with the learned amplitudes: each map's mass is the sum
    # of its Gaussians' weights (all inside the box), times one common factor
    mass = np.array([read_mrc(f)[0].sum() for f in dd.volume_files()])
    weights = (amp[None] * expect).sum(1)
    np.testing.assert_allclose(mass / mass[0], weights / weights[0], rtol=2e-3)


# --------------------------------- landscape structures at each latent point --
@pytest.fixture(scope='module')
def varying_model(tmp_path_factory):
    """(folder, model) of a learned-amplitude model whose amplitude head has
    random weights, so that the amplitudes clearly change with z."""
    from continuousflex_geodl.core import settings as S
    from continuousflex_geodl.core.inference import load_model
    model, pos, amp = _build(True, n=40)
    with torch.no_grad():
        torch.manual_seed(3)
        for prm in model.decoder.amplitude_head.parameters():
            prm.normal_(0, 3.0)
    cfg = S.with_provenance(dict(model.config, **S.TrainSettings.defaults()), ['test'])
    md = _write_folder(tmp_path_factory.mktemp('varying') / 'model', model, cfg)
    return md.path, load_model(md.path)


def _truth(model, z):
    """Positions (M, N, 3) and amplitudes (M, N) decoded at each latent row
    on its own (``FlexModel.decode`` of a batch of one)."""
    pos, amp = [], []
    with torch.no_grad():
        for row in np.asarray(z, np.float32):
            p, a = model.decode(torch.as_tensor(row[None]))
            pos.append(p[0].numpy())
            amp.append(np.broadcast_to(a.numpy(), (1, p.shape[1]))[0])
    return np.stack(pos), np.stack(amp)


def _pdb_bfactors(path):
    from continuousflex_geodl.core.structure import read_pdb
    return read_pdb(path, return_bfactors='all')[1]


def _views_at(pos, amp, sigma, box, apix):
    """(V, D, D) projections of one cloud along ``animate.VIEWS``, straight
    from ``render.project``."""
    from continuousflex_geodl.core.animate import VIEWS
    from continuousflex_geodl.core.geometry import euler_to_matrix
    from continuousflex_geodl.core.render import project
    rots = torch.as_tensor(np.stack([euler_to_matrix(*v) for v in VIEWS]), dtype=torch.float32)
    with torch.no_grad():
        return project(torch.as_tensor(pos), torch.as_tensor(amp), sigma, rots, box,
                       apix).numpy()


def _assert_rows_differ(amp, min_diff=0.1):
    for a in range(len(amp)):
        for b in range(a):
            assert np.abs(amp[a] - amp[b]).max() > min_diff


def test_series_and_animation_carry_the_amplitudes_of_each_latent_point(varying_model,
                                                                        tmp_path):
    """decode_series with make_decoder's amplitude_fn: PDB model m's B factors,
    rendered map m and projection frame m are those of latent row m, not of
    z = 0 (``make_decoder``'s single ``amplitudes``)."""
    from continuousflex_geodl.core.animate import render_views, write_projection_gif
    from continuousflex_geodl.core.inference import make_decoder
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.landscape.series import decode_series
    from continuousflex_geodl.core.render import render_volume
    folder, model = varying_model
    dec = make_decoder(folder)
    z = np.array([[0, 0], [2.5, -1], [-2, 2]], np.float32)
    pos, amp = _truth(model, z)
    _assert_rows_differ(amp)
    np.testing.assert_allclose(dec['amplitudes'], amp[0], rtol=1e-6)  # z = 0: row 0
    sigma, box, apix = float(model.config['sigma']), 32, 4.0
    res = decode_series(z, dec['decode_fn'], str(tmp_path), 'path',
                        amplitudes=dec['amplitude_fn'], sigma=sigma, box=box, apix=apix)
    np.testing.assert_allclose(res['positions'], pos, atol=1e-5)
    np.testing.assert_allclose(res['amplitudes'], amp, rtol=1e-6)
    np.testing.assert_allclose(_pdb_bfactors(res['pdb']), amp, atol=0.006)  # 2 decimals
    frames = render_views(res['positions'], res['amplitudes'], sigma, box, apix)
    for m in range(len(z)):
        with torch.no_grad():
            want = [render_volume(torch.as_tensor(pos[m]), torch.as_tensor(amp[j]), sigma,
                                  box, apix).numpy() for j in (m, m - 1)]
        vol = read_mrc(res['mrc'][m])[0]
        np.testing.assert_allclose(vol, want[0], rtol=1e-4, atol=1e-6 * want[0].max())
        assert np.abs(vol - want[1]).max() > 0.01 * want[0].max()  # row m-1's amplitudes
        views = [_views_at(pos[m], amp[j], sigma, box, apix) for j in (m, m - 1)]
        np.testing.assert_allclose(frames[m], views[0], rtol=1e-4, atol=1e-6 * views[0].max())
        assert np.abs(frames[m] - views[1]).max() > 0.01 * views[0].max()
    # (M, N) amplitudes of the wrong number of rows are refused
    with pytest.raises(ValueError, match='amplitudes'):
        decode_series(z, dec['decode_fn'], str(tmp_path), 'bad', amplitudes=amp[:2])
    with pytest.raises(ValueError, match='amplitudes'):
        render_views(pos, amp[:2], sigma, box, apix)
    assert write_projection_gif(str(tmp_path / 'path.gif'), pos, amp, sigma, box, apix) == 4


def test_landscape_states_paths_and_explorer_decode_the_amplitudes_at_each_point(
        varying_model, tmp_path, monkeypatch):
    """landscape analyze (state centres), path and the explorer's path (PDB
    and GIF frames) with a model whose amplitudes depend on z: the
    amplitudes of each structure are those decoded at its own latent."""
    from continuousflex_geodl.core import animate
    from continuousflex_geodl.core.artifacts import PathDir
    from continuousflex_geodl.core.inference import make_decoder
    from continuousflex_geodl.core.landscape import pipeline as P
    from continuousflex_geodl.core.landscape.explore import Explorer
    folder, model = varying_model
    z = (np.random.default_rng(4).normal(size=(300, 2)) * [1.5, 0.6]).astype(np.float32)
    dec = make_decoder(folder, volumes=False)
    P.analyze(z, str(tmp_path / 'land'), n_states=2, method='kmeans', n_boot=0, fe_boot=0,
              decoder=dec)
    cen = np.load(str(tmp_path / 'land' / 'state_centres.npy'))
    amp = _truth(model, cen)[1]
    _assert_rows_differ(amp)
    np.testing.assert_allclose(_pdb_bfactors(str(tmp_path / 'land' / 'states' / 'states.pdb')),
                               amp, atol=0.006)
    P.compute_path(z, str(tmp_path / 'path'), kind='pca', n_points=4, decoder=dec)
    amp = _truth(model, PathDir(str(tmp_path / 'path')).latents())[1]
    _assert_rows_differ(amp)
    np.testing.assert_allclose(_pdb_bfactors(str(tmp_path / 'path' / 'path.pdb')), amp,
                               atol=0.006)
    # the explorer: its path's PDB and the amplitudes its GIF is rendered with
    seen = []
    real_gif = animate.write_projection_gif

    def spy(path, positions, amplitudes, *args, **kw):
        seen.append((np.array(positions), np.array(amplitudes), args[:3]))
        return real_gif(path, positions, amplitudes, *args, **kw)

    monkeypatch.setattr(animate, 'write_projection_gif', spy)
    ex = Explorer(z, model=folder, out=str(tmp_path / 'ex'), chimerax=False, path_points=4)
    lo, hi = np.percentile(ex.view.y, [10, 90], axis=0)
    info = ex.make_path(vertices=[lo, hi])
    pdir = PathDir(info['folder'])
    pos, amp = _truth(model, pdir.latents())
    _assert_rows_differ(amp)
    np.testing.assert_allclose(_pdb_bfactors(os.path.join(pdir.path, 'path.pdb')), amp,
                               atol=0.006)
    (gpos, gamp, (sigma, box, apix)), = seen
    np.testing.assert_allclose(gamp, amp, rtol=1e-6)
    frames = animate.render_views(gpos, gamp, sigma, box, apix)
    for m in range(len(amp)):
        np.testing.assert_allclose(frames[m], _views_at(pos[m], amp[m], sigma, box, apix),
                                   rtol=1e-4, atol=1e-6 * frames[m].max())
    point = ex.decode_point(hi)
    amp = _truth(model, np.asarray(point['latent'], np.float32)[None])[1]
    np.testing.assert_allclose(_pdb_bfactors(point['pdb']), amp, atol=0.006)


def test_amplitudes_independent_of_z_give_the_same_files_as_before(tmp_path):
    """An ordinary model: decode_series with make_decoder's amplitude_fn writes
    exactly the files it wrote with the single amplitudes vector, and frames
    rendered with (M, N) equal rows equal those rendered with (N,)."""
    from continuousflex_geodl.core import settings as S
    from continuousflex_geodl.core.animate import render_views
    from continuousflex_geodl.core.inference import make_decoder
    from continuousflex_geodl.core.landscape.series import decode_series
    model, pos, amp = _build(False, n=40)
    cfg = S.with_provenance(dict(model.config, **S.TrainSettings.defaults()), ['test'])
    md = _write_folder(tmp_path / 'model', model, cfg)
    dec = make_decoder(md.path, volumes=False)
    z = np.array([[0, 0], [2.5, -1], [-2, 2]], np.float32)
    np.testing.assert_array_equal(dec['amplitude_fn'](z), np.tile(amp, (3, 1)))
    sigma = float(model.config['sigma'])
    files = []
    for name, a in (('vector', dec['amplitudes']), ('function', dec['amplitude_fn'])):
        res = decode_series(z, dec['decode_fn'], str(tmp_path / name), 'path', amplitudes=a,
                            sigma=sigma, box=32, apix=4.0)
        files.append([open(f, 'rb').read() for f in [res['pdb']] + res['mrc']])
        frames = render_views(res['positions'], res['amplitudes'], sigma, 32, 4.0)
        files[-1].append(frames.tobytes())
    assert len(files[0]) == 5 and files[0] == files[1]
