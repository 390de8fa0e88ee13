"""The interactive landscape explorer driven by synthetic mouse and key events.

A tiny model is trained on toy particles (one epoch), its latents inferred
and a landscape analysed; the explorer is then built on an Agg canvas and
driven through matplotlib's own event path (``MouseEvent`` / ``KeyEvent``
processed by the canvas callbacks, so the lasso, rectangle, radio buttons
and push buttons react as in a window).  Known answers:

* a lasso or box selects exactly the particles inside it (ground truth:
  ``matplotlib.path.Path.contains_points`` / coordinate comparisons on the
  particles' map coordinates), the subset files hold those rows and the
  .star holds those particles' poses;
* a click on a particle of a PCA map of 2D latents decodes that particle's
  latent (the PCA inverse is exact there), and the map and PDB written are
  those the model decodes at that latent directly; on a latent-dimension
  map the latent is the click; with the neighbour inverse it is the median
  of the nearest particles (brute force);
* a drawn path decodes evenly spaced points of the drawn polyline (round
  trip through the map), with one PDB model, one map and two GIF frames per
  point (forth and back).

Then the Scipion side: the landscape viewer's explorer registers a lasso
selection as a subset protocol run whose output holds exactly those
particles.
"""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.core import cli

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(folder, particles.star, model dir, latents (N, 2), landscape dir)."""
    from continuousflex_geodl.core.landscape.pipeline import analyze
    from continuousflex_geodl.core.models.toydata import write_toy_dataset
    d = tmp_path_factory.mktemp('explore')
    write_toy_dataset(str(d), n=80, box=24, apix=5.0, n_atoms=40, snr=1.0, seed=2)
    star = str(d / 'particles.star')
    model = str(d / 'model')
    assert cli.main(['train', '--particles', star, '--reference', str(d / 'ref.npz'),
                     '--out', model, '--zdim', '2', '--epochs', '1', '--batch-size', '16',
                     '--threads', '1', '--prior', 'gaussian']) == 0
    zfile = str(d / 'z.npy')
    assert cli.main(['infer', '--model', model, '--particles', star, '--out', zfile]) == 0
    z = np.load(zfile)
    land = str(d / 'land')
    analyze(z, land, n_boot=0, fe_boot=0, n_states=2, method='kmeans', seed=0)
    return d, star, model, z, land


def _figure():
    """An Agg figure whose idle redraws are skipped: nothing is displayed, and on
    Agg each draw_idle (every mouse move of a lasso) is a full render."""
    from continuousflex_geodl.core.landscape.plots import new_figure
    fig = new_figure(14, 7.5)
    fig.canvas.draw_idle = lambda *a, **k: None
    return fig


def _mouse(ex, name, xy_data, button=1, ax=None):
    """Send a mouse event at data point ``xy_data`` of ``ax`` (default: the map)
    through the canvas, as a window would."""
    from matplotlib.backend_bases import MouseEvent
    ax = ax or ex.ax
    x, y = ax.transData.transform(np.asarray(xy_data, float))
    canvas = ex.figure.canvas
    ev = MouseEvent(name, canvas, x, y, button=button)
    canvas.callbacks.process(name, ev)
    return ev


def _click_axes(ex, ax):
    """Press and release the mouse at the centre of ``ax`` (e.g. a button)."""
    from matplotlib.backend_bases import MouseEvent
    canvas = ex.figure.canvas
    x, y = ax.transAxes.transform((0.5, 0.5))
    for name in ('button_press_event', 'button_release_event'):
        canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, button=1))


def _key(ex, key):
    from matplotlib.backend_bases import KeyEvent
    canvas = ex.figure.canvas
    canvas.callbacks.process('key_press_event', KeyEvent('key_press_event', canvas, key))


def _pick_radio(ex, which, label):
    """Click the radio button ``label`` of widget ``which`` with a mouse event."""
    from matplotlib.backend_bases import MouseEvent
    radio = ex.widgets[which]
    texts = [t.get_text() for t in radio.labels]
    i = texts.index(label)
    canvas = ex.figure.canvas
    # the button circle of item i (drawn in axes coordinates of the radio axes)
    off = radio._buttons.get_offsets()[i]
    x, y = radio.ax.transAxes.transform(off)
    for name in ('button_press_event', 'button_release_event'):
        canvas.callbacks.process(name, MouseEvent(name, canvas, x, y, button=1))


def _pixels_to_data(ax, pix):
    return ax.transData.inverted().transform(np.asarray(pix, float))


# ------------------------------------------------------------------ selections

def test_lasso_and_box_select_exactly_the_particles_inside(trained, tmp_path):
    from matplotlib.path import Path
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.core.landscape.explore import Explorer
    from continuousflex_geodl.core.landscape.subsets import read_indices
    d, star, _, z, land = trained
    got = []
    ex = Explorer(z, landscape=land, particles=star, out=str(tmp_path / 'ex'),
                  chimerax=False, on_subset=got.append)
    ex.build(_figure())
    _pick_radio(ex, 'mode', 'lasso')
    assert ex.mode == 'lasso'
    y = ex.view.y
    np.testing.assert_allclose(y, np.load(os.path.join(land, 'embedding.npy')), atol=1e-6)
    # a lasso around the lower-left part of the cloud, drawn in screen pixels
    c, s = np.median(y, 0), y.std(0)
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    verts = c - 0.4 * s + np.c_[np.cos(ang), 0.8 * np.sin(ang)] * s
    pix = ex.ax.transData.transform(verts)
    _mouse(ex, 'button_press_event', verts[0])
    for v in verts[1:]:
        _mouse(ex, 'motion_notify_event', v)
    _mouse(ex, 'button_release_event', verts[-1])
    # the lasso's polygon is the drawn pixels in data coordinates (press, moves, release)
    poly = _pixels_to_data(ex.ax, np.r_[pix, pix[-1:]])
    truth = np.nonzero(Path(poly).contains_points(y))[0]
    assert 5 <= len(truth) <= len(y) - 5          # a real partial selection
    np.testing.assert_array_equal(ex.selected_indices(), truth)
    _click_axes(ex, ex.widgets['save'].ax)       # "Save selection"
    assert len(got) == 1
    info = got[0]
    np.testing.assert_array_equal(info['indices'], truth)
    np.testing.assert_array_equal(read_indices(info['indices_txt']), truth)
    np.testing.assert_array_equal(np.load(os.path.join(info['folder'],
                                                       'subset_indices.npy')), truth)
    saved = json.load(open(os.path.join(info['folder'], 'subset.json')))
    assert saved['n_selected'] == len(truth) and saved['selection']['kind'] == 'lasso'
    sub, full = load_particles(info['particles_star']), load_particles(star)
    assert len(sub) == len(truth)
    np.testing.assert_allclose(sub.euler, full.euler[truth], atol=1e-4)
    np.testing.assert_allclose(sub.images[np.arange(len(truth))],
                               full.images[truth], atol=1e-5)

    # box: drag a rectangle; ground truth by coordinate comparisons
    _pick_radio(ex, 'mode', 'box')
    a, b = c - 0.3 * s, c + 0.9 * s
    _mouse(ex, 'button_press_event', a)
    _mouse(ex, 'motion_notify_event', (a + b) / 2)
    _mouse(ex, 'motion_notify_event', b)
    _mouse(ex, 'button_release_event', b)
    lo, hi = _pixels_to_data(ex.ax, ex.ax.transData.transform(np.array([a, b])))
    truth = np.nonzero(np.all((y >= lo) & (y <= hi), axis=1))[0]
    assert 3 <= len(truth) < len(y)
    np.testing.assert_array_equal(ex.selected_indices(), truth)
    _key(ex, 'w')                                 # key w saves too
    assert len(got) == 2 and got[1]['name'] == 'subset_002'
    np.testing.assert_array_equal(got[1]['indices'], truth)
    # polygon: click the vertices, close on the first one
    _pick_radio(ex, 'mode', 'polygon')
    poly = c + np.array([[-1.0, -1.0], [0.6, -0.8], [0.9, 0.7], [-0.5, 0.9]]) * s
    for v in np.r_[poly, poly[:1]]:                     # move there, press, release
        for name in ('motion_notify_event', 'button_press_event', 'button_release_event'):
            _mouse(ex, name, v)
    clicked = _pixels_to_data(ex.ax, ex.ax.transData.transform(poly))
    truth = np.nonzero(Path(clicked).contains_points(y))[0]
    assert 5 <= len(truth) < len(y)
    np.testing.assert_array_equal(ex.selected_indices(), truth)
    assert ex.selection_info['kind'] == 'polygon'
    # colour by state: every drawn particle keeps its state's colour group
    _pick_radio(ex, 'colour', 'state')
    assert ex.colour == 'state'
    assert sum(len(a.get_offsets()) for a in ex._particle_artists) == len(y)
    with pytest.raises(ValueError, match='Nothing is selected'):
        ex.clear()
        ex.save_selection()


# ------------------------------------------------------------------ decoding

def test_click_decodes_the_structure_at_the_clicked_latent(trained, tmp_path):
    from continuousflex_geodl.core.inference import (decode_positions, decode_volumes,
                                                     load_model)
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.landscape.explore import Explorer
    from continuousflex_geodl.core.structure import read_pdb
    _, _, model_dir, z, land = trained
    model = load_model(model_dir)
    got = []
    ex = Explorer(z, model=model_dir, landscape=land, out=str(tmp_path / 'ex'),
                  axes='pca', chimerax=False, on_point=got.append)
    ex.build(_figure())
    assert ex.mode == 'point'
    i = int(np.argmax(np.linalg.norm(z - z.mean(0), axis=1)))   # an outer particle
    _mouse(ex, 'button_press_event', ex.view.y[i])
    _mouse(ex, 'button_release_event', ex.view.y[i])
    assert len(got) == 1
    info = got[0]
    # 2D latents on a PCA map: the inverse is exact, the click gives back z_i
    np.testing.assert_allclose(info['latent'], z[i], atol=1e-4)
    assert info['nearest_particle'] == i
    vol, apix = read_mrc(info['mrc'])
    want = decode_volumes(model, np.asarray(info['latent'], np.float32)[None])[0]
    np.testing.assert_allclose(vol, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
    assert abs(apix - model.apix) < 1e-4
    pos = read_pdb(info['pdb'])[0]
    np.testing.assert_allclose(pos, decode_positions(model, np.asarray(info['latent'],
                                                                       np.float32))[0],
                               atol=2e-3)          # PDB precision
    np.testing.assert_allclose(ex.last_volume, vol)  # what the side panel shows
    assert json.load(open(os.path.join(ex.out, 'points', 'point_001.json')))['latent'] \
        == info['latent']

    # two latent dimensions as axes: the latent is the clicked point itself
    _pick_radio(ex, 'axes', 'z1-z2')
    assert ex.view.dims == (0, 1)
    q = z.mean(0) + np.array([0.3, -0.2]) * z.std(0)
    _mouse(ex, 'button_press_event', q)
    np.testing.assert_allclose(got[-1]['latent'], q, rtol=1e-6, atol=1e-6)
    vol2 = read_mrc(got[-1]['mrc'])[0]
    np.testing.assert_allclose(vol2, decode_volumes(model, q.astype(np.float32)[None])[0],
                               rtol=1e-4, atol=1e-5 * float(np.abs(vol2).max()))

    # neighbour inverse: median of the 10 particles nearest on the map (brute force)
    ex2 = Explorer(z, out=str(tmp_path / 'ex2'), axes='pca', inverse='neighbours',
                   chimerax=False)
    ex2.build(_figure())
    p = ex2.view.y.mean(0) + 0.1
    _mouse(ex2, 'button_press_event', p)
    pp = _pixels_to_data(ex2.ax, ex2.ax.transData.transform(p[None]))[0]
    near = np.argsort(np.linalg.norm(ex2.view.y - pp, axis=1))[:10]
    np.testing.assert_allclose(ex2.points[-1]['latent'], np.median(z[near], 0), atol=1e-12)
    assert ex2.points[-1]['mrc'] is None          # no model: the latent only


def test_drawn_path_decodes_even_points_of_the_polyline(trained, tmp_path):
    from PIL import Image
    from continuousflex_geodl.core.artifacts import PathDir
    from continuousflex_geodl.core.inference import decode_positions, load_model
    from continuousflex_geodl.core.landscape.explore import Explorer
    from continuousflex_geodl.core.structure import read_pdb
    _, _, model_dir, z, land = trained
    ex = Explorer(z, model=model_dir, landscape=land, out=str(tmp_path / 'ex'),
                  chimerax=False, path_points=7)
    ex.build(_figure())
    _pick_radio(ex, 'mode', 'path')
    c, s = np.median(ex.view.y, 0), ex.view.y.std(0)
    verts = np.array([c - s, c + [0.5, -0.5] * s, c + s])
    for v in np.r_[verts, [c]]:                          # the last click is a mistake
        _mouse(ex, 'button_press_event', v)
    _mouse(ex, 'button_press_event', c, button=3)        # right click: undo
    assert len(ex.path_vertices) == 3
    _key(ex, 'enter')
    assert len(ex.paths) == 1
    pdir = PathDir(ex.paths[0]['folder'])
    lat = pdir.latents()
    assert lat.shape == (7, 2)
    # the path's points on the map: first and last vertex, evenly spaced along the polyline
    y = pdir.embedding()
    drawn = _pixels_to_data(ex.ax, ex.ax.transData.transform(verts))
    np.testing.assert_allclose(y[0], drawn[0], atol=1e-4)
    np.testing.assert_allclose(y[-1], drawn[-1], atol=1e-4)
    seg = np.linalg.norm(np.diff(drawn, axis=0), axis=1)
    step = np.linalg.norm(np.diff(y, axis=0), axis=1)
    corner = np.searchsorted(np.arange(1, 7) * seg.sum() / 6, seg[0])  # step with the corner
    np.testing.assert_allclose(np.delete(step, corner), seg.sum() / 6, rtol=1e-4)
    model = load_model(model_dir)
    pdb = read_pdb(os.path.join(pdir.path, 'path.pdb'))
    np.testing.assert_allclose(pdb, decode_positions(model, lat), atol=2e-3)
    assert len(pdir.structure_files('mrc')) == 7
    info = pdir.info()
    assert info['files']['gif_frames'] == 2 * 7 - 2      # forth and back
    with Image.open(info['files']['gif']) as im:
        assert im.format == 'GIF' and 1 <= im.n_frames <= 2 * 7 - 2
    cxc = open(os.path.join(pdir.path, 'path.cxc')).read()
    assert 'path_006.mrc' in cxc and 'vseries play' in cxc
    assert info['n_points'] == 7 and len(info['path_dG']) == 7
    assert os.path.exists(pdir.figure_path)


def test_explore_command_line(trained, tmp_path):
    from PIL import Image
    d, star, model, _, land = trained
    png = str(tmp_path / 'shot.png')
    attr = str(tmp_path / 'a.npy')
    np.save(attr, np.arange(80, dtype=float))
    assert cli.main(['explore', '--model', model, '--latents', str(d / 'z.npy'),
                     '--landscape', land, '--particles', star, '--out',
                     str(tmp_path / 'out'), '--attribute', 'order=%s' % attr,
                     '--attribute', 'rlnAngleTilt', '--colour', 'order',
                     '--screenshot', png]) == 0
    with Image.open(png) as im:
        assert min(im.size) > 300
    assert os.path.exists(str(tmp_path / 'out' / 'run.log'))
    # user errors: one line, exit status 2
    assert cli.main(['explore', '--latents', str(d / 'z.npy'), '--out', str(tmp_path / 'o2'),
                     '--axes', '1,1', '--screenshot', png]) == 2
    assert cli.main(['explore', '--latents', str(d / 'z.npy'), '--out', str(tmp_path / 'o3'),
                     '--attribute', 'nope', '--screenshot', png]) == 2


# ============================================= Scipion: viewer -> registered subset

from continuousflex_geodl.tests import scipion_env  # noqa: E402

needs_scipion = scipion_env.needs_scipion()


@pytest.fixture(scope='module')
def project():
    with scipion_env.new_project('cfgeodl_explore') as proj:
        yield proj


@needs_scipion
def test_explorer_lasso_registers_a_subset_run_with_those_particles(project, tmp_path):
    """A landscape run (files made by the core, output particles with ids that
    are not row + 1); its viewer's explorer, a lasso, "Save selection": a
    *subset from landscape* run is created and run in the project, and its
    output holds exactly the particles inside the lasso."""
    from matplotlib.path import Path
    from pwem.objects import ParticleFlex
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.core.landscape.pipeline import analyze
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtSubset
    from continuousflex_geodl.protocols.protocol_subset import SELECT_IDS
    from continuousflex_geodl.viewers import GeoDLLandscapeViewer
    from continuousflex_geodl.viewers.views import ExplorerView
    rng = np.random.default_rng(4)
    n = 240
    z = np.r_[rng.normal(-2, 0.6, (n // 2, 3)), rng.normal(2, 0.6, (n // 2, 3))]
    ids = 1000 + 3 * np.arange(n)                 # Scipion ids, not rows
    prot = project.newProtocol(GeoDLProtLandscape)
    project.saveProtocol(prot)
    os.makedirs(prot._getExtraPath(), exist_ok=True)
    np.save(prot._getLatentsFile(), z.astype(np.float32))
    np.save(prot._getExtraPath('particle_ids.npy'), ids)
    analyze(z.astype(np.float32), prot._getLandscapeDir(), n_boot=0, fe_boot=0, n_states=2,
            method='kmeans', seed=0)
    parts = prot._createSetOfParticlesFlex(progName=const.PROG_NAME)
    parts.setSamplingRate(2.0)
    for i in range(n):
        p = ParticleFlex(progName=const.PROG_NAME)
        p.setObjId(int(ids[i]))
        p.setLocation(i + 1, 'fake.mrcs')
        p.setZFlex(z[i].astype(float))
        parts.append(p)
    parts.write()
    prot._defineOutputs(outputParticles=parts)
    project._storeProtocol(prot)

    viewer = GeoDLLandscapeViewer(project=project, protocol=prot)
    viewer.setProtocol(prot)
    viewer.launchWait = True
    views = viewer._visualize(prot)  # the form's default action, then the explorer:
    views = viewer._showExplorer()
    assert len(views) == 1 and isinstance(views[0], ExplorerView)
    png = views[0].save(str(tmp_path / 'explorer.png'))   # draws it on Agg
    assert os.path.getsize(png) > 10000
    ex = views[0].explorer
    assert ex.model is None and ex.axes == 'landscape'
    _pick_radio(ex, 'mode', 'lasso')
    y = ex.view.y
    # the lower-left part of the map, drawn inside the axes (presses outside are ignored)
    pix = ex.ax.transAxes.transform([[0.05, 0.05], [0.55, 0.05], [0.55, 0.5], [0.3, 0.6],
                                     [0.05, 0.5]])
    verts = _pixels_to_data(ex.ax, pix)
    _mouse(ex, 'button_press_event', verts[0])
    for v in verts[1:]:
        _mouse(ex, 'motion_notify_event', v)
    _mouse(ex, 'button_release_event', verts[-1])
    rows = np.nonzero(Path(_pixels_to_data(ex.ax, np.r_[pix, pix[-1:]])).contains_points(y))[0]
    assert 5 <= len(rows) < n
    _click_axes(ex, ex.widgets['save'].ax)
    assert len(ex.subsets) == 1
    sub = ex.subsets[0]['protocol']
    assert isinstance(sub, GeoDLProtSubset) and sub.selection.get() == SELECT_IDS
    assert sub.getObjLabel() == 'explorer subset_001 (%d particles)' % len(rows)
    if not sub.isFinished():
        logs = ''.join(open(f).read()[-2000:] for f in sub.getLogPaths()[:2]
                       if os.path.exists(f))
        pytest.fail('subset run %s: %s\n%s' % (sub.getStatus(), sub.getErrorMessage(), logs))
    out = sorted(p.getObjId() for p in sub.outputParticles)
    np.testing.assert_array_equal(out, ids[rows])
    # the run is in the project, with the landscape particles as its input
    again = project.getProtocol(sub.getObjId())
    assert again.inputParticles.get().getSize() == n
    assert again.outputParticles.getSize() == len(rows)
