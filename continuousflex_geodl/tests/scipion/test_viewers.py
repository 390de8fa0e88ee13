"""Viewers: figures and animations drawn headlessly from small fabricated inputs.

First the Scipion-free drawing code (``viewers.plotting``,
``viewers.animation``), checked against the numbers it was given (curves
carry the logged values, a scatter draws the requested subset, a density
counts every particle, a path is drawn at its coordinates, a GIF has one
frame per structure); then the Scipion viewers on protocol runs whose
output folders are fabricated here (no protocol is executed): each writes
valid PNG / GIF files, and reports missing data as an error message in the
GUI and as an exception when saving.
"""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.viewers import animation, plotting


def _assert_png(path, min_side=100):
    from PIL import Image
    assert os.path.exists(path), path
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n', path
    with Image.open(path) as im:
        assert im.format == 'PNG' and min(im.size) >= min_side, (path, im.size)


def _gif_frames(path):
    from PIL import Image
    with Image.open(path) as im:
        assert im.format == 'GIF'
        return im.n_frames


HISTORY = [dict(epoch=1, loss=1000.0, data=990.0, rate=8.0, images_per_s=20.0, seconds=9.0,
                note='warm-up'),
           dict(epoch=2, loss=120.0, data=110.0, rate=8.0, images_per_s=21.0, seconds=9.1),
           dict(epoch=3, loss=40.0, data=35.0, rate=8.0, images_per_s=22.0, seconds=9.2)]


def _write_model(folder, sigma_history=2.5, box=24, apix=2.0, history=HISTORY):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(dict(sigma=2.0, box=box, apix=apix, zdim=2), f)
    hist = [dict(h, sigma=sigma_history) for h in history]
    with open(os.path.join(folder, 'history.json'), 'w') as f:
        json.dump(hist, f)
    return folder


# ------------------------------------------------------------ training curves

def test_training_curves_show_every_logged_quantity(tmp_path):
    model = _write_model(str(tmp_path / 'model'))
    hist = plotting.load_history(model)           # folder or file both work
    assert hist == plotting.load_history(os.path.join(model, 'history.json'))
    fig = plotting.training_curves_figure(hist)
    axes = {ax.get_title(): ax for ax in fig.axes}
    # numeric quantities only; epoch and seconds are bookkeeping, 'note' is text
    assert set(axes) == {'total loss', 'data term (image NLL)', 'latent rate', 'images / s',
                         'pseudo-atom width σ (Å)'}
    line = axes['total loss'].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(line.get_ydata(), [1000.0, 120.0, 40.0])
    assert axes['total loss'].get_yscale() == 'log'    # spans more than a decade
    assert axes['latent rate'].get_yscale() == 'linear'
    fn = plotting.save_figure(fig, str(tmp_path / 'curves.png'))
    _assert_png(fn)


def test_training_history_errors_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='history.json'):
        plotting.load_history(str(tmp_path))
    with pytest.raises(ValueError, match='empty'):
        plotting.training_curves_figure([])
    bad = tmp_path / 'history.json'
    bad.write_text('"not a history"')
    with pytest.raises(ValueError, match='not a training history'):
        plotting.load_history(str(bad))


# ---------------------------------------------------------------- particles

def test_subsample_indices_are_a_sorted_reproducible_subset():
    idx = plotting.subsample_indices(100000, 2000, seed=3)
    assert len(idx) == 2000 == len(np.unique(idx))
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 100000
    np.testing.assert_array_equal(idx, plotting.subsample_indices(100000, 2000, seed=3))
    np.testing.assert_array_equal(plotting.subsample_indices(50, 2000), np.arange(50))


def _scatter_count(ax):
    from matplotlib.collections import PathCollection
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_embedding_figure_draws_a_subset_and_counts_every_particle(tmp_path):
    from matplotlib.collections import PolyCollection
    rng = np.random.default_rng(0)
    n = 3000
    states = rng.integers(1, 4, n)
    xy = rng.normal(size=(n, 2)) + states[:, None] * 3.0
    fig = plotting.embedding_figure(xy, states, 'state', max_points=500,
                                    labels=('PC1', 'PC2'), state_points=[[3, 3], [6, 6]])
    ax_scatter, ax_density = fig.axes[0], fig.axes[1]
    # 500 particles + 2 state markers drawn; the legend names the three states
    assert _scatter_count(ax_scatter) == 500 + 2
    labels = [t.get_text() for t in ax_scatter.get_legend().get_texts()]
    assert labels == ['state 1', 'state 2', 'state 3']
    hexbin = [c for c in ax_density.collections if isinstance(c, PolyCollection)][0]
    assert hexbin.get_array().sum() == n          # every particle is in the density
    assert ax_scatter.get_xlabel() == 'PC1'
    _assert_png(plotting.save_figure(fig, str(tmp_path / 'states.png')))

    dG = np.linalg.norm(xy - xy.mean(0), axis=1)
    dG[:10] = np.nan                                # no value: drawn grey, not dropped
    fig = plotting.embedding_figure(xy, dG, 'ΔG (kT)', max_points=n, density=False)
    assert _scatter_count(fig.axes[0]) == n
    assert fig.axes[1].get_ylabel() == 'ΔG (kT)'    # colour bar of a continuous value
    with pytest.raises(ValueError, match='does not match'):
        plotting.embedding_figure(xy, states[:10])


def test_latent_pairs_figure_has_a_panel_per_pair(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 3))
    fig = plotting.latent_pairs_figure(z, z[:, 0], 'true coordinate')
    panels = [ax for ax in fig.axes if ax.get_label() != '<colorbar>']
    assert len(panels) == 3 + 3 + 1                 # 3 histograms, 3 pairs, colour bar
    assert sorted(ax.get_xlabel() for ax in panels if ax.get_xlabel()) == ['z1', 'z2', 'z3']
    _assert_png(plotting.save_figure(fig, str(tmp_path / 'pairs.png')))
    with pytest.raises(ValueError, match='do not exist'):
        plotting.latent_pairs_figure(z, dims=[0, 5])


def _free_energy(n=2000, seed=0):
    from continuousflex_geodl.core.landscape.density import free_energy_map
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.normal(-2, 0.5, (n // 2, 2)), rng.normal(2, 0.5, (n // 2, 2))])
    return y, free_energy_map(y, n_boot=2, seed=seed)


def test_free_energy_figure_draws_the_path_at_its_coordinates(tmp_path):
    y, fe = _free_energy()
    path = np.stack([np.linspace(-2, 2, 7), np.linspace(-2, 2, 7)], 1)
    profile = fe.at(path)
    fig = plotting.free_energy_figure(fe, state_points=[[-2, -2], [2, 2]],
                                      state_names=['1', '2'], paths=[('density path', path)],
                                      profile=profile, labels=('PC1', 'PC2'))
    ax_map = fig.axes[0]
    drawn = [ln for ln in ax_map.get_lines() if ln.get_label() == 'density path']
    assert len(drawn) == 1
    np.testing.assert_allclose(np.column_stack(drawn[0].get_data()), path)
    prof = [ax for ax in fig.axes if ax.get_xlabel() == 'path point'][0]
    np.testing.assert_allclose(prof.get_lines()[0].get_ydata(), profile)
    _assert_png(plotting.save_figure(fig, str(tmp_path / 'path.png')))


# ---------------------------------------------------------------- animation

def _write_path_files(folder, m=4, box=24, apix=2.0):
    """Multi-model PDB of m structures (a domain sliding along x) + m maps."""
    from continuousflex_geodl.core.io.mrc import write_mrc
    from continuousflex_geodl.core.structure import write_pdb
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(2)
    base = rng.normal(0, 4, (12, 3))
    pos = np.repeat(base[None], m, 0)
    pos[:, 6:, 0] += np.linspace(0, 6, m)[:, None]
    amp = rng.uniform(0.5, 2.0, 12)
    pdb = write_pdb(os.path.join(folder, 'structures.pdb'), pos, amp)
    vols = [write_mrc(os.path.join(folder, 'vol_%03d.mrc' % i),
                      np.full((box, box, box), float(i), np.float32), apix) for i in range(m)]
    return pdb, vols, pos, amp


def test_read_path_pdb_keeps_each_models_amplitudes(tmp_path):
    """Amplitudes that change along the path (a model with learned amplitudes)
    come back one row per model; equal rows as one (N,) vector."""
    from continuousflex_geodl.core.structure import write_pdb
    pos = np.random.default_rng(5).normal(0, 4, (3, 12, 3))
    amp = np.random.default_rng(6).uniform(0.1, 1.0, (3, 12))
    _, ramp = animation.read_path_pdb(write_pdb(str(tmp_path / 'a.pdb'), pos, amp))
    np.testing.assert_allclose(ramp, amp, atol=0.006)  # PDB: 2 decimals
    _, ramp = animation.read_path_pdb(write_pdb(str(tmp_path / 'b.pdb'), pos, amp[1]))
    assert ramp.shape == (12,)
    np.testing.assert_allclose(ramp, amp[1], atol=0.006)


def test_model_render_settings_prefer_the_learned_width(tmp_path):
    model = _write_model(str(tmp_path / 'model'), sigma_history=2.7, box=24, apix=2.0)
    assert animation.model_render_settings(model) == (2.7, 24, 2.0)
    os.remove(os.path.join(model, 'history.json'))
    assert animation.model_render_settings(model) == (2.0, 24, 2.0)
    with pytest.raises(FileNotFoundError, match='config.json'):
        animation.model_render_settings(str(tmp_path))


def test_export_pathway_writes_gif_script_and_pdb(tmp_path):
    pdb, vols, pos, amp = _write_path_files(str(tmp_path / 'structures'))
    rpos, ramp = animation.read_path_pdb(pdb)
    np.testing.assert_allclose(rpos, pos, atol=1e-3)
    np.testing.assert_allclose(ramp, amp, atol=1e-2)
    res = animation.export_pathway(str(tmp_path / 'anim'), pdb, 2.0, 24, 2.0, volumes=vols,
                                   name='walk')
    assert res['n_structures'] == 4 and res['n_frames'] == 2 * 4 - 2
    assert _gif_frames(res['gif']) == res['n_frames']
    text = open(res['cxc']).read()
    opened = [w.strip('"') for w in text.split() if w.strip('"').endswith('.mrc')]
    assert [os.path.basename(v) for v in opened] == ['vol_000.mrc', 'vol_001.mrc',
                                                     'vol_002.mrc', 'vol_003.mrc']
    assert open(res['pdb']).read() == open(pdb).read()
    with pytest.raises(FileNotFoundError, match='Pathway maps missing'):
        animation.export_pathway(str(tmp_path / 'anim2'), pdb, 2.0, 24, 2.0,
                                 volumes=[str(tmp_path / 'nope.mrc')])


# ===================================================== Scipion viewers (fabricated runs)

from continuousflex_geodl.tests import scipion_env  # noqa: E402

needs_scipion = scipion_env.needs_scipion()


@pytest.fixture(scope='module')
def project():
    with scipion_env.new_project('cfgeodl_viewers') as proj:
        yield proj


def _new_run(proj, cls, **kw):
    prot = proj.newProtocol(cls, **kw)
    proj.saveProtocol(prot)
    os.makedirs(prot._getExtraPath(), exist_ok=True)
    return prot


def _viewer(cls, proj, prot):
    v = cls(project=proj, protocol=prot)
    if hasattr(v, 'setProtocol'):
        v.setProtocol(prot)
    return v


def _flex_particles(prot, z, attrs):
    """Fabricated flexible particles (zFlex = z rows, ids 1..N) as prot.outputParticles."""
    from pyworkflow.object import Float, Integer
    from pwem.objects import ParticleFlex
    from continuousflex_geodl import constants as const
    parts = prot._createSetOfParticlesFlex(progName=const.PROG_NAME)
    parts.setSamplingRate(2.0)
    for i in range(len(z)):
        p = ParticleFlex(progName=const.PROG_NAME)
        p.setLocation(i + 1, 'fake.mrcs')
        p.setZFlex(np.asarray(z[i], float))
        for name, values in attrs.items():
            v = values[i]
            setattr(p, name, Integer(int(v)) if isinstance(v, (int, np.integer))
                    else Float(float(v)))
        parts.append(p)
    parts.write()
    prot._defineOutputs(outputParticles=parts)
    return parts


@needs_scipion
def test_train_viewer_draws_the_history_of_the_run(project, tmp_path):
    from pyworkflow.viewer import MessageView
    from continuousflex_geodl.protocols import GeoDLProtTrain
    from continuousflex_geodl.viewers import GeoDLTrainViewer
    from continuousflex_geodl.viewers.views import FigureView
    prot = _new_run(project, GeoDLProtTrain)
    viewer = _viewer(GeoDLTrainViewer, project, prot)
    # no epoch finished yet: an explanation in the GUI, an exception when saving
    views = viewer._showTrainingCurves()
    assert len(views) == 1 and isinstance(views[0], MessageView)
    assert 'history.json' in views[0].getMessage()
    with pytest.raises(FileNotFoundError):
        viewer._showTrainingCurves(save_path=str(tmp_path / 'none.png'))
    _write_model(prot._getModelDir())
    views = viewer._visualize(prot)
    assert isinstance(views[0], FigureView)
    written = viewer.saveAll(str(tmp_path / 'figs'))
    assert list(written) == ['training_curves']
    _assert_png(written['training_curves'])


def _fabricate_landscape(prot, n=600, seed=0):
    """The files of ``landscape analyze`` for a two-state toy, in prot's extra folder."""
    from continuousflex_geodl.core.landscape.density import free_energy_map
    land = prot._getExtraPath('landscape')
    os.makedirs(land, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) >= n // 2).astype(np.int32)
    y = rng.normal(0, 0.4, (n, 2)) + np.where(labels[:, None] == 1, 1.5, -1.5)
    fe = free_energy_map(y, n_boot=2, seed=seed)
    fe.save(os.path.join(land, 'free_energy.npz'), 'kT', 298.15,
            particle_dG=fe.at(y).astype(np.float32), embedding_method=np.array('pca'))
    np.save(os.path.join(land, 'embedding.npy'), y.astype(np.float32))
    np.save(os.path.join(land, 'labels.npy'), labels)
    np.save(os.path.join(land, 'state_centres_embedding.npy'),
            np.array([[-1.5, -1.5], [1.5, 1.5]], np.float32))
    with open(os.path.join(land, 'states.json'), 'w') as f:
        json.dump(dict(n_states=2, populations=[0.5, 0.5],
                       population_ci95=[[0.45, 0.55], [0.45, 0.55]]), f)
    np.save(prot._getExtraPath('particle_ids.npy'), np.arange(1, n + 1))
    return y, labels


@needs_scipion
def test_landscape_viewer_writes_every_colouring(project, tmp_path):
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtLandscape
    from continuousflex_geodl.viewers import GeoDLLandscapeViewer
    from continuousflex_geodl.viewers.base import particle_values
    prot = _new_run(project, GeoDLProtLandscape)
    y, labels = _fabricate_landscape(prot)
    viewer = _viewer(GeoDLLandscapeViewer, project, prot)
    written = viewer.saveAll(str(tmp_path / 'no_particles'))
    assert set(written) == {'free_energy', 'particles_dG', 'particles_state'}
    assert 'particles_attr' in viewer.skipped          # no output particles: explained
    for fn in written.values():
        _assert_png(fn)

    truth = np.linspace(0.0, 1.0, len(y))
    _flex_particles(prot, y, {const.ATTR_GT_COORD: truth, const.ATTR_GT_STATE: labels + 1})
    ids = np.load(prot._getExtraPath('particle_ids.npy'))
    # the colouring reads each particle's own value (round trip through the set)
    np.testing.assert_allclose(particle_values(prot.outputParticles, const.ATTR_GT_COORD,
                                               ids[::-1]), truth[::-1], atol=1e-6)
    states = particle_values(prot.outputParticles, const.ATTR_GT_STATE, ids)
    assert states.dtype.kind == 'i' and set(states) == {1, 2}
    viewer = _viewer(GeoDLLandscapeViewer, project, prot)
    written = viewer.saveAll(str(tmp_path / 'figs'))
    assert set(written) == set(GeoDLLandscapeViewer._saveables)
    for fn in written.values():
        _assert_png(fn)


@needs_scipion
def test_latents_viewer_draws_the_particles_latents(project, tmp_path):
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtPredict
    from continuousflex_geodl.viewers import GeoDLLatentsViewer
    from continuousflex_geodl.viewers.base import latents_of
    prot = _new_run(project, GeoDLProtPredict)
    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 3))
    _flex_particles(prot, z, {const.ATTR_GT_COORD: z[:, 0]})
    ids, back = latents_of(prot)
    np.testing.assert_array_equal(ids, np.arange(1, 301))
    np.testing.assert_allclose(back, z, atol=1e-6)
    viewer = _viewer(GeoDLLatentsViewer, project, prot)
    written = viewer.saveAll(str(tmp_path / 'figs'))
    assert set(written) == {'latents', 'latent_density'}
    for fn in written.values():
        _assert_png(fn)


@needs_scipion
def test_pathway_viewer_writes_map_animation_script_and_pdb(project, tmp_path):
    from pyworkflow.viewer import MessageView
    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtStructures
    from continuousflex_geodl.viewers import GeoDLPathwayViewer
    land = _new_run(project, GeoDLProtLandscape)
    _fabricate_landscape(land)
    model = _write_model(str(tmp_path / 'model'))
    prot = project.newProtocol(GeoDLProtStructures, pathType=2, nPoints=5)
    prot.inputLandscape.set(land)
    prot.inputModel.set(GeoDLModel(modelDir=model, zdim=2, box=24, apix=2.0))
    project.saveProtocol(prot)
    m = 5
    pdb, vols, _, _ = _write_path_files(prot._getExtraPath('structures'), m=m)
    pdir = prot._getExtraPath('pathway')
    os.makedirs(pdir)
    path = np.stack([np.linspace(-1.5, 1.5, m)] * 2, 1).astype(np.float32)
    np.save(os.path.join(pdir, 'path_embedding.npy'), path)
    with open(os.path.join(pdir, 'path.json'), 'w') as f:
        json.dump(dict(kind='density', from_state=0, to_state=1, units='kT',
                       path_dG=[0.0, 1.0, 2.0, 1.0, 0.0]), f)
    viewer = _viewer(GeoDLPathwayViewer, project, prot)
    folder = str(tmp_path / 'figs')
    written = viewer.saveAll(folder)
    assert set(written) == {'pathway_map', 'pathway_animation'}
    _assert_png(written['pathway_map'])
    assert _gif_frames(written['pathway_animation']) == 2 * m - 2
    cxc = os.path.join(folder, 'pathway.cxc')
    opened = [os.path.normpath(os.path.join(folder, w.strip('"')))
              for w in open(cxc).read().split() if w.strip('"').endswith('.mrc')]
    assert opened == [os.path.abspath(v) for v in vols]
    assert open(os.path.join(folder, 'pathway.pdb')).read() == open(pdb).read()
    # in the GUI: the animation is cached in the run's folder; no ChimeraX here
    views = viewer._showAnimation()
    assert os.path.exists(views[0].gif) and views[0].gif.startswith(prot._getExtraPath())
    views = viewer._showChimera()
    assert isinstance(views[0], MessageView) and 'pathway.cxc' in views[0].getMessage()
