"""Figures drawn by the viewers, Scipion-free and headless (Agg, no pyplot).

Every ``*_figure`` function returns a ``matplotlib.figure.Figure`` (made
with ``core.landscape.plots.new_figure``, so no global pyplot state and no
display is needed); ``save_figure(fig, path)`` writes it atomically as PNG.
The viewers show the same figures in a Tk window.  Nothing here computes
science: the numbers come from the files the core wrote (history.json,
latents, landscape folders); the only choices made here are about drawing
(which points to draw, colours, panels).

* ``load_history(path)`` -- per-epoch records of a model folder.
* ``training_curves_figure(history)`` -- one panel per logged quantity.
* ``subsample_indices(n, max_points, seed)`` -- which points to draw.
* ``embedding_figure(xy, values, ...)`` -- scatter coloured by a per-particle
  value (free energy, state, any attribute) next to the particle density.
* ``latent_pairs_figure(z, values, ...)`` -- corner plot of latent dimensions.
* ``free_energy_figure(fe, ...)`` -- free-energy map with states, paths and
  (optionally) populations or the dG profile along a path
  (``core.landscape.plots``).
"""
import json
import os

import numpy as np

from ..core.artifacts import ModelDir
from ..core.landscape.plots import (axis_labels, new_figure, plot_free_energy,
                                    plot_populations, plot_profile, save_figure)

#: most points drawn in a scatter plot (densities always use every point)
MAX_POINTS = 20000

#: records of history.json that are bookkeeping, not curves
_NOT_CURVES = ('epoch', 'seconds', 'cpu_seconds')

_LABELS = {'loss': 'total loss', 'data': 'data term (image NLL)', 'rate': 'latent rate',
           'strain': 'neighbour strain', 'sinkhorn': 'Sinkhorn divergence',
           'images_per_s': 'images / s', 'scale': 'intensity scale',
           'sigma': 'pseudo-atom width σ (Å)'}

__all__ = ['MAX_POINTS', 'load_history', 'training_curves_figure', 'subsample_indices',
           'embedding_figure', 'latent_pairs_figure', 'free_energy_figure', 'save_figure',
           'new_figure', 'axis_labels']


# ----------------------------------------------------------------- training

def load_history(path):
    """Per-epoch records (list of dicts) from a model folder or its history.json."""
    path = os.fspath(path)
    fn = ModelDir(path).history_path if os.path.isdir(path) else path
    if not os.path.exists(fn):
        raise FileNotFoundError("No training history at '%s': the training has not finished "
                                "an epoch yet (history.json is written after each epoch)."
                                % fn)
    with open(fn) as f:
        hist = json.load(f)
    if isinstance(hist, dict):  # {'epochs': [...]} or {key: [values]}
        if isinstance(hist.get('epochs'), list):
            hist = hist['epochs']
        else:
            keys = [k for k, v in hist.items() if isinstance(v, list)]
            n = max((len(hist[k]) for k in keys), default=0)
            hist = [{k: hist[k][i] for k in keys if i < len(hist[k])} for i in range(n)]
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        raise ValueError("'%s' is not a training history (a list of per-epoch records)." % fn)
    return hist


def _curve_keys(history):
    keys = []
    for rec in history:
        for k, v in rec.items():
            if k in _NOT_CURVES or k in keys:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    order = list(_LABELS)
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def training_curves_figure(history, title=None):
    """One panel per numeric quantity of ``history`` against the epoch.

    Losses that stay positive and span more than a decade are drawn on a
    log scale.  Raises ValueError on an empty history.
    """
    if not history:
        raise ValueError('The training history is empty: no epoch has finished yet.')
    keys = _curve_keys(history)
    if not keys:
        raise ValueError('The training history has no numeric quantity to draw.')
    from matplotlib.ticker import MaxNLocator
    epochs = np.array([rec.get('epoch', i + 1) for i, rec in enumerate(history)], float)
    ncol = min(4, len(keys))
    nrow = int(np.ceil(len(keys) / ncol))
    fig = new_figure(3.2 * ncol, 2.6 * nrow + 0.4)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        y = np.array([rec.get(key, np.nan) if rec.get(key) is not None else np.nan
                      for rec in history], float)
        ax.plot(epochs, y, '-o', ms=3, lw=1.2)
        ok = np.isfinite(y)
        if ok.sum() > 1 and (y[ok] > 0).all() and y[ok].max() > 10 * y[ok].min():
            ax.set_yscale('log')
        ax.set_title(_LABELS.get(key, key), fontsize=9)
        ax.set_xlabel('epoch', fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title or 'Training: %d epochs' % len(history))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- particles

def subsample_indices(n, max_points=MAX_POINTS, seed=0):
    """Sorted indices of at most ``max_points`` of ``n`` points (all if fewer)."""
    n = int(n)
    if max_points is None or max_points <= 0 or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, int(max_points), replace=False))


def _is_categorical(values):
    v = np.asarray(values)
    if v.dtype.kind in 'iub':
        return len(np.unique(v)) <= 20
    return False


def _scatter_setup(ax, xy, values, categorical, size=None):
    """(marker area, values, categorical, artist) of a scatter of ``xy`` (n, 2):
    the area shrinks with n; without ``values`` the points are drawn in one
    colour (the artist), else ``categorical`` None is decided from the values."""
    s = size or float(np.clip(8000.0 / max(len(xy), 1), 1.0, 12.0))
    if values is None:
        return s, None, None, ax.scatter(xy[:, 0], xy[:, 1], s=s, c='#4c72b0', alpha=0.5,
                                         lw=0, rasterized=True)
    values = np.asarray(values)
    return s, values, _is_categorical(values) if categorical is None else categorical, None


def _draw_points(ax, xy, values=None, value_label=None, categorical=None, cmap=None,
                 size=None):
    """Scatter ``xy`` (n, 2) coloured by ``values`` on ``ax``; returns the artist."""
    s, values, categorical, plain = _scatter_setup(ax, xy, values, categorical, size)
    if values is None:
        return plain
    if categorical:
        cats, colours = _category_colours(values)
        for i, c in enumerate(cats):
            sel = values == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=s, color=colours(i % colours.N), lw=0,
                       alpha=0.7, label='%s %s' % (value_label or '', c), rasterized=True)
        ax.legend(fontsize=7, markerscale=max(1.0, 8.0 / s), loc='best', framealpha=0.7)
        return None
    v = values.astype(float)
    ok = np.isfinite(v)  # particles without a value (NaN) are drawn grey
    if not ok.all():
        ax.scatter(xy[~ok, 0], xy[~ok, 1], s=s, c='0.7', lw=0, alpha=0.5, rasterized=True)
    art = ax.scatter(xy[ok, 0], xy[ok, 1], s=s, c=v[ok], cmap=cmap or 'viridis',
                     lw=0, alpha=0.8, rasterized=True)
    cb = ax.figure.colorbar(art, ax=ax)
    if value_label:
        cb.set_label(value_label)
    return art


def _draw_density(ax, xy, gridsize=None):
    """Hexagonal-bin particle counts (log colour scale) of every point."""
    if gridsize is None:  # about 4+ particles per occupied bin on average
        gridsize = int(np.clip(np.sqrt(len(xy)) / 2.0, 12, 80))
    hb = ax.hexbin(xy[:, 0], xy[:, 1], gridsize=gridsize, bins='log', cmap='magma_r',
                   mincnt=1, linewidths=0)
    cb = ax.figure.colorbar(hb, ax=ax)
    cb.set_label('particles per bin (log)')
    return hb


def embedding_figure(xy, values=None, value_label=None, categorical=None, density=True,
                     max_points=MAX_POINTS, seed=0, labels=('embedding 1', 'embedding 2'),
                     title=None, state_points=None, cmap=None):
    """Particles on a 2D map coloured by a per-particle value, + their density.

    ``xy`` (N, 2) (an (N,) / (N, 1) map is drawn against the particle index);
    ``values`` (N,) or None; integer values with few levels (states) are
    drawn as categories.  At most ``max_points`` particles are drawn in the
    scatter (a random subset, the same for every colouring with one
    ``seed``); the density panel bins all of them.  ``state_points`` (S, 2)
    are marked and numbered from 1.
    """
    xy = np.asarray(xy, float)
    if xy.ndim == 1:
        xy = xy[:, None]
    if xy.shape[1] == 1:
        xy = np.column_stack([xy[:, 0], np.arange(len(xy), dtype=float)])
        labels = (labels[0], 'particle index')
    if len(xy) == 0:
        raise ValueError('No particle to draw.')
    if values is not None and len(values) != len(xy):
        raise ValueError('%d values for %d particles: the colouring does not match the '
                         'particles.' % (len(values), len(xy)))
    idx = subsample_indices(len(xy), max_points, seed)
    fig = new_figure(12.0 if density else 6.5, 5.0)
    ax = fig.add_subplot(1, 2 if density else 1, 1)
    _draw_points(ax, xy[idx], None if values is None else np.asarray(values)[idx],
                 value_label, categorical, cmap)
    shown = '%d of %d particles' % (len(idx), len(xy)) if len(idx) < len(xy) else \
        '%d particles' % len(xy)
    ax.set_title('%s%s' % ('coloured by %s, ' % value_label if value_label else '', shown),
                 fontsize=9)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    axes = [ax]
    if density:
        ax2 = fig.add_subplot(1, 2, 2, sharex=ax, sharey=ax)
        _draw_density(ax2, xy)
        ax2.set_title('density of all %d particles' % len(xy), fontsize=9)
        ax2.set_xlabel(labels[0])
        axes.append(ax2)
    if state_points is not None:
        sp = np.atleast_2d(np.asarray(state_points, float))
        for a in axes:
            a.scatter(sp[:, 0], sp[:, 1], s=70, c='w', edgecolors='k', zorder=5)
            for i, p in enumerate(sp):
                a.annotate(str(i + 1), p[:2], xytext=(5, 5), textcoords='offset points',
                           fontweight='bold', zorder=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def latent_pairs_figure(z, values=None, value_label=None, categorical=None, dims=None,
                        max_points=MAX_POINTS, seed=0, title=None):
    """Corner plot of latent coordinates: histograms on the diagonal, pairs below.

    ``z`` (N, K); ``dims`` the 0-based dimensions to draw (default: the
    first min(K, 4)).  Points coloured by ``values`` as in ``embedding_figure``.
    """
    z = np.asarray(z, float)
    if z.ndim == 1:
        z = z[:, None]
    dims = list(range(min(z.shape[1], 4))) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < z.shape[1]]
    if bad:
        raise ValueError('Latent dimensions %s do not exist: the latents have %d (numbered '
                         'from 1).' % ([d + 1 for d in bad], z.shape[1]))
    if values is not None and len(values) != len(z):
        raise ValueError('%d values for %d particles.' % (len(values), len(z)))
    idx = subsample_indices(len(z), max_points, seed)
    vals = None if values is None else np.asarray(values)[idx]
    if vals is not None and categorical is None:
        categorical = _is_categorical(vals)
    k = len(dims)
    bins = int(np.clip(np.sqrt(len(z)), 10, 60))
    fig = new_figure(2.6 * k + 1.2, 2.6 * k)
    art = None
    for r, dr in enumerate(dims):
        for c, dc in enumerate(dims[:r + 1]):
            ax = fig.add_subplot(k, k, r * k + c + 1)
            if r == c:
                ax.hist(z[:, dr], bins=bins, color='#4c72b0')
                ax.set_yticks([])
            else:
                art = _scatter_plain(ax, z[idx][:, [dc, dr]], vals, categorical)
            if r == k - 1:
                ax.set_xlabel('z%d' % (dc + 1))
            if c == 0 and r != c:
                ax.set_ylabel('z%d' % (dr + 1))
            ax.tick_params(labelsize=7)
    fig.suptitle(title or 'Latent coordinates of %d particles%s' % (
        len(z), '' if len(idx) == len(z) else ' (%d drawn)' % len(idx)))
    fig.tight_layout(rect=(0, 0, 0.88 if vals is not None else 1, 1))
    if vals is not None and categorical:
        from matplotlib.lines import Line2D
        cats, colours = _category_colours(vals)
        handles = [Line2D([], [], ls='', marker='o', color=colours(i % colours.N))
                   for i in range(len(cats))]
        fig.legend(handles, ['%s %s' % (value_label or '', c) for c in cats],
                   loc='center right', fontsize=8)
    elif vals is not None and art is not None:
        cb = fig.colorbar(art, cax=fig.add_axes([0.9, 0.3, 0.015, 0.4]))
        if value_label:
            cb.set_label(value_label)
    return fig


def _category_colours(values):
    from matplotlib import colormaps
    cats = np.unique(values)
    return cats, colormaps['tab10' if len(cats) <= 10 else 'tab20']


def _scatter_plain(ax, xy, values, categorical):
    """Scatter without legend / colour bar (inner panels of the corner plot)."""
    s, v, categorical, plain = _scatter_setup(ax, xy, values, categorical)
    if v is None:
        return plain
    if categorical:
        cats, colours = _category_colours(v)
        col = np.array([colours(int(np.searchsorted(cats, x)) % colours.N) for x in v])
        return ax.scatter(xy[:, 0], xy[:, 1], s=s, c=col, lw=0, alpha=0.7, rasterized=True)
    v = v.astype(float)
    vmin, vmax = (np.nanmin(v), np.nanmax(v)) if np.isfinite(v).any() else (0, 1)
    return ax.scatter(xy[:, 0], xy[:, 1], s=s, c=v, vmin=vmin, vmax=vmax, lw=0, alpha=0.8,
                      rasterized=True)


# --------------------------------------------------------------- landscapes

def free_energy_figure(fe, units=None, temperature=None, state_points=None, state_names=None,
                       paths=None, populations=None, population_ci=None, profile=None,
                       profile_label=None, labels=None, title=None):
    """Free-energy map (``core.landscape.plots.plot_free_energy``) with states and
    paths, and on the right the populations or a dG profile along a path.

    ``fe`` a FreeEnergyMap (``core.landscape.density.load_free_energy``);
    ``units`` / ``temperature`` default to those stored with the map;
    ``paths`` a list of (label, (M, 2) map coordinates); ``profile`` (M,)
    values along the (first) path, in ``units``.
    """
    units = units or str(fe.extra.get('units', 'kT'))
    if temperature is None:
        temperature = float(fe.extra.get('temperature_K', fe.extra.get('temperature', 298.15)))
    side = populations is not None or profile is not None
    fig = new_figure(11.5 if side else 6.5, 5.0)
    gs = fig.add_gridspec(1, 2 if side else 1, width_ratios=[2.2, 1] if side else [1])
    sp = None
    if state_points is not None:
        sp = np.asarray(state_points, float)
        sp = sp[:, 0] if fe.ndim == 1 and sp.ndim == 2 else sp
    plot_free_energy(fig.add_subplot(gs[0]), fe, units=units, temperature=temperature,
                     state_points=sp, state_names=state_names,
                     paths=paths if fe.ndim == 2 else None, axis_labels=labels, title=title)
    if populations is not None:
        plot_populations(fig.add_subplot(gs[1]), populations, population_ci, names=state_names)
    elif profile is not None:
        plot_profile(fig.add_subplot(gs[1]),
                     np.array([np.nan if v is None else v for v in profile], float),
                     label=profile_label or 'ΔG on the map (%s)' % units)
    fig.tight_layout()
    return fig
