"""``continuousflex-geodl`` command line: one subcommand per module.

Each module in ``core.commands`` defines ``add_args(parser)`` and
``main(args)`` and a module docstring whose first line is the help text
(cryoDRGN style).  Scipion protocols run these same commands in a worker.
"""
import argparse
import importlib
import logging
import os
import sys

from . import logs

# Before torch loads OpenMP: idle threads sleep instead of spinning.  With the
# default spin-wait, training on 2 cores slows down up to 30x as soon as any
# other process uses one of them (measured 13 vs 440 images/s).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

COMMANDS = [
    'simulate',   # synthetic particle sets with ground truth
    'reference',  # pseudo-atoms from an atomic model or a map
    'train',      # train the model on particles
    'infer',      # latents for a particle set
    'decode',     # structures / volumes at latent points
    'poses',      # poses of particles without angles (global search)
    'landscape',  # embeddings, free energy, states, paths, subsets
    'explore',    # interactive landscape explorer (click, lasso, paths)
    'validate',   # half-set validation: two models on random halves, compared
    'demo',       # the whole chain on built-in synthetic data
]

logger = logging.getLogger(__name__)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='continuousflex-geodl',
        description='Conformational landscapes from cryo-EM particles with '
                    'geometric deep learning (point clouds, OT, KeOps).')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module('continuousflex_geodl.core.commands.' + name)
        except ModuleNotFoundError as exc:
            if exc.name == 'continuousflex_geodl.core.commands.' + name:
                continue  # command not built yet
            raise
        doc = (mod.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=doc, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_args(p)
        p.set_defaults(func=mod.main)
    return parser


def user_message(exc):
    """One clear line for a user-facing error (library messages translated)."""
    import pickle
    text = ' '.join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError):
        return ('Refused to load a model or checkpoint file that contains Python objects '
                'other than tensors (only weights are loaded, with torch.load('
                'weights_only=True); nothing in the file was run). The model folder was '
                'not written by continuousflex_geodl or has been altered: restore it or '
                'train again.')
    if isinstance(exc, RuntimeError) and 'PytorchStreamReader' in text:
        return ('A model or checkpoint file is truncated or corrupt (%s). Restore it from '
                'a copy or train again.' % text.split('.')[0])
    if isinstance(exc, MemoryError):
        return ('Out of memory%s: lower --batch-size (or use fewer pseudo-atoms / a smaller '
                'box).' % ((' (%s)' % text) if text else ''))
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return 'Cannot read or write a file: %s' % text
    return text


def main(argv=None):
    """Run one command; returns its exit status (2: a user-facing error).

    Each command calls ``logs.start_run_log`` once it knows its output, so
    the output holds a run.log (command line, version, settings, progress,
    exit status; see ``core.logs``).
    """
    import pickle

    from . import runtime
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    runtime.setup()
    with logs.command_session(argv) as session:
        try:
            result = args.func(args)
        except (ValueError, FileNotFoundError, RuntimeError, OSError, MemoryError,
                pickle.UnpicklingError) as exc:
            # user-facing errors: one clear line (stderr and run.log), no deep traceback
            logger.error(user_message(exc))
            logs.end_session(session, 2)
            return 2
        except BaseException:
            logs.end_session(session, 1, exc_info=sys.exc_info())  # traceback: run.log
            raise
        status = 0 if result is None else int(result)
        logs.end_session(session, status)
        return status


if __name__ == '__main__':
    sys.exit(main())
