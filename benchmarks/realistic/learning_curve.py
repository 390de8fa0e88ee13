"""Accuracy against the number of training particles (issue 11, point 2).

Is the gap to the oracle a finite-data cost (the decoder is learnt from N
noisy images; the oracle is given the true structures) or a defect of the
model that more data would not remove?  One large base of the three-state
set (``datasets.make_sets``, same laws as the benchmark's sets, another seed:
none of its particles is in the scored set) is made once; ``train`` with the
defaults runs on its first N particles for each N; ``infer`` and
``landscape analyze`` (defaults) then run on the benchmark's own set
(``adk_three_state_b64_snr0.1_exact``, 2,000 particles, held out from every
model here), which is scored against its truth with the oracle beside it.
Every model is judged on the same particles, none of which it was trained on.

Usage::

    python benchmarks/realistic/learning_curve.py --n 2000 5000 10000 --seeds 1 --threads 1

Runs are kept under ``work/realistic_n/runs/nN__seedS``; the report goes to
``benchmarks/report/realistic_learning_curve.md`` (and ``.json``).
"""
import argparse
import json
import os
import shlex
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets as D  # noqa: E402
import run as R  # noqa: E402

SCORED = 'adk_three_state_b64_snr0.1_exact'
BIG = os.path.join(R.BENCH, 'work', 'realistic_n')
OUT = os.path.join(R.REPORT, 'realistic_learning_curve')


def make_big(root, n, seed):
    """The large training base (three-state, 64 px, SNR 0.1), made once."""
    name = D.set_name('three_state', 64, 0.1, 'exact')
    star = os.path.join(root, name, 'particles.star')
    if not os.path.exists(os.path.join(root, name, 'set.json')):
        D.make_sets(root, n=n, box=64, apix=2.0, snrs=(0.1,), seed=seed, pops=['three_state'])
    with open(os.path.join(root, name, 'set.json')) as f:
        info = json.load(f)
    if info['n_particles'] < n or info['seed'] != seed:
        raise SystemExit('%s holds %d particles of seed %d; remove it to make %d of seed %d'
                         % (root, info['n_particles'], info['seed'], n, seed))
    return star


def subset_star(star, n, out):
    """The first ``n`` particles of ``star`` (RELION 3.1, optics kept) in ``out``."""
    import starfile
    blocks = starfile.read(star, always_dict=True)
    blocks['particles'] = blocks['particles'].iloc[:n].reset_index(drop=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    starfile.write(blocks, out, overwrite=True)
    return out


def scored_oracle():
    """Oracle bound of the scored set: its ``oracle.json`` when the set folder
    has one, else the figures ``run.py`` recorded in ``realistic.json``."""
    p = os.path.join(R.WORK, SCORED, 'oracle.json')
    if os.path.exists(p):
        with open(p) as f:
            o = json.load(f)
    else:
        with open(os.path.join(R.REPORT, 'realistic.json')) as f:
            o = json.load(f)['sets'][SCORED]['oracle']
    return dict(spearman=o['spearman_posterior_mean'], knn_error=o['knn_error_posterior_mean'],
                spearman_within_states=o.get('spearman_within_states'))


def one_run(a, big_star, n, seed):
    rdir = os.path.join(a.work, 'runs', 'n%d%s__seed%d' % (n, a.tag, seed))
    res_path = os.path.join(rdir, 'result.json')
    if os.path.exists(res_path):
        with open(res_path) as f:
            return json.load(f)
    os.makedirs(rdir, exist_ok=True)
    # the subset star sits beside the big one, so that Stacks/ resolves as there
    star = subset_star(big_star, n, os.path.join(os.path.dirname(os.path.dirname(big_star)),
                                                 'sub_n%d' % n, 'particles.star'))
    sdir = os.path.join(R.WORK, SCORED)
    model, z, land = (os.path.join(rdir, x) for x in ('model', 'z.npy', 'landscape'))
    res = dict(n_train=n, seed=seed, commands=[], load_before=R.loadavg())
    steps = (('train', ['train', '--particles', star, '--reference',
                        os.path.join(sdir, 'reference_closed.pdb'), '--out', model,
                        '--seed', seed, '--threads', a.threads] + shlex.split(a.train_args)),
             ('infer', ['infer', '--model', model, '--particles',
                        os.path.join(sdir, 'particles.star'), '--out', z,
                        '--threads', a.threads]),
             ('landscape', ['landscape', 'analyze', '--latents', z, '--out', land]))
    for key, args in steps:
        if key == 'train' and os.path.exists(os.path.join(model, 'weights.pt')):
            continue   # trained by an earlier call that stopped later
        wall, line = R.cli(args, os.path.join(rdir, key + '.log'), a.threads)
        res[key + '_wall_s'] = wall
        res['load_after_' + key] = R.loadavg()
        res['commands'].append(line)
    with np.load(os.path.join(sdir, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    res.update(R.score_latents(np.load(z), gt))
    res['states'] = R.score_states(land, gt)
    with open(res_path, 'w') as f:
        json.dump(res, f, indent=1)
    return res


def model_prior(rdir):
    """The latent prior a run's model was trained with (its config.json)."""
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.settings import settings_only
    return str(settings_only(ModelDir(os.path.join(rdir, 'model')).read_config())['prior'])


def collect(work):
    """Every finished run under ``work/runs`` (any N, seed, options), with its prior."""
    rows = []
    runs = os.path.join(work, 'runs')
    for d in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        p = os.path.join(runs, d, 'result.json')
        if os.path.exists(p):
            with open(p) as f:
                r = json.load(f)
            r['run'] = d
            r['prior'] = model_prior(os.path.join(runs, d))
            rows.append(r)
    return sorted(rows, key=lambda r: (r['prior'], r['n_train'], r['seed']))


def write_report(rows, oracle, a):
    with open(a.out + '.json', 'w') as f:
        json.dump(dict(oracle=oracle, rows=rows), f, indent=1)
    lines = ['# Accuracy against the number of training particles (realistic set)', '',
             'Command: `python benchmarks/realistic/learning_curve.py --n N --first-seed S '
             "[--tag _gauss --train-args '--prior gaussian']` (one call per row or rows; "
             'the report lists every finished run).', '',
             'Train: `train --seed S [--prior P]` (defaults otherwise; the prior column is '
             "read from each model's config.json) on the first N particles of a three-state "
             'base of %d particles made with another seed (64 px, SNR 0.1, exact poses, '
             'same laws).  Scored: `infer` + `landscape analyze` (defaults) on `%s` (2,000 '
             'particles that no model here was trained on).  Oracle of the scored set: '
             '|Spearman| %.4f, kNN error %.4f, within-state Spearman %s.'
             % (a.big_n, SCORED, oracle['spearman'], oracle['knn_error'],
                ' / '.join('%.3f' % x for x in oracle.get('spearman_within_states') or [])),
             '',
             '| prior | N train | seed | \\|Spearman\\| | gap | kNN err | gap | within-state '
             'Spearman | states (populations; truth %s) | train s | load |'
             % ' / '.join('%.3f' % t for t in rows[0]['states']['true_populations']),
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        st = r['states']
        tw = r.get('train_wall_s')
        lines.append('| %s | %d | %d | %.4f | %.4f | %.4f | %.4f | %s | %d: %s | %s | %s |' % (
            r['prior'], r['n_train'], r['seed'], r['spearman'],
            oracle['spearman'] - r['spearman'], r['knn_error'],
            r['knn_error'] - oracle['knn_error'],
            ' / '.join('%.3f' % x for x in r.get('spearman_within_states', [])),
            st['n_states'], ' / '.join('%.3f' % p for p in st['populations']),
            '%.0f' % tw if tw else '-', r.get('load_after_train', '-')))
    lines.append('')
    with open(a.out + '.md', 'w') as f:
        f.write('\n'.join(lines))
    print('wrote', a.out + '.md')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, nargs='*', default=[2000, 5000, 10000],
                    help='training sizes to run (none: only rewrite the report)')
    ap.add_argument('--seeds', type=int, default=1)
    ap.add_argument('--first-seed', type=int, default=0)
    ap.add_argument('--big-n', type=int, default=10000, help='particles of the training base')
    ap.add_argument('--big-seed', type=int, default=1, help='simulation seed of the base '
                    '(the scored set is seed 0)')
    ap.add_argument('--threads', default='1')
    ap.add_argument('--work', default=BIG)
    ap.add_argument('--out', default=OUT)
    ap.add_argument('--tag', default='', help='run folder suffix (runs with --train-args)')
    ap.add_argument('--train-args', default='', help='extra train options, one string')
    a = ap.parse_args(argv)
    if a.n and max(a.n) > a.big_n:
        ap.error('--n larger than --big-n')
    big_star = make_big(a.work, a.big_n, a.big_seed)
    oracle = scored_oracle()
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for n in a.n:
            r = one_run(a, big_star, n, seed)
            print('N %d seed %d: Spearman %.4f kNN %.4f, %d states %s' % (
                n, seed, r['spearman'], r['knn_error'], r['states']['n_states'],
                np.round(r['states']['populations'], 3)), flush=True)
    write_report(collect(a.work), oracle, a)


if __name__ == '__main__':
    main()
