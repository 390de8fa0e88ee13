"""Structures at latent points: pseudo-atom PDB and rendered MRC volumes.

Reads an (M, K) .npy (or .txt) array of latent points and writes, in
--out, one MRC per row (``vol_000.mrc`` ... on the particles' pixel grid)
and a multi-model PDB ``structures.pdb`` of the deformed pseudo-atoms.
Example::

    continuousflex-geodl decode --model MODEL --latents z.npy --out VOLDIR
"""
import os

import numpy as np


def add_args(p):
    p.add_argument('--model', required=True, help='model directory written by train')
    p.add_argument('--latents', required=True, help='(M, K) latent points, .npy or text')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--rows', default=None,
                   help='decode only these rows, e.g. 0,5,10 (default: all)')
    p.add_argument('--no-volumes', action='store_true', help='write only the PDB')
    p.add_argument('--box', type=int, default=None, help='volume box (default: particles)')
    p.add_argument('--apix', type=float, default=None, help='voxel size A (default: particles)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")


def load_latents(path):
    if not os.path.exists(path):
        raise FileNotFoundError("Latent file not found: '%s'" % path)
    z = np.load(path) if path.endswith('.npy') else np.loadtxt(path, ndmin=2)
    z = np.asarray(z, dtype=np.float32)
    return z[None] if z.ndim == 1 else z


def main(args):
    from ..inference import decode_amplitudes, decode_positions, decode_volumes, load_model
    from ..io.mrc import write_mrc
    from ..models.reference import write_pdb_positions
    model = load_model(args.model, device=args.device)
    z = load_latents(args.latents)
    if args.rows:
        rows = [int(r) for r in args.rows.split(',')]
        z = z[rows]
    os.makedirs(args.out, exist_ok=True)
    pos = decode_positions(model, z)
    amp = decode_amplitudes(model, z)
    write_pdb_positions(os.path.join(args.out, 'structures.pdb'), pos, amp[0])
    if not args.no_volumes:
        apix = args.apix or model.apix
        for i in range(len(z)):
            vol = decode_volumes(model, z[i:i + 1], args.box, args.apix)[0]
            write_mrc(os.path.join(args.out, 'vol_%03d.mrc' % i), vol, apix)
    np.save(os.path.join(args.out, 'latents.npy'), z)
    print('decoded %d latent points into %s' % (len(z), args.out))
