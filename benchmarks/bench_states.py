"""States a user can trust: success counts and population-interval coverage of
the default state finder (``landscape analyze``'s ``fit_states``) on latent
test beds with a known answer (``core.landscape.toy.latent_bed``).

For each bed and seed: latents are drawn (heteroscedastic noise, curvature,
1 % outliers), ``fit_states`` runs with its defaults, its states are paired
with the generating states (maximum overlap, outliers excluded) and scored:

* success -- as many states as the truth and every population within 0.03
  of the generating population ('uniform': one state, or no extra state
  marked resolved -- never a tight interval for a spurious partition);
* coverage -- the fraction of (seed, state) pairs whose 95 % interval holds
  the generating population (the truth, not the sample's fraction; a state
  the finder missed counts as not covered).

    python benchmarks/bench_states.py                  # 10 seeds each, report
    python benchmarks/bench_states.py --seeds 40 --beds three8 --out /tmp/x.md

Writes ``benchmarks/report/states_coverage.md`` (and ``.json``).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

# name -> latent_bed arguments.  noise 0.45: the three basins are visible in the
# free-energy map with barriers of 0.4-2 kT (the held-out run's situation).
BEDS = {
    'three4': dict(kind='three', dim=4, noise=0.45),
    'three8': dict(kind='three', dim=8, noise=0.45),
    'two8': dict(kind='two', dim=8, noise=0.45),
    'uniform8': dict(kind='uniform', dim=8, noise=0.45),
    'plane6': dict(kind='plane', dim=6, noise=0.45),
    # harder: the middle basin is still a visible minimum of the map, but its
    # barrier (0.1-0.6 kT) is within 2-5 s.d. of the sampling noise
    'three8_hard': dict(kind='three', dim=8, noise=0.55),
}
TOLERANCE = 0.03


def score(st, bed):
    """dict(n_states, success, covered (S_true,), errors (S_true,), ...)."""
    from scipy.optimize import linear_sum_assignment
    truth = np.asarray(bed.populations)
    s_true = len(truth)
    ok = ~bed.outliers
    tab = np.zeros((st.n_states, s_true))
    np.add.at(tab, (st.labels[ok], bed.labels[ok]), 1)
    r, c = linear_sum_assignment(-tab)
    est_of = np.full(s_true, -1)
    est_of[c] = r
    covered = np.zeros(s_true, bool)
    err = np.full(s_true, np.nan)
    for t in range(s_true):
        e = est_of[t]
        if e >= 0:
            lo, hi = st.population_ci[e]
            covered[t] = lo <= truth[t] <= hi
            err[t] = st.populations[e] - truth[t]
    resolved = np.asarray(st.resolved if st.resolved is not None else np.ones(st.n_states),
                          bool)
    if s_true == 1:
        success = st.n_states == 1 or int(resolved.sum()) <= 1
    else:
        success = st.n_states == s_true and bool(np.all(np.abs(err) <= TOLERANCE))
    return dict(n_states=int(st.n_states), success=bool(success), covered=covered.tolist(),
                errors=err.tolist(), populations=st.populations.tolist(),
                ci=np.asarray(st.population_ci).tolist(),
                resolved=resolved.tolist(), n_resolved=int(resolved.sum()),
                barrier_kT=[float(b) for b in st.barriers],
                barrier_z=[float(b) for b in st.barrier_z] if st.barrier_z is not None else None)


def run_bed(name, seeds, n=2000, n_boot=None, log=print):
    """Scores of the default finder on ``seeds`` draws of bed ``name``."""
    from continuousflex_geodl.core.landscape.states import fit_states
    from continuousflex_geodl.core.landscape.toy import latent_bed
    kw = {} if n_boot is None else dict(n_boot=int(n_boot))
    out = []
    for seed in seeds:
        bed = latent_bed(n=n, seed=int(seed), **BEDS[name])
        t0 = time.time()
        st = fit_states(bed.latents, seed=0, **kw)
        sc = score(st, bed)
        sc.update(seed=int(seed), seconds=round(time.time() - t0, 2))
        log('%s seed %d: %d states %s ci %s %s' % (
            name, seed, sc['n_states'], np.round(sc['populations'], 3).tolist(),
            np.round(sc['ci'], 3).tolist(), 'ok' if sc['success'] else 'FAIL'))
        out.append(sc)
    return out


def summarise(name, scores):
    cov = np.concatenate([s['covered'] for s in scores])
    succ = sum(s['success'] for s in scores)
    counts = np.bincount([s['n_states'] for s in scores]).tolist()
    errs = np.array([s['errors'] for s in scores], float)
    return dict(bed=name, args=BEDS[name], n_seeds=len(scores), success=int(succ),
                coverage=float(cov.mean()), n_intervals=int(cov.size),
                coverage_by_state=np.mean([s['covered'] for s in scores], 0).tolist(),
                n_states_histogram=counts,
                max_abs_error=float(np.nanmax(np.abs(errs))) if np.isfinite(errs).any()
                else None,
                mean_ci_width=float(np.mean([np.ptp(np.asarray(s['ci']), 1).mean()
                                             for s in scores])),
                fully_resolved=int(sum(all(s['resolved']) for s in scores)))


def write_report(rows, raw, out_md, n_seeds, n, n_boot=None):
    """Markdown table of the per-bed summaries (+ the raw scores as .json)."""
    from continuousflex_geodl.core.fileio import atomic_write
    from continuousflex_geodl.core.landscape.toy import BED_STATES
    lines = ['# States: success and coverage of the default state finder', '',
             'Command: `python benchmarks/bench_states.py --seeds %d --n %d%s`'
             % (n_seeds, n, '' if n_boot is None else ' --n-boot %d' % n_boot), '',
             'Beds (`core.landscape.toy.latent_bed`): %d particles, heteroscedastic '
             'noise, 1 %% outliers; truth = generating populations.  Success: right '
             'number of states and every population within %.2f (uniform: no resolved '
             'spurious state).  Coverage: 95 %% intervals holding the truth, over all '
             '(seed, true state) pairs.' % (n, TOLERANCE), '',
             '| bed | truth | success | coverage | mean CI width | states found '
             '(histogram 0..) | all states resolved | max abs error |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        truth = '/'.join('%.2f' % p for p in BED_STATES[r['args']['kind']][0])
        lines.append('| %s (dim %d, noise %.2f) | %s | %d/%d | %.3f (%d) | %.3f | %s | '
                     '%d/%d | %s |' % (
                         r['bed'], r['args']['dim'], r['args']['noise'], truth,
                         r['success'], r['n_seeds'], r['coverage'], r['n_intervals'],
                         r['mean_ci_width'], r['n_states_histogram'], r['fully_resolved'],
                         r['n_seeds'], '%.3f' % r['max_abs_error']
                         if r['max_abs_error'] is not None else '-'))
    with atomic_write(out_md) as fh:
        fh.write('\n'.join(lines) + '\n')
    with atomic_write(os.path.splitext(out_md)[0] + '.json') as fh:
        json.dump(dict(summary=rows, runs=raw), fh, indent=1)


def coverage_study(beds=None, n_seeds=10, n=2000, n_boot=None, out_md=None, log=print,
                   first_seed=0):
    """Run the beds, write the markdown report (``out_md``) and its .json;
    return the list of per-bed summaries."""
    beds = list(BEDS) if beds is None else list(beds)
    rows, raw = [], {}
    for name in beds:
        sc = run_bed(name, range(int(first_seed), int(first_seed) + int(n_seeds)), n=n,
                     n_boot=n_boot, log=log)
        raw[name] = sc
        rows.append(summarise(name, sc))
    if out_md:
        write_report(rows, raw, out_md, n_seeds, n, n_boot)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--beds', nargs='+', default=list(BEDS), choices=list(BEDS))
    ap.add_argument('--seeds', type=int, default=10)
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--n-boot', type=int, default=None, help='default: fit_states default')
    ap.add_argument('--first-seed', type=int, default=0)
    ap.add_argument('--out', default=os.path.join(HERE, 'report', 'states_coverage.md'))
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        for r in coverage_study(a.beds, a.seeds, a.n, a.n_boot, a.out,
                                    first_seed=a.first_seed):
            print(json.dumps(r))
    return 0


if __name__ == '__main__':
    sys.exit(main())
