"""Matplotlib drawings of landscapes (reused by the Scipion viewers).

Functions draw on a given ``ax`` (so a viewer can embed them) or, for the
``save_*`` helpers, on a new Agg figure written atomically to a PNG.  No
pyplot global state is used.

* ``plot_free_energy(ax, fe, ...)`` -- dG map (2D: filled colour map with
  contours every 1 kT-equivalent; 1D: curve with the bootstrap +-1 s.d. band),
  optional state centres (numbered) and paths (polylines with arrows).
* ``plot_populations(ax, populations, ci)`` -- bar chart with 95 % intervals.
* ``plot_profile(ax, values, ...)`` -- a quantity along a path (e.g. dG).
* ``save_landscape_png(path, fe, ...)`` -- map (+ populations) in one PNG.
"""
import numpy as np

from .density import DEFAULT_TEMPERATURE, energy_scale

PATH_COLOURS = ('#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b')


def axis_labels(method):
    """Axis names of a 2D embedding method ('pca', 'umap', 'tsne', other)."""
    return {'pca': ('PC1', 'PC2'), 'umap': ('UMAP 1', 'UMAP 2'),
            'tsne': ('t-SNE 1', 't-SNE 2')}.get(str(method).lower(),
                                               ('embedding 1', 'embedding 2'))


def new_figure(width=6.0, height=5.0, dpi=100):
    """A pyplot-free Agg figure (safe headless and in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    from ..fileio import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', bbox_inches='tight')
    return path


def plot_free_energy(ax, fe, units='kT', temperature=DEFAULT_TEMPERATURE, vmax=None,
                     state_points=None, state_names=None, paths=None, axis_labels=None,
                     title=None, colorbar=True, cmap='viridis'):
    """Draw a FreeEnergyMap on ``ax``.

    ``state_points`` (S, 2) (or (S,) in 1D) embedding coordinates of the
    states; ``paths`` a list of (label, (M, 2) embedding coordinates);
    ``vmax`` top of the colour scale in ``units`` (default: 95th percentile
    of the finite values, clipped to 3-10 kT).
    """
    scale = energy_scale(units, temperature)
    g = fe.dG * scale
    finite = g[np.isfinite(g)]
    if vmax is None:  # 95th percentile of the map, within 3-10 kT
        top = float(np.percentile(finite, 95)) if finite.size else 3.0 * scale
        vmax = float(np.clip(top, 3.0 * scale, 10.0 * scale))
    xl, yl = (axis_labels or ('embedding 1', 'embedding 2'))[:2]
    if fe.ndim == 1:
        x = fe.centres[0]
        ax.plot(x, g, color='k', lw=1.5)
        s = fe.dG_std * scale
        ok = np.isfinite(s) & np.isfinite(g)
        if ok.any():
            ax.fill_between(x, np.where(ok, g - s, np.nan), np.where(ok, g + s, np.nan),
                            color='0.7', alpha=0.6, lw=0, label='bootstrap ±1 s.d.')
        ax.set_ylim(0, vmax * 1.05)
        ax.set_xlabel(xl)
        ax.set_ylabel('ΔG (%s)' % units)
        if state_points is not None:
            for i, p in enumerate(np.ravel(state_points)):
                ax.axvline(p, color='r', ls=':', lw=1)
                ax.text(p, vmax, (state_names or [str(j) for j in range(len(np.ravel(
                    state_points)))])[i], color='r', ha='center', va='top')
    else:
        x, y = fe.centres
        gm = np.ma.masked_invalid(np.minimum(g, vmax))
        mesh = ax.pcolormesh(x, y, gm, cmap=cmap, vmin=0, vmax=vmax, shading='auto')
        levels = np.arange(scale, vmax, scale)
        if 0 < len(levels) <= 30:
            ax.contour(x, y, np.ma.masked_invalid(g), levels=levels, colors='w',
                       linewidths=0.4, alpha=0.6)
        if colorbar:
            cb = ax.figure.colorbar(mesh, ax=ax)
            cb.set_label('ΔG (%s)' % units)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if state_points is not None:
            sp = np.atleast_2d(state_points)
            names = state_names or [str(i) for i in range(len(sp))]
            ax.scatter(sp[:, 0], sp[:, 1], s=60, c='w', edgecolors='k', zorder=5)
            for p, name in zip(sp, names):
                ax.annotate(name, p[:2], xytext=(5, 5), textcoords='offset points',
                            color='w', fontweight='bold', zorder=6)
        for i, (label, pts) in enumerate(paths or []):
            pts = np.asarray(pts)
            col = PATH_COLOURS[i % len(PATH_COLOURS)]
            ax.plot(pts[:, 0], pts[:, 1], '-o', color=col, ms=3, lw=1.5, label=label,
                    zorder=4)
            if len(pts) > 1:
                ax.annotate('', pts[-1, :2], pts[-2, :2],
                            arrowprops=dict(arrowstyle='->', color=col, lw=1.5), zorder=4)
        if paths:
            ax.legend(loc='best', fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_populations(ax, populations, ci=None, names=None, truth=None):
    """Bar chart of state populations with 95 % intervals (``ci`` (S, 2))."""
    p = np.asarray(populations, float)
    xs = np.arange(len(p))
    err = None
    if ci is not None and np.isfinite(np.asarray(ci, float)).all():
        ci = np.asarray(ci, float)
        err = np.abs(np.stack([p - ci[:, 0], ci[:, 1] - p]))
    ax.bar(xs, p, yerr=err, color='#4c72b0', capsize=4)
    if truth is not None:
        ax.scatter(xs, truth, color='r', marker='_', s=300, zorder=5, label='truth')
        ax.legend()
    ax.set_xticks(xs)
    ax.set_xticklabels(names or [str(i) for i in xs])
    ax.set_xlabel('state')
    ax.set_ylabel('population')
    ax.set_ylim(0, max(1e-3, float(np.nanmax(p)) * 1.3))
    return ax


def plot_profile(ax, values, std=None, label='ΔG (kT)', xlabel='path point'):
    v = np.asarray(values, float)
    x = np.arange(len(v))
    ax.plot(x, v, '-o', ms=3)
    if std is not None:
        s = np.asarray(std, float)
        ax.fill_between(x, v - s, v + s, alpha=0.3, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    return ax


def save_landscape_png(path, fe, populations=None, population_ci=None, **kw):
    """Free-energy map (and populations, if given) in one PNG."""
    if populations is None:
        fig = new_figure(6.5, 5.2)
        plot_free_energy(fig.add_subplot(1, 1, 1), fe, **kw)
    else:
        fig = new_figure(11.5, 5.0)
        gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1])
        plot_free_energy(fig.add_subplot(gs[0]), fe, **kw)
        plot_populations(fig.add_subplot(gs[1]), populations, population_ci,
                         names=kw.get('state_names'))
    return save_figure(fig, path)
