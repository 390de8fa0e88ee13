"""Use a trained model: latents for particles, structures and volumes at latents.

* ``load_model(model_dir, device='cpu')`` -- rebuild the ``FlexModel`` from
  ``config.json``, ``reference.npz`` and ``weights.pt`` (or the last
  checkpoint when training did not finish).
* ``infer_latents(model, pset, batch_size=256, out=None)`` -- (N, K) latent
  means, computed in chunks (streamed from the image stack); with ``out``
  (a ``.npy`` path) written to an open_memmap chunk by chunk and renamed
  atomically at the end.
* ``refine_latents(model, pset, z0)`` -- per-particle posterior modes from
  the encoder latents: batched Gauss-Newton (Levenberg-Marquardt) steps with
  per-particle early stopping (converged particles leave the batch, which
  is refilled); about 1-3 steps per particle.
* ``decode_positions(model, z)`` -- (M, N, 3) deformed pseudo-atom positions
  (A, about the box centre).
* ``decode_learned_amplitudes(model, z)`` -- (M, N) learned amplitudes in
  [0, 1] (``learn_amplitudes``), or None.
* ``volume_grid(model, box, apix, particle_box)`` -- the grid of decoded
  volumes (default: the particles' full box, also after ``train_box``).
* ``decode_volumes(model, z, box, apix)`` -- (M, D, D, D) rendered densities
  on the particles' voxel grid.
"""
import logging

import numpy as np
import torch

from . import runtime
from .artifacts import ModelDir
from .fileio import atomic_npy_memmap
from .io.latents import as_latent_points
from .models.data import check_particles, make_batch
from .models.flexmodel import build_model
from .render import render_volume
from .settings import InferSettings, TrainSettings, settings_only, split_settings

logger = logging.getLogger(__name__)


def load_model(model_dir, device='cpu'):
    """Rebuild a trained model (eval mode) from its directory (``ModelDir``:
    settings, reference arrays, and the final weights or, when training did
    not finish, those of the last checkpoint)."""
    runtime.setup()
    md = ModelDir(model_dir)
    model_cfg, _ = split_settings(settings_only(md.read_config()))
    arrays = md.read_reference()
    model = build_model(model_cfg, arrays['positions'], arrays['amplitudes'],
                        arrays.get('enc_modes'), arrays.get('dec_modes'))
    model.load_state_dict(md.read_weights())
    model.to(runtime.resolve_device(device))
    model.eval()
    return model


def on_model_grid(model, pset):
    """``pset`` on the model's pixel grid.

    Particles of the training grid are returned as they are; particles of a
    larger box covering the same field of view (box * pixel size), such as
    the full-size particles of a model trained with ``train_box``, are
    Fourier-cropped to the model's box when read
    (``core.particles.at_box``).  Anything else is a ValueError.
    """
    from .particles import at_box, grid_relation
    box, apix = int(pset.box), float(pset.apix)
    how = grid_relation(box, apix, model.box, model.apix)
    if how == 'same':
        return pset
    if how == 'crop':
        logger.info('particles of %d px (%.4g A/px) Fourier-cropped to the model box of '
                    '%d px (%.4g A/px) when read', box, apix, model.box, model.apix)
        return at_box(pset, model.box)
    raise ValueError('These particles (%d px, %.3f A/px) do not match the model (%d px, '
                     '%.3f A/px, or a larger box with the same %.1f A field of view): '
                     'rescale them to the training grid first.'
                     % (box, apix, model.box, model.apix, model.box * model.apix))


def infer_latents(model, pset, batch_size=InferSettings.batch_size, out=None, progress=False):
    """Latent means (N, K) float32 for every particle of ``pset`` (particles of
    a larger box are cropped to the model's: ``on_model_grid``)."""
    check_particles(pset, need_poses=True, need_ctf=bool(model.config.get('ctf', True)))
    pset = on_model_grid(model, pset)
    n = len(pset)
    device = model.ref_pos.device

    def encode_into(z):
        with torch.no_grad():
            for s in range(0, n, batch_size):
                idx = np.arange(s, min(n, s + batch_size))
                b = make_batch(pset, idx, model, device)
                mu, _ = model.encode(b)
                z[s:s + len(idx)] = mu.cpu().numpy()
                if progress:
                    logger.info('inferred %d/%d', s + len(idx), n)

    if out is not None:  # chunk by chunk into a memory map, renamed when complete
        with atomic_npy_memmap(out, np.float32, (n, model.zdim)) as z:
            encode_into(z)
        return np.load(out, mmap_mode='r')
    z = np.empty((n, model.zdim), np.float32)
    encode_into(z)
    return z


def _as_latents(model, z):
    return as_latent_points(z, model.zdim, np.float32, 'this model')


def decode_positions(model, z, batch_size=64):
    """(M, N, 3) pseudo-atom positions (A) at latent points z (M, K)."""
    z = _as_latents(model, z)
    out = []
    with torch.no_grad():
        for s in range(0, len(z), batch_size):
            zz = torch.tensor(z[s:s + batch_size], device=model.ref_pos.device)
            pos, _ = model.decode(zz)
            out.append(pos.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def decode_amplitudes(model, z):
    """(M, N) pseudo-atom amplitudes at latent points z."""
    z = _as_latents(model, z)
    with torch.no_grad():
        _, amp = model.decode(torch.as_tensor(z, device=model.ref_pos.device))
    amp = amp.cpu().numpy()
    return np.broadcast_to(amp, (len(z), amp.shape[-1])).astype(np.float32)


def decode_learned_amplitudes(model, z, batch_size=256):
    """(M, N) learned amplitudes in [0, 1] at latent points z (the factor of
    each pseudo-atom's reference amplitude), or None when the model does not
    learn amplitudes (``learn_amplitudes``)."""
    if not model.learns_amplitudes:
        return None
    z = _as_latents(model, z)
    out = []
    with torch.no_grad():
        for s in range(0, len(z), batch_size):
            zz = torch.tensor(z[s:s + batch_size], device=model.ref_pos.device)
            out.append(model.decode_all(zz)[2].cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def volume_grid(model, box=None, apix=None, particle_box=None):
    """(box, voxel size A) of decoded volumes.

    Default: the particles' grid, i.e. ``particle_box`` (a model trained at a
    smaller ``train_box``: its config's ``particle_box``) over the model's
    field of view, else the model's own grid.  ``box`` alone keeps the field
    of view (voxel size = model box * model pixel size / box); ``apix`` alone
    keeps the model's box; both: as given.
    """
    extent = model.box * model.apix
    if box is None and apix is None:
        box = int(particle_box) if particle_box else model.box
        return box, extent / box
    if box is None:
        return model.box, float(apix)
    box = int(box)
    if box < 2:
        raise ValueError('Invalid volume box %d px.' % box)
    return box, (extent / box if apix is None else float(apix))


def decode_volumes(model, z, box=None, apix=None):
    """(M, D, D, D) densities at latent points on a voxel grid (default: the
    particles' grid), scaled like the particles' projections."""
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


def make_decoder(model_dir, device='cpu', volumes=True):
    """dict(decode_fn, volume_fn, apix, amplitudes, amplitude_fn, model) of the
    trained model in ``model_dir`` (what ``landscape.series.decode_series``
    and the landscape commands decode latents with); None without
    ``model_dir``.

    ``amplitude_fn(z (M, K)) -> (M, N)``: the pseudo-atom amplitudes at each
    latent point (they depend on z with ``learn_amplitudes`` or
    ``dec_amplitudes``); ``amplitudes`` (N,): those at z = 0 (kept for
    callers that need one vector).
    """
    if not model_dir:
        return None
    model = load_model(model_dir, device=device)
    amp = decode_amplitudes(model, np.zeros((1, model.zdim), np.float32))[0]
    return dict(decode_fn=lambda z: decode_positions(model, z),
                volume_fn=(lambda z: decode_volumes(model, z)) if volumes else None,
                apix=float(model.apix), amplitudes=amp,
                amplitude_fn=lambda z: decode_amplitudes(model, z), model=model)


def _latent_cost(prior, z):
    """Prior cost of latents in nats, (B,): the training rate for the cryoTWIN
    prior (``-log Q(z)``, the mixture mass in the box around z), ``-log P(z)``
    for the Gaussian prior."""
    if getattr(prior, 'kind', '') == 'gmm':
        return prior.rate(z)
    return -prior.log_density(z)


def refine_latents(model, pset, z0, steps=InferSettings.refine_steps,
                   lr=InferSettings.refine_lr, batch_size=InferSettings.refine_batch_size,
                   mask_radius=TrainSettings.mask_radius,
                   prior_weight=InferSettings.prior_weight, progress=False,
                   method='gauss-newton', tol=1e-2, info=None):
    """Per-particle MAP refinement of encoder latents (semi-amortised inference).

    Starting from ``z0`` (N, K) (usually ``infer_latents``), each particle's
    latent is moved independently to lower

        NLL(image | decode(z), pose, CTF)  +  prior_weight * cost(z)

    in nats: the Gaussian image likelihood used in training (same Fourier
    weights, mask and calibrated noise variance) and the model's prior cost
    (the cryoTWIN rate ``-log Q(z)`` for the mixture prior, ``-log P(z)``
    for the Gaussian one).  This closes the amortisation gap of the encoder
    (the encoder is one forward pass; the refined latent is the posterior
    mode under the trained decoder).  The input poses are used as given (no
    learned pose corrections: they exist only for the training particles).

    ``method``:

    * ``'gauss-newton'`` (default): batched Levenberg-Marquardt.  Each
      iteration evaluates the residual spectra at z and at K forward-
      difference points (one batched, gradient-free render of B (K + 1)
      projections), solves the damped K x K normal equations (image term
      ``J^T J`` plus the prior's Hessian, its negative curvature removed)
      and keeps a step only where it lowers that particle's objective
      (otherwise the particle's damping grows).  A particle stops when a
      full Gauss-Newton step would lower its objective by less than ``tol``
      nats (half its Newton decrement ``g^T H^-1 g``), when an undamped
      step lowered it by less than ``tol``, when no step lowers it any more
      (6 rejected steps in a row), or after ``steps`` steps; converged particles leave the
      batch and the batch is refilled from the remaining particles, so it
      stays full.  ``lr`` is not used.
    * ``'adam'``: the former scheme, ``steps`` Adam steps of size ``lr``
      for every particle (no early stopping).

    ``info``: a dict, filled with ``iterations`` (N,) int (steps tried per
    particle), ``converged`` (N,) bool (stopped at a minimum, not by
    ``steps``) and ``renders`` (total projections rendered).  Returns (N, K)
    float32.
    """
    from .models.data import make_batch
    z0 = np.asarray(z0, dtype=np.float32)
    if z0.shape != (len(pset), model.zdim):
        raise ValueError('Latents of shape %s do not match %d particles and a %d-D model.'
                         % (z0.shape, len(pset), model.zdim))
    if steps < 0 or lr <= 0:
        raise ValueError('Latent refinement needs steps >= 0 and a positive step size.')
    pset = on_model_grid(model, pset)
    if method not in ('gauss-newton', 'adam'):
        raise ValueError("Unknown refinement method '%s': use 'gauss-newton' or 'adam'."
                         % method)
    if not tol > 0:
        raise ValueError('The refinement tolerance must be > 0 (got %r).' % tol)
    n = len(pset)
    if info is not None:
        info.update(iterations=np.zeros(n, np.int64), converged=np.zeros(n, bool), renders=0)
    out = z0.copy()
    if steps == 0:
        return out
    ctx = _RefineContext(model, mask_radius, prior_weight)
    load = lambda idx: make_batch(pset, idx, model, ctx.device)  # noqa: E731
    with ctx:
        if method == 'adam':
            _refine_adam(ctx, load, out, int(steps), float(lr), int(batch_size), progress,
                         info)
        else:
            _refine_gauss_newton(ctx, load, out, int(steps), float(tol), int(batch_size),
                                 progress, info)
    return out


class _RefineContext(object):
    """Frozen model pieces shared by every refinement step.

    Inside ``with``: parameters do not require gradients, and the decoder's
    latent-independent per-atom features (the graph convolutions over the
    reference) are computed once instead of at every step.
    """

    def __init__(self, model, mask_radius, prior_weight):
        import torch
        from .losses import loss_weights
        from .models import imaging
        self.model = model
        self.device = model.ref_pos.device
        self.prior_weight = float(prior_weight)
        with torch.no_grad():
            W = loss_weights(model).to(self.device)
            self.W = W
            self.mask = imaging.circular_mask(model.loss_box, mask_radius).to(self.device) \
                if mask_radius else None
            # residual scaling: NLL = sum |sqw * masked(F - F_hat)|^2
            self.sqw = torch.sqrt(W / (2.0 * model.noise_var))

    def __enter__(self):
        import torch
        self._grad = [p.requires_grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.requires_grad_(False)
        dec = self.model.decoder
        self._patched = False
        if hasattr(dec, 'point_features') and 'point_features' not in vars(dec):
            with torch.no_grad():
                h = dec.point_features()
            dec.point_features = lambda: h
            self._patched = True
        return self

    def __exit__(self, *exc):
        if self._patched:
            del self.model.decoder.point_features
        for p, g in zip(self.model.parameters(), self._grad):
            p.requires_grad_(g)
        return False

    def spectra(self, z, rot, shifts, ctf):
        """sqw * masked(F_hat(z)), complex (B, d, d)."""
        from . import losses
        pos, amp = self.model.decode(z)
        Fh = self.model.render(pos, amp, rot, shifts, ctf)
        return losses.masked_residual(Fh, self.mask) * self.sqw

    def target(self, F):
        from . import losses
        return losses.masked_residual(F, self.mask) * self.sqw

    def prior_cost(self, z):
        if self.prior_weight == 0:
            return z.new_zeros(z.shape[0])
        return self.prior_weight * _latent_cost(self.model.prior, z)

    def prior_derivatives(self, z):
        """Prior cost (B,), gradient (B, K) and Hessian (B, K, K), float64."""
        import torch
        B, K = z.shape
        if self.prior_weight == 0:
            return z.new_zeros(B), z.new_zeros(B, K), z.new_zeros(B, K, K)
        with torch.enable_grad():
            zz = z.detach().to(torch.float32).requires_grad_(True)
            c = self.prior_cost(zz)
            g, = torch.autograd.grad(c.sum(), zz, create_graph=True)
            rows = [torch.autograd.grad(g[:, k].sum(), zz, retain_graph=k < K - 1)[0]
                    for k in range(K)]
        H = torch.stack(rows, 1).double()
        return c.detach().double(), g.detach().double(), 0.5 * (H + H.transpose(1, 2))


def _report(progress, done, n):
    if progress:
        logger.info('refined %d/%d', done, n)


def _refine_adam(ctx, load, out, steps, lr, batch_size, progress, info):
    """``steps`` Adam steps of size ``lr`` for every particle."""
    import torch
    n = len(out)
    for s in range(0, n, batch_size):
        idx = np.arange(s, min(n, s + batch_size))
        b = load(idx)
        target = ctx.target(b['F_loss'])
        z = torch.tensor(out[idx], device=ctx.device, requires_grad=True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            r = target - ctx.spectra(z, b['rot'], b['shifts'], b['ctf_loss'])
            loss = (r.real ** 2 + r.imag ** 2).sum((-2, -1)) + ctx.prior_cost(z)
            loss.sum().backward()
            opt.step()
        out[idx] = z.detach().cpu().numpy()
        if info is not None:
            info['iterations'][idx] = steps
            info['renders'] += steps * len(idx)
        _report(progress, s + len(idx), n)


#: forward-difference step of the Gauss-Newton Jacobian (latent units):
#: with float32 rendering, 1e-2 gives gradients 10x closer to autograd's
#: than 1e-3 (round-off) on a trained 64-px model; 3e-2 is no better
_FD_STEP = 1e-2
#: Levenberg-Marquardt damping: start and factor; after _LM_REJECTS steps in
#: a row that do not lower its objective (damping 10^6 x), a particle is at a
#: minimum to within the precision of the model
_LM_START, _LM_FACTOR, _LM_REJECTS = 1e-3, 10.0, 6


def _refine_gauss_newton(ctx, load, out, max_iter, tol, batch_size, progress, info):
    """Batched Levenberg-Marquardt with early stopping and a refilled batch."""
    import torch
    n, K = out.shape
    dev = ctx.device
    eye = torch.eye(K, dtype=torch.float64, device=dev)
    pool = None          # dict of per-particle tensors, first dim = active particles
    nxt = 0              # next particle to load
    done = 0

    def fill(pool, nxt):
        """Load particles until the pool is full (or the set is exhausted)."""
        room = batch_size - (0 if pool is None else len(pool['idx']))
        if room < max(1, batch_size // 2) and pool is not None and len(pool['idx']):
            return pool, nxt
        idx = np.arange(nxt, min(n, nxt + room))
        if not len(idx):
            return pool, nxt
        b = load(idx)
        new = dict(idx=torch.as_tensor(idx, device=dev), target=ctx.target(b['F_loss']),
                   rot=b['rot'], shifts=b['shifts'], ctf=b['ctf_loss'],
                   z=torch.as_tensor(out[idx], device=dev).double(),
                   lam=torch.full((len(idx),), _LM_START, dtype=torch.float64, device=dev),
                   rej=torch.zeros(len(idx), dtype=torch.long, device=dev),
                   it=torch.zeros(len(idx), dtype=torch.long, device=dev),
                   obj=None, G0=None, H=None, g=None)
        new.update(_evaluate(ctx, new['z'], new))
        new.update(_linearise(ctx, new))
        if info is not None:
            info['renders'] += len(idx) * (K + 1)
        if pool is None or not len(pool['idx']):
            return new, nxt + len(idx)
        return {k: torch.cat([pool[k], new[k]]) for k in pool}, nxt + len(idx)

    with torch.no_grad():
        while True:
            pool, nxt = fill(pool, nxt)
            if pool is None or not len(pool['idx']):
                break
            H, g, lam = pool['H'], pool['g'], pool['lam']
            D = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-12)
            # converged: the full Gauss-Newton step would lower the objective
            # by less than tol nats (half the Newton decrement g^T H^-1 g)
            ridge = 1e-9 * D.mean(-1)[:, None, None] * eye + 1e-12 * eye
            newton = torch.linalg.solve(H + ridge, g.unsqueeze(-1)).squeeze(-1)
            conv = 0.5 * (g * newton).sum(-1) < tol
            if conv.any():
                pool, done = _retire(pool, conv, conv, out, info, done, progress, n)
                if not len(pool['idx']):
                    continue
                H, g, lam = pool['H'], pool['g'], pool['lam']
                D = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-12)
            # Levenberg-Marquardt step, kept only where the objective drops
            A = H + lam[:, None, None] * torch.diag_embed(D) + 1e-12 * eye
            delta = -torch.linalg.solve(A, g.unsqueeze(-1)).squeeze(-1)
            z_new = pool['z'] + delta
            ev = _evaluate(ctx, z_new, pool)
            if info is not None:
                info['renders'] += len(z_new)
                info['iterations'][pool['idx'].cpu().numpy()] += 1
            pool['it'] += 1
            acc = ev['obj'] <= pool['obj']
            # converged: an undamped step (no rejection before it) lowered the
            # objective by less than tol, or no step lowers it any more (a
            # damped step is short by construction: its small decrease says
            # nothing about the distance to the minimum)
            stop = (acc & (lam <= _LM_START) & (pool['obj'] - ev['obj'] < tol)) | \
                (~acc & (pool['rej'] + 1 >= _LM_REJECTS))
            pool['rej'] = torch.where(acc, torch.zeros_like(pool['rej']), pool['rej'] + 1)
            pool['z'] = torch.where(acc[:, None], z_new, pool['z'])
            pool['obj'] = torch.where(acc, ev['obj'], pool['obj'])
            pool['G0'] = torch.where(acc[:, None, None], ev['G0'], pool['G0'])
            pool['lam'] = torch.where(acc, (lam / _LM_FACTOR).clamp_min(1e-7),
                                      lam * _LM_FACTOR)
            finished = stop | (pool['it'] >= max_iter)
            relin = acc & ~finished
            if relin.any():
                sel = torch.nonzero(relin).squeeze(1)
                sub = {k: pool[k][sel] for k in ('z', 'rot', 'shifts', 'ctf', 'G0', 'target')}
                lin = _linearise(ctx, sub)
                pool['H'] = pool['H'].index_copy(0, sel, lin['H'])
                pool['g'] = pool['g'].index_copy(0, sel, lin['g'])
                if info is not None:
                    info['renders'] += len(sel) * K
            if finished.any():
                pool, done = _retire(pool, finished, stop, out, info, done, progress, n)
    return out


def _retire(pool, finished, converged, out, info, done, progress, n):
    """Write the latents of the finished particles and drop them from the pool."""
    import torch
    fin = torch.nonzero(finished).squeeze(1)
    idx = pool['idx'][fin].cpu().numpy()
    out[idx] = pool['z'][fin].float().cpu().numpy()
    if info is not None:
        info['converged'][idx] = converged[fin].cpu().numpy()
    keep = torch.nonzero(~finished).squeeze(1)
    pool = {k: v[keep] for k, v in pool.items()}
    if progress:
        every = max(1, n // 10)
        if (done + len(idx)) // every != done // every or done + len(idx) == n:
            _report(progress, done + len(idx), n)
    return pool, done + len(idx)


def _evaluate(ctx, z, b):
    """Objective (B,) float64 and scaled model spectra G0 at latents z."""
    G0 = ctx.spectra(z.float(), b['rot'], b['shifts'], b['ctf'])
    r = b['target'] - G0
    nll = (r.real ** 2 + r.imag ** 2).sum((-2, -1)).double()
    return dict(obj=nll + ctx.prior_cost(z.float()).double(), G0=G0)


def _linearise(ctx, b):
    """Gauss-Newton Hessian (B, K, K) and gradient (B, K) at b['z'] (float64).

    Image term: forward-difference Jacobian of the scaled model spectra
    (one batched render of B K projections), ``H = 2 Re(J^H J)``,
    ``g = -2 Re(J^H r)``; prior term: exact gradient and Hessian, with its
    negative eigenvalues set to zero so that H stays positive semi-definite.
    """
    import torch
    z = b['z']
    B, K = z.shape
    h = _FD_STEP
    zp = (z.unsqueeze(1) + h * torch.eye(K, dtype=z.dtype, device=z.device)).reshape(B * K, K)
    rep = lambda t: t.repeat_interleave(K, 0)  # noqa: E731
    Gp = ctx.spectra(zp.float(), rep(b['rot']), rep(b['shifts']), rep(b['ctf']))
    J = (Gp.view(B, K, -1) - b['G0'].reshape(B, 1, -1)) / h   # (B, K, P) complex
    r = (b['target'] - b['G0']).reshape(B, 1, -1)
    Jr = torch.view_as_real(J).reshape(B, K, -1).double()
    H = 2.0 * Jr @ Jr.transpose(1, 2)
    rr = torch.view_as_real(r).reshape(B, 1, -1).double()
    g = -2.0 * (Jr @ rr.transpose(1, 2)).squeeze(-1)
    _, gp, Hp = ctx.prior_derivatives(z)
    ev, V = torch.linalg.eigh(Hp)
    Hp = V @ torch.diag_embed(ev.clamp_min(0)) @ V.transpose(1, 2)
    return dict(H=H + Hp, g=g + gp)
