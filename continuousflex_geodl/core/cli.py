"""``continuousflex-geodl`` command line: one subcommand per module.

Each module in ``core.commands`` defines ``add_args(parser)`` and
``main(args)`` and a module docstring whose first line is the help text
(cryoDRGN style).  Scipion protocols run these same commands in a worker.
"""
import argparse
import importlib
import sys

COMMANDS = [
    'simulate',   # synthetic particle sets with ground truth
    'reference',  # pseudo-atoms from an atomic model or a map
    'train',      # train the model on particles
    'infer',      # latents for a particle set
    'decode',     # structures / volumes at latent points
    'landscape',  # embeddings, free energy, states, paths, subsets
    'demo',       # the whole chain on built-in synthetic data
]


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


def main(argv=None):
    from . import runtime
    args = build_parser().parse_args(argv)
    runtime.setup()
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # user-facing errors: one clear line, no deep traceback
        print('ERROR: %s' % exc, file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


if __name__ == '__main__':
    sys.exit(main())
