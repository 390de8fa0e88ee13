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
    from .engine import build_model, split_settings
    from .fileio import load_torch_state
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
        state = load_torch_state(wpath, 'model weights file')
    else:
        cpath = os.path.join(model_dir, 'checkpoints', 'last.pt')
        if not os.path.exists(cpath):
            raise FileNotFoundError("The model directory '%s' has neither weights.pt nor "
                                    "a checkpoint: training has not completed an epoch."
                                    % model_dir)
        state = load_torch_state(cpath, 'training checkpoint')['model']
    model.load_state_dict(state)
    model.to(runtime.resolve_device(device))
    model.eval()
    return model


def infer_latents(model, pset, batch_size=256, out=None, progress=False):
    """Latent means (N, K) float32 for every particle of ``pset``."""
    import torch
    from .models.data import check_particles, make_batch
    check_particles(pset, need_poses=True, need_ctf=bool(model.config.get('ctf', True)))
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
    try:
        with torch.no_grad():
            for s in range(0, n, batch_size):
                idx = np.arange(s, min(n, s + batch_size))
                b = make_batch(pset, idx, model, device)
                mu, _ = model.encode(b)
                z[s:s + len(idx)] = mu.cpu().numpy()
                if progress:
                    print('inferred %d/%d' % (s + len(idx), n), flush=True)
    except BaseException:
        if out is not None:
            del z
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
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


def _latent_cost(prior, z):
    """Prior cost of latents in nats, (B,): the training rate for the cryoTWIN
    prior (``-log Q(z)``, the mixture mass in the box around z), ``-log P(z)``
    for the Gaussian prior."""
    if getattr(prior, 'kind', '') == 'gmm':
        return prior.rate(z)
    return -prior.log_density(z)


def refine_latents(model, pset, z0, steps=30, lr=0.05, batch_size=128, mask_radius=0.9,
                   prior_weight=1.0, progress=False):
    """Per-particle MAP refinement of encoder latents (semi-amortised inference).

    Starting from ``z0`` (N, K) (usually ``infer_latents``), each particle's
    latent is moved independently by ``steps`` Adam steps of size ``lr``
    (latent units) to lower

        NLL(image | decode(z), pose, CTF)  -  prior_weight * log P(z)

    in nats: the Gaussian image likelihood used in training (same Fourier
    weights, mask and calibrated noise variance) and the model's prior
    density.  This closes the amortisation gap of the encoder (the encoder
    is one forward pass; the refined latent is the posterior mode under the
    trained decoder).  The input poses are used as given (no learned pose
    corrections: they exist only for the training particles).  Memory per
    batch as in training; cost about ``steps`` decoder+projector passes per
    particle.  Returns (N, K) float32.
    """
    import torch
    from . import losses
    from .engine import loss_weights
    from .models import imaging
    from .models.data import make_batch
    z0 = np.asarray(z0, dtype=np.float32)
    if z0.shape != (len(pset), model.zdim):
        raise ValueError('Latents of shape %s do not match %d particles and a %d-D model.'
                         % (z0.shape, len(pset), model.zdim))
    if steps < 0 or lr <= 0:
        raise ValueError('Latent refinement needs steps >= 0 and a positive step size.')
    out = z0.copy()
    if steps == 0:
        return out
    device = model.ref_pos.device
    W = loss_weights(model).to(device)
    mask = imaging.circular_mask(model.loss_box, mask_radius).to(device) \
        if mask_radius else None
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        n = len(pset)
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size))
            b = make_batch(pset, idx, model, device)
            z = torch.tensor(out[idx], device=device, requires_grad=True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(int(steps)):
                opt.zero_grad(set_to_none=True)
                pos, amp = model.decode(z)
                Fh = model.render(pos, amp, b['rot'], b['shifts'], b['ctf_loss'])
                nll = losses.image_nll(b['F_loss'], Fh, W, model.noise_var, mask)
                loss = nll + prior_weight * _latent_cost(model.prior, z)
                loss.sum().backward()
                opt.step()
            out[idx] = z.detach().cpu().numpy()
            if progress:
                print('refined %d/%d' % (s + len(idx), n), flush=True)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return out
