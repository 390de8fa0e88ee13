"""Latent coordinates of a particle set with a trained model.

Encodes every particle (in chunks, streamed from the image stack) and writes
an (N, K) float32 .npy array in particle order.  Example::

    continuousflex-geodl infer --model MODEL --particles P.star --out z.npy
"""


def add_args(p):
    p.add_argument('--model', required=True, help='model directory written by train')
    p.add_argument('--particles', required=True, help='particles (.star or .xmd) with poses and CTF')
    p.add_argument('--out', required=True, help='output .npy file (N, K)')
    p.add_argument('--batch-size', type=int, default=256, help='particles per chunk (default 256)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    p.add_argument('--threads', type=int, default=None, help='CPU threads')


def main(args):
    from .. import runtime
    from ..inference import infer_latents, load_model
    from ..particles import load_particles
    runtime.setup(args.threads)
    if not args.out.endswith('.npy'):
        raise ValueError("--out must be a .npy file (got '%s')." % args.out)
    model = load_model(args.model, device=args.device)
    pset = load_particles(args.particles)
    z = infer_latents(model, pset, batch_size=args.batch_size, out=args.out)
    print('wrote %s: %d particles x %d latent dimensions' % (args.out, z.shape[0], z.shape[1]))
