"""Benchmark continuousflex_geodl against cryoDRGN: accuracy, speed and how cost grows.

One command runs every stage of a profile and writes
``benchmarks/report/REPORT.md`` with plots::

    python benchmarks/run_benchmarks.py --profile quick
    python benchmarks/run_benchmarks.py --profile full
    python benchmarks/run_benchmarks.py --profile quick --stages scaling_render,report
    python benchmarks/run_benchmarks.py --star my/particles.star --truth my/ground_truth.npz

Stages (``--stages``, comma separated; by default the profile's, in this order):

``datasets``        simulate the profile's data sets with ``core.simulate``
                    (cached: an existing ``summary.json`` is reused).
``probe``           short training runs of both tools under each OpenMP wait
                    policy; cryoDRGN then uses the faster one for it.
``ours``            ``continuousflex-geodl train`` then ``infer``, CLI defaults
                    (measured; also ``infer --refine-steps 0``).
``cryodrgn``        ``benchmarks/cryodrgn_runner.py``: parse_pose_star,
                    parse_ctf_star, train_vae, eval_images (measured).
``score``           the same metrics (``core.metrics``) for both tools:
                    latent recovery, per-conformation FSC-AUC of decoded
                    volumes against the ground truth, population EMD.
``scaling_particles`` time and peak memory against the number of particles.
``scaling_box``     training throughput against the box size (both tools).
``scaling_render``  projector forward + backward against atoms and box
                    (dense 'exact', 'fft', 'keops' backends).
``report``          Markdown + plots from whatever results exist.

Every stage writes JSON under ``benchmarks/work/<profile>/`` and records a
failure (a tool not installed yet, a crash) as such instead of stopping the
others; the report says what was not measured and why.  Numbers in the
report are only ever the measured ones.
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback

import numpy as np

from continuousflex_geodl.core.fileio import atomic_path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cryodrgn_runner as cdrgn  # noqa: E402
from common import (REPORT, WORK, StageUnavailable, our_cli, read_json,  # noqa: E402
                    run_measured, say, thread_env, write_json)

STAGES = ['datasets', 'probe', 'ours', 'cryodrgn', 'score', 'scaling_particles',
          'scaling_box', 'scaling_render', 'report']

# ----------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------

#: the data set on which the issue's bar is judged
BAR_DATASET = 'threemode_b64_snr0.1'


def _datasets(box, n, snrs=(0.1, 0.01)):
    apix = 2.0 * 64 / box          # same physical box (128 A) at every size
    out = []
    for snr in snrs:
        out.append(dict(name='threemode_b%d_snr%g' % (box, snr), motion='hinge',
                        population='three_mode', box=box, apix=apix, snr=snr,
                        n_particles=n, seed=1))
        out.append(dict(name='nma2d_b%d_snr%g' % (box, snr), motion='nma', n_modes=2,
                        population='uniform', box=box, apix=apix, snr=snr,
                        n_particles=n, seed=2))
    return out


#: Both tools use 2 CPU threads (the machine has 2 cores; run on a quiet machine).
#: OpenMP wait policy (common.thread_env): ours PASSIVE (what its CLI sets);
#: cryoDRGN the faster of PASSIVE / ACTIVE in the 'probe' stage ('auto').  Ours runs with its CLI
#: defaults (``ours_epochs`` None: ``train``'s default, 30 epochs; ``infer``'s
#: default per-particle latent refinement); cryoDRGN with its own default
#: number of epochs (20), latent dimension matched, networks sized for the CPU.
PROFILES = {
    'quick': dict(
        datasets=_datasets(64, 2000, snrs=(0.1,)),
        ours_epochs=None, cryodrgn_epochs=20, zdim=4, batch_size=None,
        cryodrgn_batch_size=16, threads=2, cryodrgn_wait_policy='auto',
        probe_particles=500, probe_reps=2,
        n_conformations=10, n_clusters=20, knn_k=10,
        scaling_particles=[1000, 3000, 10000], scaling_epochs=1,
        scaling_box=[32, 64, 128], scaling_box_particles=500,
        render_atoms=[500, 1000, 2000, 5000], render_atoms_keops=[500, 2000, 5000],
        render_boxes=[32, 64, 128], render_batch=32, render_timeout=240,
        stages=[s for s in STAGES if s != 'scaling_box'],
        bar_dataset=BAR_DATASET),
    'full': dict(
        datasets=_datasets(64, 10000) + _datasets(128, 10000),
        ours_epochs=None, cryodrgn_epochs=20, zdim=4, batch_size=None,
        cryodrgn_batch_size=16, threads=2, cryodrgn_wait_policy='auto',
        probe_particles=500, probe_reps=2,
        n_conformations=20, n_clusters=30, knn_k=10,
        scaling_particles=[1000, 3000, 10000, 30000, 100000], scaling_epochs=1,
        scaling_box=[32, 64, 128], scaling_box_particles=1000,
        render_atoms=[500, 1000, 2000, 5000, 10000, 20000],
        render_atoms_keops=[500, 1000, 2000, 5000, 10000, 20000],
        render_boxes=[32, 64, 128], render_batch=32, render_timeout=600,
        stages=list(STAGES),
        bar_dataset=BAR_DATASET),
}


class Bench:
    """Paths and settings of one benchmark run."""

    def __init__(self, profile, work=None, report=None, threads=None, datasets=None,
                 star=None, truth=None, ours_args=None):
        self.profile = profile
        self.cfg = dict(PROFILES[profile])
        if threads:
            self.cfg['threads'] = int(threads)
        self.work = os.path.abspath(work or os.path.join(WORK, profile))
        self.report = os.path.abspath(report or REPORT)
        self.ours_args = list(ours_args or [])
        self.rescore = False
        self.retrain = False
        specs = list(self.cfg['datasets'])
        if star:
            specs = [dict(name=os.path.basename(os.path.dirname(os.path.abspath(star)))
                          or 'external', external=True, star=os.path.abspath(star),
                          truth=os.path.abspath(truth) if truth else None)]
        if datasets:
            keep = set(datasets)
            specs = [d for d in specs if d['name'] in keep]
            if not specs:
                raise ValueError('None of the data sets %s is in profile %s (%s).' % (
                    sorted(keep), profile, ', '.join(d['name'] for d in self.cfg['datasets'])))
        self.datasets = specs

    def d(self, *parts):
        return os.path.join(self.work, *parts)

    def data_dir(self, ds):
        return self.d('data', ds['name'])

    def star(self, ds):
        return ds['star'] if ds.get('external') else os.path.join(self.data_dir(ds),
                                                                   'particles.star')

    def truth_path(self, ds):
        if ds.get('external'):
            return ds.get('truth')
        return os.path.join(self.data_dir(ds), 'ground_truth.npz')


def _record_failure(path, stage, exc):
    msg = str(exc).strip().splitlines()
    kind = 'unavailable' if isinstance(exc, (StageUnavailable, ImportError,
                                             FileNotFoundError)) else 'failed'
    write_json(path, dict(status=kind, stage=stage, error='\n'.join(msg[-12:]),
                          when=time.strftime('%Y-%m-%d %H:%M:%S')))
    say('%s %s: %s' % (stage, kind, msg[-1] if msg else exc))


# ----------------------------------------------------------------------------
# Stage: datasets
# ----------------------------------------------------------------------------

def _simulate(out, spec, log_prefix=''):
    try:
        from continuousflex_geodl.core.simulate import simulate_dataset
    except ImportError as exc:
        raise StageUnavailable('core.simulate cannot be imported yet (%s).' % exc)
    if os.path.exists(os.path.join(out, 'summary.json')):
        return read_json(os.path.join(out, 'summary.json'))
    kw = {k: spec[k] for k in ('n_particles', 'box', 'apix', 'snr', 'motion', 'population',
                               'seed', 'n_modes') if k in spec}
    t0 = time.perf_counter()
    simulate_dataset(out, log=lambda m: say(log_prefix + m), **kw)
    s = read_json(os.path.join(out, 'summary.json'))
    s['simulate_wall_s'] = time.perf_counter() - t0
    write_json(os.path.join(out, 'bench_simulate.json'), dict(wall_s=s['simulate_wall_s']))
    return s


def stage_datasets(b):
    for ds in b.datasets:
        if ds.get('external'):
            if not os.path.exists(ds['star']):
                raise FileNotFoundError('Particle file not found: %s' % ds['star'])
            continue
        status = b.d('status', 'datasets_%s.json' % ds['name'])
        try:
            say('dataset %s' % ds['name'])
            s = _simulate(b.data_dir(ds), ds, '  ')
            write_json(status, dict(status='ok', summary=s))
        except Exception as exc:  # recorded, the other data sets go on
            _record_failure(status, 'datasets/%s' % ds['name'], exc)


# ----------------------------------------------------------------------------
# Stage: ours
# ----------------------------------------------------------------------------

def _check_our_cli():
    try:
        from continuousflex_geodl.core import cli
    except ImportError as exc:
        raise StageUnavailable('continuousflex_geodl.core.cli does not import: %s' % exc)
    parser = cli.build_parser()
    sub = [a for a in parser._actions if a.dest == 'command'][0]
    missing = [c for c in ('train', 'infer', 'decode') if c not in sub.choices]
    if missing:
        raise StageUnavailable('continuousflex-geodl has no %s command yet.' % ', '.join(missing))
    for mod in ('continuousflex_geodl.core.particles', 'continuousflex_geodl.core.training.trainer',
                'continuousflex_geodl.core.inference'):
        try:
            __import__(mod)
        except ImportError as exc:
            raise StageUnavailable('%s cannot be imported yet (%s).' % (mod, exc))


def _reference_for(b, ds):
    """Atomic model of one state for our training (the simulation's reference.pdb)."""
    if ds.get('external'):
        ref = ds.get('reference')
        if not ref:
            raise StageUnavailable('An external data set needs a reference (atomic model or '
                                   'consensus map) for our method: pass --reference.')
        return ref
    return os.path.join(b.data_dir(ds), 'reference.pdb')


def run_ours(b, ds, out, epochs=None, n_particles=None, star=None, infer_too=True,
             extra=None, encoder_only_too=False, wait_policy='PASSIVE'):
    """Train (and infer) with our CLI on one data set; returns the result dict."""
    _check_our_cli()
    cfg = b.cfg
    star = star or b.star(ds)
    threads = cfg['threads']
    os.makedirs(out, exist_ok=True)
    model = os.path.join(out, 'model')
    epochs = epochs or cfg.get('ours_epochs')
    cmd = our_cli() + ['train', '--particles', star, '--reference', _reference_for(b, ds),
                       '--out', model, '--zdim', cfg['zdim'], '--threads', threads,
                       '--seed', 0]
    if epochs:       # None: the CLI's default number of epochs
        cmd += ['--epochs', epochs]
    if cfg.get('batch_size'):
        cmd += ['--batch-size', cfg['batch_size']]
    cmd += b.ours_args + list(extra or [])
    say('ours: train %s (%s epochs)' % (os.path.basename(os.path.dirname(star)),
                                        epochs or 'default'))
    env = thread_env(threads, wait_policy=wait_policy)
    m = run_measured(cmd, os.path.join(out, 'train.log'), env=env)
    from continuousflex_geodl.core.artifacts import ModelDir
    md = ModelDir(model)
    hist = md.read_history() if md.has_history() else []
    if not hist:
        raise RuntimeError('Our train wrote no history.json in %s.' % model)
    secs = [h['seconds'] for h in hist]
    imgs = [h['images_per_s'] * h['seconds'] for h in hist]
    saved = md.read_config() if md.has_config() else {}
    n = n_particles or int(saved.get('n_particles', 0)) or None
    res = dict(tool='ours', wall_s=m['wall_s'], peak_rss_mb=m['peak_rss_mb'],
               peak_anon_mb=m.get('peak_anon_mb'), cpu_s=m['cpu_s'],
               load_avg=[m['load_avg_start'], m['load_avg_end']], epochs=len(hist),
               n_particles=n, train_s=sum(secs), images_per_s=sum(imgs) / sum(secs),
               epoch_s=secs, images_per_cpu_s=sum(imgs) / m['cpu_s'] if m['cpu_s'] else None,
               zdim=cfg['zdim'], threads=threads, model=model, omp_wait_policy=wait_policy,
               log=os.path.join(out, 'train.log'),
               batch_size=int(saved.get('batch_size', cfg.get('batch_size') or 0)) or None)
    if infer_too:
        # the default inference (encoder + per-particle latent refinement) gives the
        # latents that are scored; timed as a whole command
        z_path = os.path.join(out, 'z.npy')
        mi = run_measured(our_cli() + ['infer', '--model', model, '--particles', star,
                                       '--out', z_path, '--threads', threads],
                          os.path.join(out, 'infer.log'), env=env)
        z = np.load(z_path)
        res['infer'] = dict(wall_s=mi['wall_s'], peak_rss_mb=mi['peak_rss_mb'],
                            peak_anon_mb=mi.get('peak_anon_mb'), cpu_s=mi['cpu_s'],
                            n_particles=len(z), images_per_s=len(z) / mi['wall_s'],
                            settings='defaults (encoder + per-particle refinement)')
        res['z_path'] = z_path
        res['z_shape'] = list(z.shape)
        if encoder_only_too:
            # encoder only (--refine-steps 0): what cryoDRGN's eval_images does
            z0_path = os.path.join(out, 'z_encoder.npy')
            me = run_measured(our_cli() + ['infer', '--model', model, '--particles', star,
                                           '--out', z0_path, '--threads', threads,
                                           '--refine-steps', 0],
                              os.path.join(out, 'infer_encoder.log'), env=env)
            res['infer_encoder_only'] = dict(
                wall_s=me['wall_s'], peak_rss_mb=me['peak_rss_mb'],
                peak_anon_mb=me.get('peak_anon_mb'), cpu_s=me['cpu_s'],
                n_particles=len(z), images_per_s=len(z) / me['wall_s'])
            res['z_encoder_path'] = z0_path
    return res


def stage_ours(b, datasets=None):
    for ds in datasets or b.datasets:
        path = b.d('results', ds['name'], 'ours.json')
        if not b.retrain and (read_json(path) or {}).get('status') == 'ok':
            say('ours on %s: done before (use --retrain to redo)' % ds['name'])
            continue
        try:
            res = run_ours(b, ds, b.d('runs', ds['name'], 'ours'), encoder_only_too=True)
            res['status'] = 'ok'
            write_json(path, res)
            say('ours on %s: %.1f training images/s, wall %.0f s, peak %.0f MB'
                % (ds['name'], res['images_per_s'], res['wall_s'], res['peak_rss_mb']))
        except Exception as exc:
            _record_failure(path, 'ours/%s' % ds['name'], exc)


# ----------------------------------------------------------------------------
# Stage: probe (OpenMP wait policy per tool)
# ----------------------------------------------------------------------------

WAIT_POLICIES = ('PASSIVE', 'ACTIVE')


def stage_probe(b):
    """Short training runs of both tools under each OpenMP wait policy.

    On 2 cores the wait policy changes throughput by 2x or more, and not the
    same way for both tools (measured: cryoDRGN ~2x faster spinning, ours
    robust only when idle threads sleep).  cryoDRGN is then run with the
    policy that was fastest for it here, so that our ratio is not inflated by
    a setting that handicaps it; ours keeps its CLI's own (PASSIVE).  Each
    (tool, policy) is tried ``probe_reps`` times on ``probe_particles``
    particles of the bar data set; the best run counts.
    """
    cfg = b.cfg
    path = b.d('results', 'wait_policy_probe.json')
    ds = next((d for d in b.datasets if d['name'] == cfg['bar_dataset']), b.datasets[0])
    n = cfg.get('probe_particles', 500)
    try:
        star = subset_star(b.star(ds), n, b.d('data', ds['name'], 'probe_%d.star' % n))
    except Exception as exc:
        _record_failure(path, 'probe', exc)
        return
    rows = []
    for rep in range(cfg.get('probe_reps', 2)):
        for tool in ('ours', 'cryodrgn'):
            for pol in WAIT_POLICIES:
                out = b.d('runs', 'probe', '%s_%s_%d' % (tool, pol, rep))
                row = dict(tool=tool, policy=pol, rep=rep, n_particles=n)
                try:
                    if tool == 'ours':
                        r = run_ours(b, ds, out, epochs=2, star=star, n_particles=n,
                                     infer_too=False, wait_policy=pol)
                        # last epoch: the first one includes one-off set-up work
                        row['images_per_s'] = n / r['epoch_s'][-1]
                    else:
                        cdrgn.OMP_WAIT_POLICY = pol
                        prep = cdrgn.prepare(star, os.path.join(out, 'prep'),
                                             threads=cfg['threads'])
                        r = cdrgn.train(star, prep, os.path.join(out, 'train'), cfg['zdim'],
                                        1, cfg['cryodrgn_batch_size'], cfg['threads'],
                                        **cdrgn.CPU_NETS)
                        row['images_per_s'] = r['images_per_s']
                    row.update(status='ok', load_avg=r.get('load_avg'))
                except Exception as exc:
                    row.update(status='failed', error=str(exc).strip().splitlines()[-1][:300])
                say('probe %s %s: %s images/s' % (tool, pol, row.get('images_per_s')))
                rows.append(row)
    best = {}
    for tool in ('ours', 'cryodrgn'):
        for pol in WAIT_POLICIES:
            v = [r['images_per_s'] for r in rows if r['tool'] == tool and r['policy'] == pol
                 and r['status'] == 'ok']
            if v:
                best.setdefault(tool, {})[pol] = max(v)
    cd = best.get('cryodrgn', {})
    chosen = dict(ours='PASSIVE',
                  cryodrgn=max(cd, key=cd.get) if cd else 'PASSIVE')
    prev = read_json(path)
    if prev and prev.get('status') == 'ok':      # keep the earlier probe for the report
        write_json(b.d('results', 'wait_policy_probe_%s.json' % (
            prev.get('when', 'earlier').replace(' ', '_').replace(':', ''))), prev)
    write_json(path, dict(status='ok', rows=rows, best=best, chosen=chosen,
                          n_particles=n, threads=cfg['threads'],
                          when=time.strftime('%Y-%m-%d %H:%M:%S')))
    _apply_policy(b)


def _apply_policy(b):
    """cryoDRGN's OMP_WAIT_POLICY: the profile's, or the probe's choice ('auto')."""
    pol = b.cfg.get('cryodrgn_wait_policy', 'auto')
    if pol == 'auto':
        probe = read_json(b.d('results', 'wait_policy_probe.json')) or {}
        pol = (probe.get('chosen') or {}).get('cryodrgn', 'PASSIVE')
    cdrgn.OMP_WAIT_POLICY = pol
    return pol


# ----------------------------------------------------------------------------
# Stage: cryoDRGN
# ----------------------------------------------------------------------------

def stage_cryodrgn(b, datasets=None):
    cfg = b.cfg
    say('cryoDRGN runs with OMP_WAIT_POLICY=%s' % _apply_policy(b))
    for ds in datasets or b.datasets:
        path = b.d('results', ds['name'], 'cryodrgn.json')
        prev = read_json(path) or {}
        if not b.retrain and prev.get('status') == 'ok':
            say('cryoDRGN on %s: done before (use --retrain to redo)' % ds['name'])
            continue
        if prev.get('status') == 'ok' and prev.get('omp_wait_policy') not in (
                None, cdrgn.OMP_WAIT_POLICY):
            # keep the figures of the run under the other policy for the report
            write_json(b.d('results', ds['name'], 'cryodrgn_%s.json'
                           % prev['omp_wait_policy'].lower()), prev)
        try:
            star = b.star(ds)
            if not os.path.exists(star):
                raise FileNotFoundError('No particles for %s yet (%s): run the datasets stage.'
                                        % (ds['name'], star))
            res = cdrgn.run_all(star, b.d('runs', ds['name'], 'cryodrgn'), cfg['zdim'],
                                cfg['cryodrgn_epochs'], cfg['cryodrgn_batch_size'],
                                cfg['threads'])
            res['status'] = 'ok'
            write_json(path, res)
            say('cryoDRGN on %s: %.1f training images/s, wall %.0f s, peak %.0f MB'
                % (ds['name'], res['images_per_s'], res['wall_s'], res['peak_rss_mb']))
        except Exception as exc:
            _record_failure(path, 'cryodrgn/%s' % ds['name'], exc)


# ----------------------------------------------------------------------------
# Stage: score
# ----------------------------------------------------------------------------

class Truth:
    """Ground truth of a data set: coordinates per particle, volumes at any coordinate."""

    def __init__(self, path):
        if path is None or not os.path.exists(path):
            raise FileNotFoundError('No ground truth (%s): give --truth (ground_truth.npz '
                                    'from the simulator, or a .npy/.txt of coordinates).' % path)
        self.path = path
        self.gt = None
        if path.endswith('.npz'):
            from continuousflex_geodl.core import simulate
            self.gt = simulate.load_ground_truth(path)
            self.motion = simulate.motion_from_ground_truth(self.gt)
            self.unit = np.asarray(self.gt['coords_unit'], dtype=np.float64).reshape(
                len(self.gt['coords_unit']), -1)
            self.box = int(self.gt['box'])
            self.apix = float(self.gt['apix'])
        else:
            c = np.load(path) if path.endswith('.npy') else np.loadtxt(path, ndmin=1)
            c = np.asarray(c, dtype=np.float64)
            self.unit = c.reshape(len(c), -1)
            self.motion = None

    @property
    def dim(self):
        return self.unit.shape[1]

    def has_volumes(self):
        return self.motion is not None

    def volume(self, unit_coord):
        """Ground-truth density (D, D, D) at a unit coordinate (d,)."""
        import torch
        from continuousflex_geodl.core import render, simulate
        c = self.motion.unit_to_coords(np.atleast_1d(unit_coord)[None, :])
        pos = simulate.ground_truth_positions(self.gt, coords=c)[0]
        with torch.no_grad():
            v = render.render_volume(torch.tensor(pos, dtype=torch.float32),
                                     torch.tensor(self.gt['amplitudes'], dtype=torch.float32),
                                     self.motion.sigma, self.box, self.apix)
        return v.numpy().astype(np.float64)


def conformation_bins(unit, n_bins, min_count=10):
    """Bins of the true coordinate: list of (index array, unit centre (d,)).

    1D: ``n_bins`` equal-width bins over [0, 1]; 2D: a ceil(sqrt(n))^2 grid.
    Bins with fewer than ``min_count`` particles are dropped.
    """
    d = unit.shape[1]
    per = int(np.ceil(n_bins ** (1.0 / d)))
    edges = np.linspace(0, 1, per + 1)
    idx = np.clip(np.searchsorted(edges, unit, side='right') - 1, 0, per - 1)
    flat = np.ravel_multi_index(tuple(idx.T), (per,) * d)
    out = []
    for k in range(per ** d):
        sel = np.nonzero(flat == k)[0]
        if len(sel) >= min_count:
            out.append((sel, np.median(unit[sel], axis=0)))
    return out


def medoid(z, sel, rng, max_n=300):
    """Index (into z) of the latent nearest all others among ``sel``."""
    s = sel if len(sel) <= max_n else rng.choice(sel, max_n, replace=False)
    pts = z[s]
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1).sum(1)
    return int(s[np.argmin(dist)])


def decode_ours(run, z_points, out):
    import mrcfile
    from continuousflex_geodl.core.artifacts import DecodeDir
    os.makedirs(out, exist_ok=True)
    zf = os.path.join(out, 'z_points.npy')
    np.save(zf, np.asarray(z_points, dtype=np.float32))
    m = run_measured(our_cli() + ['decode', '--model', run['model'], '--latents', zf,
                                  '--out', out], os.path.join(out, 'decode.log'),
                     env=thread_env(run.get('threads', 2)))
    vols = []
    for i in range(len(z_points)):
        with mrcfile.open(DecodeDir(out).volume_path(i), permissive=True) as f:
            vols.append(np.array(f.data, dtype=np.float64))
    return np.stack(vols), dict(wall_s=m['wall_s'], s_per_volume=m['wall_s'] / len(z_points))


def decode_cryodrgn(run, z_points, out, apix):
    vols, t = cdrgn.volumes(run['outdir'], z_points, apix, out=out,
                            threads=run.get('threads', 2))
    return vols.astype(np.float64), t


def assign_to_truth(vols, truth, grid, mask):
    """For each volume, the unit coordinate of the best-correlated true volume."""
    from continuousflex_geodl.core import metrics
    sel = mask > 0.5
    norm = [metrics.normalise_map(v, sel, 'zscore')[sel] for v in vols]
    best = np.full(len(vols), -np.inf)
    where = np.zeros((len(vols), truth.dim))
    for g in grid:
        t = metrics.normalise_map(truth.volume(g), sel, 'zscore')[sel]
        for i, v in enumerate(norm):
            c = float(np.dot(v, t)) / len(t)
            if c > best[i]:
                best[i], where[i] = c, g
    return where, best


def score_tool(b, ds, tool, run, truth, out):
    """All metrics of one tool on one data set; returns a JSON-able dict (+ arrays saved)."""
    from continuousflex_geodl.core import metrics
    from sklearn.cluster import KMeans
    cfg = b.cfg
    rng = np.random.default_rng(0)
    z = np.load(run['z_path']).astype(np.float64)
    if len(z) != len(truth.unit):
        raise ValueError('%s has %d latents for %d particles of ground truth.'
                         % (tool, len(z), len(truth.unit)))
    res = dict(tool=tool, n_particles=len(z), zdim=z.shape[1])
    u = truth.unit
    if truth.dim == 1:
        res['spearman_pc1'] = metrics.latent_spearman_pc1(z, u[:, 0])
        res['spearman'] = res['spearman_pc1']
    else:
        ax = metrics.latent_spearman_axes(z, u)
        res['spearman_axes'] = ax.tolist()
        res['spearman'] = float(ax.mean())
    res['knn_error'] = metrics.knn_neighbourhood_error(z, u, cfg['knn_k'])
    res['neighbourhood_overlap'] = metrics.neighbourhood_overlap(z, u, cfg['knn_k'])
    if run.get('z_encoder_path') and os.path.exists(run['z_encoder_path']):
        # latent metrics of the encoder alone (infer --refine-steps 0), for information
        z0 = np.load(run['z_encoder_path']).astype(np.float64)
        res['encoder_only'] = dict(
            spearman=(metrics.latent_spearman_pc1(z0, u[:, 0]) if truth.dim == 1 else
                      float(metrics.latent_spearman_axes(z0, u).mean())),
            knn_error=metrics.knn_neighbourhood_error(z0, u, cfg['knn_k']),
            neighbourhood_overlap=metrics.neighbourhood_overlap(z0, u, cfg['knn_k']))
    pcs = metrics.principal_axes(z)[:, :2]
    arrays = dict(pc=pcs.astype(np.float32), unit=u.astype(np.float32))
    if truth.has_volumes():
        decode = (lambda zp, o: decode_ours(run, zp, o)) if tool == 'ours' else (
            lambda zp, o: decode_cryodrgn(run, zp, o, truth.apix))
        mask = metrics.soft_spherical_mask(truth.box)
        # -- per-conformation FSC-AUC (CryoBench), latent medoid of each true bin
        bins = conformation_bins(u, cfg['n_conformations'])
        picks = [medoid(z, sel, rng) for sel, _ in bins]
        vols, tdec = decode(z[picks], os.path.join(out, 'conformations'))
        aucs, dists = [], []
        for (sel, centre), v in zip(bins, vols):
            t = truth.volume(centre)
            f, c = metrics.fsc(v * mask, t * mask, truth.apix)
            aucs.append(metrics.fsc_auc(f, c, truth.apix))
            dists.append(metrics.map_distances(v, t, truth.apix, mask=mask))
        res['fsc_auc_per_conf'] = aucs
        res['fsc_auc'] = float(np.mean(aucs))
        res['conf_centres'] = [c.tolist() for _, c in bins]
        for key in ('correlation', 'one_minus_mean_fsc', 'res_fsc05'):
            res['map_' + key] = float(np.mean([d_[key] for d_ in dists]))
        res['decode'] = tdec
        # -- populations: k-means states in latent space, each matched to the truth
        k = min(cfg['n_clusters'], len(z) // 20)
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(z)
        centres = km.cluster_centers_
        weights = np.bincount(km.labels_, minlength=k).astype(np.float64)
        cvols, _ = decode(centres, os.path.join(out, 'clusters'))
        per = 41 if truth.dim == 1 else 11
        axes = [np.linspace(0, 1, per)] * truth.dim
        grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, truth.dim)
        where, corr = assign_to_truth(cvols, truth, grid, mask)
        recovered = where[km.labels_]
        arrays.update(recovered_unit=recovered.astype(np.float32),
                      cluster_unit=where.astype(np.float32), cluster_weight=weights)
        if truth.dim == 1:
            res['population_emd'] = metrics.population_emd(where[:, 0], u[:, 0], weights)
            mid = lambda x: (x > 0.3) & (x < 0.7)  # noqa: E731
            res['middle_fraction_true'] = float(mid(u[:, 0]).mean())
            res['middle_fraction_recovered'] = float(
                weights[mid(where[:, 0])].sum() / weights.sum())
        else:
            h, _ = np.histogramdd(u, bins=[np.linspace(-0.5 / (per - 1), 1 + 0.5 / (per - 1),
                                                       per + 1)] * truth.dim)
            cost = np.linalg.norm(where[:, None, :] - grid[None, :, :], axis=-1)
            res['population_emd'] = metrics.ensemble_emd(cost, weights, h.ravel())[0]
        res['cluster_match_correlation'] = float(np.average(corr, weights=weights))
    np.savez(os.path.join(out, 'arrays.npz'), **arrays)
    return res


def stage_score(b):
    for ds in b.datasets:
        try:
            truth = Truth(b.truth_path(ds))
        except Exception as exc:
            for tool in ('ours', 'cryodrgn'):
                _record_failure(b.d('results', ds['name'], 'score_%s.json' % tool),
                                'score/%s' % ds['name'], exc)
            continue
        try:
            from continuousflex_geodl.core import metrics
            k = b.cfg['knn_k']
            write_json(b.d('results', ds['name'], 'score_oracle.json'), dict(
                status='ok', tool='truth as latent',
                knn_error=metrics.knn_neighbourhood_error(truth.unit, truth.unit, k),
                neighbourhood_overlap=metrics.neighbourhood_overlap(truth.unit, truth.unit, k)))
        except Exception as exc:
            _record_failure(b.d('results', ds['name'], 'score_oracle.json'), 'score/oracle', exc)
        for tool in ('ours', 'cryodrgn'):
            path = b.d('results', ds['name'], 'score_%s.json' % tool)
            prev = read_json(path)
            run_ = read_json(b.d('results', ds['name'], '%s.json' % tool))
            if (not b.rescore and prev and prev.get('status') == 'ok' and run_
                    and os.path.getmtime(path) > os.path.getmtime(
                        b.d('results', ds['name'], '%s.json' % tool))):
                say('score %s on %s: up to date (use --rescore to redo)' % (tool, ds['name']))
                continue
            try:
                run = read_json(b.d('results', ds['name'], '%s.json' % tool))
                if not run or run.get('status') != 'ok':
                    raise StageUnavailable('No finished %s run on %s to score (%s).' % (
                        tool, ds['name'], (run or {}).get('error', 'not run')))
                out = b.d('runs', ds['name'], 'score_' + tool)
                os.makedirs(out, exist_ok=True)
                say('score %s on %s' % (tool, ds['name']))
                res = score_tool(b, ds, tool, run, truth, out)
                res['status'] = 'ok'
                res['arrays'] = os.path.join(out, 'arrays.npz')
                write_json(path, res)
            except Exception as exc:
                traceback.print_exc()
                _record_failure(path, 'score/%s/%s' % (ds['name'], tool), exc)


# ----------------------------------------------------------------------------
# Scaling stages
# ----------------------------------------------------------------------------

def subset_star(star, n, out):
    """A star file with the first ``n`` particles of ``star`` (same image stack)."""
    import starfile
    data = starfile.read(star, always_dict=True)
    key = 'particles' if 'particles' in data else list(data)[-1]
    df = data[key]
    if len(df) < n:
        raise ValueError('%s has %d particles, fewer than %d.' % (star, len(df), n))
    data[key] = df.iloc[:n].copy()
    stack_dir = os.path.dirname(os.path.abspath(star))
    col = 'rlnImageName'
    data[key][col] = [('%s@%s' % (s.split('@')[0], os.path.join(stack_dir, s.split('@')[1]))
                       if not os.path.isabs(s.split('@')[1]) else s) for s in data[key][col]]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with atomic_path(out) as tmp:
        starfile.write(data, tmp, overwrite=True)
    return out


def _scaling_row(r):
    i = r.get('infer') or {}
    return dict(train_peak_rss_mb=r['peak_rss_mb'], train_peak_anon_mb=r.get('peak_anon_mb'),
                train_wall_s=r['wall_s'], images_per_s=r['images_per_s'],
                infer_peak_rss_mb=i.get('peak_rss_mb'), infer_peak_anon_mb=i.get('peak_anon_mb'),
                infer_wall_s=i.get('wall_s'), infer_images_per_s=i.get('images_per_s'),
                omp_wait_policy=r.get('omp_wait_policy'))


def stage_scaling_particles(b):
    cfg = b.cfg
    _apply_policy(b)
    path = b.d('results', 'scaling_particles.json')
    sizes = sorted(cfg['scaling_particles'])
    spec = dict(name='scaling_n%d' % sizes[-1], motion='hinge', population='three_mode',
                box=64, apix=2.0, snr=0.1, n_particles=sizes[-1], seed=3)
    rows = read_json(path, {}).get('rows', [])
    done = {(r['tool'], r['n_particles']) for r in rows if r.get('status') == 'ok'}
    try:
        say('scaling (particles): simulating %d particles' % sizes[-1])
        _simulate(b.data_dir(spec), spec, '  ')
    except Exception as exc:
        _record_failure(path, 'scaling_particles', exc)
        return
    big_star = b.star(spec)
    for n in sizes:
        star = big_star if n == sizes[-1] else subset_star(
            big_star, n, b.d('data', spec['name'], 'subset_%d.star' % n))
        for tool in ('ours', 'cryodrgn'):
            if (tool, n) in done:
                continue
            out = b.d('runs', 'scaling_particles', '%s_%d' % (tool, n))
            row = dict(tool=tool, n_particles=n)
            try:
                if tool == 'ours':
                    r = run_ours(b, spec, out, epochs=cfg['scaling_epochs'], star=star,
                                 n_particles=n)
                    row.update(_scaling_row(r))
                else:
                    r = cdrgn.run_all(star, out, cfg['zdim'], cfg['scaling_epochs'],
                                      cfg['cryodrgn_batch_size'], cfg['threads'])
                    row.update(_scaling_row(r))
                row['status'] = 'ok'
            except Exception as exc:
                row.update(status='failed', error=str(exc).strip().splitlines()[-1][:300])
                say('scaling (particles) %s n=%d failed: %s' % (tool, n, row['error']))
            rows = [r_ for r_ in rows if (r_['tool'], r_['n_particles']) != (tool, n)] + [row]
            write_json(path, dict(status='ok', rows=rows))


def stage_scaling_box(b):
    cfg = b.cfg
    _apply_policy(b)
    path = b.d('results', 'scaling_box.json')
    rows = []
    for box in cfg['scaling_box']:
        spec = dict(name='scaling_box%d' % box, motion='hinge', population='three_mode',
                    box=box, apix=2.0 * 64 / box, snr=0.1,
                    n_particles=cfg['scaling_box_particles'], seed=4)
        try:
            _simulate(b.data_dir(spec), spec, '  ')
        except Exception as exc:
            rows.append(dict(tool='both', box=box, status='failed', error=str(exc)[:300]))
            write_json(path, dict(status='ok', rows=rows))
            continue
        for tool in ('ours', 'cryodrgn'):
            out = b.d('runs', 'scaling_box', '%s_%d' % (tool, box))
            row = dict(tool=tool, box=box, n_particles=spec['n_particles'])
            try:
                if tool == 'ours':
                    r = run_ours(b, spec, out, epochs=1, infer_too=False)
                else:
                    r = cdrgn.run_all(b.star(spec), out, cfg['zdim'], 1,
                                      cfg['cryodrgn_batch_size'], cfg['threads'],
                                      infer_too=False)
                row.update(status='ok', images_per_s=r['images_per_s'],
                           peak_rss_mb=r['peak_rss_mb'], peak_anon_mb=r.get('peak_anon_mb'),
                           wall_s=r['wall_s'])
            except Exception as exc:
                row.update(status='failed', error=str(exc).strip().splitlines()[-1][:300])
                say('scaling (box) %s box=%d failed: %s' % (tool, box, row['error']))
            rows.append(row)
            write_json(path, dict(status='ok', rows=rows))


RENDER_SNIPPET = r'''
import json, os, resource, sys, time
os.environ.setdefault("KEOPS_CACHE_FOLDER", sys.argv[6])
from continuousflex_geodl.core import runtime
runtime.setup(int(sys.argv[5]))
import numpy as np, torch
from continuousflex_geodl.core import geometry, render
method, n, box, B = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if method == "keops":
    runtime.init_keops()
rng = np.random.default_rng(0)
apix = 128.0 / box
pos = torch.tensor(rng.normal(scale=18.0, size=(n, 3)), dtype=torch.float32, requires_grad=True)
amp = torch.ones(n)
R = torch.tensor(geometry.random_rotations(B, rng), dtype=torch.float32)
def vm(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# the process high-water mark is dominated by imports: reset it (Linux clear_refs
# 5) so that VmHWM - VmRSS before the steps is the memory the projector itself needs
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    cur0 = vm("VmRSS")
except OSError:
    cur0 = None
def step():
    img = render.project(pos, amp, 2.0 * apix, R, box, apix, method=method)
    img.square().mean().backward()
    pos.grad = None
t0 = time.perf_counter(); step(); first = time.perf_counter() - t0
times = []
for _ in range(5):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
    if sum(times) > 60: break
# best of n: the least disturbed by other work on the machine
print(json.dumps(dict(first_s=first, s_per_batch=float(np.min(times)),
                      s_per_batch_median=float(np.median(times)), reps=len(times),
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      base_rss_mb=rss0 / 1024,
                      step_extra_mb=(vm("VmHWM") - cur0) if cur0 is not None else None)))
'''


def _render_case(b, method, n, box):
    import subprocess
    cfg = b.cfg
    keops_dir = os.environ.get('KEOPS_CACHE_FOLDER') or b.d('keops_cache')
    cmd = [sys.executable, '-c', RENDER_SNIPPET, method, n, box, cfg['render_batch'],
           cfg['threads'], keops_dir]
    t0 = time.perf_counter()
    try:
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                             env=thread_env(cfg['threads']), timeout=cfg['render_timeout'])
    except subprocess.TimeoutExpired:
        return dict(status='timeout', timeout_s=cfg['render_timeout'])
    if out.returncode != 0:
        return dict(status='failed', error=(out.stderr.strip().splitlines() or ['?'])[-1][:300])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r.update(status='ok', wall_s=time.perf_counter() - t0)
    return r


def stage_scaling_render(b):
    cfg = b.cfg
    path = b.d('results', 'scaling_render.json')
    rows = []
    cases = [('atoms', m, n, 64) for m in ('exact', 'fft') for n in cfg['render_atoms']]
    cases += [('atoms', 'keops', n, 64) for n in cfg['render_atoms_keops']]
    cases += [('box', m, 2000, box) for m in ('exact', 'fft', 'keops')
              for box in cfg['render_boxes']]
    for axis, method, n, box in cases:
        say('render %s: %s N=%d box=%d' % (axis, method, n, box))
        r = _render_case(b, method, n, box)
        r.update(axis=axis, method=method, n_atoms=n, box=box, batch=cfg['render_batch'],
                 threads=cfg['threads'])
        rows.append(r)
        write_json(path, dict(status='ok', rows=rows))


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------

def machine_info(b):
    info = dict(platform=platform.platform(), python=platform.python_version(),
                cpus=os.cpu_count(), threads=b.cfg['threads'])
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch
        info['torch'] = torch.__version__
    except ImportError:
        pass
    try:
        info['cryodrgn'] = cdrgn.check()
    except Exception:
        info['cryodrgn'] = 'not installed'
    try:
        import psutil
        info['memory_gb'] = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except ImportError:
        pass
    return info


def stage_report(b):
    import report
    results = dict(profile=b.profile, cfg=b.cfg, machine=machine_info(b),
                   datasets=[], scaling={})
    for ds in b.datasets:
        entry = dict(name=ds['name'], spec=ds)
        entry['summary'] = read_json(os.path.join(b.data_dir(ds), 'summary.json'))
        for key in ('ours', 'cryodrgn', 'score_ours', 'score_cryodrgn', 'score_oracle'):
            entry[key] = read_json(b.d('results', ds['name'], key + '.json'))
        # cryoDRGN trained earlier under the other OpenMP wait policy (if any)
        entry['cryodrgn_other_policies'] = [
            r for r in (read_json(b.d('results', ds['name'], 'cryodrgn_%s.json' % p.lower()))
                        for p in WAIT_POLICIES) if r and r.get('status') == 'ok'
            and r.get('omp_wait_policy') != (entry['cryodrgn'] or {}).get('omp_wait_policy')]
        entry['status_dataset'] = read_json(b.d('status', 'datasets_%s.json' % ds['name']))
        results['datasets'].append(entry)
    for key in ('scaling_particles', 'scaling_box', 'scaling_render'):
        results['scaling'][key] = read_json(b.d('results', key + '.json'))
    results['wait_policy_probe'] = read_json(b.d('results', 'wait_policy_probe.json'))
    results['wait_policy_probes_earlier'] = [
        read_json(b.d('results', f)) for f in sorted(os.listdir(b.d('results')))
        if f.startswith('wait_policy_probe_') and f.endswith('.json')]
    results['stage_times'] = read_json(b.d('results', 'stage_times.json'), {})
    results['convention_check'] = read_json(os.path.join(WORK, 'convention_check',
                                                         'result.json'))
    write_json(b.d('results', 'all_results.json'), results)
    md = report.write_report(results, b.report)
    say('report written: %s' % md)
    return md


# ----------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n', 2)[2])
    ap.add_argument('--profile', default='quick', choices=sorted(PROFILES))
    ap.add_argument('--stages', default=None,
                    help="comma-separated stages (default: the profile's, i.e. all but "
                         "scaling_box in quick, all in full)")
    ap.add_argument('--datasets', default=None,
                    help='comma-separated data set names of the profile (default: all)')
    ap.add_argument('--star', default=None, help='run on this particle .star instead')
    ap.add_argument('--truth', default=None,
                    help='ground truth for --star: ground_truth.npz of the simulator, or '
                         '.npy/.txt coordinates (N,) or (N, d) (latent metrics only)')
    ap.add_argument('--reference', default=None,
                    help='reference for our method with --star (atomic model or map)')
    ap.add_argument('--threads', type=int, default=None, help='CPU threads for both tools')
    ap.add_argument('--work', default=None, help='work folder (default benchmarks/work/PROFILE)')
    ap.add_argument('--report', default=None, help='report folder (default benchmarks/report)')
    ap.add_argument('--retrain', action='store_true',
                    help='train again where a finished run of the tool exists')
    ap.add_argument('--rescore', action='store_true',
                    help='redo the score stage even where a score newer than the run exists')
    ap.add_argument('--ours-args', default='',
                    help='extra arguments for continuousflex-geodl train, quoted')
    args = ap.parse_args(argv)
    os.environ.setdefault('MPLBACKEND', 'Agg')
    stages = ([s.strip() for s in args.stages.split(',') if s.strip()] if args.stages
              else list(PROFILES[args.profile].get('stages', STAGES)))
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error('unknown stage(s) %s; choose from %s' % (', '.join(bad), ', '.join(STAGES)))
    b = Bench(args.profile, args.work, args.report, args.threads,
              args.datasets.split(',') if args.datasets else None, args.star, args.truth,
              args.ours_args.split())
    b.rescore = args.rescore or args.retrain
    b.retrain = args.retrain
    if args.star and args.reference:
        b.datasets[0]['reference'] = os.path.abspath(args.reference)
    write_json(b.d('run_settings.json'), dict(profile=args.profile, stages=stages,
                                              cfg=b.cfg, datasets=b.datasets,
                                              started=time.strftime('%Y-%m-%d %H:%M:%S')))
    funcs = dict(datasets=stage_datasets, probe=stage_probe, ours=stage_ours,
                 cryodrgn=stage_cryodrgn,
                 score=stage_score, scaling_particles=stage_scaling_particles,
                 scaling_box=stage_scaling_box, scaling_render=stage_scaling_render,
                 report=stage_report)
    requested = list(stages)
    if 'ours' in stages and 'cryodrgn' in stages:
        # interleave the two tools data set by data set, so that both see the same
        # machine load (other work on the machine slows wall-clock figures)
        def both(b_):
            for ds in b_.datasets:
                stage_ours(b_, [ds])
                stage_cryodrgn(b_, [ds])
        funcs['ours'] = both
        stages = [s for s in stages if s != 'cryodrgn']
    times_path = b.d('results', 'stage_times.json')
    for s in STAGES:
        if s in stages:
            say('=== stage %s (profile %s) ===' % (s, args.profile))
            t0 = time.perf_counter()
            try:
                funcs[s](b)
            except Exception as exc:
                traceback.print_exc()
                _record_failure(b.d('status', 'stage_%s.json' % s), s, exc)
            dt = time.perf_counter() - t0
            if s != 'report':
                key = s if s not in ('datasets', 'ours', 'cryodrgn', 'score') or not (
                    args.datasets or args.star) else '%s (%s)' % (
                    s, ','.join(d['name'] for d in b.datasets))
                if s == 'ours' and 'cryodrgn' in requested:
                    key = key.replace('ours', 'ours+cryodrgn', 1)
                _record_stage_time(times_path, key, dt)
            say('stage %s done in %.0f s' % (s, dt))
    return 0


def _record_stage_time(path, stage, seconds):
    """Wall time of the last run of each stage (``ours`` = ours + cryoDRGN interleaved)."""
    times = read_json(path, {})
    if seconds is not None:
        times[stage] = dict(wall_s=seconds, finished=time.strftime('%Y-%m-%d %H:%M:%S'))
    write_json(path, times)


if __name__ == '__main__':
    sys.exit(main())

__all__ = ['PROFILES', 'Bench', 'Truth', 'conformation_bins', 'medoid', 'score_tool',
           'subset_star', 'main']
