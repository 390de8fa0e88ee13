"""Realistic benchmark: all-atom AdK closed -> open MD path, independent simulator, oracle bound.

Stages (each resumable: a finished stage's files are reused):

1. ``make``: the particle sets of ``datasets.py`` (simulated with
   ``simulator.py``, which shares no code with continuousflex_geodl) under
   ``benchmarks/work/realistic/``;
2. ``oracle``: the information bound of every set (posterior over the true
   frames with the true poses, CTF and noise);
3. ``runs``: ours with the defaults, per (set, reference), in priority order:
   ``continuousflex-geodl train`` (defaults; ``--threads``), ``infer``
   (defaults), ``landscape analyze`` (defaults), with the atomic model of the
   closed end (``reference_closed.pdb``) or the consensus map
   (``consensus.mrc``) as the reference; optionally cryoDRGN
   (``benchmarks/cryodrgn_runner.py``, zdim 8, 20 epochs);
4. ``report``: ``benchmarks/report/realistic.md`` and ``.json``: latent PC1
   |Spearman| and kNN frame error (``continuousflex_geodl.core.metrics``,
   as ``bench_model.py`` / ``run_benchmarks.py``), states found and their
   populations against the truth, the oracle beside every figure, timings and
   the load average.

Usage::

    python benchmarks/realistic/run.py                      # make, oracle, runs 1-4, report
    python benchmarks/realistic/run.py --runs 1 2 3 4 5 6   # more runs (see RUNS)
    python benchmarks/realistic/run.py --stages make oracle --box 128
    python benchmarks/realistic/run.py --stages report
    python benchmarks/realistic/run.py --quick              # 300 particles, 32 px, few epochs

``--quick`` is a smoke test of the whole chain (not the defaults: few epochs
and refinement steps), written to ``realistic_quick.md``.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
sys.path.insert(0, HERE)

import datasets as D  # noqa: E402

sys.path.insert(0, BENCH)
import common  # noqa: E402

WORK = os.path.join(BENCH, 'work', 'realistic_smooth')
REPORT = os.path.join(BENCH, 'report')

#: runs of ours in priority order: (population, box, snr, poses, reference)
RUNS = [
    ('three_state', 64, 0.1, 'exact', 'pdb'),
    ('three_state', 64, 0.1, 'exact', 'map'),
    ('three_state', 64, 0.1, 'noisy', 'pdb'),
    ('uniform', 64, 0.1, 'exact', 'pdb'),
    ('three_state', 64, 0.03, 'exact', 'pdb'),
    ('three_state', 64, 0.1, 'noisy', 'map'),
    ('uniform', 64, 0.1, 'exact', 'map'),
    ('uniform', 64, 0.1, 'noisy', 'pdb'),
    ('uniform', 64, 0.03, 'exact', 'pdb'),
    ('three_state', 64, 0.03, 'noisy', 'pdb'),
    ('three_state', 128, 0.1, 'exact', 'pdb'),
    ('three_state', 128, 0.1, 'exact', 'map'),
]
APIX = {32: 4.0, 64: 2.0, 128: 1.0}     # same physical box, 128 A
KNN_K = 10


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def cli(args, log, threads=2, nice=0):
    """Run ``python -m continuousflex_geodl ARGS`` (``nice`` added to the driver's own
    niceness), return (wall s, command line)."""
    wall, line = common.run_cli(args, log, threads=threads, nice=nice, cwd=REPO)
    return wall, line.replace(sys.executable, 'python')


# ----------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------

def score_latents(z, gt):
    """|Spearman| of PC1 and kNN error against the path coordinate; with true states
    also the |Spearman| of PC1 within each true state (how well the particles of one
    basin are ordered, which the kNN error mostly measures there)."""
    from continuousflex_geodl.core import metrics
    u = np.asarray(gt['path_coord'], dtype=np.float64)
    res = dict(spearman=float(metrics.latent_spearman_pc1(z, u)),
               knn_error=float(metrics.knn_neighbourhood_error(z, u, KNN_K)))
    st = np.asarray(gt['state'])
    if (st >= 0).any():
        pc1 = metrics.principal_axes(z)[:, 0]
        res['spearman_within_states'] = [
            float(metrics.latent_spearman_pc1(pc1[st == k], u[st == k]))
            for k in range(st.max() + 1)]
    return res


def score_states(land_dir, gt):
    """States found by ``landscape analyze`` against the truth.

    Found states are ordered by the mean true path coordinate of their
    particles.  With true states, each found state is matched to the true
    state most of its particles belong to; ``assignment_accuracy`` is the
    fraction of particles whose found state's match is their true state.
    """
    with open(os.path.join(land_dir, 'states.json')) as f:
        st = json.load(f)
    labels = np.load(os.path.join(land_dir, 'labels.npy'))
    u = np.asarray(gt['path_coord'])
    found = [k for k in range(int(st['n_states'])) if (labels == k).any()]
    order = sorted(found, key=lambda k: u[labels == k].mean())
    pops = np.asarray(st['populations'], dtype=float)
    ci = st.get('population_ci95')
    res = dict(n_states=int(st['n_states']), selection=st.get('selection'),
               populations=[float(pops[k]) for k in order],
               ci95=[ci[k] for k in order] if ci else None,
               mean_path_coord=[float(u[labels == k].mean()) for k in order],
               resolved=[bool(st['resolved'][k]) for k in order] if 'resolved' in st else None,
               states_json={k: v for k, v in st.items() if k not in ('centres', 'bic')})
    true = np.asarray(gt['state'])
    if (true >= 0).any():
        truth = np.bincount(true, minlength=3) / len(true)
        res['true_populations'] = truth.tolist()
        match = {k: int(np.bincount(true[labels == k], minlength=3).argmax()) for k in found}
        res['matched_true_state'] = [match[k] for k in order]
        res['assignment_accuracy'] = float(np.mean([match.get(int(l), -1) == t
                                                    for l, t in zip(labels, true)]))
        if len(order) == len(truth):
            err = [abs(p - t) for p, t in zip(res['populations'], truth)]
            res['max_population_error'] = float(max(err))
            if ci:
                res['ci95_contains_truth'] = [bool(c[0] <= t <= c[1])
                                              for c, t in zip(res['ci95'], truth)]
    return res


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def stage_make(a, box):
    n = a.n_particles
    names = [D.set_name(p, box, s, q) for p in D.POPULATIONS for s in a.snrs
             for q in ('exact', 'noisy')]
    if all(os.path.exists(os.path.join(a.work, nm, 'set.json')) for nm in names):
        print('sets b%d: present' % box)
        return
    D.make_sets(a.work, n=n, box=box, apix=APIX[box], snrs=a.snrs, seed=a.seed)


def stage_oracle(a, box):
    names = [D.set_name(p, box, s, q) for p in D.POPULATIONS for s in a.snrs
             for q in ('exact', 'noisy')]
    if all(os.path.exists(os.path.join(a.work, nm, 'oracle.json')) for nm in names):
        print('oracle b%d: present' % box)
        return
    D.oracle(a.work, box=box, apix=APIX[box], n=a.n_particles, seed=a.seed, snrs=a.snrs)


def run_ours(a, spec):
    pop, box, snr, poses, ref = spec
    name = D.set_name(pop, box, snr, poses)
    sdir = os.path.join(a.work, name)
    rdir = os.path.join(a.work, 'runs', '%s__ref_%s%s' % (name, ref,
                                                           getattr(a, 'run_suffix', '')))
    res_path = os.path.join(rdir, 'result.json')
    star = os.path.join(sdir, 'particles.star')
    model, z, land = (os.path.join(rdir, x) for x in ('model', 'z.npy', 'landscape'))
    if os.path.exists(res_path) and not a.force:
        with open(res_path) as f:
            res = json.load(f)
        if not a.rescore:
            return res
    else:
        if os.path.exists(rdir):
            shutil.rmtree(rdir)
        os.makedirs(rdir)
        reference = os.path.join(sdir, 'reference_closed.pdb' if ref == 'pdb'
                                 else 'consensus.mrc')
        res = dict(set=name, population=pop, box=box, snr=snr, poses=poses, reference=ref,
                   commands=[], load_before=loadavg())
        train_args = ['train', '--particles', star, '--reference', reference, '--out', model,
                      '--threads', a.threads] + a.train_extra
        infer_args = ['infer', '--model', model, '--particles', star, '--out', z,
                      '--threads', a.threads] + a.infer_extra
        land_args = ['landscape', 'analyze', '--latents', z, '--out', land]
        for key, args in (('train', train_args), ('infer', infer_args), ('landscape', land_args)):
            wall, line = cli(args, os.path.join(rdir, key + '.log'), a.threads)
            res[key + '_wall_s'] = wall
            res['load_after_' + key] = loadavg()
            res['commands'].append(line)
        try:
            from continuousflex_geodl.core.artifacts import ModelDir
            hist = ModelDir(model).read_history()
            res['epochs'] = len(hist)
            res['train_images_per_s'] = float(np.mean([h['images_per_s'] for h in hist
                                                       if 'images_per_s' in h]))
        except (OSError, ValueError, KeyError):
            pass
    with np.load(os.path.join(sdir, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    res.update(score_latents(np.load(z), gt))
    res['states'] = score_states(land, gt)
    with open(res_path, 'w') as f:
        json.dump(res, f, indent=1)
    return res


def run_cryodrgn(a, spec):
    pop, box, snr, poses, _ = spec
    name = D.set_name(pop, box, snr, poses)
    sdir = os.path.join(a.work, name)
    rdir = os.path.join(a.work, 'runs', '%s__cryodrgn' % name)
    res_path = os.path.join(rdir, 'scored.json')
    if os.path.exists(res_path) and not a.force:
        with open(res_path) as f:
            return json.load(f)
    if os.path.exists(rdir):
        shutil.rmtree(rdir)
    sys.path.insert(0, BENCH)
    import cryodrgn_runner as C
    link = os.path.join(sdir, 'Stacks')   # cryoDRGN looks for images next to the star only
    if not os.path.exists(link):
        os.symlink(os.path.join('..', 'Stacks'), link)
    t = time.time()
    before = loadavg()
    r = C.run_all(os.path.join(sdir, 'particles.star'), rdir, zdim=8, epochs=20,
                  threads=int(a.threads), infer_too=False)
    with np.load(os.path.join(sdir, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    res = dict(set=name, tool='cryoDRGN %s' % r.get('version'), zdim=8, epochs=20,
               wall_s=time.time() - t, load_before=before, load_after=loadavg(),
               **score_latents(np.load(r['z_path']), gt))
    with open(res_path, 'w') as f:
        json.dump(res, f, indent=1)
    return res


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------

def _oracle(a, name):
    p = os.path.join(a.work, name, 'oracle.json')
    if not os.path.exists(p):
        return None
    with open(p) as f:
        o = json.load(f)
    pm = os.path.join(a.work, name.replace('_noisy', '_exact'), 'oracle_posterior_mean.npy')
    if os.path.exists(pm):
        with np.load(os.path.join(a.work, name, 'ground_truth.npz')) as g:
            gt = {k: g[k] for k in g.files}
        o['spearman_within_states'] = score_latents(np.load(pm), gt).get('spearman_within_states')
    return o


def _fmt(x, f='%.3f'):
    return '—' if x is None else f % x


def _raw_frames_section():
    """The first version of the sets (raw, unsmoothed DIMS frames), if its runs exist."""
    v1 = os.path.join(BENCH, 'work', 'realistic')
    rows = []
    for nm in sorted(os.listdir(os.path.join(v1, 'runs'))) if os.path.isdir(
            os.path.join(v1, 'runs')) else []:
        rp = os.path.join(v1, 'runs', nm, 'result.json')
        if not os.path.exists(rp) or '__ref_' not in nm:
            continue
        with open(rp) as f:
            r = json.load(f)
        op = os.path.join(v1, r['set'], 'oracle.json')
        o = json.load(open(op)) if os.path.exists(op) else {}
        rows.append('| %s | %s | %.4f | %s | %.4f | %s | %d (%s) |' % (
            r['set'], r['reference'], r['spearman'], _fmt(o.get('spearman_posterior_mean'), '%.4f'),
            r['knn_error'], _fmt(o.get('knn_error_posterior_mean'), '%.4f'),
            r['states']['n_states'], ' / '.join('%.3f' % p for p in r['states']['populations'])))
    if not rows:
        return []
    return ['## First version: raw DIMS frames (superseded)', '',
            'Simulated from the raw frames, where every particle of a frame shares that MD '
            "snapshot's thermal jitter (0.35 A RMSD, larger than the 0.11 A of motion between "
            'frames): the oracle identifies frames by it, which no real data allows, so its bound '
            'is too strong. Kept for the record (`benchmarks/work/realistic/`):', '',
            '| set | reference | ours \\|Spearman\\| | oracle | ours kNN | oracle | states |',
            '|---|---|---|---|---|---|---|'] + rows + ['']


def write_report(a, results, cdrgn):
    os.makedirs(REPORT, exist_ok=True)
    stem = 'realistic_quick' if a.quick else 'realistic'
    sets = {}
    for nm in sorted(os.listdir(a.work)):
        p = os.path.join(a.work, nm, 'set.json')
        if os.path.exists(p):
            with open(p) as f:
                sets[nm] = json.load(f)
            sets[nm]['oracle'] = _oracle(a, nm)
    lines = [
        '# Realistic benchmark: all-atom AdK closed -> open path, independent simulator',
        '',
        'Generated by `python benchmarks/realistic/run.py%s` (%s UTC).'
        % (' --quick' if a.quick else '', time.strftime('%Y-%m-%d %H:%M', time.gmtime())),
        '',
        '**Data.** Adenylate kinase (214 residues, 1,656 heavy atoms, hydrogens folded onto '
        'their heavy atoms), 40 frames evenly spaced in arc length along the all-atom DIMS '
        'closed -> open transition shipped by MDAnalysisTests (heavy-atom RMSD closed-open '
        '6.9 A; `benchmarks/realistic/data/adk_dims_heavy.npz`). Images made by '
        '`benchmarks/realistic/simulator.py` (no code shared with the package): Peng et al. '
        '(1996) five-Gaussian electron scattering factors per element, B = %g A^2, exact '
        'pixel integration, RELION ZYZ rotations and origins, astigmatic CTF (defocus '
        '1.0-2.5 um, 300 kV, Cs 2.7 mm, w 0.1) applied on a 2x padded canvas (signal '
        'delocalised out of the box is lost, as in a micrograph), white Gaussian noise at the '
        'SNR (mean clean-image variance over the box / noise variance). 128 A box (64 px at '
        '2 A/px, 128 px at 1 A/px). Populations: `three_state` = 0.40 / 0.20 / 0.40 at path '
        'coordinates 0.12 / 0.50 / 0.88 (each a spread of frames, sd 0.05), `uniform` = every '
        'frame equally likely. Poses: `exact`, or `noisy` (rotation error median %.2f deg, '
        'shift error median %.2f A; same images).' % (
            D.BFACTOR, D.ROT_ERR_MEDIAN_DEG, D.SHIFT_ERR_MEDIAN_A),
        '',
        '**Oracle** (information bound): knows the 40 true structures, the true poses, CTF and '
        'noise level, and the true frame law; posterior over the frames per particle '
        '(Gaussian likelihood of the stored image), posterior-mean path coordinate scored like '
        'a latent. Same scoring for everyone: |Spearman| of latent PC1 vs the true path '
        'coordinate, kNN (k = %d) frame error normalised (0 best, ~1 random), both from '
        '`continuousflex_geodl.core.metrics`.' % KNN_K,
        '',
        '**Ours**: `continuousflex-geodl train` / `infer` / `landscape analyze` with their '
        'defaults (only `--threads %s`)%s.' % (
            a.threads, '; QUICK MODE: ' + ' '.join(a.train_extra + a.infer_extra)
            if a.quick else ''),
        '',
        '| set | reference | ours \\|Spearman\\| | oracle | gap | ours kNN err | oracle | gap '
        '| states found (populations along the path; 95% CI) | truth '
        '| found state -> true state (assignment accuracy) '
        '| train s (epochs) / infer s / landscape s '
        '| 1-min load avg (before -> after train) |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in results:
        o = sets.get(r['set'], {}).get('oracle') or {}
        os_, ok = o.get('spearman_posterior_mean'), o.get('knn_error_posterior_mean')
        st = r.get('states') or {}
        res_flags = st.get('resolved') or [True] * len(st.get('populations', []))
        pops = ' / '.join('%.3f%s' % (p, '' if ok else '*')
                          for p, ok in zip(st.get('populations', []), res_flags))
        match = ('%s (%.3f)' % (' / '.join('%d' % m for m in st['matched_true_state']),
                                st['assignment_accuracy'])) if 'matched_true_state' in st else '—'
        cis = st.get('ci95')
        ci = ' (%s)' % '; '.join('%.2f-%.2f' % tuple(c) for c in cis) if cis else ''
        truth = ' / '.join('%.3f' % p for p in st.get('true_populations', [])) or 'no states'
        lines.append('| %s | %s | %.4f | %s | %s | %.4f | %s | %s | **%d**: %s%s | %s | %s '
                     '| %.0f (%s) / %.0f / %.0f '
                     '| %.1f -> %.1f |' % (
                         r['set'], 'atomic model (closed)' if r['reference'] == 'pdb'
                         else 'consensus map', r['spearman'], _fmt(os_, '%.4f'),
                         _fmt(None if os_ is None else os_ - r['spearman'], '%.4f'),
                         r['knn_error'], _fmt(ok, '%.4f'),
                         _fmt(None if ok is None else r['knn_error'] - ok, '%.4f'),
                         st.get('n_states', 0), pops, ci, truth, match, r['train_wall_s'],
                         r.get('epochs', '?'), r['infer_wall_s'], r['landscape_wall_s'],
                         r['load_before'][0], r['load_after_train'][0]))
    lines += ['', '`*`: a state that `landscape analyze` itself flags as not resolved by the data '
              '(bootstrap). Found states are ordered by the mean true path coordinate of their '
              'particles; each is matched to the true state most of its particles come from.']
    if cdrgn:
        lines += ['', '**cryoDRGN** on the same particles, poses and CTFs (`--stages cryodrgn`: '
                  '`cryodrgn train_vae`, zdim 8, 3x256 encoder and decoder, 20 epochs, '
                  '2 threads; latents scored the same way; wall time on the shared cores):']
        lines += ['', '| set | cryoDRGN \\|Spearman\\| | oracle | cryoDRGN kNN err | oracle '
                  '| wall s |',
                  '|---|---|---|---|---|---|']
        for r in cdrgn:
            o = sets.get(r['set'], {}).get('oracle') or {}
            lines.append('| %s | %.4f | %s | %.4f | %s | %.0f |' % (
                r['set'], r['spearman'], _fmt(o.get('spearman_posterior_mean'), '%.4f'),
                r['knn_error'], _fmt(o.get('knn_error_posterior_mean'), '%.4f'), r['wall_s']))
    lines += ['', '## Oracle bound of every set', '',
              '| set | \\|Spearman\\| (posterior mean) | kNN err | \\|Spearman\\| (ML frame) | '
              'MAP frame exact / within 1 | state accuracy | pose errors (median) |',
              '|---|---|---|---|---|---|---|']
    for nm, s in sets.items():
        o = s['oracle'] or {}
        pe = s.get('pose_error')
        lines.append('| %s | %s | %s | %s | %s / %s | %s | %s |' % (
            nm, _fmt(o.get('spearman_posterior_mean'), '%.4f'),
            _fmt(o.get('knn_error_posterior_mean'), '%.4f'), _fmt(o.get('spearman_ml'), '%.4f'),
            _fmt(o.get('map_frame_accuracy'), '%.2f'), _fmt(o.get('map_frame_within1'), '%.2f'),
            _fmt(o.get('state_accuracy'), '%.3f'),
            '%.2f deg, %.2f A' % (pe['rotation_median_deg'], pe['shift_median_A'])
            if pe else 'none (exact)'))
    lines += ['', 'Oracle of a `noisy` set = that of its `exact` set (same images; the oracle '
              'knows the true poses).', '']
    within = [(r, (sets.get(r['set'], {}).get('oracle') or {}).get('spearman_within_states'))
              for r in results if r.get('spearman_within_states')]
    if within:
        lines += ['|Spearman| of latent PC1 within each true state (the ordering inside a '
                  'basin, which dominates the kNN error of a three-state set):', '',
                  '| set | reference | ours (states 1 / 2 / 3) | oracle |', '|---|---|---|---|']
        for r, o in within:
            lines.append('| %s | %s | %s | %s |' % (
                r['set'], r['reference'],
                ' / '.join('%.3f' % x for x in r['spearman_within_states']),
                ' / '.join('%.3f' % x for x in o) if o else '—'))
        lines.append('')
    lines += _raw_frames_section()
    lines += ['## Commands', '', '```']
    for r in results:
        lines += r['commands']
    lines += ['```', '']
    text = '\n'.join(lines)
    with open(os.path.join(REPORT, stem + '.md'), 'w') as f:
        f.write(text)
    with open(os.path.join(REPORT, stem + '.json'), 'w') as f:
        json.dump(dict(sets=sets, runs=results, cryodrgn=cdrgn, knn_k=KNN_K,
                       generated=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())), f,
                  indent=1)
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--stages', nargs='+', default=['make', 'oracle', 'runs', 'report'],
                    choices=['make', 'oracle', 'runs', 'cryodrgn', 'report'])
    ap.add_argument('--runs', nargs='+', type=int, default=[1, 2, 3, 4],
                    help='1-based indices into RUNS (priority order)')
    ap.add_argument('--box', nargs='+', type=int, default=None,
                    help='boxes to make / run the oracle for (default: those of the runs)')
    ap.add_argument('--snrs', nargs='+', type=float, default=[0.1, 0.03])
    ap.add_argument('--n-particles', type=int, default=2000)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', default='2')
    ap.add_argument('--work', default=WORK)
    ap.add_argument('--force', action='store_true', help='redo finished runs')
    ap.add_argument('--rescore', action='store_true',
                    help='score finished runs again from their latents and landscape')
    ap.add_argument('--quick', action='store_true',
                    help='smoke test: 300 particles, 32 px, SNR 0.1, run 1 only, 3 epochs')
    a = ap.parse_args(argv)
    a.train_extra, a.infer_extra = [], []
    runs = [RUNS[i - 1] for i in a.runs]
    if a.quick:
        a.work = os.path.join(BENCH, 'work', 'realistic_smooth_quick')
        a.n_particles, a.snrs = 300, [0.1]
        runs = [('three_state', 32, 0.1, 'exact', 'pdb')]
        a.train_extra = ['--epochs', '3']
        a.infer_extra = ['--refine-steps', '3']
    boxes = a.box or sorted({r[1] for r in runs})
    os.makedirs(a.work, exist_ok=True)
    for box in boxes:
        if 'make' in a.stages:
            stage_make(a, box)
        if 'oracle' in a.stages:
            stage_oracle(a, box)
    results, cdrgn = [], []
    for spec in runs:
        if 'runs' in a.stages or 'report' in a.stages:
            name = D.set_name(*spec[:4])
            rp = os.path.join(a.work, 'runs', '%s__ref_%s' % (name, spec[4]), 'result.json')
            if 'runs' in a.stages:
                try:
                    results.append(run_ours(a, spec))
                except RuntimeError as exc:
                    print('RUN FAILED: %s' % exc, flush=True)
            elif os.path.exists(rp):
                with open(rp) as f:
                    results.append(json.load(f))
        if 'cryodrgn' in a.stages and spec[4] == 'pdb':
            cdrgn.append(run_cryodrgn(a, spec))
        elif 'report' in a.stages and spec[4] == 'pdb':   # one cryoDRGN run per set
            cp = os.path.join(a.work, 'runs', '%s__cryodrgn' % D.set_name(*spec[:4]),
                              'scored.json')
            if os.path.exists(cp):
                with open(cp) as f:
                    cdrgn.append(json.load(f))
    if 'report' in a.stages:
        write_report(a, results, cdrgn)
    return 0


if __name__ == '__main__':
    sys.exit(main())
