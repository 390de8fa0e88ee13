"""Training loop: settings, model, calibration, mini-batch SGD, checkpoints, resume.

``train(pset, reference, out_dir, **settings)`` trains a ``FlexModel`` on a
particle set with poses and CTF and writes the model directory
(``core.artifacts.ModelDir``: config.json, reference.npz, weights.pt,
history.json, refined_poses.npz, checkpoints/, cache/).

Determinism: the model is initialised from ``seed``; every random draw of an
epoch (particle order, latent noise, Sinkhorn subsamples) comes from
generators seeded by (seed, epoch, step) (``schedule.seeded``), so a run
resumed from a checkpoint reproduces the uninterrupted run exactly.  Images
are read batch by batch from the (memory-mapped) stacks, a few batches ahead
in the background (``loader``), and Fourier-cropped to ``train_box`` when it
is set (``core.particles.at_box``; the model then works at the coarser pixel
size): memory does not grow with the number of particles (apart from the
poses and CTF parameters, about 100 bytes per particle, and the optional 5
floats per particle of pose corrections).

Distributed data parallel: see ``distributed``; P processes follow the same
trajectory as one process at equal global batch.
"""
import logging
import time

import numpy as np
import torch

from .. import runtime
from ..artifacts import ModelDir
from ..atomic_model import check_in_box
from ..geometry import euler_to_matrix, matrix_to_euler
from ..losses import sinkhorn
from ..models.data import check_particles, check_settings, make_batch
from ..models.flexmodel import build_model
from ..particles import at_box
from ..settings import settings_only
from .calibration import calibrate
from .checkpoints import load_checkpoint, save_checkpoint
from .config import default_settings, split_settings
from .distributed import Dist
from .feature_cache import FeatureCache
from .loader import BatchReader, default_workers
from .objective import make_loss_module
from .schedule import lr_at, seeded

logger = logging.getLogger(__name__)

#: settings a resumed run may change (the others are those of the checkpoint)
CHANGEABLE_ON_RESUME = ('epochs', 'time_limit', 'threads', 'device', 'log_every',
                        'data_workers')

#: per-step sums of an epoch: data, rate, strain, Sinkhorn, Sinkhorn count, particles
_DATA, _RATE, _STRAIN, _OT, _N_OT, _N = range(6)


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
    runtime.setup(settings.get('threads'))
    md = ModelDir(out_dir).make()
    state, settings = _resume_point(md, pset, resume, settings)
    run = Trainer(md, pset, reference, settings, state, require_ctf)
    run.build(dec_modes)
    return run.fit(stop_after)


def _resume_point(md, pset, resume, settings):
    """(checkpoint state or None, settings): on resume, the saved settings
    with the changeable ones replaced."""
    if not resume:
        return None, settings
    if not md.has_checkpoint():
        logger.warning('No checkpoint in %s: starting a new training.', md.path)
        return None, settings
    try:
        saved = settings_only(md.read_config())
    except (OSError, ValueError) as exc:
        raise ValueError('Cannot resume the training in %s: its settings (config.json) '
                         'are missing or damaged (%s). Train into a new folder.'
                         % (md.path, exc)) from None
    for k, v in settings.items():
        if k in CHANGEABLE_ON_RESUME:
            saved[k] = v
    if int(saved.get('n_particles', len(pset))) != len(pset):
        raise ValueError('Cannot resume: the checkpoint in %s was trained on %d particles '
                         'and this particle set has %d. Resume with the same particles, '
                         'or train into a new folder.'
                         % (md.path, int(saved['n_particles']), len(pset)))
    return load_checkpoint(md.path), saved


def _train_box(value, particle_box):
    """The training box of setting ``train_box`` (None: the particle box);
    ValueError for a box the particles cannot be cropped to."""
    if value is None or int(value) == 0:
        return None
    b = int(value)
    if b != value or b < 8 or b % 2 or b > int(particle_box):
        raise ValueError('Invalid train_box = %r: an even box of at least 8 px and at most '
                         'the particle box (%d px) is expected (the particles are '
                         'Fourier-cropped to it).' % (value, int(particle_box)))
    return b


def _fmt_time(s):
    s = int(max(0, s))
    return '%d:%02d:%02d' % (s // 3600, (s % 3600) // 60, s % 60)


class Trainer:
    """One training run: ``build`` (model, calibration, optimiser) then ``fit``."""

    def __init__(self, md, pset, reference, settings, state, require_ctf):
        self.md, self.state = md, state
        # the particles as the model sees them: Fourier-cropped to the training
        # box when one is set (``train_box``); the full set for the output star
        self.pset_full = pset
        self.train_box = _train_box(settings.get('train_box'), pset.box)
        self.pset = at_box(pset, self.train_box)
        self.positions, self.amplitudes, sigma = reference
        self.model_cfg, self.train_cfg = self._full_settings(settings, sigma, require_ctf)
        self.device, self.dist = self._devices()
        self._check_inputs()
        self.batch = self._global_batch()

    # ----------------------------------------------------------------- setup
    def _full_settings(self, settings, sigma, require_ctf):
        full = default_settings()
        if self.state is None:
            full['ctf'] = bool(require_ctf)
        full.update(settings)
        full['n_particles'] = len(self.pset)
        full['box'] = int(self.pset.box)
        full['apix'] = float(self.pset.apix)
        full['particle_box'] = int(self.pset_full.box)
        full['train_box'] = self.train_box
        full['sigma'] = float(sigma)
        check_settings(full)
        return split_settings(full)

    def _devices(self):
        # several processes on CUDA: each on GPU LOCAL_RANK (Dist pins it)
        dist = Dist(runtime.resolve_device(self.train_cfg['device']))
        return dist.device, dist

    def _check_inputs(self):
        check_particles(self.pset, need_poses=True, need_ctf=bool(self.model_cfg['ctf']))
        if len(self.positions) < 4:
            raise ValueError('The reference has %d pseudo-atoms; at least 4 are needed.'
                             % len(self.positions))
        if self.state is None:
            check_in_box(self.positions, self.pset.box, self.pset.apix, 'The reference')

    def _global_batch(self):
        """The global batch size: a multiple of the number of processes, at
        most the number of particles (with a warning)."""
        B, n, world = int(self.train_cfg['batch_size']), len(self.pset), self.dist.world
        if B % world:
            raise ValueError('The batch size (%d) must be a multiple of the number of '
                             'processes (%d).' % (B, world))
        if n < B:
            if self.dist.main:
                logger.warning('the batch size (%d) is larger than the set of %d particles; '
                               'using batches of %d.', B, n, n - n % world)
            B = n - n % world
            self.train_cfg['batch_size'] = B
        return B

    def log(self, msg):
        if self.dist.main:
            logger.info(msg)

    def build(self, dec_modes=None):
        """Model (restored from the checkpoint, or new and calibrated), loss
        module, feature cache, optimiser and history."""
        self.model = self._restored_model() if self.state is not None \
            else self._new_model(dec_modes)
        cfg = self.train_cfg
        self.lossmod = make_loss_module(self.model, cfg, self.device)
        self.cache = FeatureCache(self.md, len(self.pset), self.model, self.dist.rank,
                                  fresh=self.state is None, dist=self.dist) \
            if cfg['cache_features'] else None
        # one-time work before the first epoch, so that every epoch runs at the
        # same speed: the cached encoder inputs, and the KeOps/GeomLoss imports
        # of the first Sinkhorn term (seconds)
        if self.train_box is not None:
            self.log('training at %d px (%.4g A/px): the %d-px particles are Fourier-cropped '
                     'when read' % (self.pset.box, self.pset.apix, self.pset_full.box))
        workers = cfg.get('data_workers')
        self.reader = BatchReader(self.pset, default_workers(self.device) if workers is None
                                  else workers, pin_memory=self.device.type == 'cuda')
        if self.cache is not None:
            self.cache.fill(self.pset, self.device, log=self.log, reader=self.reader)
        if cfg['w_sinkhorn'] > 0:
            sinkhorn(self.model.ref_pos[:4], self.model.ref_pos[:4])
        self.net = self.dist.wrap(self.lossmod, self.device)
        self.opt = self._optimizer()
        self.history, self.start_epoch = [], 0
        if self.state is not None:
            self.opt.load_state_dict(self.state['optim'])
            self.history = list(self.state['history'])
            self.start_epoch = int(self.state['epoch'])
            self.log('resuming from epoch %d (%s)'
                     % (self.start_epoch, self.md.last_checkpoint_path))

    def _restored_model(self):
        arrays = self.md.read_reference()
        model = build_model(self.model_cfg, arrays['positions'], arrays['amplitudes'],
                            arrays.get('enc_modes'), arrays.get('dec_modes'))
        model.load_state_dict(self.state['model'])
        model.to(self.device)
        return model

    def _new_model(self, dec_modes):
        model = build_model(self.model_cfg, self.positions, self.amplitudes,
                            dec_modes=dec_modes)
        model.to(self.device)
        cfg = self.train_cfg
        cal = calibrate(model, self.pset, n=cfg['calib_particles'],
                        seed=self.model_cfg['seed'], device=self.device,
                        mask_radius=cfg['mask_radius'])
        self.log('calibration: intensity scale %.4g, noise variance %.4g per coefficient, '
                 'loss grid %d px (%.2f A/px), encoder grid %d px'
                 % (cal['scale'], cal['noise_var'], model.loss_box, model.loss_apix,
                    model.enc_box))
        if self.dist.main:
            self.md.write_config(dict(model.config, **cfg))
            self.md.write_reference(**model.arrays())
        return model

    def _optimizer(self):
        """Adam over the model; the per-particle pose corrections in their own
        group without momentum (a correction moves only when its particle is
        seen)."""
        model, cfg = self.model, self.train_cfg
        pose_params = list(model.pose.parameters()) if model.pose is not None else []
        pose_ids = {id(p) for p in pose_params}
        main_params = [p for p in model.parameters() if id(p) not in pose_ids]
        groups = [dict(params=main_params, lr=cfg['lr'])]
        if pose_params:
            groups.append(dict(params=pose_params, lr=cfg['pose_lr'], betas=(0.0, 0.999)))
        return torch.optim.Adam(groups, lr=cfg['lr'], weight_decay=cfg['weight_decay'])

    # ------------------------------------------------------------------ loop
    def fit(self, stop_after=None):
        """Epochs from the start epoch; checkpoint after each; final files.
        Returns (model, history)."""
        n, B = len(self.pset), self.batch
        self.steps_per_epoch = n // B
        if self.steps_per_epoch == 0:
            raise ValueError('Fewer particles (%d) than the batch size (%d).' % (n, B))
        self.epochs = int(self.train_cfg['epochs'])
        self.total_steps = self.epochs * self.steps_per_epoch
        self.seed = int(self.model_cfg['seed'])
        self.t_start = time.time()
        self.elapsed_prev = sum(h.get('seconds', 0.0) for h in self.history)
        for epoch in range(self.start_epoch, self.epochs):
            seconds = self._epoch(epoch)
            self._end_of_epoch(epoch)
            if stop_after is not None and epoch + 1 - self.start_epoch >= int(stop_after) \
                    and epoch + 1 < self.epochs:
                self._close()
                return self.model, self.history
            if self._out_of_time(epoch, seconds):
                break
        self._finish()
        return self.model, self.history

    def _epoch(self, epoch):
        """One pass over the particles; appends the epoch record to the
        history and returns the epoch's wall time (s)."""
        t_epoch, cpu_epoch = time.time(), time.process_time()
        perm = torch.randperm(len(self.pset), generator=seeded(self.seed, 1, epoch)).numpy()
        sums = np.zeros(6)
        # this process's particles of every step, read ahead in the background
        local = [self._local_indices(perm, step) for step in range(self.steps_per_epoch)]
        self.t_epoch = t_epoch
        for step, (_, images) in enumerate(self.reader.batches(local)):
            gstep = epoch * self.steps_per_epoch + step
            self._set_learning_rates(gstep)
            out, loss, n_local, n_ot_local = self._step(perm, epoch, step, gstep, images)
            sums += [float(out['data'].detach().sum()), float(out['rate'].detach().sum()),
                     float(out['strain'].detach().sum()),
                     float(out['ot'].detach().sum()) if out['ot'] is not None else 0.0,
                     n_ot_local, n_local]
            every = self.train_cfg['log_every']
            if every and (step + 1) % int(every) == 0:
                self._log_step(epoch, step, gstep, loss, out)
        tot = self.dist.all_sum(sums.tolist())
        seconds = time.time() - t_epoch
        self.history.append(self._epoch_record(epoch, tot, seconds,
                                               time.process_time() - cpu_epoch))
        return seconds

    def _set_learning_rates(self, gstep):
        cfg = self.train_cfg
        for gi, g in enumerate(self.opt.param_groups):
            base = cfg['lr'] if gi == 0 else cfg['pose_lr']
            if gi > 0 and gstep < cfg['pose_start'] * self.total_steps:
                base = 0.0   # pose corrections held at zero until pose_start
            g['lr'] = lr_at(dict(cfg, lr=base), gstep, self.total_steps)

    def _step_randomness(self, epoch, step, gstep, local_pos):
        """Latent noise of this process's particles and the Sinkhorn terms it
        computes: (noise, local batch positions, generators, global count)."""
        B, W, rank = self.batch, self.dist.world, self.dist.rank
        K = self.model.zdim
        gen = seeded(self.seed, 2, epoch, step)
        if self.model.prior.stochastic_encoder:
            noise = torch.randn((B, K), generator=gen)
        else:
            noise = torch.rand((B, K), generator=gen) - 0.5
        nf = float(self.train_cfg.get('noise_final', 1.0))
        if nf != 1.0:  # cosine decay of the noise width, as the learning rate's
            noise = noise * lr_at(dict(lr=1.0, lr_final=nf), gstep, self.total_steps)
        noise = noise[torch.as_tensor(local_pos)].to(self.device)
        # Sinkhorn term on the latents at global batch positions 0..n_ot-1
        cfg = self.train_cfg
        ot_local, ot_gens = [], []
        every = int(cfg['sinkhorn_every'])
        n_ot = 0
        if cfg['w_sinkhorn'] > 0 and every > 0 and gstep % every == 0:
            n_ot = min(int(cfg['sinkhorn_samples']), B)
            for p in range(n_ot):
                if p % W == rank:
                    ot_local.append(p // W)
                    ot_gens.append(seeded(self.seed, 3, epoch, step, p))
        return noise, ot_local, ot_gens, n_ot

    def _local_indices(self, perm, step):
        """This process's particles of global batch ``step`` of ``perm``."""
        B, W = self.batch, self.dist.world
        return perm[step * B:(step + 1) * B][np.arange(self.dist.rank, B, W)]

    def _step(self, perm, epoch, step, gstep, images=None):
        """One optimiser step on global batch ``step`` of ``perm`` (``images``:
        those of its local particles when already read): (loss terms, total
        loss, local particles, local Sinkhorn terms)."""
        B, W, cfg = self.batch, self.dist.world, self.train_cfg
        local_pos = np.arange(self.dist.rank, B, W)
        idx = self._local_indices(perm, step)
        noise, ot_local, ot_gens, n_ot = self._step_randomness(epoch, step, gstep, local_pos)
        batch = make_batch(self.pset, idx, self.model, self.device, images=images)
        batch['enc_inputs'] = self.cache.inputs(batch) if self.cache is not None \
            else self.model.encoder_inputs(batch)
        out = self.net(batch, noise, ot_local, ot_gens)
        per = out['data'] + cfg['beta'] * out['rate'] + cfg['w_knn'] * out['strain']
        if 'pose' in out:
            per = per + out['pose']
        if 'amplitude' in out:
            per = per + out['amplitude']
        loss = per.mean()
        if out['ot'] is not None:
            loss = loss + cfg['w_sinkhorn'] * out['ot'].sum() * (W / n_ot)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return out, loss, len(idx), len(ot_local)

    def _log_step(self, epoch, step, gstep, loss, out):
        """Progress line: loss terms, speed of this epoch so far, and the time
        left in the epoch and in the whole run at that speed."""
        B = self.batch
        el = time.time() - self.t_epoch
        ips = (step + 1) * B / max(el, 1e-9)
        epoch_left = (self.steps_per_epoch - step - 1) * B / max(ips, 1e-9)
        remain = (self.total_steps - gstep - 1) * B / max(ips, 1e-9)
        self.log('epoch %d/%d step %d/%d loss %.4f (data %.2f rate %.3f strain %.4f) '
                 '%.1f images/s | epoch ETA %s, total ETA %s' % (
                     epoch + 1, self.epochs, step + 1, self.steps_per_epoch, loss.item(),
                     out['data'].mean().item(), out['rate'].mean().item(),
                     out['strain'].mean().item(), ips, _fmt_time(epoch_left),
                     _fmt_time(remain)))

    def _epoch_record(self, epoch, tot, seconds, cpu_seconds=None):
        """history.json record of an epoch from the summed per-step terms
        (``cpu_seconds``: CPU time of this process during the epoch, all its
        threads: unlike the wall time, barely changed by other work on the
        machine)."""
        cfg, model = self.train_cfg, self.model
        cnt = max(tot[_N], 1.0)
        return dict(epoch=epoch + 1, data=tot[_DATA] / cnt, rate=tot[_RATE] / cnt,
                    strain=tot[_STRAIN] / cnt, sinkhorn=tot[_OT] / max(tot[_N_OT], 1.0),
                    loss=(tot[_DATA] + cfg['beta'] * tot[_RATE] + cfg['w_knn'] * tot[_STRAIN])
                    / cnt,
                    images_per_s=self.steps_per_epoch * self.batch / max(seconds, 1e-9),
                    seconds=seconds, cpu_seconds=cpu_seconds,
                    scale=model.log_scale.exp().item(),
                    sigma=model.sigma.item())

    def _end_of_epoch(self, epoch):
        """Progress line, checkpoint and history.json (main process)."""
        rec = self.history[-1]
        el_total = self.elapsed_prev + (time.time() - self.t_start)
        self.log('epoch %d/%d done: loss %.4f data %.3f rate %.3f strain %.4f sinkhorn %.3f | '
                 '%.1f images/s | elapsed %s ETA %s' % (
                     epoch + 1, self.epochs, rec['loss'], rec['data'], rec['rate'],
                     rec['strain'], rec['sinkhorn'], rec['images_per_s'], _fmt_time(el_total),
                     _fmt_time(rec['seconds'] * (self.epochs - epoch - 1))))
        if self.dist.main:
            save_checkpoint(dict(model=self.model.state_dict(), optim=self.opt.state_dict(),
                                 epoch=epoch + 1, history=self.history), self.md.path)
            self.md.write_history(self.history)
        self.dist.barrier()

    def _out_of_time(self, epoch, seconds):
        """True when the next epoch would pass the time limit."""
        tl = self.train_cfg['time_limit']
        if tl and epoch + 1 < self.epochs:
            # rank 0's clock decides for every process (they must stop together)
            if self.dist.agree((time.time() - self.t_start + seconds) / 60.0 > float(tl)):
                self.log('time limit (%.1f min) reached after epoch %d: stopping.'
                         % (float(tl), epoch + 1))
                return True
        return False

    def _close(self):
        """Release the DDP wrapper (it holds the process group), then tear the
        group down (``Dist.close``)."""
        self.net = None
        self.dist.close()

    def _finish(self):
        """Final weights, refined poses and history (main process)."""
        if self.dist.main:
            self.md.write_weights(self.model.state_dict())
            if self.model.pose is not None:
                write_refined_poses(self.model, self.pset_full, self.md)
            self.md.write_history(self.history)
        self.dist.barrier()
        self._close()


def write_refined_poses(model, pset, model_dir):
    """Input poses with the learned corrections: euler (N, 3) deg, shifts (N, 2) A
    (core t) and origins (RELION sign), written to the refined-poses file and
    the refined-particles star of ``model_dir`` (a ``ModelDir`` or a model
    folder)."""
    md = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    e = np.asarray(pset.euler, dtype=np.float64)
    t = np.zeros((len(e), 2)) if pset.shifts is None else np.asarray(pset.shifts, np.float64)
    R, t2 = model.pose.corrected(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), t)
    rot, tilt, psi = matrix_to_euler(R)
    md.write_refined_poses(euler=np.stack([rot, tilt, psi], 1), shifts=t2,
                           delta=(model.pose.delta * model.pose.mask).detach().cpu().numpy(),
                           inputs=pset)
    md.write_refined_star(pset, np.stack([rot, tilt, psi], 1), t2)
