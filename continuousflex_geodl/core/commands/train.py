"""Train the conformational model on particles with poses and CTF.

Learns an encoder (particle image -> latent z), a point-cloud decoder
(z -> pseudo-atom displacements of the reference) and a latent prior from
CTF-modulated projections of the deformed reference.  Writes the model
directory (config.json, reference.npz, weights.pt, history.json,
checkpoints/).  Example::

    continuousflex-geodl train --particles P.star --reference REF.pdb --out MODEL
"""
import os


def add_args(p):
    p.add_argument('--particles', required=True, help='particles (.star or .xmd) with poses and CTF')
    p.add_argument('--reference', required=True,
                   help='atomic model (.pdb/.cif), consensus map (.mrc) or reference cloud (.npz)')
    p.add_argument('--out', required=True, help='output model directory')
    p.add_argument('--zdim', type=int, default=4, help='latent dimension (default 4)')
    p.add_argument('--epochs', type=int, default=30, help='training epochs (default 30)')
    p.add_argument('--batch-size', type=int, default=32, help='global batch size (default 32)')
    p.add_argument('--lr', type=float, default=2e-3, help='learning rate (default 2e-3)')
    p.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    p.add_argument('--prior', default='gmm', choices=['gmm', 'gaussian'],
                   help="latent prior: 'gmm' (cryoTWIN trainable mixture, default) or "
                        "'gaussian' (VAE KL)")
    p.add_argument('--beta', type=float, default=1.0,
                   help='weight of the latent rate against the data term in nats (default 1)')
    p.add_argument('--n-atoms', default=None,
                   help='pseudo-atoms of the reference (default: sized for box and pixel '
                        'size; 0 or all: every atom of the model)')
    p.add_argument('--sigma', type=float, default=None, help='pseudo-atom width in A (default: auto)')
    p.add_argument('--refine-poses', action='store_true',
                   help='learn small per-particle rotation and shift corrections')
    p.add_argument('--nma-modes', type=int, default=0,
                   help='restrict displacements to this many elastic-network normal modes '
                        '(0: free-form point-network field, default)')
    p.add_argument('--modes', default=None,
                   help='normal modes of the reference (.npz with positions (N, 3) A and '
                        'modes (N, 3, M), e.g. ContinuousFlex NMA modes): displacements are '
                        'restricted to them (interpolated onto the pseudo-atoms)')
    p.add_argument('--learn-amplitudes', action='store_true',
                   help='also learn per-atom amplitude changes with the conformation')
    p.add_argument('--encoder-inputs', default=None,
                   help="'modes', 'image' or 'modes+image' (default modes+image)")
    p.add_argument('--loss-resolution', type=float, default=None,
                   help='highest resolution (A) used in the image loss (default: auto, '
                        'where the pseudo-atoms fall to 2%% of their amplitude; 0: Nyquist)')
    p.add_argument('--time-limit', type=float, default=None,
                   help='stop at the end of the epoch that would exceed this many minutes')
    p.add_argument('--resume', action='store_true', help='continue from the last checkpoint in --out')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    p.add_argument('--allow-cpu-fallback', action='store_true',
                   help='run on the CPU (with a warning) when --device cuda is asked for '
                        'and no GPU is usable; without it that is an error')
    p.add_argument('--no-ctf', action='store_true',
                   help='accept particles without CTF parameters (only for CTF-free '
                        'images, e.g. simulated without CTF)')
    p.add_argument('--w-knn', type=float, default=None, help='weight of the kNN distance term')
    p.add_argument('--w-sinkhorn', type=float, default=None, help='weight of the Sinkhorn term')


def main(args):
    from ..engine import default_settings, train
    from ..models.data import check_settings
    from ..models.reference import build_reference
    from ..particles import load_particles
    from ..runtime import resolve_device
    # fail fast, before reading anything: device and nonsensical settings
    device = resolve_device(args.device, allow_cpu_fallback=args.allow_cpu_fallback or None)
    settings = dict(zdim=args.zdim, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, prior=args.prior, beta=args.beta,
                    refine_poses=bool(args.refine_poses), threads=args.threads,
                    device='cpu' if device.type == 'cpu' else args.device,
                    loss_resolution=args.loss_resolution, time_limit=args.time_limit)
    if not args.resume:
        check_settings(dict(default_settings(), **settings))
    pset = load_particles(args.particles)
    if args.nma_modes:
        settings.update(decoder='nma', nma_modes=int(args.nma_modes))
    if args.learn_amplitudes:
        settings['dec_amplitudes'] = True
    if args.encoder_inputs:
        settings['encoder_inputs'] = args.encoder_inputs
    if args.w_knn is not None:
        settings['w_knn'] = args.w_knn
    if args.w_sinkhorn is not None:
        settings['w_sinkhorn'] = args.w_sinkhorn
    resuming = args.resume and os.path.exists(os.path.join(args.out, 'checkpoints', 'last.pt'))
    if resuming:
        ref = build_reference(os.path.join(args.out, 'reference.npz'))
    else:
        if args.reference.lower().endswith(('.mrc', '.map')) and os.path.exists(args.reference):
            from ..io.mrc import check_same_grid
            check_same_grid(args.reference, pset.box, pset.apix)
        ref = build_reference(args.reference, n_atoms=args.n_atoms, apix=pset.apix,
                              sigma=args.sigma, seed=args.seed)
    print('reference: %d pseudo-atoms, sigma %.2f A' % (len(ref.positions), ref.sigma),
          flush=True)
    modes = None
    if args.modes and not resuming:
        from ..models.nma import modes_on_cloud
        modes = modes_on_cloud(args.modes, ref.positions)
        settings.update(decoder='nma', nma_modes=int(modes.shape[-1]))
        print('decoder basis: %d normal modes from %s' % (modes.shape[-1], args.modes),
              flush=True)
    train(pset, (ref.positions, ref.amplitudes, ref.sigma), args.out, resume=args.resume,
          dec_modes=modes, require_ctf=not args.no_ctf, **settings)
    print('model written to %s' % args.out)
