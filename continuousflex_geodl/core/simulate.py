"""Synthetic particle sets of a moving molecule, with the ground truth.

A Gaussian pseudo-atom structure (by default ``structure.builtin_molecule()``)
moves along known conformational coordinates; each particle is one
conformation drawn from a population law, projected in a uniformly random
orientation, shifted, modulated by its own astigmatic CTF, and buried in
white Gaussian noise at a target SNR.  Conventions and units are those of
``core.__init__`` (A, degrees, ``t`` shifts, ``-C`` image formation).

This module writes the data set (``simulate_dataset``) and reads its ground
truth back; the parts live in ``core.simulation``: ``motion`` (``Motion``,
``make_motion``), ``population`` (``Population``) and ``imaging``
(``random_poses``, ``random_ctf``, ``render_images``), all importable from
here too.  Stacks are written by ``core.io.mrc.StackWriter``.

Motions (``Motion.conformation(c) -> positions``)
    ``'hinge'``   one domain (the smaller) rotates rigidly about a hinge axis
                  through the inter-domain linker (or the interface centre),
                  so that the interface opens like a clam; ``c`` in [0, 1]
                  maps to the angle ``c * max_angle``.  By default
                  ``max_angle`` is chosen so that the all-atom RMSD between
                  ``c = 0`` and ``c = 1`` is ``end_rmsd`` (6 A).
    ``'linear'``  straight interpolation ``(1 - c) start + c end`` between two
                  structures with the same atoms; by default ``end`` is the
                  molecule with its smaller domain translated away from the
                  rest so that RMSD(start, end) = ``end_rmsd``.
    ``'nma'``     elastic-network normal modes: ``k`` = 1 or 2 coordinates that
                  are mode amplitudes in A, each mode scaled to an RMS atom
                  displacement of 1 A (amplitude ``a`` = RMSD ``|a|`` from the
                  reference); the range is ``[-end_rmsd / 2, end_rmsd / 2]``.

Populations are laws over *unit* coordinates ``u`` in [0, 1]^k, mapped to the
motion's coordinates (identity for hinge/linear, ``(2u - 1) end_rmsd / 2``
for nma): ``'uniform'``; ``'three_mode'`` (Gaussian modes of sd 0.05 with
weights 0.4 / 0.2 / 0.4 at u = 0.1 / 0.5 / 0.9 - a less populated middle
state on a continuous path - clipped to [0, 1]; in 2D the three centres lie
on an arc (0.1, 0.3), (0.5, 0.8), (0.9, 0.3)); ``'grid'`` (discrete states:
5 evenly spaced values in 1D, a 3 x 3 grid in 2D, equal weights).

SNR definition (the one used everywhere in this project)
    ``snr = var(signal) / var(noise)`` where the signal is the clean
    CTF-modulated image and the variance is pooled over **all pixels of the
    whole box** of all particles (as cryoDRGN / CryoBench).  The noise is
    white, with one standard deviation for the whole set.  The stored images
    are scaled so that the noise has unit variance (RELION-like
    normalisation); the ground-truth ``amplitudes`` include that scale, so
    ``render.project(gt positions, gt amplitudes, sigma, ...)`` reproduces
    the clean images.  The JSON summary also reports the SNR with the signal
    variance measured inside the circular mask of the particle (larger).
"""
import json
import os

import numpy as np

from .fileio import atomic_savez, atomic_write_text
from .io.mrc import StackStats, StackWriter, open_stack, write_mrc
from .io.pdb import write_pdb
from .metrics import rmsd  # noqa: F401
from .particles import ParticleSet, write_particles_star
from .render import render_volume
from .simulation.imaging import (DEFAULT_CTF, circular_mask, random_ctf,  # noqa: F401
                                 random_poses, render_images)
from .simulation.motion import MOTIONS, Motion, make_motion  # noqa: F401
from .simulation.population import (POPULATIONS, THREE_MODE_CENTRES_1D,  # noqa: F401
                                    THREE_MODE_CENTRES_2D, THREE_MODE_SD, THREE_MODE_WEIGHTS,
                                    Population)


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def _write_volume(path, positions, amplitudes, sigma, box, apix):
    import torch
    with torch.no_grad():
        vol = render_volume(torch.as_tensor(positions, dtype=torch.float32),
                            torch.as_tensor(amplitudes, dtype=torch.float32),
                            float(sigma), box, apix)
    write_mrc(path, vol.numpy().astype(np.float32), apix)


def _chunk_size(n_atoms, box, requested=None):
    if requested:
        return int(requested)
    # exact projector temporaries ~ 2 * B * N * D floats: keep them near 200 MB
    return int(max(1, min(256, 2.5e7 // max(1, n_atoms * box))))


# --------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------

def simulate_dataset(out_dir, n_particles=2000, box=64, apix=2.0, snr=0.1, motion='hinge',
                     population='three_mode', seed=0, sigma=None, structure=None,
                     end_rmsd=6.0, n_modes=2, max_shift=4.0, population_weights=None,
                     population_sd=THREE_MODE_SD, n_states=None, ctf_params=None,
                     keep_clean=False, chunk_size=None, device='cpu', log=None,
                     motion_kwargs=None):
    """Simulate a particle set with ground truth in ``out_dir``; returns the paths.

    ``motion`` is a name ('hinge', 'linear', 'nma': see the module
    docstring; ``n_modes`` 1 or 2 for nma) or a ready ``Motion``;
    ``population`` a name or a ``Population``.  ``sigma`` (A) overrides the
    pseudo-atom width.  ``snr`` is var(clean CTF image over the whole box) /
    var(noise).  Shifts are uniform in a disk of radius ``max_shift`` A;
    ``ctf_params`` overrides ``random_ctf`` keywords.  ``keep_clean`` also
    writes the noise-free stack ``particles_clean.mrcs``.  Images are rendered
    and written in chunks of ``chunk_size`` (memory does not grow with N).
    Same ``seed``, same files.

    Writes particles.mrcs, particles.star (RELION 3.1), ground_truth.npz,
    reference.pdb / .mrc / .npz (the structure at the coordinate origin:
    c = 0 for hinge/linear, zero amplitude for nma), states/state_XX.pdb and
    .mrc (representative states), summary.json.
    """
    if box % 2 or box < 8:
        raise ValueError('The box size must be an even number of pixels, at least 8 '
                         '(got %r).' % (box,))
    if apix <= 0 or snr <= 0 or n_particles < 1:
        raise ValueError('apix, snr and n_particles must be positive (got %r, %r, %r).'
                         % (apix, snr, n_particles))
    say = log or (lambda *a, **k: None)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, 'states'), exist_ok=True)
    ss = np.random.SeedSequence(seed)
    rng_pop, rng_pose, rng_ctf, rng_noise = (np.random.default_rng(s) for s in ss.spawn(4))

    # -- ground truth -------------------------------------------------------
    if isinstance(motion, Motion):
        mot = motion
    else:
        mot = make_motion(motion, structure=structure, end_rmsd=end_rmsd, n_modes=n_modes,
                          sigma=sigma, **(motion_kwargs or {}))
    if sigma is not None:
        mot.sigma = float(sigma)
    pop = population if isinstance(population, Population) else Population(
        population, dim=mot.n_coords, weights=population_weights, sd=population_sd,
        n_states=n_states)
    if pop.dim != mot.n_coords:
        raise ValueError('The population has %d dimension(s) but the %s motion has %d '
                         'coordinate(s).' % (pop.dim, mot.kind, mot.n_coords))
    u, labels = pop.sample(n_particles, rng_pop)
    coords = mot.unit_to_coords(u)
    euler, shifts = random_poses(n_particles, rng_pose, max_shift=max_shift)
    ctf = random_ctf(n_particles, rng_ctf, **(ctf_params or {}))
    say('Motion %s (%d atoms, %d coordinate(s), end-to-end RMSD %.2f A), population %s, '
        '%d particles, box %d px at %.3f A/px.' % (mot.kind, len(mot.reference), mot.n_coords,
                                                  mot.end_to_end_rmsd(), pop.kind, n_particles,
                                                  box, apix))

    # -- pass 1: clean images (raw scale) -> clean stack -------------------
    p = {name: os.path.join(out_dir, name) for name in (
        'particles.mrcs', 'particles.star', 'ground_truth.npz', 'reference.pdb',
        'reference.mrc', 'reference.npz', 'summary.json', 'particles_clean.mrcs')}
    chunk = _chunk_size(len(mot.reference), box, chunk_size)
    radius = min(box // 2 * apix, float(np.max(np.linalg.norm(
        mot.conformation(mot.unit_to_coords(pop.state_coords() if pop.dim > 1 else
                                            pop.state_coords()[:, 0])), axis=-1)))
        + 2 * mot.sigma + max_shift)
    mask = circular_mask(box, apix, radius)
    sig_all, sig_mask = StackStats(), StackStats()
    starts = list(range(0, n_particles, chunk))
    every = max(1, len(starts) // 10)
    clean = noisy = None
    try:
        clean = StackWriter(p['particles_clean.mrcs'], n_particles, box, apix)
        for k, s in enumerate(starts):
            e = min(n_particles, s + chunk)
            c = coords[s:e] if mot.n_coords > 1 else coords[s:e, 0]
            img = render_images(mot.conformation(c), mot.amplitudes, mot.sigma, euler[s:e],
                                shifts[s:e], ctf[s:e], box, apix, device=device)
            clean.write(img, start=s)
            sig_all.add(img)
            sig_mask.add(img[:, mask])
            if (k + 1) % every == 0 or e == n_particles:
                say('  rendered %d / %d images' % (e, n_particles))

        # -- pass 2: scale so that the noise has unit variance, add noise ------
        scale = 1.0 / np.sqrt(sig_all.var / snr)
        clean_stats, noisy_stats, noise_stats = StackStats(), StackStats(), StackStats()
        noisy = StackWriter(p['particles.mrcs'], n_particles, box, apix)
        for s in starts:
            e = min(n_particles, s + chunk)
            c = (clean.read(s, e).astype(np.float64) * scale).astype(np.float32)
            noise = rng_noise.standard_normal((e - s, box, box), dtype=np.float32)
            x = c + noise
            clean.write(c, start=s)
            noisy.write(x, start=s)
            clean_stats.add(c)
            noise_stats.add(noise)
            noisy_stats.add(x)
        noisy.close(noisy_stats)
        if keep_clean:
            clean.close(clean_stats)
        else:
            clean.abort()
    except BaseException:
        for stack in (clean, noisy):
            if stack is not None:
                stack.abort()
        raise
    amplitudes = mot.amplitudes * scale
    snr_measured = clean_stats.var / noise_stats.var
    snr_mask = sig_mask.var * scale ** 2 / noise_stats.var
    say('Noise added: target SNR %g, measured %.4g over the box (%.4g inside the particle '
        'mask of radius %.1f A).' % (snr, snr_measured, snr_mask, radius))

    # -- states, reference ----------------------------------------------------
    state_unit = pop.state_coords()
    state_coords = mot.unit_to_coords(state_unit)
    state_pos = mot.conformation(state_coords if mot.n_coords > 1 else state_coords[:, 0])
    ref_pos = mot.reference
    paths = {'out_dir': out_dir, 'particles_mrcs': p['particles.mrcs'],
             'particles_star': p['particles.star'], 'ground_truth': p['ground_truth.npz'],
             'reference_pdb': p['reference.pdb'], 'reference_mrc': p['reference.mrc'],
             'reference_npz': p['reference.npz'], 'summary': p['summary.json'],
             'states_pdb': [], 'states_mrc': []}
    if keep_clean:
        paths['clean_mrcs'] = p['particles_clean.mrcs']
    for i, x in enumerate(state_pos):
        base = os.path.join(out_dir, 'states', 'state_%02d' % (i + 1))
        write_pdb(base + '.pdb', x, amplitudes)
        _write_volume(base + '.mrc', x, amplitudes, mot.sigma, box, apix)
        paths['states_pdb'].append(base + '.pdb')
        paths['states_mrc'].append(base + '.mrc')
    write_pdb(p['reference.pdb'], ref_pos, amplitudes)
    _write_volume(p['reference.mrc'], ref_pos, amplitudes, mot.sigma, box, apix)
    atomic_savez(p['reference.npz'], positions=ref_pos, amplitudes=amplitudes,
                 sigma=np.array(mot.sigma))

    # -- ground truth, star, summary ------------------------------------------
    gt = dict(coords=coords, coords_unit=u, states=labels, euler=euler, shifts=shifts,
              ctf=ctf, state_coords=state_coords, state_coords_unit=state_unit,
              state_positions=state_pos, reference_positions=ref_pos,
              apix=np.array(apix), box=np.array(box), snr_target=np.array(snr),
              snr_measured=np.array(snr_measured), noise_sd=np.array(1.0),
              image_scale=np.array(scale),
              motion=np.array(json.dumps(mot.describe())),
              population=np.array(json.dumps(pop.describe())))
    gt.update(mot.to_arrays())
    gt['amplitudes'] = amplitudes
    atomic_savez(p['ground_truth.npz'], **gt)
    _write_star(p['particles.star'], p['particles.mrcs'], apix, euler, shifts, ctf)
    summary = dict(n_particles=int(n_particles), box=int(box), apix=float(apix), seed=seed,
                   snr_target=float(snr), snr_measured=float(snr_measured),
                   snr_definition='var(clean CTF-modulated image over the whole box) / '
                                  'var(noise), pooled over all particles',
                   snr_in_particle_mask=float(snr_mask), mask_radius_A=float(radius),
                   noise_sd=1.0, image_scale=float(scale), max_shift_A=float(max_shift),
                   motion=mot.describe(), population=pop.describe(),
                   state_coords=state_coords.tolist(),
                   state_fractions=[float(np.mean(labels == i)) for i in range(len(pop.centres))],
                   ctf=dict(defocus_A=[float(ctf[:, :2].min()), float(ctf[:, :2].max())],
                            voltage_kV=float(ctf[0, 3]), cs_mm=float(ctf[0, 4]),
                            amplitude_contrast=float(ctf[0, 5])),
                   files={k: v for k, v in paths.items() if k != 'out_dir'})
    atomic_write_text(p['summary.json'], json.dumps(summary, indent=2))
    say('Wrote %d particles to %s' % (n_particles, out_dir))
    return paths


def _write_star(path, stack, apix, euler, shifts, ctf):
    """RELION 3.1 star through core.particles (``core.io.star``'s writer)."""
    pset = ParticleSet(images=open_stack(stack), apix=float(apix), euler=euler,
                       shifts=shifts, ctf=ctf, metadata=None)
    write_particles_star(path, pset, stack_path=stack, version='3.1')


# --------------------------------------------------------------------------
# Reading the ground truth back
# --------------------------------------------------------------------------

def load_ground_truth(path_or_dir):
    """ground_truth.npz (file or simulation folder) -> dict of numpy arrays."""
    path = path_or_dir
    if os.path.isdir(path):
        path = os.path.join(path, 'ground_truth.npz')
    if not os.path.exists(path):
        raise FileNotFoundError('No ground truth at %s: give the ground_truth.npz written by '
                                '"continuousflex-geodl simulate" or its folder.' % path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def motion_from_ground_truth(gt):
    """The ``Motion`` of a simulation (dict from ``load_ground_truth`` or a path)."""
    if not isinstance(gt, dict):
        gt = load_ground_truth(gt)
    return Motion.from_arrays(gt)


def ground_truth_positions(gt, coords=None, indices=None):
    """True atom positions (M, N, 3) A.

    ``coords`` (M, k) (or (M,) for one coordinate) in the motion's own units;
    default: the coordinates of the particles ``indices`` (default all) of the
    simulation.  ``gt`` is a path or the dict of ``load_ground_truth``.
    """
    if not isinstance(gt, dict):
        gt = load_ground_truth(gt)
    mot = Motion.from_arrays(gt)
    if coords is None:
        coords = np.asarray(gt['coords'])
        if indices is not None:
            coords = coords[np.asarray(indices)]
    c = np.asarray(coords, dtype=np.float64)
    if mot.n_coords == 1:
        c = c.reshape(-1)
    else:
        c = c.reshape(-1, mot.n_coords)
    return mot.conformation(c)
