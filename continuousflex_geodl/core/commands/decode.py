"""Structures at latent points: pseudo-atom PDB and rendered MRC volumes.

Reads an (M, K) .npy (or .txt) array of latent points and writes, in
--out, one MRC per row (``vol_000.mrc`` ... on the particles' pixel grid)
and a multi-model PDB ``structures.pdb`` of the deformed pseudo-atoms.
Example::

    continuousflex-geodl decode --model MODEL --latents z.npy --out VOLDIR
"""
import logging

import numpy as np

from .. import logs
from ..io.latents import load_latents
from ..settings import RuntimeSettings, add_setting

logger = logging.getLogger(__name__)


def add_args(p):
    p.add_argument('--model', required=True, help='model directory written by train')
    p.add_argument('--latents', required=True, help='(M, K) latent points, .npy or text')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--rows', default=None,
                   help='decode only these rows, e.g. 0,5,10 (default: all)')
    p.add_argument('--no-volumes', action='store_true', help='write only the PDB')
    p.add_argument('--box', type=int, default=None, help='volume box (default: particles)')
    p.add_argument('--apix', type=float, default=None, help='voxel size A (default: particles)')
    add_setting(p, '--device', RuntimeSettings, 'device')


def main(args):
    from ..artifacts import DecodeDir
    from ..inference import decode_amplitudes, decode_positions, decode_volumes, load_model
    from ..io.mrc import write_mrc
    from ..models.reference import write_pdb_positions
    logs.start_run_log(args.out, args)
    model = load_model(args.model, device=args.device)
    z = np.asarray(load_latents(args.latents, dim=model.zdim), dtype=np.float32)
    if args.rows:
        rows = [int(r) for r in args.rows.split(',')]
        z = z[rows]
    out = DecodeDir(args.out).make()
    pos = decode_positions(model, z)
    amp = decode_amplitudes(model, z)
    write_pdb_positions(out.pdb_path, pos, amp[0])
    if not args.no_volumes:
        apix = args.apix or model.apix
        for i in range(len(z)):
            vol = decode_volumes(model, z[i:i + 1], args.box, args.apix)[0]
            write_mrc(out.volume_path(i), vol, apix)
    out.write_latents(z)
    logger.info('decoded %d latent points into %s', len(z), args.out)
