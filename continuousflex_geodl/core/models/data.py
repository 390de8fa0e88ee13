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
from . import imaging


def check_particles(pset, need_poses=True):
    """Clear errors for particle sets the model cannot use."""
    if len(pset) == 0:
        raise ValueError('The particle set is empty.')
    if need_poses and getattr(pset, 'euler', None) is None:
        raise ValueError('The particles have no angular assignment (Euler angles): '
                         'this model needs poses from a consensus refinement '
                         '(RELION/cryoSPARC/Xmipp) stored with the particles.')
    if getattr(pset, 'ctf', None) is None:
        import sys
        print('WARNING: the particles have no CTF parameters; assuming images '
              'without CTF.', file=sys.stderr)
    box = int(pset.box)
    if box % 2:
        raise ValueError('Particle box size %d is odd; the model needs an even box '
                         '(crop or pad the particles by one pixel).' % box)


def read_images(pset, idx):
    """float32 (B, D, D) images for sorted-or-not indices ``idx``."""
    idx = np.asarray(idx, dtype=np.int64)
    order = np.argsort(idx, kind='stable')
    imgs = np.asarray(pset.images[idx[order]], dtype=np.float32)
    out = np.empty_like(imgs)
    out[order] = imgs
    return out


def make_batch(pset, idx, model, device='cpu'):
    """Dict of tensors for the particles ``idx`` (see module docstring)."""
    idx = np.asarray(idx, dtype=np.int64)
    imgs = torch.as_tensor(read_images(pset, idx), device=device)
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
        ctf_loss=ctf_on(model.loss_box, model.loss_apix),
        ctf_enc=ctf_on(model.enc_box, model.enc_apix),
        rot=rot,
        euler=torch.as_tensor(euler, dtype=torch.float32, device=device),
        shifts=torch.as_tensor(shifts, dtype=torch.float32, device=device),
    )
