"""Score ablation runs (``ablate.sh`` folders) with their states, as ``run.py`` does.

For each run folder holding ``z.npy``: ``landscape analyze`` (defaults) into
``RUN/landscape`` when absent, then |Spearman| of latent PC1, kNN error,
within-state Spearman, and the states against the truth of SET; one line per
run (and ``RUN/states_score.json``)::

    python benchmarks/realistic/score_run.py SET RUN [RUN ...]
    python benchmarks/realistic/score_run.py --tag fixed --kernel fixed SET RUN [RUN ...]

``--tag T`` writes ``RUN/landscape_T`` and ``RUN/states_score_T.json``
instead (another state-finder setting on the same latents);
``--kernel`` / ``--bandwidth`` are passed to ``landscape analyze``.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as R  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument('--tag', default='')
    ap.add_argument('--kernel', default=None)
    ap.add_argument('--bandwidth', default=None)
    ap.add_argument('set')
    ap.add_argument('runs', nargs='+')
    a = ap.parse_args(argv)
    name, runs = a.set, a.runs
    suffix = '_' + a.tag if a.tag else ''
    extra = (['--kernel', a.kernel] if a.kernel else []) + \
        (['--bandwidth', a.bandwidth] if a.bandwidth else [])
    with np.load(os.path.join(R.WORK, name, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    for rdir in runs:
        z, land = os.path.join(rdir, 'z.npy'), os.path.join(rdir, 'landscape' + suffix)
        if not os.path.exists(os.path.join(land, 'states.json')):
            R.cli(['landscape', 'analyze', '--latents', z, '--out', land] + extra,
                  os.path.join(rdir, 'landscape%s.log' % suffix), threads=1)
        res = R.score_latents(np.load(z), gt)
        res['states'] = R.score_states(land, gt)
        with open(os.path.join(rdir, 'states_score%s.json' % suffix), 'w') as f:
            json.dump(res, f, indent=1)
        st = res['states']
        print('%s: Spearman %.4f kNN %.4f within %s | %d states %s (max err %s)' % (
            os.path.basename(rdir.rstrip('/')), res['spearman'], res['knn_error'],
            ' / '.join('%.3f' % x for x in res.get('spearman_within_states', [])),
            st['n_states'], ' / '.join('%.3f' % p for p in st['populations']),
            '%.3f' % st['max_population_error'] if st.get('max_population_error') is not None
            else '-'), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])
