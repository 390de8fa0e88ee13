"""Inference on a realistic set, side by side: our ``infer`` with a model trained
with the defaults, and cryoDRGN ``eval_images`` with the weights ``run.py
--stages cryodrgn`` trained on the same particles (same poses, CTFs, threads).

Rounds interleave the two tools so that both see the same machine load; every
timed command records its wall and CPU seconds (user + system, children
included) and the 1-minute load average before and after.

    python benchmarks/realistic/infer_vs_cryodrgn.py RUN_DIR [--set NAME] [--rounds 2]

RUN_DIR holds ``model/`` (ours, e.g. a ``state_seeds.py`` run); the cryoDRGN
run is ``work/realistic_smooth/runs/NAME__cryodrgn``.  Writes
``benchmarks/report/realistic_inference.md`` (and ``.json``).
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import cryodrgn_runner as C  # noqa: E402
import run as R  # noqa: E402
from common import run_measured, thread_env  # noqa: E402


def _score(z, gt):
    s = R.score_latents(z, gt)
    return dict(spearman=s['spearman'], knn_error=s['knn_error'])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run')
    ap.add_argument('--set', default='adk_three_state_b64_snr0.1_exact')
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--threads', default='1')
    ap.add_argument('--out', default=os.path.join(R.REPORT, 'realistic_inference'))
    a = ap.parse_args(argv)
    sdir = os.path.join(R.WORK, a.set)
    star = os.path.join(sdir, 'particles.star')
    cdir = os.path.join(R.WORK, 'runs', a.set + '__cryodrgn')
    with np.load(os.path.join(sdir, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    prep = dict(poses=os.path.join(cdir, 'prep', 'poses.pkl'),
                ctf=os.path.join(cdir, 'prep', 'ctf.pkl'), n_particles=len(gt['path_coord']))
    work = os.path.join(a.run, 'infer_vs_cryodrgn')
    os.makedirs(work, exist_ok=True)
    env = thread_env(int(a.threads))
    rows = []
    for r in range(a.rounds):
        c = C.infer(star, prep, os.path.join(cdir, 'train'), threads=int(a.threads))
        zc = C.latents(os.path.join(cdir, 'train'), z_pkl=c['z_path'])
        rows.append(dict(tool='cryoDRGN eval_images', round=r + 1, wall_s=c['wall_s'],
                         cpu_s=c['cpu_s'], load=c['load_avg'], peak_rss_mb=c['peak_rss_mb'],
                         **_score(zc, gt)))
        z = os.path.join(work, 'z.npy')
        cmd = [sys.executable, '-m', 'continuousflex_geodl', 'infer', '--model',
               os.path.join(a.run, 'model'), '--particles', star, '--out', z,
               '--threads', str(a.threads)]
        m = run_measured(cmd, os.path.join(work, 'infer_%d.log' % (r + 1)), env=env)
        rows.append(dict(tool='ours, infer (defaults)', round=r + 1, wall_s=m['wall_s'],
                         cpu_s=m['cpu_s'], load=[m['load_avg_start'], m['load_avg_end']],
                         peak_rss_mb=m['peak_rss_mb'], **_score(np.load(z), gt)))
        print(rows[-2], rows[-1], flush=True)
    with open(a.out + '.json', 'w') as f:
        json.dump(dict(set=a.set, run=a.run, rows=rows), f, indent=1)
    cpu = {t: np.median([x['cpu_s'] for x in rows if x['tool'] == t]) for t in
           dict.fromkeys(x['tool'] for x in rows)}
    wall = {t: np.median([x['wall_s'] for x in rows if x['tool'] == t]) for t in cpu}
    ref = 'cryoDRGN eval_images'
    lines = ['# Inference on a realistic set: ours vs cryoDRGN eval_images', '',
             'Command: `python benchmarks/realistic/infer_vs_cryodrgn.py %s`' % ' '.join(
                 sys.argv[1:]), '',
             'Set `%s` (2,000 particles, 64 px, all-atom AdK, independent simulator); our '
             'model: `%s/model` (train defaults); cryoDRGN: the `train_vae` weights of '
             '`run.py --stages cryodrgn` on the same particles (zdim 8, 3x256).  %s '
             'thread(s); rounds interleaved.' % (a.set, os.path.relpath(a.run), a.threads), '',
             '| tool | round | wall s | CPU s | load (1 min, before / after) | max RSS MB | '
             '\\|Spearman\\| | kNN err |', '|---|---|---|---|---|---|---|---|']
    for x in rows:
        lines.append('| %s | %d | %.1f | %.1f | %.2f / %.2f | %.0f | %.4f | %.4f |' % (
            x['tool'], x['round'], x['wall_s'], x['cpu_s'], x['load'][0], x['load'][1],
            x['peak_rss_mb'], x['spearman'], x['knn_error']))
    lines += ['', 'Medians: cryoDRGN %.1f CPU s / %.1f s wall; ours %.1f CPU s / %.1f s wall: '
              '**%.1fx less CPU, %.1fx less wall time**.' % (
                  cpu[ref], wall[ref], cpu['ours, infer (defaults)'],
                  wall['ours, infer (defaults)'], cpu[ref] / cpu['ours, infer (defaults)'],
                  wall[ref] / wall['ours, infer (defaults)']), '']
    with open(a.out + '.md', 'w') as f:
        f.write('\n'.join(lines))
    print('wrote', a.out + '.md')


if __name__ == '__main__':
    main()
