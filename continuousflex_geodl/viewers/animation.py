"""Pathway animations from the files of a decoded path (Scipion-free).

``export_pathway(out_dir, pdb, ...)`` turns the multi-model PDB of a path
(one model per path point, pseudo-atom centres in A about the box centre,
amplitudes in the B-factor column, as ``continuousflex-geodl decode`` and
``landscape path --model`` write it) and the MRC series of the same points
into what a user opens:

* ``<name>.gif``  -- projections along three orthogonal views, one frame per
  path point, played forth and back (``core.animate.write_projection_gif``);
* ``<name>.cxc``  -- ChimeraX script playing the MRC series in path order
  (``core.animate.write_chimerax_script``; ``chimerax <name>.cxc``);
* ``<name>.pdb``  -- the multi-model PDB of the path (copied), which ChimeraX
  also plays as a trajectory (``open <name>.pdb coordsets true``).

The pseudo-atom width and the grid come from the model folder
(``model_render_settings``).
"""
import os

import numpy as np

from ..core.artifacts import ModelDir
from ..core.fileio import atomic_copy


def model_render_settings(model_dir):
    """(sigma A, box px, apix A/px) of a trained model folder.

    sigma is the learned width of the last epoch (history.json) when logged,
    else the configured one (config.json).
    """
    md = ModelDir(model_dir)
    if not md.has_config():
        raise FileNotFoundError("No config.json in the model folder '%s': is it a folder "
                                "written by 'continuousflex-geodl train'?" % model_dir)
    cfg = md.read_config()
    sigma = cfg.get('sigma')
    if md.has_history():
        hist = md.read_history()
        if isinstance(hist, list) and hist and isinstance(hist[-1], dict) and \
                isinstance(hist[-1].get('sigma'), (int, float)):
            sigma = hist[-1]['sigma']
    missing = [k for k, v in (('sigma', sigma), ('box', cfg.get('box')),
                              ('apix', cfg.get('apix'))) if v is None]
    if missing:
        raise ValueError("The model's config.json in '%s' lacks %s." % (model_dir, missing))
    return float(sigma), int(cfg['box']), float(cfg['apix'])


def read_path_pdb(pdb):
    """(M, N, 3) positions (A) and amplitudes (B factors) of a multi-model PDB:
    (N,) when every model has the same, else (M, N), one row per model (a
    model whose amplitudes depend on the latent point)."""
    from ..core.structure import read_pdb
    pos, b = read_pdb(pdb, return_bfactors='all')
    amp = np.asarray(b, np.float32)
    if not np.any(amp > 0):  # no amplitudes stored: equal weights
        amp = np.ones(pos.shape[1], np.float32)
    elif np.all(amp == amp[:1]):
        amp = amp[0]
    return pos.astype(np.float32), np.clip(amp, 0.0, None)


def export_pathway(out_dir, pdb, sigma, box, apix, volumes=None, name='pathway',
                   duration_ms=150, upscale=3, level=None, fps=5):
    """Write ``<name>.gif`` (+ ``<name>.cxc`` when ``volumes``) and ``<name>.pdb``
    into ``out_dir``; returns dict(gif, n_frames, n_structures, cxc, pdb).

    ``volumes`` the MRC files of the path points, in path order.
    """
    if not os.path.exists(pdb):
        raise FileNotFoundError("The pathway structures '%s' do not exist (did the "
                                "structures run finish?)." % pdb)
    from ..core.animate import write_chimerax_script, write_projection_gif
    os.makedirs(out_dir, exist_ok=True)
    pos, amp = read_path_pdb(pdb)
    gif = os.path.join(out_dir, name + '.gif')
    n_frames = write_projection_gif(gif, pos, amp, sigma, box, apix, duration_ms=duration_ms,
                                    upscale=upscale)
    out_pdb = os.path.join(out_dir, name + '.pdb')
    if os.path.abspath(out_pdb) != os.path.abspath(pdb):
        atomic_copy(pdb, out_pdb, link=False)
    cxc = None
    if volumes:
        missing = [v for v in volumes if not os.path.exists(v)]
        if missing:
            raise FileNotFoundError('Pathway maps missing: %s' % ', '.join(missing[:3]))
        cxc = write_chimerax_script(os.path.join(out_dir, name + '.cxc'), list(volumes),
                                    level=level, fps=fps)
    return dict(gif=gif, n_frames=int(n_frames), n_structures=int(len(pos)), cxc=cxc,
                pdb=out_pdb)
