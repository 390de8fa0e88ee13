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
(_cfgeodlPoseReference, 1-based).
Example::

    continuousflex-geodl poses --particles P.star --reference REF.pdb --out POSED.star
"""
import logging
import os
import time

from .. import logs
from ..settings import PoseSettings, ReferenceSettings, RuntimeSettings, add_setting

logger = logging.getLogger(__name__)

#: default reference size (--n-atoms unset): this many times the train default
POSE_ATOMS_FACTOR = 2


def add_args(p):
    p.add_argument('--particles', required=True, help='particles (.star or .xmd); angles, '
                   'if any, are ignored')
    p.add_argument('--reference', required=True, nargs='+',
                   help='atomic model (.pdb/.cif), map (.mrc) or reference cloud (.npz); '
                        'several (e.g. the structures of the states of a landscape): each '
                        'particle keeps the pose of the best-scoring one '
                        '(column _cfgeodlPoseReference)')
    p.add_argument('--out', required=True, help='output particle .star (RELION 3.1)')
    add_setting(p, '--n-atoms', ReferenceSettings, 'n_atoms')
    add_setting(p, '--sigma', ReferenceSettings, 'sigma')
    for name in ('angular_step', 'final_step', 'candidates', 'max_shift', 'resolution',
                 'coarse_resolution', 'batch_size'):
        add_setting(p, '--' + name.replace('_', '-'), PoseSettings, name)
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
    logs.start_run_log(args.out, args, is_file=True)  # POSED.star.log
    pset = load_particles(args.particles)
    pset.check(require_ctf=not args.no_ctf, require_poses=False)
    refs = [_reference(path, pset, args) for path in args.reference]
    t0 = time.time()

    def log(msg):
        logger.info('[%7.1f s] %s', time.time() - t0, msg)

    res = search_poses_multi(pset, refs, max_shift=args.max_shift,
                             coarse_step=args.angular_step, final_step=args.final_step,
                             n_candidates=args.candidates, resolution=args.resolution,
                             coarse_resolution=args.coarse_resolution,
                             batch_size=args.batch_size, use_ctf=not args.no_ctf,
                             device=device, log=log)
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


def _median(x):
    import numpy as np
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
