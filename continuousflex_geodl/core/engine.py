"""Training loop: calibration, mini-batch SGD, checkpoints, resume, DDP.

``train(pset, reference, out_dir, **settings)`` trains a ``FlexModel`` on a
particle set with poses and CTF and writes the model directory:

* ``config.json``   -- model + training settings (JSON);
* ``reference.npz`` -- positions (N, 3) A, amplitudes (N,), sigma A, and the
  normal-mode bases the model uses;
* ``weights.pt``    -- final state dict (``torch.load(weights_only=True)``);
* ``history.json``  -- per-epoch mean losses, images/s, wall time;
* ``refined_poses.npz`` -- with pose refinement: corrected Euler angles
  (N, 3) deg and shifts (N, 2) A of the training particles;
* ``checkpoints/last.pt`` -- written atomically (temporary file +
  ``os.replace``) after every epoch: model, optimiser, epoch, history;
  ``checkpoints/previous.pt`` keeps the one before (resume falls back to it
  if ``last.pt`` is damaged; see ``load_checkpoint``).

Determinism: the model is initialised from ``seed``; every random draw of an
epoch (particle order, latent noise, Sinkhorn subsamples) comes from
generators seeded by (seed, epoch, step), so a run resumed from a checkpoint
reproduces the uninterrupted run exactly.  Images are read batch by batch
from the (memory-mapped) stack: memory does not grow with the number of
particles (apart from the optional 5 floats per particle of pose
corrections).

Distributed data parallel: launched with ``torchrun --nproc_per_node P``
(env ``WORLD_SIZE`` > 1), gloo on the CPU and nccl on CUDA.  The global batch
``batch_size`` is split across processes (rank r takes positions r, r+P, ...
of each global batch); gradients are averaged, so P processes follow the
same trajectory as one process at equal global batch.
"""
import json
import math
import os
import sys
import time

import numpy as np

from . import runtime

#: training settings (the model settings are ``models.flexmodel.MODEL_DEFAULTS``)
TRAIN_DEFAULTS = dict(
    epochs=30,
    batch_size=32,
    lr=2e-3,
    lr_final=0.1,          # cosine decay to lr * lr_final
    pose_lr=0.2,           # degrees / A per visit of a particle
    beta=1.0,              # weight of the latent rate (nats; see models.__init__)
    w_knn=1.0,             # nats per A^2 of mean squared kNN edge strain
    knn_k=8,
    w_sinkhorn=0.1,        # nats per A^2 of Sinkhorn divergence
    sinkhorn_every=10,
    sinkhorn_points=1000,
    sinkhorn_samples=1,    # latents per global batch used for the Sinkhorn term
    sinkhorn_blur=2.0,
    loss='nll',            # 'nll' (Fourier-weighted L2) or 'corr'
    mask_radius=0.9,       # fraction of the half box; 0 = no mask
    calib_particles=512,
    log_every=20,
    time_limit=None,       # minutes; stop at an epoch end when the next would exceed it
    threads=None,
    device='cpu',
    weight_decay=0.0,
    cache_features=True,   # keep encoder inputs in a disk memmap (out_dir/cache)
)


def _seeded(*keys):
    import torch
    s = 0
    for k in keys:
        s = (s * 1000003 + int(k)) % (2 ** 62)
    return torch.Generator().manual_seed(s)


def atomic_torch_save(obj, path):
    """torch.save to a temporary file in the same folder (flushed to disk), then
    os.replace: a crash leaves the old file or the new one."""
    import torch
    from .fileio import atomic_write
    with atomic_write(path, 'wb') as f:
        torch.save(obj, f)


def _checkpoint_paths(out_dir):
    folder = os.path.join(out_dir, 'checkpoints')
    return os.path.join(folder, 'last.pt'), os.path.join(folder, 'previous.pt')


def save_checkpoint(state, out_dir):
    """Write ``checkpoints/last.pt`` atomically, keeping the one before it as
    ``checkpoints/previous.pt`` (a hard link when possible: no copy)."""
    import shutil
    last, prev = _checkpoint_paths(out_dir)
    if os.path.exists(last):
        tmp = '%s.tmp.%d' % (prev, os.getpid())
        if os.path.exists(tmp):
            os.remove(tmp)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
        os.replace(tmp, prev)
    atomic_torch_save(state, last)


def load_checkpoint(out_dir):
    """The last complete checkpoint of ``out_dir`` (dict), or None if there is none.

    Checkpoints are written atomically, so ``last.pt`` is complete unless the
    disk or a copy damaged it; then ``previous.pt`` (one epoch earlier) is
    used, with a warning.  Temporary files of interrupted writes are never
    loaded (they are removed).  ValueError when no checkpoint is usable.
    """
    from .fileio import load_torch_state
    last, prev = _checkpoint_paths(out_dir)
    folder = os.path.dirname(last)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if '.tmp' in name:  # left by a write that was interrupted
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    if not os.path.exists(last):
        return None
    problems = []
    for path in (last, prev):
        if not os.path.exists(path):
            continue
        try:
            state = load_torch_state(path, 'checkpoint')
            missing = {'model', 'optim', 'epoch', 'history'} - set(
                state if isinstance(state, dict) else ())
            if missing:
                raise ValueError('The checkpoint %s lacks %s' % (path, ', '.join(sorted(missing))))
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if path != last:
            print('WARNING: %s Resuming from the checkpoint before it (%s, epoch %d).'
                  % (problems[0], path, int(state['epoch'])), file=sys.stderr)
        return state
    raise ValueError('Cannot resume the training in %s: no usable checkpoint. %s Delete the '
                     'checkpoints folder to start again from scratch, or train into a new '
                     'folder.' % (out_dir, ' '.join(problems)))


def atomic_write_text(path, text):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def atomic_savez(path, **arrays):
    tmp = '%s.tmp.%d.npz' % (path, os.getpid())
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# ----------------------------------------------------------------- distributed
class Dist:
    """World size / rank, initialised from torchrun's environment if present."""

    def __init__(self, device_name='cpu'):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self.initialised = False
        if self.world > 1:
            import torch.distributed as dist
            cuda = str(device_name).startswith('cuda')
            if not dist.is_initialized():
                dist.init_process_group('nccl' if cuda else 'gloo')
                self.initialised = True

    @property
    def main(self):
        return self.rank == 0

    def all_sum(self, values):
        """Sum a list of floats over processes."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist
        t = torch.tensor(list(values), dtype=torch.float64)
        dev = getattr(self, 'device', None)
        if dev is not None and dev.type == 'cuda':
            t = t.to(dev)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self):
        if self.initialised:
            import torch.distributed as dist
            dist.destroy_process_group()


# ----------------------------------------------------------------- model setup
def default_settings():
    from .models.flexmodel import MODEL_DEFAULTS
    out = dict(MODEL_DEFAULTS)
    out.update(TRAIN_DEFAULTS)
    return out


def split_settings(settings):
    from .models.flexmodel import MODEL_DEFAULTS
    unknown = set(settings) - set(MODEL_DEFAULTS) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError('Unknown training setting(s): %s' % ', '.join(sorted(unknown)))
    model_cfg = {k: v for k, v in settings.items() if k in MODEL_DEFAULTS}
    train_cfg = dict(TRAIN_DEFAULTS)
    train_cfg.update({k: v for k, v in settings.items() if k in TRAIN_DEFAULTS})
    return model_cfg, train_cfg


def build_model(model_cfg, positions, amplitudes, enc_modes=None, dec_modes=None):
    """FlexModel from settings and reference arrays; computes the normal-mode
    bases it needs when not given (deterministic)."""
    import torch
    from .models.flexmodel import MODEL_DEFAULTS, FlexModel
    from .models.nma import anm_modes
    cfg = dict(MODEL_DEFAULTS)
    cfg.update(model_cfg)
    inputs = str(cfg['encoder_inputs'])
    if 'modes' in inputs and enc_modes is None:
        enc_modes, _ = anm_modes(positions, n_modes=int(cfg['enc_modes']))
    if cfg['decoder'] == 'nma' and dec_modes is None:
        n = int(cfg['nma_modes']) or 10
        cfg['nma_modes'] = n
        dec_modes, _ = anm_modes(positions, n_modes=n)
    torch.manual_seed(int(cfg['seed']))
    return FlexModel(cfg, positions, amplitudes, enc_modes, dec_modes)


def loss_weights(model, device=None):
    """(Fourier low-pass weights, real-space mask) on the loss grid."""
    from .models import imaging
    res = max(model.loss_resolution, 2 * model.loss_apix)
    W = imaging.lowpass_weights(model.loss_box, model.loss_apix, res, device=device)
    return W


def calibrate(model, pset, n=512, batch_size=64, seed=0, device='cpu', mask_radius=0.9):
    """Set intensity scale, noise variance and encoder input statistics.

    Fits ``scale`` by least squares between the particles and the CTF-
    modulated reference projections at their poses (on ``n`` particles chosen
    with ``seed``), ``noise_var`` as the mean weighted residual power per
    Fourier coefficient, and the encoder's input standardisation.
    """
    import torch
    from .models import imaging
    from .models.data import make_batch
    rng = np.random.default_rng(int(seed) + 7919)
    sel = np.sort(rng.permutation(len(pset))[:min(n, len(pset))])
    W = loss_weights(model, device)
    mask = imaging.circular_mask(model.loss_box, mask_radius, device=device) \
        if mask_radius else None
    num = den = 0.0
    batches = []
    with torch.no_grad():
        model.log_scale.zero_()
        for s in range(0, len(sel), batch_size):
            b = make_batch(pset, sel[s:s + batch_size], model, device)
            Fr = model.render(model.ref_pos, model.ref_amp, b['rot'], b['shifts'],
                              b['ctf_loss'])
            Fi = b['F_loss']
            from .losses import masked_residual
            Fi_m, Fr_m = masked_residual(Fi, mask), masked_residual(Fr, mask)
            num += float((W * (Fi_m.conj() * Fr_m).real).sum())
            den += float((W * Fr_m.abs() ** 2).sum())
            batches.append((b, Fi_m, Fr_m))
        if den <= 0:
            raise ValueError('The reference renders to an empty image: check its '
                             'positions (A, about the box centre) and amplitudes.')
        scale = num / den
        if scale <= 0:
            raise ValueError(
                'The particles correlate negatively with the reference projections at '
                'their poses: the contrast is probably inverted (particles must be '
                '"protein white", as RELION stacks), or poses/CTF do not match.')
        res = wsum = 0.0
        for b, Fi_m, Fr_m in batches:
            res += float((W * (Fi_m - scale * Fr_m).abs() ** 2).sum())
            wsum += float(W.sum()) * Fi_m.shape[0]
        model.log_scale.fill_(math.log(scale))
        model.feat_log_scale.fill_(math.log(scale))
        model.feat_log_sigma.copy_(model.log_sigma.detach())
        model.noise_var.fill_(res / wsum)
        feats, imgs = [], []
        for b, _, _ in batches:
            f, im = model.encoder_inputs(b)
            if f is not None:
                feats.append(f)
            if im is not None:
                imgs.append(im)
        enc = model.encoder
        if feats:
            f = torch.cat(feats)
            enc.feat_mean.copy_(f.mean(0))
            enc.feat_std.copy_(f.std(0).clamp_min(1e-6))
        if imgs:
            im = torch.cat(imgs)
            enc.img_std.copy_(im.std((0, 2, 3)).clamp_min(1e-6))
    return dict(scale=scale, noise_var=res / wsum)


def _make_loss_module(model, train_cfg, device):
    import torch
    import torch.nn as nn
    from . import losses
    from .models import imaging

    class LossModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.strain = losses.KnnStrain(model.ref_pos.cpu().numpy(), train_cfg['knn_k'])
            self.register_buffer('W', loss_weights(model))
            mr = train_cfg['mask_radius']
            self.register_buffer('mask', imaging.circular_mask(model.loss_box, mr)
                                 if mr else torch.ones(model.loss_box, model.loss_box))
            self.use_mask = bool(mr)

        def forward(self, batch, noise, ot_local, ot_gens):
            m = self.model
            mu, logvar = m.encoder(*batch['enc_inputs'])
            if m.prior.stochastic_encoder:
                z = m.prior.perturb(mu, logvar, noise=noise)
                rate = m.prior.rate(mu, logvar)
            else:
                z = m.prior.perturb(mu, noise=noise)
                rate = m.prior.rate(z)
            pos, amp = m.decode(z)
            R, t = m.poses(batch)
            Fh = m.render(pos, amp, R, t, batch['ctf_loss'])
            mask = self.mask if self.use_mask else None
            if train_cfg['loss'] == 'corr':
                data = losses.image_correlation(batch['F_loss'], Fh, self.W, mask) * \
                    (self.W.sum() / (2.0 * m.noise_var))
            else:
                data = losses.image_nll(batch['F_loss'], Fh, self.W, m.noise_var, mask)
            strain = self.strain(pos)
            out = dict(data=data, rate=rate, strain=strain)
            if m.pose is not None:
                out['pose'] = m.pose.penalty(batch['idx_t'])
            ot = []
            for j, g in zip(ot_local, ot_gens):
                ot.append(losses.sinkhorn(pos[j], m.ref_pos, blur=train_cfg['sinkhorn_blur'],
                                          n_points=train_cfg['sinkhorn_points'],
                                          generator=g))
            out['ot'] = torch.stack(ot) if ot else None
            return out

    return LossModule().to(device)


class FeatureCache:
    """Encoder inputs of every particle, memory-mapped on disk (per process).

    The encoder inputs are a fixed function of the particle (calibration
    values are frozen), so they are computed once, the first time a particle
    is seen, and read back afterwards.  Files live in ``folder`` and are
    recreated for a new training run.
    """

    def __init__(self, folder, n, model, rank=0, fresh=True):
        from numpy.lib.format import open_memmap
        os.makedirs(folder, exist_ok=True)
        self.model = model
        self.arrays = {}
        shapes = {}
        if model.use_modes:
            shapes['modes'] = (n, model.encoder.n_mode_features)
        if model.use_image:
            shapes['image'] = (n, 2, model.enc_box, model.enc_box)
        shapes['done'] = (n,)
        for name, shape in shapes.items():
            path = os.path.join(folder, 'encoder_%s.rank%d.npy' % (name, rank))
            dtype = np.uint8 if name == 'done' else np.float32
            if fresh or not os.path.exists(path):
                arr = open_memmap(path, mode='w+', dtype=dtype, shape=shape)
                if name == 'done':
                    arr[:] = 0
            else:
                arr = open_memmap(path, mode='r+')
                if arr.shape != shape:
                    arr = open_memmap(path, mode='w+', dtype=dtype, shape=shape)
                    arr[:] = 0
            self.arrays[name] = arr

    def inputs(self, batch):
        import torch
        idx = batch['idx']
        done = self.arrays['done']
        dev = batch['rot'].device
        if not np.all(done[idx]):
            feats, images = self.model.encoder_inputs(batch)
            if feats is not None:
                self.arrays['modes'][idx] = feats.cpu().numpy()
            if images is not None:
                self.arrays['image'][idx] = images.cpu().numpy()
            done[idx] = 1
            return feats, images
        feats = images = None
        if 'modes' in self.arrays:
            feats = torch.as_tensor(np.asarray(self.arrays['modes'][idx]), device=dev)
        if 'image' in self.arrays:
            images = torch.as_tensor(np.asarray(self.arrays['image'][idx]), device=dev)
        return feats, images


def _lr_at(train_cfg, step, total):
    lr0 = train_cfg['lr']
    f = train_cfg['lr_final']
    t = min(1.0, step / max(1, total))
    return lr0 * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


def _log(msg, dist):
    if dist.main:
        print(msg, flush=True)


def train(pset, reference, out_dir, resume=False, stop_after=None, dec_modes=None,
          require_ctf=True, **settings):
    """Train on ``pset`` from ``reference`` (positions, amplitudes, sigma).

    ``settings``: any key of ``MODEL_DEFAULTS`` / ``TRAIN_DEFAULTS``.  With
    ``resume=True`` and a checkpoint in ``out_dir/checkpoints``, continues
    from the last complete epoch with the settings saved there (only
    ``epochs``, ``time_limit``, ``threads``, ``device`` and ``log_every`` may
    change).  ``stop_after`` ends this invocation after that many epochs (as
    an interruption would; resume later).  ``dec_modes`` (N, 3, M): a
    normal-mode basis of the reference for ``decoder='nma'`` (default: the
    model's own elastic-network modes).  ``require_ctf=False`` accepts
    particles without CTF (CTF-free images).  Returns ``(model, history)``.
    """
    import torch
    from .models.data import check_particles, check_settings, make_batch
    runtime.setup(settings.get('threads'))
    os.makedirs(os.path.join(out_dir, 'checkpoints'), exist_ok=True)
    ckpt_path = os.path.join(out_dir, 'checkpoints', 'last.pt')
    cfg_path = os.path.join(out_dir, 'config.json')
    state = None
    if resume and os.path.exists(ckpt_path):
        try:
            with open(cfg_path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError('Cannot resume the training in %s: its settings (config.json) '
                             'are missing or damaged (%s). Train into a new folder.'
                             % (out_dir, exc)) from None
        changeable = {'epochs', 'time_limit', 'threads', 'device', 'log_every'}
        for k, v in settings.items():
            if k in changeable:
                saved[k] = v
        settings = saved
        if int(saved.get('n_particles', len(pset))) != len(pset):
            raise ValueError('Cannot resume: the checkpoint in %s was trained on %d particles '
                             'and this particle set has %d. Resume with the same particles, '
                             'or train into a new folder.'
                             % (out_dir, int(saved['n_particles']), len(pset)))
        state = load_checkpoint(out_dir)
    elif resume:
        print('No checkpoint in %s: starting a new training.' % out_dir, file=sys.stderr)
    full = default_settings()
    if state is None:
        full['ctf'] = bool(require_ctf)
    full.update(settings)
    full['n_particles'] = len(pset)
    full['box'] = int(pset.box)
    full['apix'] = float(pset.apix)
    positions, amplitudes, sigma = reference
    full['sigma'] = float(sigma)
    check_settings(full)
    model_cfg, train_cfg = split_settings(full)
    device = runtime.resolve_device(train_cfg['device'])
    dist = Dist(train_cfg['device'])
    dist.device = device
    if device.type == 'cuda' and dist.world > 1:
        device = torch.device('cuda', dist.local_rank)
        torch.cuda.set_device(device)
        dist.device = device
    check_particles(pset, need_poses=True, need_ctf=bool(model_cfg['ctf']))
    if len(positions) < 4:
        raise ValueError('The reference has %d pseudo-atoms; at least 4 are needed.'
                         % len(positions))
    if state is None:
        from .structure import check_in_box
        check_in_box(positions, pset.box, pset.apix, 'The reference')
    B = int(train_cfg['batch_size'])
    if B % dist.world:
        raise ValueError('The batch size (%d) must be a multiple of the number of '
                         'processes (%d).' % (B, dist.world))
    if len(pset) < B:
        if dist.main:
            print('WARNING: the batch size (%d) is larger than the set of %d particles; '
                  'using batches of %d.' % (B, len(pset), len(pset) - len(pset) % dist.world),
                  file=sys.stderr)
        B = len(pset) - len(pset) % dist.world
        train_cfg['batch_size'] = B
    if state is not None:
        arrays = dict(np.load(os.path.join(out_dir, 'reference.npz')))
        model = build_model(model_cfg, arrays['positions'], arrays['amplitudes'],
                            arrays.get('enc_modes'), arrays.get('dec_modes'))
        model.load_state_dict(state['model'])
        model.to(device)
    else:
        model = build_model(model_cfg, positions, amplitudes, dec_modes=dec_modes)
        model.to(device)
        cal = calibrate(model, pset, n=train_cfg['calib_particles'], seed=model_cfg['seed'],
                        device=device, mask_radius=train_cfg['mask_radius'])
        _log('calibration: intensity scale %.4g, noise variance %.4g per coefficient, '
             'loss grid %d px (%.2f A/px), encoder grid %d px'
             % (cal['scale'], cal['noise_var'], model.loss_box, model.loss_apix,
                model.enc_box), dist)
        if dist.main:
            atomic_write_text(cfg_path, json.dumps(dict(model.config, **train_cfg),
                                                   indent=1, sort_keys=True))
            atomic_savez(os.path.join(out_dir, 'reference.npz'), **model.arrays())
    lossmod = _make_loss_module(model, train_cfg, device)
    cache = FeatureCache(os.path.join(out_dir, 'cache'), len(pset), model, dist.rank,
                         fresh=state is None) if train_cfg['cache_features'] else None
    net = lossmod
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(lossmod, device_ids=[device.index] if device.type == 'cuda' else None,
                  broadcast_buffers=False)
    pose_params = list(model.pose.parameters()) if model.pose is not None else []
    pose_ids = {id(p) for p in pose_params}
    main_params = [p for p in model.parameters() if id(p) not in pose_ids]
    groups = [dict(params=main_params, lr=train_cfg['lr'])]
    if pose_params:
        # no momentum: a particle's correction moves only when the particle is seen
        groups.append(dict(params=pose_params, lr=train_cfg['pose_lr'], betas=(0.0, 0.999)))
    opt = torch.optim.Adam(groups, lr=train_cfg['lr'], weight_decay=train_cfg['weight_decay'])
    history, start_epoch = [], 0
    if state is not None:
        opt.load_state_dict(state['optim'])
        history = list(state['history'])
        start_epoch = int(state['epoch'])
        _log('resuming from epoch %d (%s)' % (start_epoch, ckpt_path), dist)
    n = len(pset)
    steps_per_epoch = n // B
    if steps_per_epoch == 0:
        raise ValueError('Fewer particles (%d) than the batch size (%d).' % (n, B))
    epochs = int(train_cfg['epochs'])
    total_steps = epochs * steps_per_epoch
    seed = int(model_cfg['seed'])
    W = dist.world
    t_start = time.time()
    elapsed_prev = sum(h.get('seconds', 0.0) for h in history)
    K = model.zdim
    for epoch in range(start_epoch, epochs):
        t_epoch = time.time()
        perm = torch.randperm(n, generator=_seeded(seed, 1, epoch)).numpy()
        sums = np.zeros(6)
        for step in range(steps_per_epoch):
            gstep = epoch * steps_per_epoch + step
            for gi, g in enumerate(opt.param_groups):
                base = train_cfg['lr'] if gi == 0 else train_cfg['pose_lr']
                g['lr'] = _lr_at(dict(train_cfg, lr=base), gstep, total_steps)
            gidx = perm[step * B:(step + 1) * B]
            local_pos = np.arange(dist.rank, B, W)
            idx = gidx[local_pos]
            gen = _seeded(seed, 2, epoch, step)
            if model.prior.stochastic_encoder:
                noise = torch.randn((B, K), generator=gen)
            else:
                noise = torch.rand((B, K), generator=gen) - 0.5
            noise = noise[torch.as_tensor(local_pos)].to(device)
            # Sinkhorn term on the latents at global batch positions 0..n_ot-1
            ot_local, ot_gens = [], []
            every = int(train_cfg['sinkhorn_every'])
            n_ot = 0
            if train_cfg['w_sinkhorn'] > 0 and every > 0 and gstep % every == 0:
                n_ot = min(int(train_cfg['sinkhorn_samples']), B)
                for p in range(n_ot):
                    if p % W == dist.rank:
                        ot_local.append(p // W)
                        ot_gens.append(_seeded(seed, 3, epoch, step, p))
            batch = make_batch(pset, idx, model, device)
            batch['enc_inputs'] = cache.inputs(batch) if cache is not None \
                else model.encoder_inputs(batch)
            out = net(batch, noise, ot_local, ot_gens)
            per = out['data'] + train_cfg['beta'] * out['rate'] + \
                train_cfg['w_knn'] * out['strain']
            if 'pose' in out:
                per = per + out['pose']
            loss = per.mean()
            if out['ot'] is not None:
                loss = loss + train_cfg['w_sinkhorn'] * out['ot'].sum() * (W / n_ot)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bl = len(idx)
            sums += [float(out['data'].detach().sum()), float(out['rate'].detach().sum()),
                     float(out['strain'].detach().sum()),
                     float(out['ot'].detach().sum()) if out['ot'] is not None else 0.0,
                     len(ot_local), bl]
            if train_cfg['log_every'] and (step + 1) % int(train_cfg['log_every']) == 0:
                done = (epoch - start_epoch) * steps_per_epoch + step + 1
                el = time.time() - t_start
                ips = done * B / max(el, 1e-9)
                remain = (total_steps - gstep - 1) * B / max(ips, 1e-9)
                _log('epoch %d/%d step %d/%d loss %.4f (data %.2f rate %.3f strain %.4f) '
                     '%.1f images/s ETA %s' % (
                         epoch + 1, epochs, step + 1, steps_per_epoch, loss.item(),
                         out['data'].mean().item(), out['rate'].mean().item(),
                         out['strain'].mean().item(), ips, _fmt_time(remain)), dist)
        tot = dist.all_sum(sums.tolist())
        seconds = time.time() - t_epoch
        cnt = max(tot[5], 1.0)
        rec = dict(epoch=epoch + 1, data=tot[0] / cnt, rate=tot[1] / cnt,
                   strain=tot[2] / cnt, sinkhorn=tot[3] / max(tot[4], 1.0),
                   loss=(tot[0] + train_cfg['beta'] * tot[1] + train_cfg['w_knn'] * tot[2]) / cnt,
                   images_per_s=steps_per_epoch * B / max(seconds, 1e-9), seconds=seconds,
                   scale=model.log_scale.exp().item(), sigma=model.sigma.item())
        history.append(rec)
        el_total = elapsed_prev + (time.time() - t_start)
        _log('epoch %d/%d done: loss %.4f data %.3f rate %.3f strain %.4f sinkhorn %.3f | '
             '%.1f images/s | elapsed %s ETA %s' % (
                 epoch + 1, epochs, rec['loss'], rec['data'], rec['rate'], rec['strain'],
                 rec['sinkhorn'], rec['images_per_s'], _fmt_time(el_total),
                 _fmt_time(seconds * (epochs - epoch - 1))), dist)
        if dist.main:
            save_checkpoint(dict(model=model.state_dict(), optim=opt.state_dict(),
                                 epoch=epoch + 1, history=history), out_dir)
            atomic_write_text(os.path.join(out_dir, 'history.json'),
                              json.dumps(history, indent=1))
        dist.barrier()
        if stop_after is not None and epoch + 1 - start_epoch >= int(stop_after) \
                and epoch + 1 < epochs:
            dist.close()
            return model, history
        tl = train_cfg['time_limit']
        if tl and epoch + 1 < epochs:
            if (time.time() - t_start + seconds) / 60.0 > float(tl):
                _log('time limit (%.1f min) reached after epoch %d: stopping.'
                     % (float(tl), epoch + 1), dist)
                break
    if dist.main:
        atomic_torch_save(model.state_dict(), os.path.join(out_dir, 'weights.pt'))
        if model.pose is not None:
            write_refined_poses(model, pset, os.path.join(out_dir, 'refined_poses.npz'))
        atomic_write_text(os.path.join(out_dir, 'history.json'), json.dumps(history, indent=1))
    dist.barrier()
    dist.close()
    return model, history


def write_refined_poses(model, pset, path):
    """Input poses with the learned corrections: euler (N, 3) deg, shifts (N, 2) A."""
    from .geometry import euler_to_matrix, matrix_to_euler
    e = np.asarray(pset.euler, dtype=np.float64)
    t = np.zeros((len(e), 2)) if pset.shifts is None else np.asarray(pset.shifts, np.float64)
    R, t2 = model.pose.corrected(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), t)
    rot, tilt, psi = matrix_to_euler(R)
    atomic_savez(path, euler=np.stack([rot, tilt, psi], 1), shifts=t2,
                 delta=model.pose.delta.detach().cpu().numpy())


def _fmt_time(s):
    s = int(max(0, s))
    return '%d:%02d:%02d' % (s // 3600, (s % 3600) // 60, s % 60)
