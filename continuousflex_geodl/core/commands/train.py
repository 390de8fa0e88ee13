"""Train the conformational model on particles with poses and CTF.

Learns an encoder (particle image -> latent z), a point-cloud decoder
(z -> pseudo-atom displacements of the reference) and a latent prior from
CTF-modulated projections of the deformed reference.  Writes the model
directory (config.json, reference.npz, weights.pt, history.json,
checkpoints/; with a map or atomic-model reference, reference_fit.json: the
quality of its pseudo-atom fit).  Example::

    continuousflex-geodl train --particles P.star --reference REF.pdb --out MODEL
"""
import logging
import os

from .. import logs
from ..settings import (ModelSettings, ReferenceSettings, TrainSettings, add_setting,
                        add_settings)
from ..launch import usage_examples

__doc__ += usage_examples()  # several GPUs / machines: torchrun command lines

logger = logging.getLogger(__name__)


def add_args(p):
    M, T, R = ModelSettings, TrainSettings, ReferenceSettings
    p.add_argument('--particles', required=True, help='particles (.star or .xmd) with poses and CTF')
    p.add_argument('--reference', required=True,
                   help='atomic model (.pdb/.cif), consensus map (.mrc) or reference cloud (.npz)')
    p.add_argument('--out', required=True, help='output model directory')
    add_setting(p, '--zdim', M, 'zdim')
    add_settings(p, T, 'epochs', 'batch_size', 'lr')
    add_settings(p, M, 'seed', 'prior')
    add_setting(p, '--beta', T, 'beta')
    add_settings(p, R, 'n_atoms', 'sigma')
    add_settings(p, M, 'refine_poses', 'pose_rot_sd', 'pose_shift_sd')
    add_settings(p, T, 'pose_start')
    add_settings(p, M, 'nma_modes')
    p.add_argument('--modes', default=None,
                   help='normal modes of the reference (.npz with positions (N, 3) A and '
                        'modes (N, 3, M), e.g. ContinuousFlex NMA modes): displacements are '
                        'restricted to them (interpolated onto the pseudo-atoms)')
    add_settings(p, M, 'learn_amplitudes')
    add_settings(p, M, 'encoder_inputs', 'loss_resolution', 'ctf_pad')
    add_setting(p, '--time-limit', T, 'time_limit')
    p.add_argument('--resume', action='store_true', help='continue from the last checkpoint in --out')
    add_settings(p, T, 'threads', 'device')
    add_settings(p, T, 'train_box', 'data_workers')
    p.add_argument('--allow-cpu-fallback', action='store_true',
                   help='run on the CPU (with a warning) when --device cuda is asked for '
                        'and no GPU is usable; without it that is an error')
    p.add_argument('--no-ctf', action='store_true',
                   help='accept particles without CTF parameters (only for CTF-free '
                        'images, e.g. simulated without CTF)')
    add_settings(p, T, 'w_knn', 'w_sinkhorn', 'w_amplitudes')


def main(args):
    logs.start_run_log(args.out, args)
    return train_from_args(args)


def train_from_args(args):
    """Train as ``main`` does (arguments of ``add_args``), without starting a
    run log: ``validate`` trains its two half-set models with it."""
    from ..artifacts import ModelDir
    from ..models.data import check_settings
    from ..models.reference import (build_reference, describe_fit_quality,
                                    reference_fit_quality)
    from ..particles import load_particles
    from ..runtime import resolve_device
    from ..training.config import default_settings
    from ..training.trainer import train
    # fail fast, before reading anything: device and nonsensical settings
    device = resolve_device(args.device, allow_cpu_fallback=args.allow_cpu_fallback or None)
    settings = dict(zdim=args.zdim, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, prior=args.prior, beta=args.beta,
                    refine_poses=bool(args.refine_poses), pose_rot_sd=args.pose_rot_sd,
                    pose_shift_sd=args.pose_shift_sd, pose_start=args.pose_start,
                    threads=args.threads,
                    device='cpu' if device.type == 'cpu' else args.device,
                    loss_resolution=args.loss_resolution, ctf_pad=args.ctf_pad,
                    time_limit=args.time_limit, train_box=args.train_box,
                    data_workers=args.data_workers)
    if not args.resume:
        check_settings(dict(default_settings(), **settings))
    pset = load_particles(args.particles)
    if args.nma_modes:
        settings.update(decoder='nma', nma_modes=int(args.nma_modes))
    if args.learn_amplitudes:
        settings['learn_amplitudes'] = True
    if args.encoder_inputs:
        settings['encoder_inputs'] = args.encoder_inputs
    if args.w_knn is not None:
        settings['w_knn'] = args.w_knn
    if args.w_sinkhorn is not None:
        settings['w_sinkhorn'] = args.w_sinkhorn
    if args.w_amplitudes is not None:
        settings['w_amplitudes'] = args.w_amplitudes
    model_dir = ModelDir(args.out)
    resuming = args.resume and model_dir.has_checkpoint()
    if resuming:
        ref = build_reference(model_dir.reference_path)
    else:
        if args.reference.lower().endswith(('.mrc', '.map')) and os.path.exists(args.reference):
            from ..io.mrc import check_same_grid
            check_same_grid(args.reference, pset.box, pset.apix)
        # the cloud depends on the file only (not on the training seed): simulate
        # --structure builds the same one
        # pseudo-atoms sized for the pixel size the model trains at (--train-box)
        ref_apix = pset.apix * pset.box / args.train_box if args.train_box else pset.apix
        ref = build_reference(args.reference, n_atoms=args.n_atoms, apix=ref_apix,
                              sigma=args.sigma)
    logger.info('reference: %d pseudo-atoms, sigma %.2f A', len(ref.positions), ref.sigma)
    if not resuming:
        quality = reference_fit_quality(args.reference, ref, apix=pset.apix, box=pset.box)
        if quality is not None:  # a map or model: how well the cloud represents it
            logger.info('reference %s', describe_fit_quality(quality))
            model_dir.make().write_reference_fit(quality)
    modes = None
    if args.modes and not resuming:
        from ..models.nma import modes_on_cloud
        modes = modes_on_cloud(args.modes, ref.positions)
        settings.update(decoder='nma', nma_modes=int(modes.shape[-1]))
        logger.info('decoder basis: %d normal modes from %s', modes.shape[-1], args.modes)
    train(pset, (ref.positions, ref.amplitudes, ref.sigma), args.out, resume=args.resume,
          dec_modes=modes, require_ctf=not args.no_ctf, **settings)
    logger.info('model written to %s', args.out)
