"""Run the whole chain on the built-in synthetic dataset and print where the outputs are.

simulate -> train -> infer -> landscape analyze -> landscape path (first
principal axis, with decoded structures) -> decode states -> animated GIF + ChimeraX script.

With ``--scipion`` (the default when Scipion is installed) the same chain runs
as Scipion protocols in a fresh headless Scipion project inside ``--out``
(``continuousflex_geodl.workflow``); ``--core`` runs the core commands only.
"""
import os
import subprocess
import sys
import time


def add_args(parser):
    parser.add_argument('--out', default='demo_output', help='output folder (created)')
    parser.add_argument('--n-particles', type=int, default=2000)
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs (default: the train command default)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--scipion', dest='mode', action='store_const', const='scipion',
                      help='run as Scipion protocols in a headless project (default '
                           'when Scipion is installed)')
    mode.add_argument('--core', dest='mode', action='store_const', const='core',
                      help='run the Scipion-free core commands only')


def _scipion_available():
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ('pyworkflow', 'pwem'))


def _step(title, argv):
    from ..cli import main as cli_main
    print('\n=== %s: continuousflex-geodl %s' % (title, ' '.join(argv)), flush=True)
    t0 = time.time()
    rc = cli_main(argv)
    if rc:
        raise RuntimeError('demo step "%s" failed (exit code %s)' % (title, rc))
    print('=== %s done in %.1f s' % (title, time.time() - t0), flush=True)


def run_core(args):
    out = os.path.abspath(args.out)
    sim, model = os.path.join(out, 'simulation'), os.path.join(out, 'model')
    z = os.path.join(out, 'latents.npy')
    land, path = os.path.join(out, 'landscape'), os.path.join(out, 'pathway')
    _step('simulate', ['simulate', '--out', sim, '--n-particles', str(args.n_particles),
                       '--seed', str(args.seed)])
    train = ['train', '--particles', os.path.join(sim, 'particles.star'),
             '--reference', os.path.join(sim, 'reference.pdb'), '--out', model,
             '--seed', str(args.seed), '--device', args.device]
    if args.epochs:
        train += ['--epochs', str(args.epochs)]
    _step('train', train)
    _step('infer', ['infer', '--model', model, '--particles',
                    os.path.join(sim, 'particles.star'), '--out', z, '--device', args.device])
    _step('landscape', ['landscape', 'analyze', '--latents', z, '--out', land,
                        '--model', model])
    _step('pathway', ['landscape', 'path', '--latents', z, '--out', path,
                      '--kind', 'pca', '--model', model])
    gif, cxc = _animate(model, path, os.path.join(sim, 'particles.star'))
    print('\nOutputs (core demo):')
    for name, p in [('simulated particles', sim), ('trained model', model),
                    ('latents', z), ('landscape', land), ('pathway', path),
                    ('animation (GIF)', gif), ('ChimeraX script', cxc)]:
        print('  %-20s %s' % (name, p))
    return 0


def _animate(model, path_dir, particles):
    """GIF of the decoded path structures and a ChimeraX script for its MRC series."""
    import glob

    import numpy as np

    from ..animate import write_chimerax_script, write_projection_gif
    from ..particles import load_particles
    from ..structure import read_pdb
    pset = load_particles(particles)
    with np.load(os.path.join(model, 'reference.npz')) as ref:
        amps, sigma = ref['amplitudes'], float(ref['sigma'])
    positions = read_pdb(os.path.join(path_dir, 'path.pdb'))
    gif = os.path.join(path_dir, 'path.gif')
    write_projection_gif(gif, positions, amps, sigma, pset.box, pset.apix)
    cxc = write_chimerax_script(os.path.join(path_dir, 'path.cxc'),
                                sorted(glob.glob(os.path.join(path_dir, 'path_*.mrc'))))
    return gif, cxc


def main(args):
    mode = args.mode or ('scipion' if _scipion_available() else 'core')
    if mode == 'core':
        return run_core(args)
    cmd = [sys.executable, '-m', 'continuousflex_geodl.workflow', '--out', args.out,
           '--n-particles', str(args.n_particles), '--seed', str(args.seed),
           '--device', args.device]
    if args.epochs:
        cmd += ['--epochs', str(args.epochs)]
    return subprocess.call(cmd)
