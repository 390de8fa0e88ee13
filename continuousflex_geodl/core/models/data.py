"""Mini-batches from a particle set (streamed: only the batch is read).

``make_batch(pset, idx, model, device)`` reads images ``idx`` from the
(memory-mapped) ``pset.images``, transforms them once (ortho FFT) and keeps
the spectra cropped to the loss grid and to the encoder grid, the CTF values
on both grids, rotation matrices, Euler angles and shifts.  ``pset`` is a
``core.particles.ParticleSet`` or anything with the same attributes
(``images`` indexable by an int array, ``apix``, ``euler``, ``shifts``,
``ctf``).
"""
import numpy as np
import torch

from ..geometry import euler_to_matrix
from ..settings import pose_widths_valid
from . import imaging


def check_particles(pset, need_poses=True, need_ctf=True):
    """Clear errors (ValueError naming the problem and the fix) for particle
    sets the model cannot use.

    A ``core.particles.ParticleSet`` gets its full ``check()`` (empty set,
    pixel size, poses / CTF present and finite, stacks readable and not
    truncated, one even box, no NaN/Inf in a sample of images; every image
    is checked again when read, in ``make_batch``).  Duck-typed sets (e.g.
    ``models.toydata.ToyParticles``) get the same checks on their arrays.
    ``need_ctf=False`` accepts particles without CTF (images taken as
    CTF-free, e.g. simulated without CTF).
    """
    if hasattr(pset, 'check') and hasattr(pset, 'has_ctf'):
        pset.check(require_ctf=need_ctf, require_poses=need_poses)
        return pset
    n = len(pset)
    if n == 0:
        raise ValueError('The particle set is empty: there are no particles to process.')
    if need_poses and getattr(pset, 'euler', None) is None:
        raise ValueError('The particles have no angular assignment (Euler angles): '
                         'this model needs poses from a consensus refinement '
                         '(RELION/cryoSPARC/Xmipp) stored with the particles.')
    if need_ctf and getattr(pset, 'ctf', None) is None:
        raise ValueError('The particles have no CTF parameters: estimate the CTF (e.g. '
                         'CTFFIND) and re-extract, or import them with their CTF. Only '
                         'images without any CTF (e.g. simulated) may be used without it '
                         '(--no-ctf).')
    apix = float(pset.apix)
    if not np.isfinite(apix) or apix <= 0:
        raise ValueError('The particles have an invalid pixel size %r A.' % pset.apix)
    for name, width in (('euler', 3), ('shifts', 2), ('ctf', 7)):
        arr = getattr(pset, name, None)
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != (n, width):
            raise ValueError('The particles\' %s have shape %s, expected (%d, %d).'
                             % (name, arr.shape, n, width))
        ok = np.isfinite(arr).all(axis=1)
        if not ok.all():
            raise ValueError('Particle %d has NaN/Inf %s: remove it or recompute them.'
                             % (int(np.nonzero(~ok)[0][0]) + 1, name))
    box = int(pset.box)
    if box % 2:
        raise ValueError('Particle box size %d is odd; the model needs an even box '
                         '(crop or pad the particles by one pixel).' % box)
    return pset


def _bad(what, value, rule):
    return ValueError('Invalid %s = %r: %s.' % (what, value, rule))


def check_settings(cfg):
    """Clear errors for nonsensical training / model settings (merged dict).

    Only values that cannot work are refused (a latent dimension below 1,
    no epoch, a batch of no particle, a non-positive learning rate, negative
    loss weights, ...); batches larger than the set are reduced by the
    trainer (core.training), with a warning.
    """
    def num(key):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise _bad(key, v, 'a number is expected')
        if not np.isfinite(v):
            raise _bad(key, v, 'a finite number is expected')
        return v

    def integer(key, low, rule):
        v = num(key)
        if int(v) != v or v < low:
            raise _bad(key, v, rule)

    integer('zdim', 1, 'the latent dimension must be an integer >= 1 (e.g. 4 or 8)')
    integer('epochs', 1, 'train for at least 1 epoch (to train more later, raise the '
            'epochs and resume)')
    integer('batch_size', 1, 'the batch size must be an integer >= 1 (e.g. 32)')
    if num('lr') <= 0:
        raise _bad('lr', cfg['lr'], 'the learning rate must be > 0 (e.g. 2e-3)')
    for key in ('beta', 'w_knn', 'w_sinkhorn', 'w_amplitudes'):
        if key in cfg and num(key) < 0:
            raise _bad(key, cfg[key], 'loss weights must be >= 0')
    if cfg.get('prior') == 'gmm' and 'gmm_components' in cfg:
        integer('gmm_components', 1, 'the mixture prior needs at least 1 component')
    if cfg.get('decoder') == 'nma' and cfg.get('nma_modes'):
        integer('nma_modes', 0, 'the number of normal modes must be >= 0')
    if cfg.get('time_limit') is not None and num('time_limit') < 0:
        raise _bad('time_limit', cfg['time_limit'], 'the time limit is in minutes, >= 0 '
                   '(0 or unset: no limit)')
    if 'pose_start' in cfg and not 0 <= num('pose_start') < 1:
        raise _bad('pose_start', cfg['pose_start'], 'a fraction of the training in [0, 1) '
                   'is expected')
    if cfg.get('refine_poses') and not pose_widths_valid(num('pose_rot_sd'),
                                                         num('pose_shift_sd')):
        raise _bad('pose_rot_sd / pose_shift_sd', (cfg['pose_rot_sd'], cfg['pose_shift_sd']),
                   'the pose prior widths must be >= 0 deg (0: shifts only) and > 0 A')
    if cfg.get('mask_radius') is not None and num('mask_radius') < 0:
        raise _bad('mask_radius', cfg['mask_radius'], 'a fraction of the half box >= 0 is '
                   'expected (0: no mask)')
    return cfg


def read_images(pset, idx):
    """float32 (B, D, D) images for sorted-or-not indices ``idx``."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind='stable')
    imgs = np.asarray(pset.images[idx[order]], dtype=np.float32)
    out = np.empty_like(imgs)
    out[order] = imgs
    return out


def make_batch(pset, idx, model, device='cpu', images=None):
    """Dict of tensors for the particles ``idx`` (see module docstring).

    ``images``: the particles' images (B, D, D) float32 (numpy or a CPU
    tensor) when already read, e.g. ahead in the background
    (``core.training.loader``); by default they are read here."""
    idx = np.asarray(idx, dtype=np.int64)
    imgs = torch.as_tensor(read_images(pset, idx) if images is None else images)
    finite = torch.isfinite(imgs).flatten(1).all(1)
    if not bool(finite.all()):
        raise ValueError('Particle %d contains NaN or Inf pixels: remove it from the set '
                         '(or re-extract the particles) and run again.'
                         % (int(idx[int(torch.nonzero(~finite)[0, 0])]) + 1))
    imgs = imgs.to(device=device, dtype=torch.float32, non_blocking=True)
    if imgs.shape[-1] != model.box:
        raise ValueError('Particle box %d px differs from the model box %d px: '
                         'use particles with the same box and pixel size as the '
                         'training set.' % (imgs.shape[-1], model.box))
    F = torch.fft.fft2(imgs, norm='ortho')
    B = len(idx)
    euler = np.asarray(pset.euler[idx], dtype=np.float64) if pset.euler is not None \
        else np.zeros((B, 3))
    shifts = np.asarray(pset.shifts[idx], dtype=np.float64) \
        if getattr(pset, 'shifts', None) is not None else np.zeros((B, 2))
    ctfp = np.asarray(pset.ctf[idx], dtype=np.float64) \
        if getattr(pset, 'ctf', None) is not None else None
    rot = torch.as_tensor(euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2]),
                          dtype=torch.float32, device=device)

    def ctf_on(box, apix):
        c = imaging.ctf_values(ctfp, box, apix, device)
        return c.expand(B, -1, -1) if ctfp is None else c

    return dict(
        idx=idx,
        idx_t=torch.as_tensor(idx, device=device),
        F_loss=imaging.fourier_crop(F, model.loss_box),
        F_enc=imaging.fourier_crop(F, model.enc_box),
        ctf_loss=ctf_on(getattr(model, 'loss_pad_box', model.loss_box)
                        if ctfp is not None else model.loss_box, model.loss_apix),
        ctf_enc=ctf_on(model.enc_box, model.enc_apix),
        rot=rot,
        euler=torch.as_tensor(euler, dtype=torch.float32, device=device),
        shifts=torch.as_tensor(shifts, dtype=torch.float32, device=device),
    )
