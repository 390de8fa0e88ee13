"""Pathway animations (core.animate): GIF frames, motion direction, ChimeraX script.

Known answers: a GIF of M structures has M frames (2M - 2 played forth and
back); a pseudo-atom moving along +x by d A moves the centre of its front-view
projection right by d / apix pixels (times the up-scaling), and along +y moves
it up (rows flipped so +y points up); the ChimeraX script opens exactly the
given maps, in order, relative to the script.
"""
import os

import numpy as np
import pytest

from continuousflex_geodl.core import animate

BOX, APIX, SIGMA, UPSCALE = 24, 2.0, 2.0, 2


def _frames(path):
    from PIL import Image, ImageSequence
    with Image.open(path) as im:
        assert im.format == 'GIF'
        return [np.asarray(f.convert('L'), float) for f in ImageSequence.Iterator(im)]


def _one_atom_path(offsets):
    """(M, 1, 3) positions of one atom at the given (x, y, z) offsets (A)."""
    return np.asarray(offsets, np.float32)[:, None, :]


@pytest.mark.parametrize('bounce, expected', [(True, 2 * 5 - 2), (False, 5)])
def test_gif_has_one_frame_per_structure(tmp_path, bounce, expected):
    pos = _one_atom_path([[x, 0, 0] for x in np.linspace(-6, 6, 5)])
    fn = str(tmp_path / 'path.gif')
    n = animate.write_projection_gif(fn, pos, np.ones(1), SIGMA, BOX, APIX, upscale=UPSCALE,
                                     bounce=bounce)
    frames = _frames(fn)
    assert n == len(frames) == expected
    # three views side by side, up-scaled
    assert frames[0].shape == (BOX * UPSCALE, 3 * BOX * UPSCALE)
    if bounce:  # forth and back: frame M + j is frame M - 2 - j
        for j in range(3):
            np.testing.assert_array_equal(frames[5 + j], frames[3 - j])


def _centroid(panel):
    w = panel - np.median(panel)
    w = np.clip(w, 0, None)
    rows, cols = np.indices(w.shape)
    return (w * cols).sum() / w.sum(), (w * rows).sum() / w.sum()


def test_motion_to_the_right_moves_the_front_view_right_by_the_known_amount(tmp_path):
    xs = np.array([-8.0, -4.0, 0.0, 4.0, 8.0])
    pos = _one_atom_path([[x, 0, 0] for x in xs])
    fn = str(tmp_path / 'right.gif')
    animate.write_projection_gif(fn, pos, np.ones(1), SIGMA, BOX, APIX, upscale=UPSCALE,
                                 bounce=False)
    width = BOX * UPSCALE
    cx = np.array([_centroid(f[:, :width])[0] for f in _frames(fn)])
    assert np.all(np.diff(cx) > 0)
    # slope: pixels of the up-scaled GIF per A
    slope = np.polyfit(xs, cx, 1)[0]
    assert slope == pytest.approx(UPSCALE / APIX, rel=0.05)


def test_motion_along_y_moves_the_front_view_up(tmp_path):
    ys = np.array([-6.0, 0.0, 6.0])
    pos = _one_atom_path([[0, y, 0] for y in ys])
    fn = str(tmp_path / 'up.gif')
    animate.write_projection_gif(fn, pos, np.ones(1), SIGMA, BOX, APIX, upscale=UPSCALE,
                                 bounce=False)
    width = BOX * UPSCALE
    cy = np.array([_centroid(f[:, :width])[1] for f in _frames(fn)])
    assert np.all(np.diff(cy) < 0)  # image rows grow downwards: +y = up = smaller row
    assert np.polyfit(ys, cy, 1)[0] == pytest.approx(-UPSCALE / APIX, rel=0.05)


def test_render_views_match_the_projector_along_each_view():
    """Each view is the exact projection of the structure rotated by that view."""
    import torch
    from continuousflex_geodl.core.geometry import euler_to_matrix
    from continuousflex_geodl.core.render import project
    rng = np.random.default_rng(0)
    pos = rng.normal(0, 6, (2, 7, 3)).astype(np.float32)
    amp = rng.uniform(0.5, 1.5, 7).astype(np.float32)
    img = animate.render_views(pos, amp, SIGMA, BOX, APIX)
    assert img.shape == (2, len(animate.VIEWS), BOX, BOX)
    for v, view in enumerate(animate.VIEWS):
        R = torch.as_tensor(euler_to_matrix(*view)[None], dtype=torch.float32)
        ref = project(torch.as_tensor(pos[1]), torch.as_tensor(amp), SIGMA, R, BOX, APIX)
        np.testing.assert_allclose(img[1, v], ref[0].numpy(), rtol=1e-5, atol=1e-6)


def test_chimerax_script_opens_the_maps_in_path_order(tmp_path):
    maps = tmp_path / 'maps'
    maps.mkdir()
    files = [str(maps / ('vol_%03d.mrc' % i)) for i in (2, 0, 1)]  # path order, not sorted
    for f in files:
        open(f, 'wb').close()
    cxc = str(tmp_path / 'play' / 'path.cxc')
    os.makedirs(os.path.dirname(cxc))
    animate.write_chimerax_script(cxc, files, level=0.5, fps=4)
    text = open(cxc).read()
    opens = [line for line in text.splitlines() if line.startswith('open ')]
    assert len(opens) == 1 and 'vseries true' in opens[0]
    names = [w.strip('"') for w in opens[0].split()[1:] if w.strip('"').endswith('.mrc')]
    assert names == ['../maps/vol_002.mrc', '../maps/vol_000.mrc', '../maps/vol_001.mrc']
    # relative to the script, they are the given files
    assert [os.path.normpath(os.path.join(os.path.dirname(cxc), n)) for n in names] == files
    assert 'volume #1 level 0.5' in text
    assert 'vseries play #1' in text and 'maxFrameRate 4' in text
