"""Pseudo-atom reference cloud from an atomic model or a consensus map.

Reads a .pdb/.cif model (kept atom for atom when small enough, otherwise
coarse-grained to beads) or a .mrc map (points fitted to the density) and
writes the cloud as .npz (positions, amplitudes, sigma) or .pdb.  For a map,
the log reports the quality of the fit (FSC of the rendered cloud against the
map, pseudo-atoms per residue-equivalent); for a model, against a map
simulated from its atoms.  Example::

    continuousflex-geodl reference --input REF.pdb --out REF.npz --apix 2.0
"""
import logging

from .. import logs
from ..settings import ReferenceSettings, add_setting

logger = logging.getLogger(__name__)


def add_args(p):
    p.add_argument('--input', required=True, help='atomic model (.pdb/.cif) or map (.mrc)')
    p.add_argument('--out', required=True, help='output .npz or .pdb')
    for flag, name in (('--n-atoms', 'n_atoms'), ('--apix', 'apix'), ('--sigma', 'sigma'),
                       ('--threshold', 'threshold'), ('--seed', 'seed')):
        add_setting(p, flag, ReferenceSettings, name)


def main(args):
    from ..models.reference import (build_reference, describe_fit_quality,
                                    reference_fit_quality)
    logs.start_run_log(args.out, args, is_file=True)  # REF.npz.log
    ref = build_reference(args.input, n_atoms=args.n_atoms, apix=args.apix,
                          sigma=args.sigma, threshold=args.threshold, seed=args.seed)
    ref.save(args.out)
    logger.info('wrote %s: %d pseudo-atoms, sigma %.2f A', args.out, len(ref.positions), ref.sigma)
    quality = reference_fit_quality(args.input, ref, threshold=args.threshold,
                                    apix=args.apix)
    if quality is not None:  # a map or a model: how well the cloud represents it
        logger.info(describe_fit_quality(quality))
