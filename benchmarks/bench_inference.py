"""Inference side by side with cryoDRGN ``eval_images``, in one run.

For each box (64 and 128 px by default) on a simulated set with ground truth
(hinge motion, three-mode population, SNR 0.1, known poses and CTF):

* trains our model once with the default settings (``train``) and a short
  cryoDRGN ``train_vae`` (one epoch on a few hundred of the particles: enough
  to time ``eval_images`` on all of them, whose cost does not depend on how
  long or on what the network was trained -- so cryoDRGN's accuracy here is
  not a comparison);
* then, interleaved and repeated so that both tools see the same machine
  load, times as child processes (start-up, imports and reading included):
  cryoDRGN ``eval_images``; our default ``infer`` (encoder + batched Gauss-
  Newton latent refinement with early stopping); our encoder alone
  (``infer --refine-steps 0``); and the former default refinement (30 Adam
  steps of 0.1 per particle, ``refine_latents(method='adam')``), for the
  before/after figure;
* scores every set of latents with the benchmark metrics
  (``core.metrics.latent_spearman_pc1`` and ``knn_neighbourhood_error``,
  k = 10, against the true coordinate), and records the machine's load
  average (``os.getloadavg()``) before and after every timed run.

Writes ``benchmarks/report/inference.md`` and ``inference.json``.  Usage::

    python benchmarks/bench_inference.py                   # 64 and 128 px, 2,000 particles
    python benchmarks/bench_inference.py --boxes 64 --repeats 3
    python benchmarks/bench_inference.py --skip-adam       # no before/after run

cryoDRGN must be installed first: ``python3 benchmarks/cryodrgn_runner.py
--install``.  Ratios are wall-time ratios of runs made back to back (each
round's ratio is listed) and CPU-time ratios (user + system seconds of the
command and its children, ``common.run_measured``): on a shared, loaded
machine wall times swing with the load, CPU times much less.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import (REPO, REPORT, WORK, run_measured, say, thread_env,  # noqa: E402
                    write_json)

#: simulated data sets: box -> pixel size (A) (particle diameter ~ 64 A)
APIX = {64: 2.0, 128: 1.0, 256: 0.5}


def _ours(threads):
    return thread_env(threads, wait_policy='PASSIVE')


def _cli(*args):
    return [sys.executable, '-m', 'continuousflex_geodl'] + [str(a) for a in args]


def prepare(box, n, a):
    """Simulate, train ours and cryoDRGN (each once); returns the paths."""
    import cryodrgn_runner as cr
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.particles import load_particles, write_particles_star
    work = os.path.join(a.work, 'b%d_n%d' % (box, n))
    sim = os.path.join(work, 'sim')
    star = os.path.join(sim, 'particles.star')
    if not os.path.exists(os.path.join(sim, 'summary.json')):
        run_measured(_cli('simulate', '--out', sim, '--n-particles', n, '--box',
                          box, '--apix', APIX[box], '--snr', 0.1, '--motion', 'hinge',
                          '--population', 'three_mode', '--seed', a.seed, '--end-rmsd', 6),
                     os.path.join(work, 'simulate.log'), env=_ours(a.threads), cwd=REPO)
    model = os.path.join(work, 'model')
    if not ModelDir(model).has_weights():
        say('training our model at %d px' % box)
        cmd = _cli('train', '--particles', star, '--reference',
                   os.path.join(sim, 'reference.npz'), '--out', model, '--threads', a.threads)
        if a.epochs:
            cmd += ['--epochs', str(a.epochs)]
        run_measured(cmd, os.path.join(work, 'train.log'), env=_ours(a.threads), cwd=REPO)
    cd = os.path.join(work, 'cryodrgn')
    prep = cr.prepare(star, os.path.join(cd, 'prep'), threads=a.threads)
    if not os.path.exists(os.path.join(cd, 'train', 'weights.pkl')):
        m = min(n, a.cryodrgn_train_particles)
        say('training cryoDRGN at %d px (%d epoch(s) on %d particles, for timing '
            'eval_images)' % (box, a.cryodrgn_epochs, m))
        sub = os.path.join(sim, 'cryodrgn_train_subset.star')
        write_particles_star(sub, load_particles(star).subset(np.arange(m)))
        sub_prep = cr.prepare(sub, os.path.join(cd, 'prep_train'), threads=a.threads)
        cr.train(sub, sub_prep, os.path.join(cd, 'train'), a.zdim, epochs=a.cryodrgn_epochs,
                 threads=a.threads, **cr.CPU_NETS)
    return dict(work=work, sim=sim, star=star, model=model, cryodrgn=cd, prep=prep, n=n)


_ADAM_CHILD = r'''
import sys, numpy as np
from continuousflex_geodl.core import runtime
from continuousflex_geodl.core.inference import infer_latents, load_model, refine_latents
from continuousflex_geodl.core.particles import load_particles
runtime.setup(int(sys.argv[4]))
model = load_model(sys.argv[1])
pset = load_particles(sys.argv[2])
z = infer_latents(model, pset)
z = refine_latents(model, pset, z, steps=30, lr=0.1, batch_size=128, method='adam')
np.save(sys.argv[3], z)
'''


def time_runs(p, a, rnd):
    """One round of timed runs (cryoDRGN and ours back to back)."""
    import cryodrgn_runner as cr
    n = p['n']
    out = {}
    d = os.path.join(p['work'], 'round%d' % rnd)
    os.makedirs(d, exist_ok=True)
    r = cr.infer(p['star'], p['prep'], os.path.join(p['cryodrgn'], 'train'),
                 threads=a.threads)
    out['cryodrgn_eval_images'] = dict(wall_s=r['wall_s'], cpu_s=r['cpu_s'],
                                       load_avg=r['load_avg'], peak_rss_mb=r['peak_rss_mb'],
                                       z=r['z_path'])
    runs = [('ours_default', _cli('infer', '--model', p['model'], '--particles', p['star'],
                                  '--out', os.path.join(d, 'z_default.npy'),
                                  '--threads', a.threads)),
            ('ours_encoder_only', _cli('infer', '--model', p['model'], '--particles',
                                       p['star'], '--out', os.path.join(d, 'z_encoder.npy'),
                                       '--threads', a.threads, '--refine-steps', 0))]
    if not a.skip_adam:
        runs.append(('ours_former_default_adam30',
                     [sys.executable, '-c', _ADAM_CHILD, p['model'], p['star'],
                      os.path.join(d, 'z_adam30.npy'), a.threads]))
    for name, cmd in runs:
        m = run_measured(cmd, os.path.join(d, name + '.log'), env=_ours(a.threads), cwd=REPO)
        out[name] = dict(wall_s=m['wall_s'], cpu_s=m['cpu_s'],
                         load_avg=[m['load_avg_start'], m['load_avg_end']],
                         peak_rss_mb=m['peak_rss_mb'], z=cmd[cmd.index('--out') + 1]
                         if '--out' in cmd else cmd[-2])
    for v in out.values():
        v['images_per_s'] = n / v['wall_s']
    return out


def score(p, z_path, venv=None):
    from continuousflex_geodl.core import metrics
    from continuousflex_geodl.core.simulate import load_ground_truth
    if z_path.endswith('.pkl'):
        import cryodrgn_runner as cr
        z = cr.latents(os.path.dirname(z_path), venv, z_pkl=z_path)
    else:
        z = np.load(z_path)
    u = np.asarray(load_ground_truth(p['sim'])['coords_unit'])[:, 0]
    z = np.asarray(z, dtype=np.float64)
    return dict(spearman_pc1=float(metrics.latent_spearman_pc1(z, u)),
                knn_error=float(metrics.knn_neighbourhood_error(z, u, 10)))


def bench_box(box, n, a):
    import json
    p = prepare(box, n, a)
    rounds = []
    for rnd in range(a.repeats):
        say('timing round %d/%d at %d px' % (rnd + 1, a.repeats, box))
        rounds.append(time_runs(p, a, rnd))
    acc = {name: score(p, v['z']) for name, v in rounds[-1].items()}
    names = list(rounds[0])
    summary = {}
    for name in names:
        w = np.array([r[name]['wall_s'] for r in rounds])
        ratio = np.array([r['cryodrgn_eval_images']['wall_s'] / r[name]['wall_s']
                          for r in rounds])
        cpu_ratio = np.array([r['cryodrgn_eval_images']['cpu_s'] / r[name]['cpu_s']
                              for r in rounds])
        summary[name] = dict(wall_s_median=float(np.median(w)), wall_s=w.tolist(),
                             images_per_s=float(n / np.median(w)),
                             speedup_vs_cryodrgn_median=float(np.median(ratio)),
                             speedup_vs_cryodrgn=ratio.tolist(),
                             cpu_s_median=float(np.median([r[name]['cpu_s'] for r in rounds])),
                             cpu_speedup_vs_cryodrgn_median=float(np.median(cpu_ratio)),
                             **acc[name])
    from continuousflex_geodl.core.artifacts import ModelDir
    our_epochs = len(ModelDir(p['model']).read_history())
    return dict(box=box, apix=APIX[box], n_particles=n, rounds=rounds, our_epochs=our_epochs,
                summary=summary, paths={k: v for k, v in p.items() if k != 'prep'})


def markdown(res, a):
    lines = ['# Inference: ours vs cryoDRGN eval_images (bench_inference.py)', '',
             'Same particles, same machine, same threads (%d), runs back to back in each of '
             '%d round(s); wall time of the whole command (start-up, imports, reading '
             'included). Hinge motion (6 A), three-mode population, SNR 0.1, known poses '
             'and CTF. cryoDRGN %s with 3x256 nets, trained %d epoch(s) on %d particles '
             'only to time eval_images on the whole set (its cost does not depend on the '
             'training; its accuracy does, so its accuracy columns are not a comparison). '
             'Load average (1 min, `os.getloadavg()`) before/after each run: the machine '
             'is shared.' % (a.threads, a.repeats, res.get('cryodrgn_version', '?'),
                             a.cryodrgn_epochs, a.cryodrgn_train_particles), '']
    labels = dict(cryodrgn_eval_images='cryoDRGN eval_images',
                  ours_default='ours, default infer (encoder + Gauss-Newton refinement, '
                               'early stopping)',
                  ours_encoder_only='ours, encoder only (--refine-steps 0)',
                  ours_former_default_adam30='ours, former default (encoder + 30 Adam steps)')
    for b in res['boxes']:
        lines += ['## %d px (%.1f A/px), %d particles; our model: %d epochs'
                  % (b['box'], b['apix'], b['n_particles'], b['our_epochs']), '',
                  '| run | wall s (median) | images/s | speed-up vs eval_images, wall (median; '
                  'per round) | CPU s (median) | speed-up, CPU time | abs Spearman PC1 | '
                  'kNN error |', '|---|---|---|---|---|---|---|---|']
        for name, s in b['summary'].items():
            lines.append('| %s | %.1f | %.0f | %.2fx (%s) | %.1f | %.2fx | %.4f | %.4f |' % (
                labels.get(name, name), s['wall_s_median'], s['images_per_s'],
                s['speedup_vs_cryodrgn_median'],
                ', '.join('%.2f' % x for x in s['speedup_vs_cryodrgn']),
                s['cpu_s_median'], s['cpu_speedup_vs_cryodrgn_median'],
                s['spearman_pc1'], s['knn_error']))
        lines += ['', 'Load average before/after each run:', '']
        for i, r in enumerate(b['rounds']):
            lines.append('- round %d: ' % (i + 1) + '; '.join(
                '%s %.2f/%.2f' % (k, v['load_avg'][0], v['load_avg'][1]) for k, v in r.items()))
        lines.append('')
    lines += ['Load average at the start and end of the benchmark: %s / %s.'
              % (', '.join('%.2f' % x for x in res['loadavg_start']),
                 ', '.join('%.2f' % x for x in res['loadavg_end'])), '']
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--boxes', type=int, nargs='+', default=[64, 128], choices=sorted(APIX))
    ap.add_argument('--n-particles', type=int, nargs='+', default=[2000],
                    help='particles per box (one value for all boxes, or one per box)')
    ap.add_argument('--epochs', type=int, default=None, help='our training epochs '
                    '(default: the train default)')
    ap.add_argument('--cryodrgn-epochs', type=int, default=1)
    ap.add_argument('--cryodrgn-train-particles', type=int, default=300)
    ap.add_argument('--zdim', type=int, default=4)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--skip-adam', action='store_true')
    ap.add_argument('--work', default=os.path.join(WORK, 'inference'))
    ap.add_argument('--report-dir', default=REPORT)
    a = ap.parse_args(argv)
    if len(a.n_particles) not in (1, len(a.boxes)):
        ap.error('--n-particles: give one value, or one per box')
    ns = a.n_particles * len(a.boxes) if len(a.n_particles) == 1 else a.n_particles
    import cryodrgn_runner as cr
    res = dict(cryodrgn_version=cr.check(), loadavg_start=list(os.getloadavg()),
               started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
               threads=a.threads, repeats=a.repeats, boxes=[])
    for box, n in zip(a.boxes, ns):
        res['boxes'].append(bench_box(box, n, a))
    res['loadavg_end'] = list(os.getloadavg())
    os.makedirs(a.report_dir, exist_ok=True)
    write_json(os.path.join(a.report_dir, 'inference.json'), res)
    from continuousflex_geodl.core.fileio import atomic_write
    text = markdown(res, a)
    with atomic_write(os.path.join(a.report_dir, 'inference.md')) as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
