"""Figures of a half-set validation folder (``core.artifacts.ValidationDir``).

Each ``*_figure`` builds a pyplot-free matplotlib figure from what the
folder holds (so the ``validate`` command and the Scipion viewer draw the
same thing); ``save_figures(folder)`` writes the three PNGs.

* ``agreement_figure`` -- PC1 of the first model against PC1 of the aligned
  second (held-out particles in colour), correlation per latent dimension
  (Pearson, Spearman; canonical correlations), per-particle relative error;
* ``fsc_figure`` -- FSC curves at the states and along the path, thresholds
  0.143 / 0.5, and the resolution at each point;
* ``landscape_figure`` -- the two free-energy maps on one grid with their
  matched states, and the populations of both with their half-set error.
"""
import numpy as np

from .landscape.plots import new_figure, save_figure

HALF_COLOURS = ('#1f77b4', '#d62728')


def _subsample(n, max_points=5000, seed=0):
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def agreement_figure(z1, z2_aligned, held_out, agreement, title=None):
    """Per-particle latent agreement (``agreement``: the report's
    ``latent_agreement`` section, ``relative_error`` (N,) included)."""
    z1 = np.asarray(z1, np.float64)
    z2 = np.asarray(z2_aligned, np.float64)
    held = np.asarray(held_out, bool)
    fig = new_figure(15.0, 4.6)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    axis = np.asarray(agreement['pc1_axis'])
    mean = z1.mean(0)
    p1, p2 = (z1 - mean) @ axis, (z2 - mean) @ axis
    idx = _subsample(len(z1))
    for mask, col, lab in ((~held[idx], '0.6', 'half 1 (alignment fitted)'),
                           (held[idx], HALF_COLOURS[0], 'half 2 (held out)')):
        ax1.scatter(p1[idx][mask], p2[idx][mask], s=6, c=col, alpha=0.5, lw=0, label=lab)
    lo, hi = np.percentile(np.concatenate([p1, p2]), [0.5, 99.5])
    ax1.plot([lo, hi], [lo, hi], 'k--', lw=0.8)
    ax1.set_xlabel('PC1, model of half 1')
    ax1.set_ylabel('PC1, model of half 2 (aligned)')
    ax1.set_title('PC1: Pearson %.3f, Spearman %.3f (held out)'
                  % (agreement['pc1_pearson'], agreement['pc1_spearman']), fontsize=10)
    ax1.legend(loc='upper left', fontsize=8, markerscale=4)
    k = len(agreement['pearson'])
    x = np.arange(k)
    ax2.bar(x - 0.27, agreement['pearson'], 0.27, label='Pearson (aligned)',
            color=HALF_COLOURS[0])
    ax2.bar(x, agreement['spearman'], 0.27, label='Spearman (aligned)', color='#9ecae1')
    ax2.bar(x + 0.27, agreement['canonical_correlations'][:k], 0.27,
            label='canonical corr. (no alignment)', color='0.6')
    ax2.set_xticks(x)
    ax2.set_xticklabels(['z%d' % (i + 1) for i in range(k)])
    ax2.set_ylim(min(0.0, min(agreement['pearson']) - 0.05), 1.05)
    ax2.axhline(1.0, color='k', lw=0.5)
    ax2.set_title('correlation per latent dimension (%s map)'
                  % agreement.get('align_method', ''), fontsize=10)
    ax2.legend(loc='lower left', fontsize=8)
    err = np.asarray(agreement['relative_error'], np.float64)
    bins = np.linspace(0, max(np.percentile(err, 99.5), 1e-6), 50)
    ax3.hist(err[held], bins=bins, color=HALF_COLOURS[0], alpha=0.8, label='held out')
    ax3.hist(err[~held], bins=bins, color='0.6', alpha=0.6, label='fitted')
    ax3.axvline(agreement['relative_error_median'], color='k', ls='--', lw=1,
                label='median (held out) %.3f' % agreement['relative_error_median'])
    ax3.set_xlabel('|z1 - A(z2)| / rms spread of z1')
    ax3.set_ylabel('particles')
    ax3.set_title('per-particle disagreement', fontsize=10)
    ax3.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def fsc_figure(fsc, title=None):
    """FSC curves and resolutions (``fsc``: the arrays of fsc.npz)."""
    import matplotlib.cm as cm
    freqs = np.asarray(fsc['freqs'])
    fig = new_figure(12.5, 4.6)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.6, 1]))
    path = np.asarray(fsc.get('path_curves', np.zeros((0, len(freqs)))))
    for i, c in enumerate(path):
        ax1.plot(freqs, c, color=cm.viridis(i / max(len(path) - 1, 1)), lw=0.8, alpha=0.7,
                 label='path points 0..%d' % (len(path) - 1) if i == 0 else None)
    states = np.asarray(fsc['state_curves'])
    for i, c in enumerate(states):
        ax1.plot(freqs, c, color='C%d' % (i % 10), lw=2.0, label='state %d' % i)
    if 'contrast_curve' in fsc:
        ax1.plot(freqs, fsc['contrast_curve'], color='0.4', ls='-.', lw=1.5,
                 label='contrast: path ends, one model')
    for t, ls in ((0.143, ':'), (0.5, '--')):
        ax1.axhline(t, color='k', ls=ls, lw=0.8)
        ax1.text(freqs[-1], t, ' %g' % t, va='center', fontsize=8)
    ax1.set_xlabel('spatial frequency (1/Å)')
    ax1.set_ylabel('FSC between the half-set models')
    ax1.set_ylim(-0.1, 1.02)
    ax1.set_xlim(0, freqs[-1])
    ax1.legend(fontsize=8, loc='lower left')
    ax1.set_title('FSC at matched latents', fontsize=10)
    names, r0143, r05 = [], [], []
    for key, prefix in (('state', 's'), ('path', 'p')):
        vals = np.asarray(fsc.get(key + '_res_0143', []))
        names += ['%s%d' % (prefix, i) for i in range(len(vals))]
        r0143 += list(vals)
        r05 += list(np.asarray(fsc.get(key + '_res_05', [])))
    x = np.arange(len(names))
    ax2.plot(x, r0143, 'o-', ms=5, label='FSC 0.143')
    ax2.plot(x, r05, 's--', ms=5, label='FSC 0.5')
    n_st = len(states)
    if n_st and len(names) > n_st:
        ax2.axvline(n_st - 0.5, color='0.5', lw=0.8)
    ax2.axhline(1.0 / freqs[-1], color='0.5', ls=':', lw=0.8)
    if 'contrast_res_0143' in fsc:
        for key, ls, t in (('contrast_res_0143', '-.', '0.143'), ('contrast_res_05', ':', '0.5')):
            ax2.axhline(float(fsc[key]), color='0.3', ls=ls, lw=1.2,
                        label='contrast (path ends, one model), FSC %s' % t)
    ax2.set_ylim(0, None)
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, fontsize=8)
    ax2.set_xlabel('state s_i, then path point p_i')
    ax2.set_ylabel('resolution (Å; Nyquist %.2f)' % (1.0 / freqs[-1]))
    ax2.legend(fontsize=8, loc='upper left')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def landscape_figure(fe_maps, landscape, title=None):
    """The two free-energy maps on one grid and the matched states'
    populations (``landscape``: the report's ``landscape`` section)."""
    from .landscape.density import FreeEnergyMap
    from .landscape.plots import plot_free_energy
    cen = [np.asarray(fe_maps['x'])] + ([np.asarray(fe_maps['y'])] if 'y' in fe_maps else [])

    def fe(key):
        g = np.asarray(fe_maps[key])
        return FreeEnergyMap(cen, g, np.full_like(g, np.nan), np.zeros_like(g),
                             np.zeros(len(cen)), 0)

    fig = new_figure(16.0, 4.6)
    axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.2, 1.2, 1]))
    vmax = max(3.0, float(landscape.get('max_dG', 3.0)) + 2.0)
    for h, ax in ((1, axes[0]), (2, axes[1])):
        pts = np.asarray(fe_maps['state_points%d' % h])
        plot_free_energy(ax, fe('dG%d' % h), vmax=vmax, state_points=pts if len(pts) else None,
                         axis_labels=('PC1 (half 1)', 'PC2 (half 1)'),
                         title='model of half %d%s' % (h, ' (aligned)' if h == 2 else ''))
    rows = landscape['states']['states']
    p1 = [r['population1'] for r in rows]
    p2 = [r['population2'] for r in rows]
    x = np.arange(len(rows))
    sig = landscape['states'].get('population_sigma') or 0.0
    axes[2].bar(x - 0.2, p1, 0.4, color=HALF_COLOURS[0], label='half 1')
    axes[2].bar(x + 0.2, p2, 0.4, color=HALF_COLOURS[1], label='half 2')
    axes[2].errorbar(x, 0.5 * (np.array(p1) + np.array(p2)), yerr=sig, fmt='none', ecolor='k',
                     capsize=4, label='half-set σ %.3f' % sig)
    axes[2].set_xticks(x)
    axes[2].set_xticklabels(['%d↔%d' % (r['state1'], r['state2']) for r in rows])
    axes[2].set_xlabel('matched states (half 1 ↔ half 2)')
    axes[2].set_ylabel('population')
    axes[2].legend(fontsize=8)
    m = landscape['maps']
    axes[2].set_title('ΔG maps: rms difference %s kT (cells < %g kT)'
                      % ('%.2f' % m['rms_difference'] if m['rms_difference'] is not None
                         else 'n/a', m['max_dG']), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figures(folder):
    """Write the three PNGs of a validation folder; returns their paths."""
    from .artifacts import ValidationDir
    v = ValidationDir(folder)
    rep = v.report()
    ag = dict(rep['latent_agreement'], relative_error=v.agreement()['relative_error'])
    held = v.agreement()['held_out']
    title = rep.get('title')
    out = []
    fig = agreement_figure(v.latents(1), v.aligned(), held, ag, title=title)
    out.append(save_figure(fig, v.agreement_figure_path))
    out.append(save_figure(fsc_figure(v.fsc(), title=title), v.fsc_figure_path))
    out.append(save_figure(landscape_figure(v.fe_maps(), rep['landscape'], title=title),
                           v.landscape_figure_path))
    return out
