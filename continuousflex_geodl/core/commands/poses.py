"""Find particle poses without any starting angles: global search against a reference.

Each particle is compared with CTF-modulated projections of the reference
(pseudo-atoms built as for ``train``) over a quasi-uniform grid of
orientations and a lattice of shifts at low resolution, then its best
distinct candidates are refined locally at increasing resolution
(frequency marching).  Writes a RELION 3.1 star with the same particles in
the same order, with rlnAngleRot/Tilt/Psi, rlnOriginX/YAngst (RELION sign:
particle centre = box centre - origin), _cfgeodlPoseConfidence (posterior
mass of the best pose's basin, 1/K-1; well below 1 for images without
signal) and
_cfgeodlPoseScore (matched-filter statistic in noise standard deviations).
Unless --n-atoms is given, the reference gets twice train's default number of
pseudo-atoms (at most every atom of a model): a finer reference gives more
accurate poses.  With several --reference files (e.g. structures decoded at
the states of a landscape, to pose a heterogeneous set again after
training), each particle keeps the pose of the best-scoring reference
(_cfgeodlPoseReference, 1-based); the --candidates are shared among the
references (at least 2 each), so that several cost about one search's local
refinement.

A single reference does not fit the particles of a heterogeneous sample in
other conformations, and the global search against it gives them gross
errors.  So after it, --model-rounds (default 1) rounds learn the structures
from the particles: train a model on the current poses, search again against
3 structures it decodes along its first latent axis, train on those poses,
and repair every pose against the particle's own structure (as --model does).
The models, structures and intermediate stars stay in POSED_rounds/ next to
the output.  On a 64 px, SNR 0.1 set of an all-atom AdK transition with a
closed-state reference (benchmarks/report/poses_repair.md), one round took
the median rotation error from 9.9 to 3.6 deg (above 30 deg: 31 -> 1.5 %)
at the cost of two trainings and a second search; --model-rounds 0 keeps the
search against the reference only (a homogeneous sample).

From given poses (a consensus refinement's), ``--local`` refines them by a
local search (rotation steps from --local-step halving down to --final-step,
sub-pixel shifts, gradient polish) instead of the global search; against
one reference only for a homogeneous set (a closed-state reference took the
rotations of a heterogeneous AdK set from 2.5 to 11.6 deg median).  With
``--model`` (a model written by ``train``; no --reference) every particle is
refined against its own structure, the cloud the model decodes at the
particle's latent (``--latents`` Z.npy, or inferred as ``infer`` does): this
repairs the rotation errors a consensus refinement of a heterogeneous sample
leaves, which one reference cannot (``core.poses.joint``); --rounds > 1
infers the latents again at the repaired poses and repeats.  When the
particles are the training set of a model trained with --refine-poses, the
poses it refined are the starting point (--ignore-refined-poses: the star's).
Local refinement keeps one candidate per particle: its _cfgeodlPoseConfidence
is 1, its _cfgeodlPoseScore ranks the particles.
Examples::

    continuousflex-geodl poses --particles P.star --reference REF.pdb --out POSED.star
    continuousflex-geodl poses --particles P.star --model MODEL --out REPAIRED.star

Repairing consensus poses of a heterogeneous set (benchmarks/report/
poses_repair.md): train on the star, repair its poses with that model, train
again on the repaired star and infer with it.  The rotations come out as
accurate as the model's pseudo-atoms allow: a model M0 with twice the
default number (--n-atoms; 400 for the 214-residue AdK, whose default is 200)
repairs them as well as the true structures would (64 px, SNR 0.1: 2.5 -> 2.3
deg median, shifts 1.4 -> 0.3 A)::

    continuousflex-geodl train --particles P.star --reference REF.pdb --out M0 --n-atoms 400
    continuousflex-geodl poses --particles P.star --model M0 --out REPAIRED.star
    continuousflex-geodl train --particles REPAIRED.star --reference REF.pdb --out M1
    continuousflex-geodl infer --model M1 --particles REPAIRED.star --out z.npy
"""
import logging
import os
import time

import numpy as np

from .. import logs
from ..settings import (InferSettings, PoseSettings, ReferenceSettings, RuntimeSettings,
                        TrainSettings, add_setting, add_settings)

logger = logging.getLogger(__name__)

#: default reference size (--n-atoms unset): this many times the train default
POSE_ATOMS_FACTOR = 2


def add_args(p):
    p.add_argument('--particles', required=True, help='particles (.star or .xmd); angles, '
                   'if any, are ignored')
    p.add_argument('--reference', nargs='+',
                   help='atomic model (.pdb/.cif), map (.mrc) or reference cloud (.npz); '
                        'several (e.g. the structures of the states of a landscape): each '
                        'particle keeps the pose of the best-scoring one '
                        '(column _cfgeodlPoseReference)')
    p.add_argument('--model', help='model directory written by train (instead of '
                   '--reference): local refinement of the star\'s poses, each particle '
                   'against the structure the model decodes at its latent')
    p.add_argument('--latents', help='with --model: latents of the particles (.npy, N x K, '
                   'as infer writes them; unset: inferred at the starting poses)')
    p.add_argument('--local', action='store_true', help='refine the star\'s poses by a '
                   'local search instead of the global search (implied by --model)')
    p.add_argument('--out', required=True, help='output particle .star (RELION 3.1)')
    add_setting(p, '--model-rounds', PoseSettings, 'model_rounds')
    add_setting(p, '--epochs', TrainSettings, 'epochs',
                help='epochs of each model trained in the --model-rounds (default: '
                     "train's, %d)" % TrainSettings.epochs)
    add_setting(p, '--n-atoms', ReferenceSettings, 'n_atoms')
    add_setting(p, '--sigma', ReferenceSettings, 'sigma')
    for name in ('angular_step', 'final_step', 'candidates', 'max_shift', 'resolution',
                 'coarse_resolution', 'batch_size', 'local_step', 'rounds'):
        add_setting(p, '--' + name.replace('_', '-'), PoseSettings, name)
    add_settings(p, InferSettings, 'refine_steps', 'ignore_refined_poses')
    p.add_argument('--no-ctf', action='store_true',
                   help='ignore the CTF (only for CTF-free images)')
    add_setting(p, '--seed', ReferenceSettings, 'seed')
    add_setting(p, '--threads', RuntimeSettings, 'threads')
    add_setting(p, '--device', RuntimeSettings, 'device')


def main(args):
    from ..io.star import write_star
    from ..particles import load_particles
    from ..poses import posed_particles, search_poses_multi
    from ..runtime import resolve_device, setup
    setup(args.threads)
    device = resolve_device(args.device)
    if not args.out.lower().endswith('.star'):
        raise ValueError("--out must name a .star file (got '%s')" % args.out)
    if args.candidates < 1:
        raise ValueError('--candidates must be at least 1')
    if args.angular_step <= 0 or args.final_step <= 0:
        raise ValueError('--angular-step and --final-step must be positive')
    if bool(args.model) == bool(args.reference):
        raise ValueError('give either --reference (one or more) or --model')
    if args.latents and not args.model:
        raise ValueError('--latents goes with --model')
    if args.local_step <= 0 or args.rounds < 1:
        raise ValueError('--local-step must be positive and --rounds at least 1')
    if args.model_rounds < 0 or args.epochs < 1:
        raise ValueError('--model-rounds must be 0 or more and --epochs at least 1')
    local = args.local or bool(args.model)
    if local and args.reference and len(args.reference) > 1:
        raise ValueError('--local refines against one --reference')
    logs.start_run_log(args.out, args, is_file=True)  # POSED.star.log
    pset = load_particles(args.particles)
    pset.check(require_ctf=not args.no_ctf, require_poses=local)
    t0 = time.time()

    def log(msg):
        logger.info('[%7.1f s] %s', time.time() - t0, msg)

    if args.model:
        res = _repair_with_model(pset, args, device, log)
    elif local:
        from ..poses import refine_poses
        res = refine_poses(pset, _reference(args.reference[0], pset, args),
                           start_step=args.local_step, final_step=args.final_step,
                           max_shift=args.max_shift, resolution=args.resolution,
                           batch_size=args.batch_size, use_ctf=not args.no_ctf,
                           device=device, log=log)
    else:
        refs = [_reference(path, pset, args) for path in args.reference]
        res = _global_search(pset, refs, args, device, log)
        if args.model_rounds:
            res = _model_rounds(pset, res, args, device, log)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_star(out, posed_particles(pset, res))
    log('%d particles posed in %.1f s (%.1f particles/s); median confidence %.3f; '
        'stages: %s' % (len(pset), res.seconds, len(pset) / max(res.seconds, 1e-9),
                        float(_median(res.confidence)),
                        ', '.join('%.3g deg %.3g A %d px %.1f s' % (
                            s['step'], s['resolution'], s['box'], s['seconds'])
                            for s in res.stages)))
    logger.info('poses written to %s', out)
    return 0


def _global_search(pset, refs, args, device, log):
    from ..poses import search_poses_multi
    return search_poses_multi(pset, refs, max_shift=args.max_shift,
                              coarse_step=args.angular_step, final_step=args.final_step,
                              n_candidates=args.candidates, resolution=args.resolution,
                              coarse_resolution=args.coarse_resolution,
                              batch_size=args.batch_size, use_ctf=not args.no_ctf,
                              device=device, log=log)


#: folder of the --model-rounds' models, structures and intermediate stars:
#: POSED.star -> POSED_rounds/
ROUNDS_SUFFIX = '_rounds'
SEARCH_STAR = 'search_reference.star'   # poses of the search against --reference
ROUND_DIR = 'round%d'
ROUND_FILES = dict(model_first='model_search',   # trained on the round's starting poses
                   latents='latents.npy',        # its latents of the particles
                   structures='structures',      # vol_000.mrc ... along its first axis
                   search='search.star',         # global search against the structures
                   model='model',                # trained on those poses
                   repaired='repaired.star')     # poses repaired against each particle's own


def rounds_dir(out):
    """Folder of the intermediate results of ``poses --model-rounds`` for the
    output star ``out``."""
    return os.path.splitext(os.path.abspath(out))[0] + ROUNDS_SUFFIX


def _model_rounds(pset, res, args, device, log):
    """``--model-rounds`` after the global search ``res`` against the reference:
    a single reference does not fit particles of other conformations (a
    heterogeneous AdK set against its closed state: 9.9 deg median rotation
    error, 31 % of the particles above 30 deg), so each round trains a model on
    the current poses, searches again against 3 structures it decodes along
    its first latent axis (each particle keeps the best-scoring one), trains on
    those poses and repairs every pose against the particle's own structure
    (one round on that set: 3.6 deg median, 1.5 % above 30 deg; report
    benchmarks/report/poses_repair.md).  Returns the last round's result, with
    the confidence and reference index of its global search."""
    import dataclasses
    from ..artifacts import DecodeDir
    from ..inference import load_model
    from ..io.mrc import write_mrc
    from ..io.star import write_star
    from ..poses import posed_particles
    from ..poses.joint import axis_volumes, model_latents, repair_poses
    work = rounds_dir(args.out)
    os.makedirs(work, exist_ok=True)
    star = os.path.join(work, SEARCH_STAR)
    write_star(star, posed_particles(pset, res))
    for r in range(1, int(args.model_rounds) + 1):
        files = {k: os.path.join(work, ROUND_DIR % r, v) for k, v in ROUND_FILES.items()}
        log('model round %d / %d: training on %s' % (r, args.model_rounds, star))
        _train(star, files['model_first'], args)
        model = load_model(files['model_first'], device=device)
        posed = posed_particles(pset, res)
        z = model_latents(model, posed, refine_steps=args.refine_steps)
        np.save(files['latents'], z)
        vols = axis_volumes(model, z, box=pset.box, apix=pset.apix)
        structures = DecodeDir(files['structures']).make()
        paths = []
        for i, vol in enumerate(vols):
            write_mrc(structures.volume_path(i), vol, pset.apix)
            paths.append(structures.volume_path(i))
        log('model round %d: global search against %d structures along the latent axis '
            '(%s)' % (r, len(paths), files['structures']))
        search = _global_search(pset, [_reference(p, pset, args) for p in paths], args,
                                device, log)
        write_star(files['search'], posed_particles(pset, search))
        log('model round %d: training on the poses of that search' % r)
        _train(files['search'], files['model'], args)
        model = load_model(files['model'], device=device)
        log('model round %d: repairing every pose against the particle\'s own structure' % r)
        res, _ = repair_poses(posed_particles(pset, search), model, rounds=args.rounds,
                              start_step=args.local_step, final_step=args.final_step,
                              max_shift=args.max_shift, resolution=args.resolution,
                              batch_size=args.batch_size, use_ctf=not args.no_ctf,
                              refine_steps=args.refine_steps, device=device, log=log)
        # local refinement has one candidate: keep the global search's confidence
        res = dataclasses.replace(res, confidence=search.confidence,
                                  reference_index=search.reference_index,
                                  seconds=res.seconds + search.seconds)
        star = files['repaired']
        write_star(star, posed_particles(pset, res))
    return res


def _train(star, out, args):
    """``train`` (defaults, but --epochs and the run settings) on ``star``
    against the first --reference."""
    from ..cli import main as cli_main
    argv = ['train', '--particles', star, '--reference', args.reference[0], '--out', out,
            '--epochs', str(args.epochs), '--seed', str(args.seed), '--device', args.device]
    if args.threads:
        argv += ['--threads', str(args.threads)]
    if args.no_ctf:
        argv += ['--no-ctf']
    rc = cli_main(argv)
    if rc:
        raise RuntimeError('poses --model-rounds: training on %s failed (exit status %s; '
                           'see %s)' % (star, rc, out))


def _repair_with_model(pset, args, device, log):
    """``repair_poses`` of ``pset`` (its poses, or those refined in training)
    against the clouds of the model in ``args.model``."""
    from ..inference import load_model
    from ..poses.joint import repair_poses
    from .infer import use_training_poses
    model = load_model(args.model, device=device)
    use_training_poses(args.model, pset, ignore=args.ignore_refined_poses)
    z = None
    if args.latents:
        z = np.load(args.latents)
        if z.ndim != 2 or len(z) != len(pset):
            raise ValueError('--latents %s: shape %s, expected (%d, K)'
                             % (args.latents, z.shape, len(pset)))
    res, _ = repair_poses(pset, model, z=z, rounds=args.rounds, start_step=args.local_step,
                          final_step=args.final_step, max_shift=args.max_shift,
                          resolution=args.resolution, batch_size=args.batch_size,
                          use_ctf=not args.no_ctf, refine_steps=args.refine_steps,
                          device=device, log=log)
    return res


def _median(x):
    return np.median(np.asarray(x)) if len(x) else float('nan')


def _reference(path, pset, args):
    """Pseudo-atom cloud of one reference file, sized for pose search."""
    from ..models.reference import build_reference
    if path.lower().endswith(('.mrc', '.map')) and os.path.exists(path):
        from ..io.mrc import check_same_grid
        check_same_grid(path, pset.box, pset.apix)
    ref = build_reference(path, n_atoms=args.n_atoms, apix=pset.apix, sigma=args.sigma,
                          seed=args.seed)
    if args.n_atoms is None and not path.lower().endswith('.npz'):
        # a finer cloud than training's default: pose accuracy is limited by how
        # well the reference matches the particles (measured on 64 px, SNR 0.1
        # simulations: 200 -> 300 pseudo-atoms, median rotation error 5.2 -> 4.3 deg)
        ref = build_reference(path, n_atoms=POSE_ATOMS_FACTOR * len(ref.positions),
                              apix=pset.apix, sigma=args.sigma, seed=args.seed)
    logger.info('reference %s: %d pseudo-atoms, sigma %.2f A', os.path.basename(path),
                len(ref.positions), ref.sigma)
    return ref
