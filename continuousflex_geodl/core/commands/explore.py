"""Interactive landscape explorer: click, lasso, draw paths on the free-energy map.

Opens a window with the free-energy map of a 2D view of the latents and every
particle on it (matplotlib widgets; needs a display).  Mode *point*: a click
decodes the structure there (projections in the side panel; PDB + MRC in
OUT/points, opened in ChimeraX when ``chimerax`` is on PATH).  Modes
*lasso*, *polygon*, *box*: select particles; "Save selection" (key w) writes
OUT/subsets/subset_NNN (0-based indices, subset.json, and with --particles the
subset as RELION .star).  Mode *path*: click vertices, then "Make path" (key
Enter) writes OUT/paths/path_NNN (latents, PDB, MRC series, GIF animation,
ChimeraX script).  Axes: the landscape's embedding, PCA, UMAP or two latent
dimensions; colour by free energy, state or any per-particle value.
Details: ``core/landscape/explore.py``.  Example::

    continuousflex-geodl explore --model MODEL --latents z.npy --landscape LAND \\
        --particles particles.star --out EXPLORE
"""
import logging

from .. import logs
from ..settings import ExploreSettings, PathSettings, RuntimeSettings, add_setting

logger = logging.getLogger(__name__)


def add_args(p):
    p.add_argument('--model', default=None,
                   help='model directory written by train (decodes clicked points and '
                        'paths; without it the explorer selects particles only)')
    p.add_argument('--latents', required=True, help='(N, K) latents, .npy or text')
    p.add_argument('--landscape', default=None,
                   help='folder written by "landscape analyze" from the same latents '
                        '(its map, states and per-particle dG)')
    p.add_argument('--particles', default=None,
                   help='particle file (.star/.xmd) of the same rows: subsets are also '
                        'written as particles.star')
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--axes', default=None,
                   help="landscape (default with --landscape), pca (default otherwise), "
                        "umap, tsne, or two latent dimensions numbered from 1, e.g. '1,3'")
    p.add_argument('--colour', default=None,
                   help="initial colouring: 'free energy' (default), 'state' or the name "
                        "of an --attribute")
    p.add_argument('--attribute', action='append', default=None, metavar='NAME=FILE.npy',
                   help='per-particle values to colour by: NAME=FILE.npy (or .txt; '
                        'NAME=FILE.npy:C for column C of a 2D array), or the name of a '
                        'numeric column of the --particles .star (repeatable)')
    add_setting(p, '--path-points', PathSettings, 'n_points',
                help='structures decoded along a path (unset: 10 along a drawn path, 20 '
                     'for a density path)')
    add_setting(p, '--path-kind', ExploreSettings, 'path_kind')
    add_setting(p, '--inverse', ExploreSettings, 'inverse')
    p.add_argument('--no-chimerax', action='store_true',
                   help='do not open decoded structures in ChimeraX')
    p.add_argument('--screenshot', default=None,
                   help='write the window as PNG and exit (no display needed)')
    add_setting(p, '--device', RuntimeSettings, 'device')


def main(args):
    import os
    from ..landscape.explore import Explorer, read_attribute
    os.makedirs(args.out, exist_ok=True)
    logs.start_run_log(args.out, args)
    from ..io.latents import load_latents
    z = load_latents(args.latents, min_rows=3)
    attributes = dict(read_attribute(a, len(z), args.particles) for a in args.attribute or [])
    ex = Explorer(z, model=args.model, landscape=args.landscape, particles=args.particles,
                  out=args.out, axes=args.axes, colour=args.colour, attributes=attributes,
                  device=args.device, chimerax=False if args.no_chimerax else None,
                  path_points=args.path_points, path_kind=args.path_kind,
                  inverse=args.inverse)
    if args.screenshot:
        from ..landscape.plots import new_figure, save_figure
        ex.build(new_figure(14, 7.5))
        save_figure(ex.figure, args.screenshot)
        logger.info('explore: screenshot written to %s', args.screenshot)
        return 0
    import matplotlib
    if matplotlib.get_backend().lower() == 'agg' and not os.environ.get('DISPLAY'):
        raise RuntimeError('The explorer needs a display (no DISPLAY is set); use '
                           '--screenshot FILE.png to draw it without one.')
    logger.info('explore: writing into %s (close the window to finish)', args.out)
    ex.show()
    logger.info('explore: %d points, %d subsets, %d paths written', len(ex.points),
                len(ex.subsets), len(ex.paths))
    return 0
