"""Animations of a pathway: a series of structures (M, N, 3) in path order.

* ``write_projection_gif``: an animated GIF of rendered projections along
  three orthogonal views (front, side, top), one frame per path point,
  played forth and back.
* ``write_chimerax_script``: a ChimeraX ``.cxc`` script that opens an MRC
  series and plays it (``vseries play``) in a loop.

Positions are in A about the box centre (core conventions).
"""
import os

import numpy as np

from .fileio import atomic_write
from .geometry import euler_to_matrix
from .render import project

#: three viewing directions, (rot, tilt, psi) in degrees
VIEWS = ((0.0, 0.0, 0.0), (0.0, 90.0, 0.0), (90.0, 90.0, 0.0))


def render_views(positions, amplitudes, sigma, box, apix, views=VIEWS):
    """(M, V, D, D) float32 projections of each structure along each view.

    ``positions`` (M, N, 3); ``amplitudes`` (N,) for every structure (or
    broadcastable to it) or (M, N), row m for structure m.
    """
    import torch
    rots = torch.as_tensor(np.stack([euler_to_matrix(*v) for v in views]),
                           dtype=torch.float32)
    positions = np.asarray(positions, dtype=np.float32)
    amps = np.asarray(amplitudes, dtype=np.float32)
    if amps.ndim == 2 and amps.shape[0] == 1:
        amps = amps[0]
    if amps.ndim == 2 and amps.shape != positions.shape[:2]:
        raise ValueError('render_views: amplitudes %s for %d structures of %d atoms'
                         % (amps.shape, len(positions), positions.shape[1]))
    per_frame = amps.ndim == 2
    amps = torch.as_tensor(amps)
    frames = []
    with torch.no_grad():
        for m, p in enumerate(positions):
            pos = torch.as_tensor(p)
            frames.append(project(pos, amps[m] if per_frame else amps, float(sigma), rots,
                                  box, apix).numpy())
    return np.stack(frames)


def _to_uint8(frames):
    lo, hi = np.percentile(frames, 0.5), np.percentile(frames, 99.9)
    scaled = (frames - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def write_projection_gif(path, positions, amplitudes, sigma, box, apix,
                         duration_ms=120, upscale=3, bounce=True):
    """Write an animated GIF of the path; returns the number of frames.

    ``positions`` (M, N, 3); ``amplitudes`` (N,) or (M, N) (those of frame
    m in row m, e.g. when they depend on the latent point).  Each frame
    shows the structure's projections along ``VIEWS`` side by side, all
    frames on one grey scale so motion (not contrast) is seen.
    """
    from PIL import Image
    frames = _to_uint8(render_views(positions, amplitudes, sigma, box, apix))
    images = []
    for f in frames:  # (V, D, D) -> one row; flip rows so +y points up
        row = np.concatenate([v[::-1] for v in f], axis=1)
        img = Image.fromarray(row).resize(
            (row.shape[1] * upscale, row.shape[0] * upscale), Image.BICUBIC)
        images.append(img)
    if bounce and len(images) > 2:
        images = images + images[-2:0:-1]
    with atomic_write(path, 'wb') as fh:
        images[0].save(fh, format='GIF', save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=0)
    return len(images)


def write_chimerax_script(path, volume_files, level=None, fps=5):
    """ChimeraX script playing an MRC series in path order (files relative to ``path``).

    Open it with ``chimerax path.cxc``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    names = [os.path.relpath(os.path.abspath(f), folder) for f in volume_files]
    lines = ['# continuousflex_geodl pathway: %d volumes in path order' % len(names),
             'close session',
             'open %s vseries true' % ' '.join('"%s"' % n for n in names)]
    if level is not None:
        lines.append('volume #1 level %g style surface' % level)
    lines += ['view', 'vseries play #1 loop true direction oscillate maxFrameRate %d' % fps]
    with atomic_write(path, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    return path
