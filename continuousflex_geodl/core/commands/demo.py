"""Run the whole chain on the built-in synthetic dataset and print where the outputs are.

simulate -> train -> infer -> landscape analyze -> landscape path (first
principal axis, with decoded structures) -> decode states -> animated GIF + ChimeraX script.

With ``--scipion`` (the default when Scipion is installed) the same chain runs
as Scipion protocols in a fresh headless Scipion project inside ``--out``
(``continuousflex_geodl.workflow``); ``--core`` runs the core commands only.
"""
import logging
import os
import subprocess
import sys
import time

from .. import logs
from ..settings import RuntimeSettings, SimulateSettings, add_setting

logger = logging.getLogger(__name__)


def add_args(parser):
    parser.add_argument('--out', default='demo_output', help='output folder (created)')
    add_setting(parser, '--n-particles', SimulateSettings, 'n_particles')
    parser.add_argument('--epochs', type=int, default=None,
                        help='training epochs (default: the train command default)')
    add_setting(parser, '--seed', SimulateSettings, 'seed',
                help='random seed of the simulation and the training (default 0)')
    add_setting(parser, '--device', RuntimeSettings, 'device')
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
    logger.info('\n=== %s: continuousflex-geodl %s', title, ' '.join(argv))
    t0 = time.time()
    rc = cli_main(argv)
    if rc:
        raise RuntimeError('demo step "%s" failed (exit code %s)' % (title, rc))
    logger.info('=== %s done in %.1f s', title, time.time() - t0)


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
    logger.info('\nOutputs (core demo):')
    for name, p in [('simulated particles', sim), ('trained model', model),
                    ('latents', z), ('landscape', land), ('pathway', path),
                    ('animation (GIF)', gif), ('ChimeraX script', cxc)]:
        logger.info('  %-20s %s', name, p)
    return 0


def _animate(model, path_dir, particles):
    """GIF of the decoded path structures and a ChimeraX script for its MRC
    series; each frame rendered with the model's amplitudes at its path point
    (they depend on it for a model with ``learn_amplitudes``)."""
    from ..animate import write_chimerax_script, write_projection_gif
    from ..artifacts import ModelDir, PathDir
    from ..inference import make_decoder
    from ..particles import load_particles
    from ..structure import read_pdb
    pset = load_particles(particles)
    sigma = float(ModelDir(model).read_reference()['sigma'])
    pdir = PathDir(path_dir)
    amps = make_decoder(model, volumes=False)['amplitude_fn'](pdir.latents())
    positions = read_pdb(pdir.structure_files('pdb')[0])
    gif = os.path.join(path_dir, 'path.gif')
    write_projection_gif(gif, positions, amps, sigma, pset.box, pset.apix)
    cxc = write_chimerax_script(os.path.join(path_dir, 'path.cxc'),
                                pdir.structure_files('mrc'))
    return gif, cxc


def main(args):
    logs.start_run_log(args.out, args)
    mode = args.mode or ('scipion' if _scipion_available() else 'core')
    if mode == 'core':
        return run_core(args)
    cmd = [sys.executable, '-m', 'continuousflex_geodl.workflow', '--out', args.out,
           '--n-particles', str(args.n_particles), '--seed', str(args.seed),
           '--device', args.device]
    if args.epochs:
        cmd += ['--epochs', str(args.epochs)]
    return subprocess.call(cmd)
