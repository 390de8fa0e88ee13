"""A tiny in-memory synthetic particle set (two-domain hinge) for tests.

Independent of ``core.simulate`` so that model tests need no files: a
two-domain Gaussian pseudo-atom cloud whose second domain rotates about a
hinge axis by ``angle = s * max_angle`` (s in [0, 1], the true coordinate),
uniformly random poses, per-particle CTF (defocus 1-2.5 um, 300 kV) and
Gaussian noise at a given SNR (variance of the clean CTF-modulated image over
the box / noise variance).  Conventions are those of ``core``.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..ctf import compute_ctf, frequency_grid
from ..geometry import matrix_to_euler, random_rotations
from ..render import project


@dataclass
class ToyParticles:
    """Duck-typed stand-in for ``core.particles.ParticleSet`` (in memory)."""
    images: np.ndarray          # (n, D, D) float32
    apix: float
    euler: np.ndarray           # (n, 3) degrees
    shifts: np.ndarray          # (n, 2) A
    ctf: np.ndarray             # (n, 7)
    metadata: object = None

    @property
    def box(self):
        return int(self.images.shape[-1])

    def __len__(self):
        return int(self.images.shape[0])

    def subset(self, indices):
        idx = np.asarray(indices)
        return ToyParticles(self.images[idx], self.apix, self.euler[idx],
                            self.shifts[idx], self.ctf[idx], None)


def _ball(rng, n):
    """n points uniform in the unit ball."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * rng.uniform(0, 1, (n, 1)) ** (1.0 / 3.0)


def two_domain_cloud(n_atoms=300, size=20.0, rng=0):
    """Reference positions (N, 3) A: two ellipsoidal blobs side by side + hinge.

    Returns ``(positions, domain2_mask, hinge_point, hinge_axis)``.
    """
    rng = np.random.default_rng(rng)
    n1 = n_atoms // 2
    n2 = n_atoms - n1
    d1 = _ball(rng, n1) * np.array([0.55, 0.45, 0.45]) * size
    d2 = _ball(rng, n2) * np.array([0.55, 0.40, 0.40]) * size
    d1[:, 0] -= 0.6 * size
    d2[:, 0] += 0.6 * size
    pos = np.concatenate([d1, d2]).astype(np.float64)
    pos -= pos.mean(0)
    mask = np.zeros(n_atoms, bool)
    mask[n1:] = True
    hinge = np.array([0.0, 0.25 * size, 0.0])
    axis = np.array([0.0, 0.0, 1.0])
    return pos, mask, hinge, axis


def hinge_deform(positions, mask, hinge, axis, angle_deg):
    """Rotate the masked atoms by ``angle_deg`` about ``axis`` through ``hinge``."""
    a = np.deg2rad(angle_deg)
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K
    out = positions.copy()
    out[mask] = (positions[mask] - hinge) @ R.T + hinge
    return out


def make_toy_particles(n=512, box=48, apix=2.5, n_atoms=300, sigma=None,
                       max_angle=30.0, snr=0.1, size=None, seed=0,
                       population='three_mode', shift_sd=1.0):
    """Simulate a hinge data set; returns ``(particles, truth)``.

    ``truth`` is a dict: ``s`` (n,) true coordinate in [0, 1], ``reference``
    (N, 3) (state s = 0), ``amplitudes``, ``sigma``, ``image_scale`` (stored
    image / rendered projection of ``amplitudes``; the noise has unit
    variance), ``deform`` (a function s -> (N, 3) positions).
    """
    rng = np.random.default_rng(seed)
    size = size if size is not None else 0.22 * box * apix
    sigma = sigma if sigma is not None else 1.5 * apix
    ref, mask, hinge, axis = two_domain_cloud(n_atoms, size, rng)
    amps = np.ones(n_atoms)
    if population == 'three_mode':
        comp = rng.choice(3, size=n, p=[0.4, 0.2, 0.4])
        s = np.clip(np.array([0.0, 0.5, 1.0])[comp] + rng.normal(0, 0.07, n), 0, 1)
    else:
        s = rng.uniform(0, 1, n)
    Rm = random_rotations(n, rng)
    rot, tilt, psi = matrix_to_euler(Rm)
    euler = np.stack([rot, tilt, psi], 1)
    shifts = rng.normal(0, shift_sd, (n, 2))
    dfu = rng.uniform(10000, 25000, n)
    dfv = dfu - rng.uniform(0, 500, n)
    dfang = rng.uniform(0, 180, n)
    ctfp = np.stack([dfu, dfv, dfang, np.full(n, 300.0), np.full(n, 2.7),
                     np.full(n, 0.1), np.zeros(n)], 1)
    freqs = frequency_grid(box, apix)
    images = np.zeros((n, box, box), np.float32)
    for a in range(0, n, 64):
        b = min(n, a + 64)
        pos = np.stack([hinge_deform(ref, mask, hinge, axis, max_angle * si)
                        for si in s[a:b]])
        C = compute_ctf(freqs, dfu[a:b], dfv[a:b], dfang[a:b], 300.0, 2.7, 0.1)
        with torch.no_grad():
            img = project(torch.as_tensor(pos, dtype=torch.float32),
                          torch.as_tensor(amps, dtype=torch.float32), sigma,
                          torch.as_tensor(Rm[a:b], dtype=torch.float32), box, apix,
                          shifts=torch.as_tensor(shifts[a:b], dtype=torch.float32),
                          ctf=torch.as_tensor(C, dtype=torch.float32))
        images[a:b] = img.numpy()
    signal_var = images.var(axis=(1, 2)).mean()
    images += rng.normal(0, np.sqrt(signal_var / snr), images.shape).astype(np.float32)
    image_scale = 1.0 / np.sqrt(signal_var / snr)
    images *= image_scale  # unit noise variance
    parts = ToyParticles(images, float(apix), euler, shifts, ctfp)
    truth = dict(s=s, reference=ref, amplitudes=amps, sigma=float(sigma),
                 image_scale=float(image_scale),
                 deform=lambda si: hinge_deform(ref, mask, hinge, axis, max_angle * si))
    return parts, truth


def write_toy_dataset(folder, pdb=False, **kwargs):
    """``make_toy_particles(**kwargs)`` as files in ``folder``: particles.star
    (+ particles.mrcs), ref.npz (positions, amplitudes, sigma of the true
    reference, state s = 0) and, with ``pdb``, ref.pdb.  Returns
    ``(ParticleSet, truth)``."""
    from ..io.pdb import write_pdb
    from ..particles import ArrayImageSource, ParticleSet, write_particles_star
    parts, truth = make_toy_particles(**kwargs)
    pset = ParticleSet(ArrayImageSource(parts.images), parts.apix, parts.euler,
                       parts.shifts, parts.ctf)
    write_particles_star(os.path.join(folder, 'particles.star'), pset)
    np.savez(os.path.join(folder, 'ref.npz'), positions=truth['reference'],
             amplitudes=truth['amplitudes'], sigma=truth['sigma'])
    if pdb:
        write_pdb(os.path.join(folder, 'ref.pdb'), truth['reference'])
    return pset, truth
