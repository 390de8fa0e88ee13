"""Interactive landscape explorer (matplotlib widgets; Scipion-free).

``Explorer(latents, model=..., landscape=..., particles=..., out=...)`` shows
the free-energy map of a 2D view of the latents with every particle on it,
and turns pointing into files:

* **click** (mode *point*): the latent point under the mouse is decoded; its
  three orthogonal projections appear in the side panel, the pseudo-atom PDB
  and the map are written to ``OUT/points/point_NNN.pdb`` /
  ``point_NNN_000.mrc`` (+ ``point_NNN.json``: map coordinates, latent,
  nearest particle) and both open in ChimeraX when ``chimerax`` is on PATH;
* **lasso / polygon / box**: the particles inside (all of them, not only the
  drawn subsample) are selected; *Save selection* (key ``w``) writes
  ``OUT/subsets/subset_NNN/`` (``core.artifacts.SubsetDir``: 0-based indices
  as text and .npy, subset.json, and with ``particles`` the subset as a RELION
  .star) and calls ``on_subset(info)`` (the Scipion viewer registers a
  SetOfParticles subset from it);
* **path**: clicks add vertices (right click removes the last one); *Make
  path* (key ``enter``) decodes the path into ``OUT/paths/path_NNN/``
  (``core.artifacts.PathDir``: path_latents.npy, path_embedding.npy,
  path.json, path.png, path.pdb, path_000.mrc ..., plus the animation
  path.gif and the ChimeraX script path.cxc of ``core.animate``).

Axes (``axes``): ``'landscape'`` (the 2D embedding of a ``landscape
analyze`` folder, with its free-energy map, states and per-particle dG),
``'pca'``, ``'umap'``, ``'tsne'`` (fitted here when the landscape is not
already that embedding) or two latent dimensions ``(i, j)`` (0-based; the
command line and the GUI number them from 1: ``z1-z2``).  Without a landscape
the map is ``free_energy_map`` of the view (dG in kT, no bootstrap).  Colour:
free energy, state (with a landscape) or any per-particle array given in
``attributes``.

From the map to a latent point (``to_latent``) -- stated in the side panel:

* PCA views: the inverse of the linear map, ``z = mean + x PC1 + y PC2``;
  the other principal coordinates are those of the mean (0).  With K = 2
  this is exact: clicking on a particle gives back its latent.
* UMAP / t-SNE views: the coordinate-wise median of the latents of the
  ``k_neighbours`` (10) particles nearest to the click on the map (these
  maps have no inverse).
* two latent dimensions: those two coordinates are the click's; the others
  are the median of the ``k_neighbours`` particles nearest on the map.
* ``inverse='neighbours'`` uses the median of the nearest particles for PCA
  views too.

Decoding, subsets, paths and animations are those of the rest of the core
(``inference.make_decoder``, ``landscape.series.decode_series``,
``landscape.subsets``, ``landscape.paths``, ``core.animate``).  The explorer
needs a figure whose canvas is final: ``Explorer.build(figure)`` (e.g. a Tk
canvas in the Scipion viewer, an Agg canvas in tests), or ``show()`` with
pyplot.
"""
import json
import logging
import os
import shutil
import subprocess

import numpy as np

from ..artifacts import LandscapeDir, PathDir, SubsetDir, json_default
from ..settings import PATH_POINTS, ExploreInverse, ExplorePathKind
from .density import free_energy_map

logger = logging.getLogger(__name__)

MODES = ('point', 'lasso', 'polygon', 'box', 'path')
MODE_HELP = {'point': 'click: decode the structure there',
             'lasso': 'drag: select the particles inside',
             'polygon': 'click vertices, close on the first one; Esc restarts',
             'box': 'drag a rectangle: select the particles inside',
             'path': 'click vertices (right click: undo); Enter or "Make path"'}
COLOUR_DG, COLOUR_STATE = 'free energy', 'state'
EMBEDDINGS = ('pca', 'umap', 'tsne')


# ------------------------------------------------------------------ axes

def parse_axes(text):
    """'landscape', 'pca', 'umap', 'tsne' or two latent dimensions numbered
    from 1 ('1,2', 'z1-z3', '2 4') -> the name, or a (i, j) 0-based tuple."""
    if isinstance(text, (tuple, list)):
        i, j = (int(v) for v in text)
        return (i, j)
    t = str(text).strip().lower()
    if t in ('landscape',) + EMBEDDINGS:
        return t
    toks = t.replace('z', ' ').replace(',', ' ').replace('-', ' ').split()
    try:
        dims = [int(v) for v in toks]
    except ValueError:
        dims = []
    if len(dims) != 2 or min(dims) < 1 or dims[0] == dims[1]:
        raise ValueError("Axes must be landscape, pca, umap, tsne or two different latent "
                         "dimensions numbered from 1, e.g. '1,2'; got '%s'." % text)
    return (dims[0] - 1, dims[1] - 1)


def axes_name(axes):
    """Display name of axes: 'landscape', 'PCA', 'UMAP', 't-SNE' or 'z1-z2'."""
    if isinstance(axes, tuple):
        return 'z%d-z%d' % (axes[0] + 1, axes[1] + 1)
    return {'pca': 'PCA', 'umap': 'UMAP', 'tsne': 't-SNE'}.get(axes, axes)


class View:
    """One 2D view of the latents: coordinates ``y`` (N, 2) of every
    particle, the mapping ``forward`` (latents -> map), how a map point goes
    back to a latent (``inverse`` 'pca' or 'neighbours'), the free-energy
    map ``fe`` and each particle's dG (``particle_dG`` in ``units``)."""

    def __init__(self, axes, y, forward, inverse, labels, fe, particle_dG, units,
                 embedding=None, dims=None, state_points=None):
        self.axes = axes
        self.y = np.asarray(y, np.float64)
        self.forward = forward
        self.inverse = inverse
        self.labels = labels
        self.fe = fe
        self.particle_dG = np.asarray(particle_dG, np.float64)
        self.units = units
        self.embedding = embedding
        self.dims = dims
        self.state_points = state_points
        self._tree = None

    def tree(self):
        if self._tree is None:
            from scipy.spatial import cKDTree
            self._tree = cKDTree(self.y)
        return self._tree


# ------------------------------------------------------------------ explorer

class Explorer:
    """The explorer's data and actions; ``build(figure)`` adds the widgets.

    ``latents`` (N, K) array or file; ``model`` a model folder (decoding;
    optional: without it clicks and paths give latents only); ``landscape``
    a ``landscape analyze`` folder of the same latents; ``particles`` the
    particle file of the same rows (subsets are also written as .star);
    ``out`` the output folder; ``attributes`` {name: (N,) array} to colour by;
    ``on_subset`` / ``on_point`` / ``on_path`` callbacks receiving the info
    dict of what was written; ``chimerax`` None (look for ``chimerax`` on
    PATH), False (never open) or the program's path.  ``path_kind`` 'drawn' or
    'density', ``inverse`` 'auto' or 'neighbours' (``settings.ExploreSettings``);
    ``path_points`` points along a path (None: ``settings.PATH_POINTS`` of the
    kind, 10 drawn, 20 density, as ``landscape path``).
    """

    def __init__(self, latents, model=None, landscape=None, particles=None, out='explore',
                 axes=None, colour=None, attributes=None, on_subset=None, on_point=None,
                 on_path=None, device='cpu', chimerax=None, path_points=None,
                 path_kind='drawn', inverse='auto', k_neighbours=10, max_points=20000,
                 first_state=0, seed=0):
        from ..io.latents import load_latents
        z = load_latents(latents, min_rows=3) if isinstance(latents, (str, os.PathLike)) \
            else np.asarray(latents)
        if z.ndim != 2 or z.shape[1] < 2:
            raise ValueError('The explorer needs (N, K) latents with K >= 2; got shape %s.'
                             % (z.shape,))
        self.z = np.asarray(z, np.float64)
        self.n, self.k = self.z.shape
        self.model = os.fspath(model) if model else None
        self.landscape = LandscapeDir(landscape).require() if landscape else None
        self.particles = particles
        self.out = os.fspath(out)
        self.device = device
        self.chimerax = chimerax
        self.path_kind = ExplorePathKind.parse(path_kind).value
        self.path_points = int(path_points or PATH_POINTS[self.path_kind])
        self.inverse = ExploreInverse.parse(inverse).value
        self.k_neighbours = int(k_neighbours)
        self.max_points = int(max_points)
        self.first_state = int(first_state)
        self.seed = int(seed)
        self.on_subset, self.on_point, self.on_path = on_subset, on_point, on_path
        self.attributes = {}
        for name, values in (attributes or {}).items():
            v = np.asarray(values)
            if v.ndim != 1 or len(v) != self.n:
                raise ValueError("Attribute '%s' must have one value per particle (%d); got "
                                 "shape %s." % (name, self.n, v.shape))
            self.attributes[str(name)] = v
        self.labels = None
        if self.landscape is not None and os.path.exists(self.landscape.labels_path):
            self.labels = self.landscape.labels()
            if len(self.labels) != self.n:
                raise ValueError('The landscape %s has %d particles but the latents %d: they '
                                 'do not correspond.' % (self.landscape.path,
                                                         len(self.labels), self.n))
        self._views = {}
        self._decoder = None
        self.axes = parse_axes(axes or ('landscape' if self.landscape else 'pca'))
        self.view = self.get_view(self.axes)
        self.colour = colour or COLOUR_DG
        if self.colour not in self.colour_choices():
            raise ValueError("Cannot colour by '%s': choose one of %s."
                             % (self.colour, ', '.join(self.colour_choices())))
        self.mode = 'point'
        self.selection = None          # boolean mask (N,) of the current selection
        self.selection_info = None     # how it was drawn
        self.path_vertices = []        # map points of the path being drawn
        self.points, self.subsets, self.paths = [], [], []
        self.last_volume = None
        self.figure = None

    # ------------------------------------------------------------ views
    def axes_choices(self):
        """Axes offered in the GUI (names for ``set_axes``)."""
        out = []
        lm = self.landscape.method() if self.landscape is not None else None
        if lm:
            out.append('landscape')
        for m in EMBEDDINGS:
            if m == lm:
                continue
            if m == 'umap':
                try:
                    import umap  # noqa: F401
                except ImportError:
                    continue
            if m == 'tsne':
                continue  # slow on large sets; available with axes='tsne'
            out.append(m)
        dims = [(0, 1)] + ([(0, 2), (1, 2)] if self.k >= 3 else [])
        if isinstance(self.axes, tuple) and self.axes not in dims:
            dims.append(self.axes)
        if self.axes not in out and not isinstance(self.axes, tuple):
            out.append(self.axes)
        return out + dims

    def get_view(self, axes):
        """The View of ``axes`` (computed once; see the module docstring)."""
        axes = parse_axes(axes)
        if axes in self._views:
            return self._views[axes]
        land = self.landscape
        lm = land.method() if land is not None else None
        if axes == 'landscape' or (land is not None and axes == lm):
            if land is None:
                raise ValueError("Axes 'landscape' need a landscape folder.")
            emb = land.embedding_model()
            y = np.asarray(land.embedding(), np.float64)
            if emb.dim != self.k or len(y) != self.n or y.ndim != 2 or y.shape[1] != 2:
                raise ValueError('The landscape %s (%d particles, %d-D latents, %s map) does '
                                 'not match these latents (%d particles, %d-D).'
                                 % (land.path, len(y), emb.dim,
                                    '2D' if y.ndim == 2 and y.shape[1] == 2 else '1D',
                                    self.n, self.k))
            dG, units = land.particle_dG()
            view = View(axes, y, emb.transform, 'pca' if emb.method == 'pca' else 'neighbours',
                        _axis_labels(emb.method), land.free_energy(), dG, units,
                        embedding=emb, state_points=land.state_points())
        elif isinstance(axes, tuple):
            i, j = axes
            if not (0 <= i < self.k and 0 <= j < self.k):
                raise ValueError('Latent dimensions %d and %d do not exist: the latents have '
                                 '%d (numbered from 1).' % (i + 1, j + 1, self.k))
            y = self.z[:, [i, j]]
            view = self._computed_view(axes, y, lambda zz: np.atleast_2d(zz)[:, [i, j]],
                                       'neighbours', ('z%d' % (i + 1), 'z%d' % (j + 1)),
                                       dims=(i, j))
        else:
            from .embedding import fit_embedding, fit_pca
            if axes == 'pca':
                emb = fit_pca(self.z, 2)
                y = emb.transform(self.z)
            else:
                emb, y = fit_embedding(self.z, axes, 2, seed=self.seed)
            view = self._computed_view(axes, y, emb.transform,
                                       'pca' if emb.method == 'pca' else 'neighbours',
                                       _axis_labels(emb.method), embedding=emb)
        if self.inverse == 'neighbours':
            view.inverse = 'neighbours'
        if view.state_points is None and self.landscape is not None:
            try:
                view.state_points = view.forward(self.landscape.state_centres())
            except (FileNotFoundError, ValueError):
                view.state_points = None
        self._views[axes] = view
        return view

    def _computed_view(self, axes, y, forward, inverse, labels, embedding=None, dims=None):
        fe = free_energy_map(y, n_boot=0, seed=self.seed)
        return View(axes, y, forward, inverse, labels, fe, fe.at(y), 'kT',
                    embedding=embedding, dims=dims)

    def to_latent(self, xy):
        """Latent points (M, K) of map points ``xy`` (M, 2) in the current view
        (the rule is in the module docstring)."""
        v = self.view
        xy = np.atleast_2d(np.asarray(xy, np.float64))
        if v.inverse == 'pca':
            emb = v.embedding
            return emb.mean[None] + xy @ np.asarray(emb.components)[:2]
        k = int(min(self.k_neighbours, self.n))
        _, idx = v.tree().query(xy, k=k)
        idx = np.asarray(idx).reshape(len(xy), -1)
        out = np.median(self.z[idx], axis=1)
        if v.dims is not None:
            out[:, list(v.dims)] = xy
        return out

    def inverse_description(self):
        v = self.view
        if v.inverse == 'pca':
            return 'latent = mean + x PC1 + y PC2 (other PCs at the mean)'
        if v.dims is not None:
            return ('z%d, z%d = the click; other dims: median of the %d nearest particles'
                    % (v.dims[0] + 1, v.dims[1] + 1, self.k_neighbours))
        return 'latent = median of the %d particles nearest on the map' % self.k_neighbours

    # ------------------------------------------------------------ colours
    def colour_choices(self):
        out = [COLOUR_DG]
        if self.labels is not None:
            out.append(COLOUR_STATE)
        return out + list(self.attributes)

    def colour_values(self, name=None):
        """(values (N,), label, categorical) of a colouring."""
        name = name or self.colour
        if name == COLOUR_DG:
            return self.view.particle_dG, 'ΔG (%s)' % self.view.units, False
        if name == COLOUR_STATE:
            if self.labels is None:
                raise ValueError('Colouring by state needs a landscape folder.')
            return self.labels + self.first_state, 'state', True
        if name not in self.attributes:
            raise ValueError("Unknown colouring '%s': choose one of %s."
                             % (name, ', '.join(self.colour_choices())))
        v = self.attributes[name]
        cat = v.dtype.kind in 'iub' and len(np.unique(v)) <= 20
        return v, name, cat

    # ------------------------------------------------------------ decoding
    def decoder(self):
        """dict(decode_fn, volume_fn, apix, amplitudes, amplitude_fn, model) of
        the model (``inference.make_decoder``), loaded on first use; None
        without a model."""
        if self.model is None:
            return None
        if self._decoder is None:
            from ..inference import make_decoder
            self._decoder = make_decoder(self.model, self.device, volumes=True)
            m = self._decoder['model']
            if m.zdim != self.k:
                raise ValueError('The model has %d latent dimensions but the latents %d: '
                                 'use the latents inferred with this model.' % (m.zdim, self.k))
        return self._decoder

    def decode_point(self, xy):
        """Decode the latent under map point ``xy``; write its PDB/MRC/JSON into
        OUT/points; returns the info dict (also passed to ``on_point``)."""
        from .series import decode_series
        xy = np.asarray(xy, np.float64).reshape(2)
        zq = self.to_latent(xy[None])[0]
        folder = os.path.join(self.out, 'points')
        os.makedirs(folder, exist_ok=True)
        name = 'point_%03d' % (len(self.points) + 1)
        d, nearest = self.view.tree().query(xy)
        info = dict(name=name, axes=axes_name(self.view.axes), map_point=xy.tolist(),
                    latent=zq.tolist(), inverse=self.inverse_description(),
                    nearest_particle=int(nearest), nearest_distance=float(d),
                    dG=_finite(self.view.fe.at(xy[None])[0] * _scale(self.view)),
                    units=self.view.units, pdb=None, mrc=None, chimerax=False)
        dec = self.decoder()
        self.last_volume = None
        if dec is not None:
            res = decode_series(zq[None], dec['decode_fn'], folder, name,
                                volume_fn=dec['volume_fn'], amplitudes=_amplitudes(dec),
                                apix=dec['apix'])
            info['pdb'], info['mrc'] = res['pdb'], res['mrc'][0] if res['mrc'] else None
            if info['mrc']:
                from ..io.mrc import read_mrc
                self.last_volume = read_mrc(info['mrc'])[0]
            info['chimerax'] = self.open_in_chimerax([f for f in (info['mrc'], info['pdb'])
                                                      if f])
        _write_json(os.path.join(folder, name + '.json'), info)
        self.points.append(info)
        logger.info('explore: %s at %s -> latent %s', name, np.round(xy, 4).tolist(),
                    np.round(zq, 4).tolist())
        self._draw_point(info)
        if self.on_point is not None:
            self.on_point(info)
        return info

    def chimerax_program(self):
        if self.chimerax is False:
            return None
        if self.chimerax:
            return self.chimerax if os.path.exists(str(self.chimerax)) else None
        return shutil.which('chimerax') or shutil.which('ChimeraX')

    def open_in_chimerax(self, files):
        """Open files in ChimeraX (in the background) when it is installed."""
        prog = self.chimerax_program()
        if not prog or not files:
            return False
        try:
            subprocess.Popen([prog] + list(files), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            logger.warning('explore: could not start ChimeraX (%s)', exc)
            return False
        return True

    # ------------------------------------------------------------ selections
    def select_vertices(self, vertices, kind='lasso'):
        """Select the particles inside a polygon of map points (lasso or
        polygon; ``subsets.select_polygon``, boundary included)."""
        from .subsets import select_polygon
        v = np.asarray(vertices, np.float64).reshape(-1, 2)
        if len(v) < 3:
            return self._set_selection(None, None)
        mask = select_polygon(self.view.y, v)
        return self._set_selection(mask, dict(kind=kind, vertices=v.tolist()))

    def select_rectangle(self, x0, x1, y0, y1):
        """Select the particles inside an axis-aligned box of the map."""
        from .subsets import select_box
        lo = [min(x0, x1), min(y0, y1)]
        hi = [max(x0, x1), max(y0, y1)]
        mask = select_box(self.view.y, lo, hi)
        return self._set_selection(mask, dict(kind='box', box=[lo[0], hi[0], lo[1], hi[1]]))

    def selected_indices(self):
        """0-based rows of the current selection (empty when none)."""
        if self.selection is None:
            return np.zeros(0, np.int64)
        return np.nonzero(self.selection)[0]

    def _set_selection(self, mask, info):
        self.selection, self.selection_info = mask, info
        self._draw_selection()
        if mask is not None:
            self._status('%d of %d particles selected (%s): "Save selection" or key w '
                         'writes them' % (mask.sum(), self.n, info['kind']))
        return self.selected_indices()

    def save_selection(self):
        """Write the current selection into OUT/subsets/subset_NNN (SubsetDir;
        with ``particles`` also particles.star) and call ``on_subset``."""
        from . import subsets as S
        idx = self.selected_indices()
        if not len(idx):
            raise ValueError('Nothing is selected: draw a lasso, polygon or box around '
                             'particles first.')
        name = 'subset_%03d' % (len(self.subsets) + 1)
        sub = SubsetDir(os.path.join(self.out, 'subsets', name)).make()
        crit = '%s on the %s map' % (self.selection_info['kind'], axes_name(self.view.axes))
        S.write_indices(sub.indices_txt_path, idx, header=crit)
        sub.write_indices(idx)
        info = dict(name=name, n_selected=int(len(idx)), n_particles=int(self.n),
                    criteria=[crit], selection=self.selection_info,
                    axes=axes_name(self.view.axes),
                    landscape=self.landscape.path if self.landscape is not None else None,
                    folder=sub.path, indices_txt=sub.indices_txt_path)
        if self.particles:
            S.export_star(self.particles, idx, sub.particles_path)
            info['particles_star'] = sub.particles_path
        sub.write_info(info)
        info['indices'] = idx
        self.subsets.append(info)
        logger.info('explore: %s: %d of %d particles', name, len(idx), self.n)
        self._status('%s written: %d particles (%s)' % (name, len(idx), sub.path))
        if self.on_subset is not None:
            self.on_subset(info)
        return info

    # ------------------------------------------------------------ paths
    def add_path_vertex(self, xy):
        self.path_vertices.append([float(xy[0]), float(xy[1])])
        self._draw_path_vertices()

    def undo_path_vertex(self):
        if self.path_vertices:
            self.path_vertices.pop()
        self._draw_path_vertices()

    def make_path(self, vertices=None):
        """Decode a path through map points (default: the clicked vertices)
        into OUT/paths/path_NNN; returns its info dict (also to ``on_path``).

        ``path_kind`` 'drawn': ``path_points`` points evenly spaced along the
        drawn polyline on the map (``paths.resample_polyline``), each taken
        back to a latent with ``to_latent``; 'density': the minimum free-energy
        path through the particles (``paths.density_path``) between the
        latents of the first and last vertices.
        """
        from .paths import density_path, resample_polyline
        from .plots import new_figure, plot_free_energy, save_figure
        verts = np.asarray(self.path_vertices if vertices is None else vertices,
                           np.float64).reshape(-1, 2)
        if len(verts) < 2:
            raise ValueError('A path needs at least two points: click them on the map in '
                             'path mode first.')
        if self.path_kind == 'drawn':
            lat = self.to_latent(resample_polyline(verts, self.path_points))
        else:
            ends = self.to_latent(verts[[0, -1]])
            lat = density_path(self.z, ends[0], ends[1], n_points=self.path_points,
                               seed=self.seed).latents
        lat = np.asarray(lat, np.float32)
        name = 'path_%03d' % (len(self.paths) + 1)
        pdir = PathDir(os.path.join(self.out, 'paths', name)).make()
        pdir.write_latents(lat)
        y = self.view.forward(lat)
        pdir.write_embedding(y)
        dG = self.view.fe.at(y) * _scale(self.view)
        info = dict(name=name, kind=self.path_kind, n_points=int(len(lat)),
                    vertices=verts.tolist(), axes=axes_name(self.view.axes),
                    inverse=self.inverse_description(), units=self.view.units,
                    path_dG=[_finite(v) for v in dG],
                    length=float(np.linalg.norm(np.diff(lat, axis=0), axis=1).sum()),
                    folder=pdir.path, files={})
        dec = self.decoder()
        if dec is not None:
            from ..animate import write_chimerax_script, write_projection_gif
            from .series import decode_series
            res = decode_series(lat, dec['decode_fn'], pdir.path, pdir.STRUCTURES,
                                volume_fn=dec['volume_fn'], amplitudes=_amplitudes(dec),
                                apix=dec['apix'])
            m = dec['model']
            gif = os.path.join(pdir.path, 'path.gif')
            frames = write_projection_gif(gif, res['positions'], res['amplitudes'],
                                          float(m.sigma.item()), int(m.box), float(m.apix))
            cxc = write_chimerax_script(os.path.join(pdir.path, 'path.cxc'), res['mrc'])
            info['files'] = dict(pdb=res['pdb'], mrc=res['mrc'], gif=gif, gif_frames=frames,
                                 cxc=cxc)
            info['chimerax'] = self.open_in_chimerax([cxc]) if res['mrc'] else False
        fig = new_figure(6.5, 5.2)
        plot_free_energy(fig.add_subplot(1, 1, 1), self.view.fe, units=self.view.units,
                         temperature=_temperature(self.view),
                         paths=[(name, y)], axis_labels=self.view.labels)
        save_figure(fig, pdir.figure_path)
        pdir.write_info(info)
        self.paths.append(info)
        self.path_vertices = []
        logger.info('explore: %s with %d points in %s', name, len(lat), pdir.path)
        self._draw_path(y, name)
        self._status('%s written (%d structures): %s' % (name, len(lat), pdir.path))
        if self.on_path is not None:
            self.on_path(info)
        return info

    # ================================================================ GUI
    def build(self, figure):
        """Draw the explorer on ``figure`` (its canvas must be the final one:
        Tk in the GUI, Agg in tests) and connect the widgets; returns figure."""
        from matplotlib.widgets import Button, RadioButtons
        self.figure = fig = figure
        fig.clf()
        self.ax = fig.add_axes([0.05, 0.08, 0.47, 0.84])
        self.cax = fig.add_axes([0.525, 0.08, 0.01, 0.84])
        self.proj_axes = [fig.add_axes([0.585 + 0.135 * i, 0.64, 0.125, 0.26])
                          for i in range(3)]
        self.info_ax = fig.add_axes([0.585, 0.40, 0.4, 0.2])
        self.info_ax.set_axis_off()
        self._info_text = self.info_ax.text(0, 1, '', va='top', ha='left', fontsize=8,
                                            family='monospace', wrap=True,
                                            transform=self.info_ax.transAxes)
        self._status_text = fig.text(0.05, 0.015, '', fontsize=8, color='0.2', wrap=True)
        w = {}
        ax_mode = fig.add_axes([0.585, 0.05, 0.11, 0.3])
        ax_mode.set_title('mode', fontsize=8)
        w['mode'] = RadioButtons(ax_mode, MODES, active=MODES.index(self.mode))
        w['mode'].on_clicked(self.set_mode)
        ax_col = fig.add_axes([0.705, 0.05, 0.13, 0.3])
        ax_col.set_title('colour by', fontsize=8)
        cols = self.colour_choices()
        w['colour'] = RadioButtons(ax_col, cols, active=cols.index(self.colour))
        w['colour'].on_clicked(self.set_colour)
        names = [axes_name(a) for a in self.axes_choices()]
        ax_axes = fig.add_axes([0.845, 0.17, 0.14, 0.18])
        ax_axes.set_title('axes', fontsize=8)
        w['axes'] = RadioButtons(ax_axes, names, active=names.index(axes_name(self.axes)))
        w['axes'].on_clicked(lambda label: self.set_axes(
            self.axes_choices()[names.index(label)]))
        for b, (label, func, y0) in dict(
                save=('Save selection', lambda e: self._gui(self.save_selection), 0.11),
                path=('Make path', lambda e: self._gui(self.make_path), 0.06),
                clear=('Clear', lambda e: self.clear(), 0.01)).items():
            w[b] = Button(fig.add_axes([0.845, y0, 0.14, 0.04]), label)
            w[b].on_clicked(func)
        for r in (w['mode'], w['colour'], w['axes']):
            for t in r.labels:
                t.set_fontsize(8)
        self.widgets = w
        self._cids = [fig.canvas.mpl_connect('button_press_event', self._on_press),
                      fig.canvas.mpl_connect('key_press_event', self._on_key)]
        self._draw_map()
        self._show_projections()
        return fig

    def show(self):
        """Open the explorer in a pyplot window (standalone use); blocks until
        it is closed."""
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(14, 7.5))
        try:
            fig.canvas.manager.set_window_title('continuousflex_geodl explorer')
        except AttributeError:
            pass
        self.build(fig)
        plt.show()

    def _gui(self, func):
        """Run an action from a button: errors go to the status line."""
        try:
            return func()
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            self._status(str(exc), error=True)
            return None

    # ------------------------------------------------------------ state
    def set_mode(self, mode):
        if mode not in MODES:
            raise ValueError('Unknown mode %r: use one of %s.' % (mode, ', '.join(MODES)))
        self.mode = mode
        if self.figure is None:
            return
        for name, sel in self._selectors.items():
            active = name == mode
            if not active and name == 'polygon' and sel.verts:
                sel.clear()
            sel.set_active(active)
            sel.set_visible(active)   # an idle polygon would show a handle at (0, 0)
        if mode != 'path':
            self.path_vertices = []
            self._draw_path_vertices()
        self._status('mode %s: %s' % (mode, MODE_HELP[mode]))

    def set_colour(self, name):
        self.colour_values(name)   # validates
        self.colour = name
        if self.figure is not None:
            self._draw_particles()
            self._draw_selection()
            self.figure.canvas.draw_idle()

    def set_axes(self, axes):
        axes = parse_axes(axes)
        self.view = self.get_view(axes)
        self.axes = axes
        self.selection = self.selection_info = None
        self.path_vertices = []
        if self.figure is not None:
            self._draw_map()

    def clear(self):
        """Forget the selection and the path being drawn."""
        self.selection = self.selection_info = None
        self.path_vertices = []
        if self.figure is not None:
            if self._selectors['polygon'].verts:
                self._selectors['polygon'].clear()
            self._draw_selection()
            self._draw_path_vertices()

    # ------------------------------------------------------------ events
    def _busy_toolbar(self):
        tb = getattr(self.figure.canvas, 'toolbar', None)
        return bool(tb is not None and str(getattr(tb, 'mode', '')))

    def _on_press(self, event):
        if event.inaxes is not self.ax or event.xdata is None or self._busy_toolbar():
            return
        if self.mode == 'point' and event.button == 1:
            self._gui(lambda: self.decode_point((event.xdata, event.ydata)))
        elif self.mode == 'path':
            if event.button == 1:
                self.add_path_vertex((event.xdata, event.ydata))
            elif event.button == 3:
                self.undo_path_vertex()

    def _on_key(self, event):
        if event.key == 'enter' and self.mode == 'path':
            self._gui(self.make_path)
        elif event.key == 'w':
            self._gui(self.save_selection)
        elif event.key == 'escape' and self.mode != 'polygon':
            self.clear()

    def _on_lasso(self, verts):
        self.select_vertices(verts, 'lasso')

    def _on_polygon(self, verts):
        self.select_vertices(verts, 'polygon')

    def _on_box(self, eclick, erelease):
        self.select_rectangle(eclick.xdata, erelease.xdata, eclick.ydata, erelease.ydata)

    # ------------------------------------------------------------ drawing
    def _make_selectors(self):
        from matplotlib.widgets import LassoSelector, PolygonSelector, RectangleSelector
        for sel in getattr(self, '_selectors', {}).values():
            sel.disconnect_events()
        blit = self.figure.canvas.supports_blit
        red = dict(color='r', lw=1.2)
        self._selectors = dict(
            lasso=LassoSelector(self.ax, self._on_lasso, useblit=blit, props=red, button=1),
            polygon=PolygonSelector(self.ax, self._on_polygon, useblit=blit, props=red),
            box=RectangleSelector(self.ax, self._on_box, useblit=blit, button=[1],
                                  props=dict(facecolor='none', edgecolor='r', lw=1.2)))
        for name, sel in self._selectors.items():
            sel.set_active(name == self.mode)
            sel.set_visible(name == self.mode)

    def _draw_map(self):
        from .plots import plot_free_energy
        ax, v = self.ax, self.view
        ax.cla()
        self.cax.cla()
        plot_free_energy(ax, v.fe, units=v.units, temperature=_temperature(v),
                         axis_labels=v.labels, colorbar=False, cmap='Greys_r')
        mesh = [c for c in ax.collections if hasattr(c, 'get_array')][0]
        cb = self.figure.colorbar(mesh, cax=self.cax)
        cb.set_label('ΔG (%s) of the map' % v.units)
        self._drawn = _subsample(self.n, self.max_points, self.seed)
        self._particle_artists = []
        self._selection_artist = None
        self._vertex_artist = None
        self._draw_particles()
        if v.state_points is not None and len(v.state_points):
            sp = np.asarray(v.state_points)[:, :2]
            ax.scatter(sp[:, 0], sp[:, 1], s=70, c='w', edgecolors='k', zorder=6, marker='o')
            from matplotlib import patheffects
            for s, p in enumerate(sp):
                ax.annotate(str(s + self.first_state), p, xytext=(5, 5),
                            textcoords='offset points', fontweight='bold', zorder=7,
                            color='w', path_effects=[patheffects.withStroke(
                                linewidth=2.5, foreground='k')])
        ax.set_title('%d particles on the %s map' % (self.n, axes_name(v.axes)), fontsize=10)
        self._make_selectors()
        self._update_info()
        self.figure.canvas.draw_idle()

    def _draw_particles(self):
        for a in self._particle_artists:
            a.remove()
        self._particle_artists = []
        ax = self.ax
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        values, label, cat = self.colour_values()
        idx = self._drawn
        xy = self.view.y[idx]
        vals = np.asarray(values)[idx]
        s = float(np.clip(6000.0 / max(len(idx), 1), 1.5, 14.0))
        if cat:
            from matplotlib import colormaps
            cmap = colormaps['tab10']
            for i, c in enumerate(np.unique(vals)):
                sel = vals == c
                self._particle_artists.append(ax.scatter(
                    xy[sel, 0], xy[sel, 1], s=s, color=cmap(i % 10), lw=0, alpha=0.8,
                    label='%s %s' % (label, c), zorder=3, rasterized=True))
            ax.legend(fontsize=7, loc='upper right', framealpha=0.7, markerscale=2)
        else:
            v = vals.astype(float)
            ok = np.isfinite(v)
            if (~ok).any():
                self._particle_artists.append(ax.scatter(xy[~ok, 0], xy[~ok, 1], s=s, c='0.6',
                                                         lw=0, zorder=3, rasterized=True))
            lo, hi = (np.percentile(v[ok], [1, 99]) if ok.any() else (0, 1))
            self._particle_artists.append(ax.scatter(
                xy[ok, 0], xy[ok, 1], s=s, c=v[ok], cmap='viridis' if self.colour == COLOUR_DG
                else 'coolwarm', vmin=lo, vmax=hi, lw=0, alpha=0.8, zorder=3,
                rasterized=True))
        self._colour_note = '%s (%s)' % (label, 'categories' if cat else
                                         'colour scale %.3g to %.3g' % (lo, hi))
        self._update_info()

    def _draw_selection(self):
        if self.figure is None:
            return
        if self._selection_artist is not None:
            self._selection_artist.remove()
            self._selection_artist = None
        if self.selection is not None:
            idx = self._drawn[self.selection[self._drawn]]
            self._selection_artist = self.ax.scatter(
                self.view.y[idx, 0], self.view.y[idx, 1], s=14, facecolors='none',
                edgecolors='r', lw=0.6, zorder=4)
        self._update_info()
        self.figure.canvas.draw_idle()

    def _draw_point(self, info):
        if self.figure is None:
            return
        x, y = info['map_point']
        self.ax.plot([x], [y], marker='*', ms=14, color='gold', mec='k', zorder=8)
        self.ax.annotate(info['name'].split('_')[1].lstrip('0') or '0', (x, y),
                         xytext=(6, -10), textcoords='offset points', fontsize=8, zorder=8)
        self._show_projections(info)
        self._update_info()
        self.figure.canvas.draw_idle()

    def _show_projections(self, info=None):
        vol = self.last_volume
        for ax, axis, name in zip(self.proj_axes, (0, 1, 2), ('z', 'y', 'x')):
            ax.cla()
            ax.set_xticks([])
            ax.set_yticks([])
            if vol is not None:
                ax.imshow(vol.sum(axis=axis), cmap='gray', origin='lower')
                ax.set_title('projection along %s' % name, fontsize=8)
        if vol is None:
            self.proj_axes[1].set_title('click the map (mode point)\nto decode a structure'
                                        if self.model else 'no model: clicks give latents',
                                        fontsize=8)

    def _draw_path_vertices(self):
        if self.figure is None:
            return
        if self._vertex_artist is not None:
            self._vertex_artist.remove()
            self._vertex_artist = None
        if self.path_vertices:
            p = np.asarray(self.path_vertices)
            self._vertex_artist, = self.ax.plot(p[:, 0], p[:, 1], '--o', color='orange',
                                                ms=5, lw=1.2, zorder=7)
        self.figure.canvas.draw_idle()

    def _draw_path(self, y, name):
        if self.figure is None:
            return
        self._draw_path_vertices()
        self.ax.plot(y[:, 0], y[:, 1], '-o', color='#d62728', ms=3, lw=1.5, zorder=7)
        if len(y) > 1:
            self.ax.annotate('', y[-1], y[-2], arrowprops=dict(arrowstyle='->',
                                                               color='#d62728', lw=1.5))
        self.ax.annotate(name, y[0], xytext=(-10, 8), textcoords='offset points',
                         fontsize=8, color='#d62728')
        self.figure.canvas.draw_idle()

    def _update_info(self):
        if self.figure is None or not hasattr(self, '_info_text'):
            return
        lines = ['axes: %s   inverse: %s' % (axes_name(self.view.axes),
                                             self.inverse_description()),
                 'colour: %s' % getattr(self, '_colour_note', self.colour),
                 'output: %s' % self.out]
        if self.selection is not None:
            lines.append('selection: %d particles (%s)' % (self.selection.sum(),
                                                           self.selection_info['kind']))
        if self.points:
            p = self.points[-1]
            lines.append('%s: latent [%s]' % (p['name'], ', '.join('%.3f' % v
                                                                   for v in p['latent'])))
            lines.append('  ΔG %s %s; %s' % ('%.2f' % p['dG'] if p['dG'] is not None
                                             else 'n/a', p['units'],
                                             os.path.basename(p['mrc'] or p['pdb'] or
                                                              p['name'] + '.json')))
        if self.subsets:
            q = self.subsets[-1]
            lines.append('%s: %d particles saved' % (q['name'], q['n_selected']))
        if self.paths:
            q = self.paths[-1]
            lines.append('%s: %d points (%s) %s' % (
                q['name'], q['n_points'], q['kind'],
                'path.pdb, path_*.mrc, path.gif, path.cxc' if q['files'] else 'latents'))
        self._info_text.set_text('\n'.join(lines))

    def _status(self, text, error=False):
        if error:
            logger.warning('explore: %s', text)
        if self.figure is None or not hasattr(self, '_status_text'):
            return
        self._update_info()
        self._status_text.set_text(text)
        self._status_text.set_color('r' if error else '0.2')
        self.figure.canvas.draw_idle()


# ------------------------------------------------------------------ helpers

def _axis_labels(method):
    return {'pca': ('PC1', 'PC2'), 'umap': ('UMAP 1', 'UMAP 2'),
            'tsne': ('t-SNE 1', 't-SNE 2')}.get(method, ('embedding 1', 'embedding 2'))


def _scale(view):
    """Units per kT of a view's map."""
    return float(view.fe.extra.get('kT', 1.0)) if view.units != 'kT' else 1.0


def _temperature(view):
    t = view.fe.extra.get('temperature_K')
    return float(t) if t is not None and np.isfinite(float(t)) else 298.15


def _finite(v):
    v = float(v)
    return v if np.isfinite(v) else None


def _amplitudes(dec):
    """What ``decode_series`` gets as amplitudes from a decoder dict: its
    ``amplitude_fn`` (the amplitudes at each latent point), else the single
    vector ``amplitudes``."""
    return dec.get('amplitude_fn') or dec.get('amplitudes')


def _subsample(n, max_points, seed):
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(max_points), replace=False))


def _write_json(path, obj):
    from ..fileio import atomic_write_text
    atomic_write_text(path, json.dumps(obj, indent=1, default=json_default))
    return path


def read_attribute(spec, n, particles=None):
    """(name, (N,) values) of a colouring given on the command line:
    ``NAME=FILE.npy`` (or .txt; a column ``NAME=FILE.npy:c`` of a 2D array,
    from 0) or the name of a numeric column of the ``particles`` .star."""
    spec = str(spec)
    if '=' in spec:
        name, fn = spec.split('=', 1)
        col = None
        if ':' in os.path.basename(fn):
            fn, c = fn.rsplit(':', 1)
            col = int(c)
        v = np.load(fn) if fn.endswith('.npy') else np.loadtxt(fn, ndmin=1, comments='#')
        v = np.asarray(v)
        if v.ndim == 2:
            v = v[:, col or 0]
    else:
        if not particles or not str(particles).endswith('.star'):
            raise ValueError("Colouring '%s': give NAME=FILE.npy, or the name of a column of "
                             "the --particles .star." % spec)
        from ..io.star import read_star_table
        table = read_star_table(particles)
        cols = {c.lstrip('_'): c for c in table.columns}
        if spec.lstrip('_') not in cols:
            raise ValueError("The particles %s have no column '%s' (columns: %s)."
                             % (particles, spec, ', '.join(sorted(cols))))
        name = spec.lstrip('_')
        v = np.asarray(table[cols[name]])
        try:
            v = v.astype(np.float64)
        except ValueError:
            raise ValueError("Column '%s' is not numeric." % spec) from None
        if np.all(v == np.round(v)) and len(np.unique(v)) <= 20:
            v = v.astype(np.int64)
    if v.ndim != 1 or len(v) != n:
        raise ValueError("Colouring '%s' has shape %s but there are %d particles."
                         % (spec, v.shape, n))
    return name, v
