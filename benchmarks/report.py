"""Markdown report and plots from the benchmark's JSON results.

``write_report(results, report_dir)`` takes the dict assembled by
``run_benchmarks.stage_report`` (every entry may be missing or a failure
record) and writes ``REPORT.md`` and PNG plots into ``report_dir``.  It
prints only numbers present in the results; what was not measured is listed
with the reason.
"""
import os
import time

import numpy as np

from continuousflex_geodl.core.fileio import atomic_path, atomic_write_text

#: bar of the issue, on the three-mode 64 px SNR 0.1 set
BAR_THROUGHPUT_RATIO = 3.0
#: "memory does not grow": peak RSS at the largest N within this factor of the smallest
FLAT_MEMORY_FACTOR = 1.15


def _ok(x):
    return isinstance(x, dict) and x.get('status') == 'ok'


def _f(x, fmt='%.3g'):
    if x is None:
        return 'n/a'
    if isinstance(x, str):
        return x
    try:
        if not np.isfinite(x):
            return 'n/a'
    except TypeError:
        return str(x)
    return fmt % x


def _ratio(a, b):
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return None
    return a / b


def _table(header, rows):
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] * len(header)) + '|']
    out += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(out)


def _atomic_savefig(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches='tight', format='png')


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _load_arrays(score):
    if not _ok(score) or not score.get('arrays') or not os.path.exists(score['arrays']):
        return None
    with np.load(score['arrays']) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------

def plot_throughput(datasets, path):
    names, ours, cd = [], [], []
    for e in datasets:
        o, c = e.get('ours'), e.get('cryodrgn')
        if _ok(o) or _ok(c):
            names.append(e['name'])
            ours.append(o['images_per_s'] if _ok(o) else np.nan)
            cd.append(c['images_per_s'] if _ok(c) else np.nan)
    if not names:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, ours, 0.4, label='continuousflex_geodl')
    ax.bar(x + 0.2, cd, 0.4, label='cryoDRGN')
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha='right')
    ax.set_ylabel('training images / s')
    ax.legend()
    _atomic_savefig(fig, path)
    plt.close(fig)
    return path


def plot_dataset(e, report_dir):
    """Latent, FSC-AUC and population plots of one data set; returns file names."""
    plt = _plt()
    files = []
    tools = [('ours', 'continuousflex_geodl'), ('cryodrgn', 'cryoDRGN')]
    arrs = {t: _load_arrays(e.get('score_' + t)) for t, _ in tools}
    if any(a is not None for a in arrs.values()):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        fig.subplots_adjust(wspace=0.3)
        for ax, (t, label) in zip(axes, tools):
            a = arrs[t]
            if a is None:
                ax.text(0.5, 0.5, 'not measured', ha='center', transform=ax.transAxes)
                ax.set_title(label)
                continue
            u = a['unit']
            if u.shape[1] == 1:
                ax.scatter(u[:, 0], a['pc'][:, 0], s=2, alpha=0.4)
                ax.set_xlabel('true coordinate (unit)')
                ax.set_ylabel('latent PC1')
            else:
                ax.scatter(a['pc'][:, 0], a['pc'][:, 1], c=u[:, 0], s=2, cmap='viridis')
                ax.set_xlabel('latent PC1')
                ax.set_ylabel('latent PC2 (colour: true coordinate 1)')
            sc = e.get('score_' + t) or {}
            ax.set_title('%s\nSpearman %s, kNN error %s' % (
                label, _f(sc.get('spearman')), _f(sc.get('knn_error'))), fontsize=9)
        name = 'latents_%s.png' % e['name']
        _atomic_savefig(fig, os.path.join(report_dir, name))
        plt.close(fig)
        files.append(name)
    scores = {t: e.get('score_' + t) for t, _ in tools}
    if any(_ok(s) and s.get('fsc_auc_per_conf') for s in scores.values()):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for t, label in tools:
            s = scores[t]
            if _ok(s) and s.get('fsc_auc_per_conf'):
                c = np.array(s['conf_centres'])
                xs = c[:, 0] if c.ndim == 2 and c.shape[1] == 1 else np.arange(len(c))
                ax.plot(xs, s['fsc_auc_per_conf'], 'o-', label=label)
        ax.axhline(0.5, color='grey', lw=0.5)
        ax.set_ylabel('FSC-AUC vs ground truth')
        ax.set_xlabel('true coordinate (unit)' if len(np.array(
            next(s for s in scores.values() if _ok(s) and s.get('conf_centres'))[
                'conf_centres'])[0]) == 1 else 'conformation bin')
        ax.legend()
        name = 'fsc_auc_%s.png' % e['name']
        _atomic_savefig(fig, os.path.join(report_dir, name))
        plt.close(fig)
        files.append(name)
    one_d = [a for a in arrs.values() if a is not None and 'recovered_unit' in a
             and a['unit'].shape[1] == 1]
    if one_d:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        u = one_d[0]['unit'][:, 0]
        bins = np.linspace(0, 1, 41)
        ax.hist(u, bins=bins, density=True, histtype='stepfilled', alpha=0.3, color='k',
                label='truth')
        for t, label in tools:
            a = arrs[t]
            if a is not None and 'recovered_unit' in a:
                ax.hist(a['recovered_unit'][:, 0], bins=bins, density=True, histtype='step',
                        lw=1.5, label=label)
        ax.set_xlabel('coordinate (unit)')
        ax.set_ylabel('population density')
        ax.legend()
        name = 'populations_%s.png' % e['name']
        _atomic_savefig(fig, os.path.join(report_dir, name))
        plt.close(fig)
        files.append(name)
    return files


def plot_scaling(scaling, report_dir):
    plt = _plt()
    files = []
    sp = scaling.get('scaling_particles')
    if _ok(sp) and any(r.get('status') == 'ok' for r in sp['rows']):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for tool, label in (('ours', 'continuousflex_geodl'), ('cryodrgn', 'cryoDRGN')):
            rows = sorted([r for r in sp['rows'] if r['tool'] == tool and r['status'] == 'ok'],
                          key=lambda r: r['n_particles'])
            if not rows:
                continue
            n = [r['n_particles'] for r in rows]
            for key, mk, what in (('train', 'o-', 'train'), ('infer', 's--', 'infer')):
                vals = [r.get(key + '_peak_anon_mb') or r.get(key + '_peak_rss_mb')
                        for r in rows]
                axes[0].plot(n, vals, mk, label='%s %s' % (label, what))
            axes[1].plot(n, [r['images_per_s'] for r in rows], 'o-', label=label)
        for ax in axes:
            ax.set_xscale('log')
            ax.set_xlabel('particles')
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        axes[0].set_ylabel('peak anonymous RSS (MB)')
        axes[1].set_ylabel('training images / s')
        _atomic_savefig(fig, os.path.join(report_dir, 'scaling_particles.png'))
        plt.close(fig)
        files.append('scaling_particles.png')
    sb = scaling.get('scaling_box')
    if _ok(sb) and any(r.get('status') == 'ok' for r in sb['rows']):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for tool, label in (('ours', 'continuousflex_geodl'), ('cryodrgn', 'cryoDRGN')):
            rows = sorted([r for r in sb['rows'] if r['tool'] == tool and r['status'] == 'ok'],
                          key=lambda r: r['box'])
            if rows:
                axes[0].plot([r['box'] for r in rows], [r['images_per_s'] for r in rows], 'o-',
                             label=label)
                axes[1].plot([r['box'] for r in rows], [r['peak_rss_mb'] for r in rows], 'o-',
                             label=label)
        for ax in axes:
            ax.set_xscale('log', base=2)
            ax.set_xlabel('box (px)')
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        axes[0].set_yscale('log')
        axes[0].set_ylabel('training images / s')
        axes[1].set_ylabel('peak RSS (MB)')
        _atomic_savefig(fig, os.path.join(report_dir, 'scaling_box.png'))
        plt.close(fig)
        files.append('scaling_box.png')
    sr = scaling.get('scaling_render')
    if _ok(sr) and any(r.get('status') == 'ok' for r in sr['rows']):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        for method in ('exact', 'fft', 'keops'):
            rows = sorted([r for r in sr['rows'] if r['method'] == method and r['axis'] == 'atoms'
                           and r['status'] == 'ok'], key=lambda r: r['n_atoms'])
            if rows:
                n = [r['n_atoms'] for r in rows]
                axes[0].plot(n, [r['s_per_batch'] for r in rows], 'o-', label=method)
                axes[1].plot(n, [r.get('step_extra_mb', r['peak_rss_mb']) for r in rows], 'o-',
                             label=method)
            rows = sorted([r for r in sr['rows'] if r['method'] == method and r['axis'] == 'box'
                           and r['status'] == 'ok'], key=lambda r: r['box'])
            if rows:
                axes[2].plot([r['box'] for r in rows], [r['s_per_batch'] for r in rows], 'o-',
                             label=method)
        axes[0].set(xscale='log', yscale='log', xlabel='pseudo-atoms (box 64)',
                    ylabel='s per batch (fwd + bwd)')
        axes[1].set(xscale='log', xlabel='pseudo-atoms (box 64)',
                    ylabel='memory of the step (MB)')
        axes[2].set(xscale='log', yscale='log', xlabel='box (px), 2000 atoms',
                    ylabel='s per batch (fwd + bwd)')
        axes[2].set_xscale('log', base=2)
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        _atomic_savefig(fig, os.path.join(report_dir, 'scaling_render.png'))
        plt.close(fig)
        files.append('scaling_render.png')
    return files


# ----------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------

METRICS = [
    # key, label, source ('run', 'infer', 'infer0', 'score', 'enc', 'derived'),
    # better ('high'/'low'/None), format
    ('epochs', 'training epochs', 'run', None, '%d'),
    ('omp_wait_policy', 'OpenMP wait policy (training and inference)', 'run', None, '%s'),
    ('images_per_s', 'training images/s (per-epoch timers)', 'run', 'high', '%.1f'),
    ('end_to_end_images_per_s', 'training images/s, whole command (epochs x particles / '
     'wall)', 'derived', 'high', '%.1f'),
    ('images_per_cpu_s', 'training images per CPU-second (whole command)', 'run', 'high',
     '%.1f'),
    ('train_s', 'training time, epochs only (s)', 'run', 'low', '%.0f'),
    ('wall_s', 'wall time of the training command (s)', 'run', 'low', '%.0f'),
    ('cpu_s', 'CPU time of the training command (s)', 'run', 'low', '%.0f'),
    ('peak_rss_mb', 'peak RSS, training (MB)', 'run', 'low', '%.0f'),
    ('peak_anon_mb', 'peak anonymous RSS, training (MB)', 'run', 'low', '%.0f'),
    ('wall_s', 'inference wall time, default command (s)', 'infer', 'low', '%.1f'),
    ('images_per_s', 'inference images/s, default command', 'infer', 'high', '%.1f'),
    ('peak_rss_mb', 'peak RSS, inference (MB)', 'infer', 'low', '%.0f'),
    ('peak_anon_mb', 'peak anonymous RSS, inference (MB)', 'infer', 'low', '%.0f'),
    ('wall_s', 'inference wall time, encoder only (s)', 'infer0', 'low', '%.1f'),
    ('spearman', 'latent Spearman rho, absolute (PC1; 2D: mean per axis)', 'score', 'high',
     '%.3f'),
    ('knn_error', 'kNN neighbourhood error (normalised)', 'score', 'low', '%.3f'),
    ('neighbourhood_overlap', 'kNN neighbourhood overlap', 'score', 'high', '%.3f'),
    ('spearman', 'latent Spearman, encoder-only latents', 'enc', 'high', '%.3f'),
    ('knn_error', 'kNN error, encoder-only latents', 'enc', 'low', '%.3f'),
    ('fsc_auc', 'FSC-AUC per conformation, mean', 'score', 'high', '%.3f'),
    ('map_correlation', 'map correlation, mean', 'score', 'high', '%.3f'),
    ('map_one_minus_mean_fsc', '1 - mean FSC, mean', 'score', 'low', '%.3f'),
    ('map_res_fsc05', 'resolution at FSC 0.5, mean (A)', 'score', 'low', '%.1f'),
    ('population_emd', 'population EMD (unit coordinate)', 'score', 'low', '%.3f'),
    ('middle_fraction_recovered', 'middle-state fraction recovered', 'score', None, '%.3f'),
]


def _get(e, tool, source, key):
    r = e.get(tool)
    if source == 'run':
        return r.get(key) if _ok(r) else None
    if source == 'infer':
        return (r.get('infer') or {}).get(key) if _ok(r) else None
    if source == 'infer0':
        # encoder-only inference: ours with --refine-steps 0; cryoDRGN's eval_images
        # is encoder-only already
        if not _ok(r):
            return None
        return (r.get('infer_encoder_only') or r.get('infer') or {}).get(key)
    if source == 'derived':
        if key == 'end_to_end_images_per_s' and _ok(r) and r.get('n_particles') \
                and r.get('epochs') and r.get('wall_s'):
            return r['n_particles'] * r['epochs'] / r['wall_s']
        return None
    s = e.get('score_' + tool)
    if source == 'enc':
        if not _ok(s):
            return None
        # cryoDRGN's latents are its encoder's (z_mu): the same numbers
        return (s.get('encoder_only') or s).get(key)
    return s.get(key) if _ok(s) else None


def dataset_table(e):
    rows = []
    for key, label, source, better, fmt in METRICS:
        a, c = _get(e, 'ours', source, key), _get(e, 'cryodrgn', source, key)
        if a is None and c is None:
            continue
        r = _ratio(a, c)
        rows.append([label, _f(a, fmt), _f(c, fmt), _f(r, '%.2f') if r is not None else 'n/a'])
    truth = next((e[k] for k in ('score_ours', 'score_cryodrgn') if _ok(e.get(k))
                  and 'middle_fraction_true' in e[k]), None)
    if truth:
        rows.append(['middle-state fraction, truth', _f(truth['middle_fraction_true'], '%.3f'),
                     _f(truth['middle_fraction_true'], '%.3f'), ''])
    orc = e.get('score_oracle')
    if _ok(orc):
        rows.append(['kNN error / overlap with the true coordinate as latent (best possible)',
                     '%s / %s' % (_f(orc['knn_error'], '%.3f'),
                                  _f(orc['neighbourhood_overlap'], '%.3f')), '', ''])
    if not rows:
        return None
    return _table(['metric', 'continuousflex_geodl', 'cryoDRGN', 'ratio ours / cryoDRGN'], rows)


def _memory_flat(results):
    """[(label, lo_row, hi_row, key, factor, passed)] for our scaling_particles rows."""
    sp = results.get('scaling', {}).get('scaling_particles')
    rows = [r for r in (sp or {}).get('rows', []) if r.get('tool') == 'ours'
            and r.get('status') == 'ok'] if _ok(sp) else []
    out = []
    if len(rows) < 2:
        return out
    rows.sort(key=lambda r: r['n_particles'])
    for key, label in (('train', 'training'), ('infer', 'inference')):
        anon = key + '_peak_anon_mb'
        use = anon if rows[0].get(anon) and rows[-1].get(anon) else key + '_peak_rss_mb'
        if not rows[0].get(use) or not rows[-1].get(use):
            continue
        f = rows[-1][use] / rows[0][use]
        out.append((label, rows[0], rows[-1], use, f, f <= FLAT_MEMORY_FACTOR,
                    [r for r in rows if r.get(use)]))
    return out


def bar_verdict(results):
    """Lines judging the issue's bar with the measured numbers (or saying what is missing)."""
    name = results['cfg'].get('bar_dataset')
    e = next((d for d in results['datasets'] if d['name'] == name), None)
    lines = []
    if e is None:
        return ['- Bar data set %s was not part of this run.' % name]
    o, c = e.get('ours'), e.get('cryodrgn')
    so, sc = e.get('score_ours'), e.get('score_cryodrgn')
    verdict = {}
    if _ok(o) and _ok(c):
        r = o['images_per_s'] / c['images_per_s']
        verdict['throughput >= %.0fx' % BAR_THROUGHPUT_RATIO] = r >= BAR_THROUGHPUT_RATIO
        lines.append('- Training throughput ratio (ours / cryoDRGN, images/s, same CPU, same '
                     'run): **%.2f** (%.1f vs %.1f) -> %s (bar: >= %.0f)' % (
                         r, o['images_per_s'], c['images_per_s'],
                         'PASS' if r >= BAR_THROUGHPUT_RATIO else 'FAIL', BAR_THROUGHPUT_RATIO))
        ce = [t for t in (c.get('epoch_s') or []) if t]
        if ce and c.get('n_particles'):
            fastest = c['n_particles'] / min(ce)
            lines.append('- Same ratio against cryoDRGN\'s fastest epoch (its least disturbed '
                         'one; conservative for us): **%.2f** (%.1f vs %.1f images/s)'
                         % (o['images_per_s'] / fastest, o['images_per_s'], fastest))
        if o.get('omp_wait_policy') or c.get('omp_wait_policy'):
            lines.append('- OpenMP wait policy: ours %s, cryoDRGN %s (see "Threads and '
                         'OpenMP wait policy").' % (o.get('omp_wait_policy', '?'),
                                                    c.get('omp_wait_policy', '?')))
        for alt in e.get('cryodrgn_other_policies') or []:
            lines.append('- cryoDRGN trained on the same data set earlier in this run with '
                         'OMP_WAIT_POLICY=%s: %.1f images/s over %d epochs (ratio ours / it: '
                         '%.2f; load average %s).' % (
                             alt.get('omp_wait_policy'), alt['images_per_s'],
                             alt.get('epochs', 0), o['images_per_s'] / alt['images_per_s'],
                             ' -> '.join('%.1f' % x for x in alt.get('load_avg') or [])))
        ea, eb = (_get(e, 'ours', 'derived', 'end_to_end_images_per_s'),
                  _get(e, 'cryodrgn', 'derived', 'end_to_end_images_per_s'))
        if ea and eb:
            lines.append('- Same ratio over the whole training command (start-up, data '
                         'loading, final latent pass included): **%.2f** (%.1f vs %.1f '
                         'images/s)' % (ea / eb, ea, eb))
        if o.get('images_per_cpu_s') and c.get('images_per_cpu_s'):
            rc = o['images_per_cpu_s'] / c['images_per_cpu_s']
            spins = 'ACTIVE' in (o.get('omp_wait_policy'), c.get('omp_wait_policy'))
            lines.append('- Same ratio per CPU-second (training images / CPU time of the whole '
                         'command%s): **%.2f** (%.1f vs %.1f)' % (
                             '; NOT a fair comparison here: spinning OpenMP threads (ACTIVE) '
                             'count as CPU time while they wait' if spins else
                             ', robust to other load on the machine',
                             rc, o['images_per_cpu_s'], c['images_per_cpu_s']))
        lines.append('- Training: %s epochs (ours) vs %s epochs (cryoDRGN); wall time %.0f s '
                     'vs %.0f s (ratio %.2f); peak RSS %.0f MB vs %.0f MB (ratio %.2f).' % (
                         o.get('epochs'), c.get('epochs'), o['wall_s'], c['wall_s'],
                         o['wall_s'] / c['wall_s'], o['peak_rss_mb'], c['peak_rss_mb'],
                         o['peak_rss_mb'] / c['peak_rss_mb']))
        oi, ci = o.get('infer') or {}, c.get('infer') or {}
        if oi.get('wall_s') and ci.get('wall_s'):
            o0 = o.get('infer_encoder_only') or {}
            lines.append(
                '- Inference (latents of all %s particles, whole command): ours %.1f s '
                '(default: encoder + per-particle latent refinement; peak RSS %.0f MB) vs '
                'cryoDRGN `eval_images` %.1f s (encoder only; peak RSS %.0f MB): ratio %.2f%s.'
                % (oi.get('n_particles', '?'), oi['wall_s'], oi['peak_rss_mb'], ci['wall_s'],
                   ci['peak_rss_mb'], oi['wall_s'] / ci['wall_s'],
                   ('; ours encoder only (`--refine-steps 0`): %.1f s (ratio %.2f)'
                    % (o0['wall_s'], o0['wall_s'] / ci['wall_s'])) if o0.get('wall_s') else ''))
        cores = (results.get('machine') or {}).get('cpus') or 1
        loads = [x for r_ in (o, c) for x in (r_.get('load_avg') or [])]
        if loads and max(loads) > cores:
            lines.append('- Note: the 1-minute load average reached %.1f on %d cores during '
                         'these runs (other work on the machine); wall-clock throughput of '
                         'either tool is then lower than on a quiet machine.'
                         % (max(loads), cores))
    else:
        verdict['throughput >= %.0fx' % BAR_THROUGHPUT_RATIO] = None
        lines.append('- Throughput ratio: not measured (%s).' % ', '.join(
            '%s: %s' % (t, (x or {}).get('error', 'not run').splitlines()[-1][:160])
            for t, x in (('ours', o), ('cryoDRGN', c)) if not _ok(x)))
    if _ok(so) and _ok(sc):
        for key, label, better, in_bar in (('spearman', 'latent Spearman', 'high', True),
                                           ('knn_error', 'kNN error', 'low', True),
                                           ('fsc_auc', 'FSC-AUC', 'high', True),
                                           ('population_emd', 'population EMD', 'low', False)):
            a, b = so.get(key), sc.get(key)
            if a is None or b is None:
                lines.append('- %s: not measured.' % label)
                if in_bar:
                    verdict[label] = None
                continue
            ok = a >= b if better == 'high' else a <= b
            if in_bar:
                verdict[label] = ok
            lines.append('- %s: ours %.3f vs cryoDRGN %.3f (ratio %s) -> %s (%s: equal or %s)'
                         % (label, a, b, _f(_ratio(a, b), '%.2f'),
                            ('PASS' if ok else 'FAIL') if in_bar else
                            ('better' if ok else 'worse'),
                            'bar' if in_bar else 'not part of the bar',
                            'higher' if better == 'high' else 'lower'))
    else:
        for label in ('latent Spearman', 'kNN error', 'FSC-AUC'):
            verdict[label] = None
        lines.append('- Accuracy (Spearman, kNN error, FSC-AUC): not measured for %s.' % (
            ' and '.join(t for t, x in (('ours', so), ('cryoDRGN', sc)) if not _ok(x))))
    flat = _memory_flat(results)
    for label, lo, hi, use, f, passed, rows_all in flat:
        key = use.split('_')[0]
        verdict['%s memory flat' % label] = passed
        lines.append('- Peak %s memory of %s, %d -> %d particles: %.0f -> %.0f MB (x%.2f) '
                     '-> %s (flat: within x%.2f; every size: %s MB); total RSS incl. '
                     'memory-mapped stack pages %s -> %s MB' % (
                         'anonymous' if use.endswith('anon_mb') else 'resident', label,
                         lo['n_particles'], hi['n_particles'], lo[use], hi[use], f,
                         'PASS' if passed else 'FAIL', FLAT_MEMORY_FACTOR,
                         ', '.join('%.0f' % r[use] for r in rows_all),
                         _f(lo.get(key + '_peak_rss_mb'), '%.0f'),
                         _f(hi.get(key + '_peak_rss_mb'), '%.0f')))
    if not flat:
        verdict['memory flat'] = None
        lines.append('- Memory against the number of particles: not measured for our tool.')
    failed = [k for k, v in verdict.items() if v is False]
    missing = [k for k, v in verdict.items() if v is None]
    overall = ('**BAR: FAIL** (%s)' % ', '.join(failed) if failed else
               '**BAR: INCOMPLETE** (not measured: %s)' % ', '.join(missing) if missing else
               '**BAR: PASS** (%s)' % ', '.join(verdict))
    return [overall, ''] + lines


def probe_section(probe, earlier=()):
    """Markdown lines for the OpenMP wait-policy probe (empty if it did not run).

    ``earlier``: probes run before the one that counts (e.g. under load), shown too.
    """
    if not _ok(probe):
        return []
    extra = []
    for old in earlier or ():
        if _ok(old):
            loads = [x for r in old['rows'] for x in (r.get('load_avg') or [])]
            extra += ['An earlier probe (%s; 1-minute load average %s on the machine) '
                      'measured:' % (old.get('when', 'same session'),
                                     '%.1f-%.1f' % (min(loads), max(loads)) if loads else '?'),
                      '', _probe_table(old, 'chosen then'), '']
    loads = [x for r in probe['rows'] for x in (r.get('load_avg') or [])]
    return ['## Threads and OpenMP wait policy', '',
            'Both tools run with the same number of threads (%s). How idle OpenMP threads '
            'wait can change throughput on 2 cores by 2x or more, and not the same way for '
            'both tools, so a short probe (%d particles of the bar data set; ours: last of 2 '
            'epochs, cryoDRGN: 1 epoch; best of the repetitions) measured each tool under '
            'each policy. cryoDRGN then runs with the policy that was fastest for it, so '
            'that the ratio is not inflated by a setting that handicaps it; ours keeps the '
            "policy its CLI sets (PASSIVE: robust when other work shares the cores)."
            ' Load average during the probe: %s.'
            % (probe.get('threads'), probe.get('n_particles', 0),
               '%.1f-%.1f' % (min(loads), max(loads)) if loads else '?'), '',
            _probe_table(probe), ''] + extra


def _probe_table(probe, mark='**used**'):
    rows = []
    for tool, label in (('ours', 'continuousflex_geodl'), ('cryodrgn', 'cryoDRGN')):
        for pol, best in sorted((probe.get('best') or {}).get(tool, {}).items()):
            runs = [r for r in probe['rows'] if r['tool'] == tool and r['policy'] == pol
                    and r['status'] == 'ok']
            rows.append([label, pol, '%.1f' % best,
                         ', '.join('%.1f' % r['images_per_s'] for r in runs),
                         mark if (probe.get('chosen') or {}).get(tool) == pol else ''])
    return _table(['tool', 'OMP_WAIT_POLICY', 'best training images/s', 'runs', ''], rows)


def _failures(results):
    out = []
    for e in results['datasets']:
        for key in ('status_dataset', 'ours', 'cryodrgn', 'score_ours', 'score_cryodrgn'):
            x = e.get(key)
            if isinstance(x, dict) and x.get('status') not in (None, 'ok'):
                out.append('- %s / %s: %s — %s' % (e['name'], key, x['status'],
                                                  x.get('error', '').splitlines()[-1][:300]
                                                  if x.get('error') else ''))
            elif x is None and key != 'status_dataset':
                out.append('- %s / %s: not run' % (e['name'], key))
    for key, x in results.get('scaling', {}).items():
        if x is None:
            out.append('- %s: not run' % key)
        elif x.get('status') != 'ok':
            out.append('- %s: %s — %s' % (key, x.get('status'), x.get('error', '')[:300]))
        else:
            for r in x.get('rows', []):
                if r.get('status') != 'ok':
                    what = ', '.join('%s=%s' % (k, r[k]) for k in ('tool', 'method', 'n_particles',
                                                                    'n_atoms', 'box') if k in r)
                    out.append('- %s (%s): %s %s' % (key, what, r.get('status'),
                                                     (r.get('error') or '')[:200]))
    return out


def scaling_tables(scaling):
    parts = []
    sp = scaling.get('scaling_particles')
    if _ok(sp) and sp.get('rows'):
        rows = sorted(sp['rows'], key=lambda r: (r['tool'], r['n_particles']))
        parts.append('### Cost against the number of particles (box 64, 1 epoch)\n\n'
                     'RSS = resident memory, including pages of memory-mapped files; anon = '
                     'RSS minus file-backed pages (what the process really holds). Training: '
                     '1 epoch; inference: each tool\'s default command (ours: encoder + '
                     'per-particle latent refinement; cryoDRGN: `eval_images`, encoder '
                     'only).\n\n' + _table(
            ['tool', 'particles', 'OMP wait policy', 'train images/s', 'train wall (s)',
             'train peak RSS / anon (MB)', 'infer images/s', 'infer wall (s)',
             'infer peak RSS / anon (MB)'],
            [[r['tool'], r['n_particles'], r.get('omp_wait_policy') or '?',
              _f(r.get('images_per_s'), '%.1f'),
              _f(r.get('train_wall_s'), '%.0f'),
              '%s / %s' % (_f(r.get('train_peak_rss_mb'), '%.0f'),
                           _f(r.get('train_peak_anon_mb'), '%.0f')),
              _f(r.get('infer_images_per_s'), '%.1f'), _f(r.get('infer_wall_s'), '%.0f'),
              '%s / %s' % (_f(r.get('infer_peak_rss_mb'), '%.0f'),
                           _f(r.get('infer_peak_anon_mb'), '%.0f'))]
             if r.get('status') == 'ok' else [r['tool'], r['n_particles'], '', r.get('status'),
                                              '', '', '', '', ''] for r in rows]))
    sb = scaling.get('scaling_box')
    if _ok(sb) and sb.get('rows'):
        rows = sorted(sb['rows'], key=lambda r: (r['tool'], r['box']))
        parts.append('### Training cost against the box size (1 epoch)\n\n' + _table(
            ['tool', 'box (px)', 'particles', 'train images/s', 'peak RSS (MB)', 'wall (s)'],
            [[r['tool'], r['box'], r.get('n_particles', ''), _f(r.get('images_per_s'), '%.1f'),
              _f(r.get('peak_rss_mb'), '%.0f'), _f(r.get('wall_s'), '%.0f')]
             if r.get('status') == 'ok' else [r['tool'], r['box'], '', r.get('status'), '', '']
             for r in rows]))
    sr = scaling.get('scaling_render')
    if _ok(sr) and sr.get('rows'):
        rows = sorted(sr['rows'], key=lambda r: (r['axis'], r['method'], r['n_atoms'], r['box']))
        parts.append('### Projector forward + backward (batch of %d images)\n\n'
                     'Best of up to 5 repetitions after a first call (which includes KeOps '
                     'compilation when its cache is cold); %s CPU thread(s). Memory of the '
                     'step: peak resident memory during the forward + backward passes above '
                     'the resident memory just before them (Linux high-water mark reset); the '
                     'process peak is dominated by the imports.\n\n' % (
                         sr['rows'][0].get('batch', 0), sr['rows'][0].get('threads', '?'))
                     + _table(
            ['varied', 'backend', 'atoms', 'box', 's / batch', 'first call (s)',
             'memory of the step (MB)', 'process peak RSS (MB)'],
            [[r['axis'], r['method'], r['n_atoms'], r['box'], _f(r.get('s_per_batch'), '%.3g'),
              _f(r.get('first_s'), '%.3g'), _f(r.get('step_extra_mb'), '%.0f'),
              _f(r.get('peak_rss_mb'), '%.0f')]
             if r.get('status') == 'ok' else [r['axis'], r['method'], r['n_atoms'], r['box'],
                                              r.get('status'), '', '', ''] for r in rows]))
    return parts


def _first_run(results, tool, key):
    for e in results.get('datasets', []):
        r = e.get(tool)
        if _ok(r) and r.get(key):
            return r[key]
    return None


def write_report(results, report_dir):
    """Write REPORT.md and plots in ``report_dir``; returns the Markdown path."""
    os.makedirs(report_dir, exist_ok=True)
    m = results.get('machine', {})
    cfg = results.get('cfg', {})
    L = ['# Benchmark: continuousflex_geodl vs cryoDRGN', '',
         'Profile **%s**, written %s by `benchmarks/run_benchmarks.py`. Every number below '
         'was measured in this run; what was not measured is listed at the end with the '
         'reason.' % (results.get('profile'), time.strftime('%Y-%m-%d %H:%M')), '',
         '- Machine: %s, %s CPUs, %s GB RAM; %s; torch %s; cryoDRGN %s.' % (
             m.get('cpu', '?'), m.get('cpus', '?'), m.get('memory_gb', '?'),
             m.get('platform', '?'), m.get('torch', '?'), m.get('cryodrgn', '?')),
         '- Both tools: %s CPU threads (OpenMP wait policy per tool: see "Threads and '
         'OpenMP wait policy"), latent dimension %s, known poses and CTF. Ours: '
         '`continuousflex-geodl train` and `infer` with their '
         'defaults (%s epochs, batch %s; inference = encoder + per-particle latent '
         'refinement). cryoDRGN: `train_vae` %s epochs (its default number), encoder and '
         'decoder 3 x 256 (sized for the CPU; its 1024-wide defaults are several times '
         'slower), batch %s; `eval_images` for inference.' % (
             cfg.get('threads'), cfg.get('zdim'),
             cfg.get('ours_epochs') or _first_run(results, 'ours', 'epochs') or 'default',
             cfg.get('batch_size') or _first_run(results, 'ours', 'batch_size') or 'default',
             cfg.get('cryodrgn_epochs', cfg.get('epochs')), cfg.get('cryodrgn_batch_size')),
         '- Throughput = training images per second over the training epochs only (each '
         "tool's own per-epoch timer), excluding start-up and the final latent pass; wall "
         'and CPU time cover the whole command; peak RSS is the summed resident memory of '
         'the process tree, polled every 0.5 s. The tools ran one after the other on each '
         'data set; the 1-minute load average is recorded with each run (other work on the '
         'machine slows wall-clock figures).', '']
    cc = results.get('convention_check')
    if cc:
        L += ['## Conventions check', '',
              'Particles projected with our renderer (RELION 3.1 star, no phase-shift column) '
              'and reconstructed by `cryodrgn backproject_voxel` (%d particles, %d px): the '
              'untouched ground truth %s the best match among its 48 axis permutations and '
              'mirror images (FSC-AUC %.3f, FSC=0.5 at %.1f A; runner-up %s: FSC-AUC %.3f).'
              % (cc['n_particles'], cc['box'], 'is' if cc['passed'] else 'is NOT',
                 cc['identity']['fsc_auc'], cc['identity']['res_fsc05'], cc['runner_up'],
                 cc['runner_up_score']['fsc_auc']), '']
    L += ['## The bar (three-mode set, 64 px, SNR 0.1)', ''] + bar_verdict(results) + ['']
    L += probe_section(results.get('wait_policy_probe'),
                       results.get('wait_policy_probes_earlier'))
    if os.path.exists(os.path.join(report_dir, 'model_bar.md')):
        L += ["The model's own bar (structures decoded against the true pseudo-atoms, an "
              'oracle bound) is in [model_bar.md](model_bar.md) (`benchmarks/bench_model.py`).',
              '']
    tp = plot_throughput(results['datasets'], os.path.join(report_dir, 'throughput.png'))
    if tp:
        L += ['![throughput](throughput.png)', '']
    L += ['## Data sets', '']
    for e in results['datasets']:
        spec, summ = e.get('spec', {}), e.get('summary') or {}
        L += ['### %s' % e['name'], '']
        if summ:
            L += ['%s particles, box %s px at %s A/px, SNR %s (measured %s), motion %s, '
                  'population %s.' % (summ.get('n_particles'), summ.get('box'), summ.get('apix'),
                                      summ.get('snr_target'), _f(summ.get('snr_measured')),
                                      (summ.get('motion') or {}).get('kind', spec.get('motion')),
                                      (summ.get('population') or {}).get(
                                          'kind', spec.get('population'))), '']
        for t in ('ours', 'cryodrgn'):
            r = e.get(t)
            if _ok(r) and r.get('load_avg'):
                L.append('- %s: load average %.1f -> %.1f during training.' % (
                    t, r['load_avg'][0], r['load_avg'][1]))
        tab = dataset_table(e)
        L += ['', tab if tab else '_No results for this data set (see the end)._', '']
        for f in plot_dataset(e, report_dir):
            L += ['![%s](%s)' % (f, f), '']
    L += ['## How cost grows', '']
    parts = scaling_tables(results.get('scaling', {}))
    for part in (parts or ['_No scaling results (see the end)._']):
        L += [part, '']
    for f in plot_scaling(results.get('scaling', {}), report_dir):
        L += ['![%s](%s)' % (f, f), '']
    L += ['## Metric definitions', '',
          '- FSC: per Fourier shell (rounded radius), curves to Nyquist; resolution where it '
          'first drops below the threshold (linear interpolation). FSC-AUC: area under FSC '
          'against frequency in cycles/pixel, 0..0.5 (CryoBench), for the volume each tool '
          'decodes at the latent medoid of the particles of each true-coordinate bin, against '
          'the ground-truth volume of the bin median, both under a soft spherical mask.',
          '- Map distances (Flatiron challenge): masked maps normalised by median and standard '
          "deviation; correlation = Pearson's r of the masked voxels; 1 - mean FSC over shells "
          '1..D/2.',
          '- Latent recovery: |Spearman| between the first principal axis of the latents and '
          'the true coordinate (1D); for 2D motions the linear least-squares prediction of each '
          'true axis from the latents, averaged over axes. kNN error: mean distance in the true '
          'coordinate between each particle and its %s nearest latent neighbours, divided by '
          'the mean distance of random pairs (0 perfect, 1 random). Overlap: fraction of true '
          'neighbours that are latent neighbours.' % cfg.get('knn_k', 10),
          '- Populations: k-means (%s states) of the latents; each state decoded and assigned '
          'the true coordinate whose ground-truth volume correlates best; EMD between the '
          'state-weighted recovered coordinates and the true coordinates (1D closed form; 2D '
          'exact transport on an 11 x 11 grid).' % cfg.get('n_clusters'), '']
    st = results.get('stage_times') or {}
    if st:
        L += ['## Wall time of the stages', '',
              'Last run of each stage, in the order they finished (`ours+cryodrgn`: both '
              'tools trained and inferred, interleaved data set by data set; a stage re-run '
              'on some data sets only is listed with them).', '',
              _table(['stage', 'wall (s)', 'wall (min)', 'finished'],
                     [[k, '%.0f' % v['wall_s'], '%.1f' % (v['wall_s'] / 60), v.get('finished', '')]
                      for k, v in sorted(st.items(), key=lambda kv: kv[1].get('finished', ''))]
                     + [['**total**', '%.0f' % sum(v['wall_s'] for v in st.values()),
                         '%.1f' % (sum(v['wall_s'] for v in st.values()) / 60), '']]), '']
    fails = _failures(results)
    if fails:
        L += ['## Not measured in this run', ''] + fails + ['']
    return atomic_write_text(os.path.join(report_dir, 'REPORT.md'), '\n'.join(L) + '\n')
