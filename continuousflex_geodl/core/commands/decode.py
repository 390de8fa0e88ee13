"""Structures at latent points: pseudo-atom PDB and rendered MRC volumes.

Reads an (M, K) .npy (or .txt) array of latent points and writes, in
--out, one MRC per row (``vol_000.mrc`` ... on the particles' pixel grid)
and a multi-model PDB ``structures.pdb`` of the deformed pseudo-atoms
(B-factor: amplitude; for a model trained with ``--learn-amplitudes`` the
occupancy column holds the learned amplitude in [0, 1], also written as
``amplitudes.npy`` (M, N), and the volumes are rendered with it).
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
    p.add_argument('--box', type=int, default=None,
                   help="volume box (default: the particles' box, also for a model trained "
                        "at a smaller --train-box; --box alone keeps the particles' field "
                        'of view)')
    p.add_argument('--apix', type=float, default=None,
                   help="voxel size A (default: the particles' field of view / box)")
    add_setting(p, '--device', RuntimeSettings, 'device')


def main(args):
    from ..artifacts import DecodeDir
    from ..inference import (decode_amplitudes, decode_learned_amplitudes, decode_positions,
                             decode_volumes, load_model)
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
    learned = decode_learned_amplitudes(model, z)
    # B-factor: amplitude of each model (rows differ when amplitudes depend on
    # z); occupancy: the learned amplitude in [0, 1] (1 without learn_amplitudes)
    write_pdb_positions(out.pdb_path, pos, amp, occupancies=learned)
    if learned is not None:
        out.write_amplitudes(learned)
    if not args.no_volumes:
        from ..artifacts import ModelDir
        from ..inference import volume_grid
        box, apix = volume_grid(model, args.box, args.apix,
                                ModelDir(args.model).read_config().get('particle_box'))
        for i in range(len(z)):
            vol = decode_volumes(model, z[i:i + 1], box, apix)[0]
            write_mrc(out.volume_path(i), vol, apix)
    out.write_latents(z)
    logger.info('decoded %d latent points into %s', len(z), args.out)
