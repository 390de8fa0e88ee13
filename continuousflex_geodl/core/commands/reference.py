"""Pseudo-atom reference cloud from an atomic model or a consensus map.

Reads a .pdb/.cif model (kept atom for atom when small enough, otherwise
coarse-grained to beads) or a .mrc map (points fitted to the density) and
writes the cloud as .npz (positions, amplitudes, sigma) or .pdb.  Example::

    continuousflex-geodl reference --input REF.pdb --out REF.npz --apix 2.0
"""


def add_args(p):
    p.add_argument('--input', required=True, help='atomic model (.pdb/.cif) or map (.mrc)')
    p.add_argument('--out', required=True, help='output .npz or .pdb')
    p.add_argument('--n-atoms', default=None,
                   help='number of pseudo-atoms (default: sized for --apix; 0/all: every atom)')
    p.add_argument('--apix', type=float, default=None,
                   help="particles' pixel size in A (sets the default size; default 2.0 for "
                        "models, the map's pixel size for maps)")
    p.add_argument('--sigma', type=float, default=None, help='pseudo-atom width A (default: auto)')
    p.add_argument('--threshold', type=float, default=None, help='map density threshold')
    p.add_argument('--seed', type=int, default=0)


def main(args):
    from ..models.reference import build_reference
    ref = build_reference(args.input, n_atoms=args.n_atoms, apix=args.apix,
                          sigma=args.sigma, threshold=args.threshold, seed=args.seed)
    ref.save(args.out)
    print('wrote %s: %d pseudo-atoms, sigma %.2f A' % (args.out, len(ref.positions), ref.sigma))
