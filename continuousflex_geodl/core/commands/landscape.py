"""Conformational landscape of latents: embedding, free energy, states, paths, subsets.

Works on per-particle latents (N, K) from any source: this project's model
(``continuousflex-geodl infer``), HEMNMA / DeepHEMNMA normal-mode amplitudes,
cryoDRGN z, ...  Latents are read from .npy (memory-mapped), .npz or text
(one particle per row).  States are numbered from 0 everywhere (files and
options); principal axes are numbered from 1 (PC1, PC2, ...).  Free
energies: dG = -kT ln(p / p_max) of a Gaussian kernel density estimate,
in kT by default (--units kcal/mol or kJ/mol with --temperature, K).

Sub-commands and the files they write
=====================================

Every sub-command also writes DIR/run.log (command line, version, settings,
then the progress; ``core.logs``).  The names below are those of
``core.artifacts`` (LandscapeDir, PathDir, SubsetDir, ApplyDir, DiagnosticsDir).

landscape analyze --latents Z.npy --out DIR [--embedding pca|umap|tsne]
        [--n-states auto|bic|K] [--method gmm|kmeans] [--prior MODEL_DIR|prior.npz]
        [--barrier 0.3] [--density-smoothing 2]
        [--model MODEL_DIR] [--latent-dG] [--units kT|kcal/mol|kJ/mol]
  DIR/embedding.npy            (N, 2) float32 2D embedding of every particle
                               ((N, 1) when K = 1)
  DIR/embedding_model.npz      the fitted mapping, reusable for new particles
                               (PCA: mean, components, explained_variance(_ratio);
                               UMAP/t-SNE: fit_latents, fit_coords, fit_index, k
                               for k-nearest-neighbour transfer)
  DIR/embedding_umap.joblib    (UMAP only) the umap.UMAP object (joblib pickle;
                               load only from trusted folders)
  DIR/pca.npy                  (N, min(K, 10)) float32 principal coordinates
  DIR/pca_model.npz            PCA of all axes (same keys as above)
  DIR/free_energy.npz          map on the embedding: x (nx,), y (ny,) grid centres;
                               dG, dG_std (ny, nx) in `units` (dG[j, i] at x[i], y[j];
                               NaN = no particle nearby); dG_kT, dG_std_kT; density
                               (per unit area); bandwidth; units; temperature_K;
                               kT (1 kT in units); n_particles; n_boot;
                               particle_dG (N,) per-particle dG in units,
                               particle_dG_kT; embedding_method
  DIR/labels.npy               (N,) int32 state of every particle
  DIR/states.json              method (map|gmm|kmeans|prior), selection
                               (user|bic|basins), n_states,
                               populations, population_std, population_ci95
                               ([[lo, hi], ...] 95 % intervals; default 'auto'
                               states are the basins of free_energy.npz's map and
                               each bootstrap replicate re-runs the finder),
                               counts, centres (S x K latent), bic {k: BIC},
                               barriers_kT (basins), barrier_z, bootstrap_found,
                               resolved (found in >= 90 % of replicates), notes
                               (plain statements: 'not resolved', one state),
                               basin_populations, bandwidth, component_state, n_fit, ...
  DIR/states_model.npz         to assign later particles: centres, populations, ...,
                               means/covariances/weights/component_state (mixture),
                               kmeans_centres, nodes/node_labels (basins),
                               cell_labels/grid_*/emb_* (map basins)
  DIR/state_centres.npy        (S, K) float32 latent point of each state
  DIR/state_centres_embedding.npy  (S, 2) float32
  DIR/latent_dG.npz            (with --latent-dG) dG (N,) of every particle directly
                               in latent space (KDE), dG_std (bootstrap, NaN
                               without --latent-bootstrap), units, temperature_K, kT
  DIR/landscape.png            free-energy map with numbered states + populations
  DIR/summary.json             settings, PCA explained variance, free-energy
                               convention, the states.json content, centre_dG,
                               files, seconds
  DIR/states/states.pdb        (with --model) multi-model PDB, model i = state i
  DIR/states/states_000.mrc .. (with --model) volume of each state centre

landscape path --latents Z.npy --out DIR --kind pca|density|ridgeline
        [--landscape ANALYZE_DIR] [--from-state i --to-state j] [--n-points M]
        [--pc 1] [--percentiles 5 95] [--knn 10] [--alpha 1]
        [--K 11 --omega 2 --M 1000] [--prior ...] [--model MODEL_DIR]
  Default states: the two whose centres are farthest apart.  pca: from the
  5th to the 95th percentile of PC`pc` (10 points); density: minimum-cost path
  through a kNN graph of the particles, edge cost length x exp(alpha dG)
  (20 points); ridgeline: cryoTWIN ridgeline between the mixture components of
  the two states (the prior with --prior, else the states' mixture); K + 1
  points (--n-points M sets K = M - 1).
  DIR/path_latents.npy         (M, K) float32 ordered latent points
  DIR/path_embedding.npy       (M, 2) float32 the same on the landscape map
  DIR/path.json                kind, from_state, to_state, start, end, n_points,
                               length (latent units), path_dG (dG on the map at
                               each point, units), settings and method details
  DIR/path.png                 map with the path, dG profile along it
  DIR/path.pdb                 (with --model) multi-model PDB along the path
  DIR/path_000.mrc ..          (with --model) volumes along the path

landscape subset --landscape ANALYZE_DIR --out DIR [--states 0 2]
        [--box XMIN XMAX YMIN YMAX] [--polygon "x1,y1 x2,y2 x3,y3 ..."]
        [--max-dG G] [--particles particles.star] [--one-based]
  Particles meeting all the criteria given (box/polygon in embedding units,
  G in the units of the landscape).
  DIR/subset_indices.txt       one index per line (0-based rows of the latents,
                               1-based with --one-based), '#' header line
  DIR/subset_indices.npy       (n,) int64, 0-based
  DIR/subset.json              n_selected, n_particles, criteria, landscape
  DIR/particles.star           (with --particles) the selected particles (RELION 3.1)

landscape apply --landscape ANALYZE_DIR --latents Z2.npy --out DIR
  New particles placed with the saved mappings (same embedding, states, map).
  DIR/embedding.npy, DIR/labels.npy (int32), DIR/particle_dG.npy (landscape
  units), DIR/apply.json (counts, populations)

landscape diagnostics --latents Z.npy --out DIR [--model MODEL_DIR]
        [--prior MODEL_DIR|prior.npz] [--compare Z2.npy]
  DIR/diagnostics.json         isometry (pearson, spearman, n_pairs; needs
                               --model), prior_fit (kl_q_p, kl_p_q in nats; needs a
                               prior: --prior, or the model's), agreement
                               (canonical_correlations, knn_overlap; needs --compare)

Examples::

    continuousflex-geodl landscape analyze --latents z.npy --out land --model model
    continuousflex-geodl landscape path --latents z.npy --landscape land --out p \\
        --kind density --from-state 0 --to-state 1 --model model
    continuousflex-geodl landscape subset --landscape land --out sub --states 2 \\
        --particles particles.star
"""
import logging
import os

from .. import logs
from ..settings import (LandscapeSettings, PathSettings, RuntimeSettings, add_setting,
                        add_settings)

logger = logging.getLogger(__name__)

L = LandscapeSettings


def _common(p, latents=True):
    if latents:
        p.add_argument('--latents', required=True,
                       help='(N, K) latents: .npy, .npz or text, one particle per row')
    p.add_argument('--out', required=True, help='output folder (created)')
    add_setting(p, '--seed', L, 'seed')


def _decoder_args(p):
    p.add_argument('--model', default=None,
                   help='model directory written by train: decode structures '
                        '(PDB + MRC) at the state centres / path points')
    p.add_argument('--no-volumes', action='store_true',
                   help='with --model, write only the PDB (no MRC volumes)')
    add_setting(p, '--device', RuntimeSettings, 'device',
                help="'cpu' or 'cuda' for decoding (default cpu)")


def _units_args(p):
    add_settings(p, L, 'units', 'temperature')


def _state_args(p):
    add_setting(p, '--n-states', L, 'n_states', choices=None,
                help="number of states: a number, 'auto' (free-energy basins; default) or "
                     "'bic' (Gaussian components chosen by BIC)")
    add_setting(p, '--method', L, 'method')
    p.add_argument('--prior', default=None,
                   help='use a trained GMM prior for the states: a model directory or an '
                        '.npz with means, covariances (or scales) and weights')
    add_settings(p, L, 'barrier', 'min_population', 'density_smoothing', 'max_states', 'max_fit')


def add_args(parser):
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True

    p = sub.add_parser('analyze', help='embedding, free-energy map and states')
    _common(p)
    add_setting(p, '--embedding', L, 'embedding')
    _state_args(p)
    add_settings(p, L, 'bootstrap', 'fe_bootstrap', 'bins')
    add_setting(p, '--bandwidth', L, 'bandwidth', choices=None)
    add_setting(p, '--kernel', L, 'kernel')
    p.add_argument('--latent-dG', action='store_true',
                   help='also compute each particle\'s dG directly in latent space '
                        '(latent_dG.npz)')
    add_setting(p, '--latent-bootstrap', L, 'latent_bootstrap')
    _units_args(p)
    _decoder_args(p)

    p = sub.add_parser('path', help='pathway between states as a series of latents '
                                    '(and structures)')
    _common(p)
    add_setting(p, '--kind', PathSettings, 'kind')
    p.add_argument('--landscape', default=None,
                   help='folder written by "landscape analyze" (reuses its states and map)')
    p.add_argument('--from-state', type=int, default=None, help='start state (0-based)')
    p.add_argument('--to-state', type=int, default=None, help='end state (0-based)')
    add_settings(p, PathSettings, 'n_points', 'pc')
    add_setting(p, '--percentiles', PathSettings, 'percentiles', type=float, nargs=2)
    add_settings(p, PathSettings, 'knn', 'alpha', 'max_nodes', 'K', 'omega', 'M')
    _state_args(p)
    _units_args(p)
    _decoder_args(p)

    p = sub.add_parser('subset', help='select particles by state, region or free energy')
    _common(p, latents=False)
    p.add_argument('--landscape', required=True, help='folder written by "landscape analyze"')
    p.add_argument('--states', type=int, nargs='+', default=None, help='states (0-based)')
    p.add_argument('--box', type=float, nargs=4, default=None,
                   metavar=('XMIN', 'XMAX', 'YMIN', 'YMAX'), help='box in the 2D embedding')
    p.add_argument('--polygon', default=None,
                   help='polygon in the 2D embedding: "x1,y1 x2,y2 x3,y3 ..."')
    p.add_argument('--max-dG', type=float, default=None,
                   help='keep particles with dG <= this (units of the landscape)')
    p.add_argument('--particles', default=None,
                   help='particle file (.star/.xmd) matching the latents: also write '
                        'particles.star of the subset')
    p.add_argument('--one-based', action='store_true',
                   help='write 1-based indices in subset_indices.txt')

    p = sub.add_parser('apply', help='place new particles on an existing landscape')
    _common(p)
    p.add_argument('--landscape', required=True, help='folder written by "landscape analyze"')

    p = sub.add_parser('diagnostics', help='isometry, prior fit (KL), agreement of two '
                                           'latent spaces')
    _common(p)
    p.add_argument('--model', default=None, help='model directory (isometry; its prior)')
    p.add_argument('--prior', default=None, help='prior: model directory or .npz')
    p.add_argument('--compare', default=None,
                   help='second latent file of the same particles (e.g. HEMNMA amplitudes)')
    add_setting(p, '--device', RuntimeSettings, 'device')


def _n_states(text):
    t = str(text).strip().lower()
    if t in ('auto', 'bic'):
        return t
    try:
        v = int(t)
    except ValueError:
        raise ValueError("--n-states must be a number, 'auto' or 'bic'; got '%s'." % text) \
            from None
    if v < 1:
        raise ValueError('--n-states must be at least 1.')
    return v


def _bandwidth(text):
    try:
        return float(text)
    except ValueError:
        return str(text)


def make_decoder(model_dir, device='cpu', volumes=True):
    """dict(decode_fn, volume_fn, apix, amplitudes, model) for a trained model
    (``core.inference.make_decoder``, imported only when a model is given)."""
    if not model_dir:
        return None
    try:
        from ..inference import make_decoder as _make_decoder
    except ImportError as exc:
        raise RuntimeError('Decoding structures needs continuousflex_geodl.core.inference, '
                           'which could not be imported (%s). Run without --model to get '
                           'latents only.' % exc) from None
    return _make_decoder(model_dir, device, volumes=volumes)


def _prior(args):
    if getattr(args, 'prior', None):
        from ..landscape.mixture import load_prior
        return load_prior(args.prior)
    return None


def main(args):
    from ..landscape import pipeline as P
    logs.start_run_log(args.out, args)
    action = args.action
    if action == 'analyze':
        z = P.load_latents(args.latents)
        P.analyze(z, args.out, embedding=args.embedding, n_states=_n_states(args.n_states),
                  method=args.method, prior=_prior(args), barrier=args.barrier,
                  min_population=args.min_population, max_states=args.max_states,
                  max_fit=args.max_fit, n_boot=args.bootstrap, fe_boot=args.fe_bootstrap,
                  bins=args.bins, bandwidth=_bandwidth(args.bandwidth), units=args.units,
                  temperature=args.temperature, seed=args.seed,
                  latent_dG=args.latent_dG, latent_boot=args.latent_bootstrap,
                  smooth=args.density_smoothing, kernel=args.kernel,
                  decoder=make_decoder(args.model, args.device, not args.no_volumes))
    elif action == 'path':
        z = P.load_latents(args.latents)
        if args.landscape and not os.path.isdir(args.landscape):
            raise FileNotFoundError("Landscape folder not found: '%s'" % args.landscape)
        P.compute_path(z, args.out, kind=args.kind, landscape=args.landscape,
                       from_state=args.from_state, to_state=args.to_state,
                       n_points=args.n_points, pc=args.pc, percentiles=args.percentiles,
                       knn=args.knn, alpha=args.alpha, max_nodes=args.max_nodes, K=args.K,
                       omega=args.omega, M=args.M, prior=_prior(args), seed=args.seed,
                       units=args.units, temperature=args.temperature,
                       decoder=make_decoder(args.model, args.device, not args.no_volumes),
                       method=args.method, n_states=_n_states(args.n_states),
                       barrier=args.barrier, min_population=args.min_population,
                       max_states=args.max_states, max_fit=args.max_fit,
                       smooth=args.density_smoothing)
    elif action == 'subset':
        if not os.path.isdir(args.landscape):
            raise FileNotFoundError("Landscape folder not found: '%s'" % args.landscape)
        P.make_subset(args.landscape, args.out, states=args.states, box=args.box,
                      polygon=args.polygon, max_dG=args.max_dG, particles=args.particles,
                      one_based=args.one_based)
    elif action == 'apply':
        if not os.path.isdir(args.landscape):
            raise FileNotFoundError("Landscape folder not found: '%s'" % args.landscape)
        P.apply_landscape(args.landscape, P.load_latents(args.latents), args.out)
    elif action == 'diagnostics':
        _diagnostics(args, P)
    return 0


def _diagnostics(args, P):
    import numpy as np
    from ..artifacts import DiagnosticsDir
    from ..landscape import diagnostics as D
    from ..landscape.compare import latent_agreement
    z = np.asarray(P.load_latents(args.latents), np.float64)
    out = {}
    dec = make_decoder(args.model, args.device, volumes=False) if args.model else None
    if dec is not None:
        iso = D.isometry_correlation(z, dec['decode_fn'], seed=args.seed)
        out['isometry'] = {k: iso[k] for k in ('pearson', 'spearman', 'n_pairs')}
    prior = _prior(args)
    if prior is None and args.model:
        from ..landscape.mixture import load_prior
        try:
            prior = load_prior(args.model)
        except ValueError as exc:
            out['prior_fit'] = dict(skipped=str(exc))
    if prior is not None:
        out['prior_fit'] = D.prior_kl(z, prior, seed=args.seed)
    if args.compare:
        z2 = np.asarray(P.load_latents(args.compare), np.float64)
        out['agreement'] = latent_agreement(z, z2, seed=args.seed)
    if not out:
        raise ValueError('Nothing to compute: give --model (isometry and prior fit), --prior '
                         '(prior fit) and/or --compare (agreement of two latent spaces).')
    DiagnosticsDir(args.out).make().write_info(out)
    for k, v in out.items():
        logger.info('%s: %s', k, {kk: vv for kk, vv in v.items()
                                  if not isinstance(vv, (list, np.ndarray))})
