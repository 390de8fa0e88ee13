"""Simulate a synthetic particle set of a moving molecule, with its ground truth.

The built-in two-domain molecule (Gaussian pseudo-atoms) moves along a known
coordinate (hinge: one domain rotates; linear: one domain translates; nma:
elastic-network normal modes, 2 coordinates in A).  Coordinates follow a
population law (three_mode: weights 0.4/0.2/0.4 at 0.1/0.5/0.9 with a less
populated middle state; uniform; grid: discrete states).  Each particle gets a
uniformly random orientation, a shift of a few A, an astigmatic CTF (defocus
1-2.5 um, 300 kV) and white noise at the SNR asked for (signal variance of the
clean CTF-modulated images over the whole box / noise variance).

Outputs in --out: particles.mrcs + particles.star (RELION 3.1),
ground_truth.npz (coordinates, poses, CTF, motion), reference.pdb/.mrc/.npz
(structure at the coordinate origin), states/state_XX.pdb/.mrc and
summary.json (measured SNR, ...).
"""
import logging
import os
import time

from .. import logs
from ..settings import RuntimeSettings, SimulateSettings, add_setting

logger = logging.getLogger(__name__)


def add_args(parser):
    S = SimulateSettings
    parser.add_argument('--out', required=True, help='output folder (created)')
    for flag, name in (('--n-particles', 'n_particles'), ('--box', 'box'), ('--apix', 'apix'),
                       ('--snr', 'snr'), ('--motion', 'motion'),
                       ('--population', 'population'), ('--seed', 'seed')):
        add_setting(parser, flag, S, name)
    g = parser.add_argument_group('advanced')
    g.add_argument('--structure', default=None,
                   help='atomic model (.pdb/.cif) or map (.mrc) to use instead of the '
                        'built-in molecule, turned into the pseudo-atom cloud that train '
                        '--reference builds from the same file at this pixel size; the hinge '
                        'splits it in two halves along its longest axis')
    add_setting(g, '--end-rmsd', S, 'end_rmsd')
    add_setting(g, '--nma-modes', S, 'nma_modes', choices=(1, 2))
    add_setting(g, '--sigma', S, 'sigma')
    add_setting(g, '--max-shift', S, 'max_shift')
    add_setting(g, '--weights', S, 'weights', type=float, nargs='+')
    add_setting(g, '--n-states', S, 'n_states')
    add_setting(g, '--keep-clean', S, 'keep_clean')
    add_setting(g, '--chunk-size', S, 'chunk_size')
    add_setting(g, '--device', RuntimeSettings, 'device')


def main(args):
    from ..runtime import resolve_device
    from ..simulate import simulate_dataset
    logs.start_run_log(args.out, args)
    device = resolve_device(args.device)
    structure = None
    if args.structure:
        # the rule train uses for --reference: one file gives one cloud
        from ..models.reference import build_reference
        structure = build_reference(args.structure, apix=args.apix)
    t0 = time.time()

    def log(msg):
        logger.info('[%6.1f s] %s', time.time() - t0, msg)

    paths = simulate_dataset(
        args.out, n_particles=args.n_particles, box=args.box, apix=args.apix, snr=args.snr,
        motion=args.motion, population=args.population, seed=args.seed, sigma=args.sigma,
        structure=structure,
        end_rmsd=args.end_rmsd, n_modes=args.nma_modes, max_shift=args.max_shift,
        population_weights=args.weights, n_states=args.n_states,
        keep_clean=args.keep_clean, chunk_size=args.chunk_size, device=device, log=log)
    logger.info('\nOutputs:')
    for key in ('particles_star', 'particles_mrcs', 'ground_truth', 'reference_pdb',
                'reference_mrc', 'summary', 'clean_mrcs'):
        if key in paths:
            logger.info('  %-16s %s', key, paths[key])
    logger.info('  %-16s %s (%d states)', 'states', os.path.dirname(paths['states_mrc'][0]),
                len(paths['states_mrc']))
    return 0
