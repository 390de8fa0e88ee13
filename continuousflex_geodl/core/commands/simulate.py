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
import os
import sys
import time


def add_args(parser):
    from ..simulate import MOTIONS, POPULATIONS
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--n-particles', type=int, default=2000, help='number of particles')
    parser.add_argument('--box', type=int, default=64, help='image side in pixels (even)')
    parser.add_argument('--apix', type=float, default=2.0, help='pixel size in A/pixel')
    parser.add_argument('--snr', type=float, default=0.1,
                        help='signal-to-noise ratio (variance ratio over the box)')
    parser.add_argument('--motion', choices=MOTIONS, default='hinge')
    parser.add_argument('--population', choices=POPULATIONS, default='three_mode')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same data)')
    g = parser.add_argument_group('advanced')
    g.add_argument('--structure', default=None,
                   help='atomic model (.pdb/.cif, one bead per residue) or map (.mrc) to use '
                        'instead of the built-in molecule; without domain labels the hinge '
                        'splits it in two halves along its longest axis')
    g.add_argument('--end-rmsd', type=float, default=6.0,
                   help='RMSD in A between the two ends of the motion (default 6)')
    g.add_argument('--nma-modes', type=int, choices=(1, 2), default=2,
                   help='number of normal modes (coordinates) for --motion nma')
    g.add_argument('--sigma', type=float, default=None,
                   help='pseudo-atom Gaussian width in A (default: the molecule\'s)')
    g.add_argument('--max-shift', type=float, default=4.0,
                   help='maximum in-plane shift in A (default 4)')
    g.add_argument('--weights', type=float, nargs='+', default=None,
                   help='population weights of the states (three_mode: 3 numbers)')
    g.add_argument('--n-states', type=int, default=None,
                   help='number of discrete states per coordinate for --population grid')
    g.add_argument('--keep-clean', action='store_true',
                   help='also write the noise-free stack particles_clean.mrcs')
    g.add_argument('--chunk-size', type=int, default=None,
                   help='images rendered per chunk (memory; default automatic)')
    g.add_argument('--device', default='cpu', help='cpu or cuda')


def main(args):
    from ..runtime import resolve_device
    from ..simulate import simulate_dataset
    device = resolve_device(args.device)
    structure = None
    if args.structure:
        from ..structure import load_structure
        structure = load_structure(args.structure, apix=args.apix)
    t0 = time.time()

    def log(msg):
        print('[%6.1f s] %s' % (time.time() - t0, msg), flush=True)

    paths = simulate_dataset(
        args.out, n_particles=args.n_particles, box=args.box, apix=args.apix, snr=args.snr,
        motion=args.motion, population=args.population, seed=args.seed, sigma=args.sigma,
        structure=structure,
        end_rmsd=args.end_rmsd, n_modes=args.nma_modes, max_shift=args.max_shift,
        population_weights=args.weights, n_states=args.n_states,
        keep_clean=args.keep_clean, chunk_size=args.chunk_size, device=device, log=log)
    print('\nOutputs:')
    for key in ('particles_star', 'particles_mrcs', 'ground_truth', 'reference_pdb',
                'reference_mrc', 'summary', 'clean_mrcs'):
        if key in paths:
            print('  %-16s %s' % (key, paths[key]))
    print('  %-16s %s (%d states)' % ('states', os.path.dirname(paths['states_mrc'][0]),
                                      len(paths['states_mrc'])))
    sys.stdout.flush()
    return 0
