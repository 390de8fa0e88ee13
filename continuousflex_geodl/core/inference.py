"""Use a trained model: latents for particles, structures and volumes at latents.

* ``load_model(model_dir, device='cpu')`` -- rebuild the ``FlexModel`` from
  ``config.json``, ``reference.npz`` and ``weights.pt`` (or the last
  checkpoint when training did not finish).
* ``infer_latents(model, pset, batch_size=256, out=None)`` -- (N, K) latent
  means, computed in chunks (streamed from the image stack); with ``out``
  (a ``.npy`` path) written to an open_memmap chunk by chunk and renamed
  atomically at the end.
* ``decode_positions(model, z)`` -- (M, N, 3) deformed pseudo-atom positions
  (A, about the box centre).
* ``decode_volumes(model, z, box, apix)`` -- (M, D, D, D) rendered densities
  on the particles' voxel grid.
"""
import json
import os

import numpy as np

from . import runtime


def load_model(model_dir, device='cpu'):
    """Rebuild a trained model (eval mode) from its directory."""
    import torch
    from .engine import build_model, split_settings
    runtime.setup()
    cfg_path = os.path.join(model_dir, 'config.json')
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(
            "No config.json in '%s': is this a model directory written by "
            "'continuousflex-geodl train'?" % model_dir)
    with open(cfg_path) as f:
        cfg = json.load(f)
    model_cfg, _ = split_settings(cfg)
    arrays = dict(np.load(os.path.join(model_dir, 'reference.npz')))
    model = build_model(model_cfg, arrays['positions'], arrays['amplitudes'],
                        arrays.get('enc_modes'), arrays.get('dec_modes'))
    wpath = os.path.join(model_dir, 'weights.pt')
    if os.path.exists(wpath):
        state = torch.load(wpath, map_location='cpu', weights_only=True)
    else:
        cpath = os.path.join(model_dir, 'checkpoints', 'last.pt')
        if not os.path.exists(cpath):
            raise FileNotFoundError("The model directory '%s' has neither weights.pt nor "
                                    "a checkpoint: training has not completed an epoch."
                                    % model_dir)
        state = torch.load(cpath, map_location='cpu', weights_only=True)['model']
    model.load_state_dict(state)
    model.to(runtime.resolve_device(device))
    model.eval()
    return model


def infer_latents(model, pset, batch_size=256, out=None, progress=False):
    """Latent means (N, K) float32 for every particle of ``pset``."""
    import torch
    from .models.data import check_particles, make_batch
    check_particles(pset, need_poses=True)
    if abs(float(pset.apix) - model.apix) > 1e-3 * model.apix or int(pset.box) != model.box:
        raise ValueError('These particles (%d px, %.3f A/px) do not match the model '
                         '(%d px, %.3f A/px): rescale them to the training grid first.'
                         % (pset.box, pset.apix, model.box, model.apix))
    n = len(pset)
    device = model.ref_pos.device
    if out is not None:
        from numpy.lib.format import open_memmap
        tmp = out + '.tmp.%d.npy' % os.getpid()
        z = open_memmap(tmp, mode='w+', dtype=np.float32, shape=(n, model.zdim))
    else:
        z = np.empty((n, model.zdim), np.float32)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size))
            b = make_batch(pset, idx, model, device)
            mu, _ = model.encode(b)
            z[s:s + len(idx)] = mu.cpu().numpy()
            if progress:
                print('inferred %d/%d' % (s + len(idx), n), flush=True)
    if out is not None:
        z.flush()
        del z
        os.replace(tmp, out)
        return np.load(out, mmap_mode='r')
    return z


def _as_latents(model, z):
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != model.zdim:
        raise ValueError('Latent points must be an (M, %d) array for this model; got '
                         'shape %s.' % (model.zdim, z.shape))
    return z


def decode_positions(model, z, batch_size=64):
    """(M, N, 3) pseudo-atom positions (A) at latent points z (M, K)."""
    import torch
    z = _as_latents(model, z)
    out = []
    with torch.no_grad():
        for s in range(0, len(z), batch_size):
            zz = torch.as_tensor(z[s:s + batch_size], device=model.ref_pos.device)
            pos, _ = model.decode(zz)
            out.append(pos.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def decode_amplitudes(model, z):
    """(M, N) pseudo-atom amplitudes at latent points z."""
    import torch
    z = _as_latents(model, z)
    with torch.no_grad():
        _, amp = model.decode(torch.as_tensor(z, device=model.ref_pos.device))
    amp = amp.cpu().numpy()
    return np.broadcast_to(amp, (len(z), amp.shape[-1])).astype(np.float32)


def decode_volumes(model, z, box=None, apix=None):
    """(M, D, D, D) densities at latent points on a voxel grid (default: the
    particles' grid), scaled like the particles' projections."""
    import torch
    from .render import render_volume
    box = model.box if box is None else int(box)
    apix = model.apix if apix is None else float(apix)
    z = _as_latents(model, z)
    pos = decode_positions(model, z)
    amp = decode_amplitudes(model, z)
    vols = np.empty((len(z), box, box, box), np.float32)
    with torch.no_grad():
        scale = model.log_scale.exp().item()
        sigma = model.sigma.item()
        for i in range(len(z)):
            v = render_volume(torch.as_tensor(pos[i]), torch.as_tensor(amp[i]), sigma,
                              box, apix)
            vols[i] = v.numpy() * scale
    return vols
