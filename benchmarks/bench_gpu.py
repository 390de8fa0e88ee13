"""One run on a CUDA machine: do the GPU code paths give the CPU's numbers, and
how fast do training and inference go at real sizes, against that machine's CPU.

Stages, in this order; each is timed, a failure or time-out is recorded and the
next stage runs (``--budget`` seconds in all: a stage that would start with
less than its reserve left is skipped, and says so):

* ``pytest``: the tests marked ``gpu`` (``pytest -m gpu``, core tests; those
  that need 2 GPUs skip on one).
* ``kernels``: one batch of projections of a 2,000-bead cloud at 128 px on the
  GPU against the CPU in float64 (exact separable projector, and the KeOps
  reduction, compiled for the GPU on first use); the Sinkhorn loss (GeomLoss,
  tensorized) on the GPU against the CPU; each timed after a warm-up
  (``torch.cuda.synchronize``).
* ``train128``: ``continuousflex-geodl train --device cuda`` on ``--n``
  particles at 128 px (1.6 A/px, 800 pseudo-atoms: ``bench_scale.write_set``)
  at the default batch (32) and at ``--big-batch``; ``infer --device cuda``;
  the same training on this machine's CPU (``--cpu-threads``) on
  ``--n-cpu`` particles for the ratio.
* ``train256``: ``--n-256`` particles at 256 px (0.8 A/px), trained with
  ``--train-box 128`` and at 256, on the GPU.

Speeds are the last epoch's images/s (``history.json``); peak GPU memory is
the largest ``memory.used`` that ``nvidia-smi`` reports while the command
runs (the whole device: other processes count too).  The 1-minute load
average of the host is recorded with every timing.  Writes ``gpu.md`` and
``gpu.json`` into ``--out``.  Usage::

    python benchmarks/bench_gpu.py --out OUTDIR                  # on the GPU machine
    python benchmarks/bench_gpu.py --out /tmp/g --device cpu --quick   # dry run of the logic
"""
import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

import common  # benchmarks/common.py (this script's folder is on sys.path)
import bench_scale as BS

HERE = os.path.dirname(os.path.abspath(__file__))


class GpuMemorySampler:
    """Largest ``nvidia-smi`` memory.used (MiB) while the ``with`` block runs."""

    def __init__(self, every=0.5):
        self.every, self.peak = every, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        try:
            out = subprocess.run(['nvidia-smi', '--query-gpu=memory.used',
                                  '--format=csv,noheader,nounits'], capture_output=True,
                                 text=True, timeout=5).stdout
            v = max(float(x) for x in out.split())
            self.peak = v if self.peak is None else max(self.peak, v)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass

    def _run(self):
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.every)

    def __enter__(self):
        if shutil.which('nvidia-smi'):
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._t.is_alive():
            self._t.join()


class Run:
    """Stages under one time budget; results and statuses in ``self.res``."""

    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.res = dict(stages={}, date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                        device=args.device, host=dict(cpus=os.cpu_count()))

    def left(self):
        return self.args.budget - (time.time() - self.t0)

    def stage(self, name, fn, reserve):
        if self.left() < reserve:
            self.res['stages'][name] = dict(status='skipped: %.0f s left, needs %.0f'
                                            % (self.left(), reserve))
            common.say(name, self.res['stages'][name]['status'])
            return
        common.say('stage %s (%.0f s left)' % (name, self.left()))
        t = time.time()
        try:
            out = fn()
            rec = dict(status='ok', **(out or {}))
        except Exception as exc:  # recorded; the next stage runs
            rec = dict(status='failed: %s: %s' % (type(exc).__name__, str(exc)[-1500:]))
        rec['seconds'] = time.time() - t
        self.res['stages'][name] = rec
        common.say('stage %s: %s (%.0f s)' % (name, rec['status'][:300], rec['seconds']))
        self.save()

    def save(self):
        name = self.args.report_name
        common.write_json(os.path.join(self.args.out, name + '.json'), self.res)
        common.atomic_write_text(os.path.join(self.args.out, name + '.md'), report(self.res))


# ----------------------------------------------------------------- stages --
def environment(args):
    import torch
    env = dict(python=sys.version.split()[0], torch=torch.__version__,
               cuda=torch.version.cuda, numpy=np.__version__,
               cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name(0)
        env['gpu_memory_gib'] = torch.cuda.get_device_properties(0).total_memory / 2 ** 30
    for mod in ('pykeops', 'geomloss'):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # recorded
            env[mod] = 'not importable: %s' % exc
    return env


def stage_pytest(args):
    cmd = [sys.executable, '-m', 'pytest', '-q', '-ra', '-p', 'no:cacheprovider', '-m', 'gpu',
           '-o', 'addopts=', 'continuousflex_geodl/tests/core/test_engine.py',
           'continuousflex_geodl/tests/core/test_faults.py',
           'continuousflex_geodl/tests/core/test_launch.py']
    log = os.path.join(args.out, 'pytest_gpu.log')
    t = time.time()
    with open(log, 'w') as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=common.REPO,
                           env=common.thread_env(args.cpu_threads),
                           timeout=args.pytest_timeout)
    tail = open(log, errors='replace').read().strip().splitlines()[-1:]
    return dict(rc=p.returncode, summary=tail[0] if tail else '', wall_s=time.time() - t)


def _sync(dev):
    import torch
    if dev.type == 'cuda':
        torch.cuda.synchronize()


def _timed(fn, dev, reps=5):
    fn()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        out = fn()
    _sync(dev)
    return out, (time.perf_counter() - t) / reps


def stage_kernels(args):
    import torch
    from continuousflex_geodl.core import runtime
    from continuousflex_geodl.core.geometry import random_rotations
    from continuousflex_geodl.core.render import project
    runtime.setup(args.cpu_threads)
    dev = torch.device(args.device)
    n_atoms, box, apix, B = (300, 48, 3.0, 8) if args.quick else (2000, 128, 1.6, 32)
    pos, amp = BS.make_cloud(n_atoms, 0.3 * box * apix)
    R = torch.as_tensor(random_rotations(B, np.random.default_rng(0)))
    P, A = torch.as_tensor(pos, dtype=torch.float64), torch.as_tensor(amp, dtype=torch.float64)
    ref = project(P, A, 2.0, R, box, apix)  # CPU, float64: the reference numbers
    out = dict(atoms=n_atoms, box=box, batch=B)
    for method in args.projectors:
        try:
            f = lambda: project(P.float().to(dev), A.float().to(dev), 2.0,  # noqa: E731
                                R.float().to(dev), box, apix, method=method)
            t = time.time()
            img = f()
            _sync(dev)
            first = time.time() - t
            img, sec = _timed(f, dev)
            err = float((img.double().cpu() - ref).abs().max() / ref.abs().max())
            out[method] = dict(max_rel_err_vs_cpu_float64=err, ms_per_batch=1e3 * sec,
                               first_call_s=first)
        except Exception as exc:  # KeOps may not compile here: recorded
            out[method] = dict(error='%s: %s' % (type(exc).__name__, str(exc)[-800:]))
    # Sinkhorn (GeomLoss, tensorized, as core.losses uses it)
    from geomloss import SamplesLoss
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(1000, 3)))
    y = torch.as_tensor(rng.normal(size=(1000, 3)) + 0.5)
    L = SamplesLoss('sinkhorn', p=2, blur=0.05, scaling=0.9, debias=True, backend='tensorized')
    cpu = float(L(x, y))
    g, sec = _timed(lambda: L(x.float().to(dev), y.float().to(dev)), dev)
    out['sinkhorn'] = dict(points=1000, cpu_float64=cpu, device_float32=float(g),
                           rel_err=abs(float(g) - cpu) / abs(cpu), ms=1e3 * sec)
    return out


def stage_keops(args):
    """The KeOps projector in a child process (a crash of KeOps' code
    generation must not take this run down with it)."""
    cmd = [sys.executable, os.path.abspath(__file__), '--out', args.out, '--work', args.work,
           '--device', args.device, '--stages', 'kernels', '--projectors', 'keops',
           '--report-name', 'keops'] + (['--quick'] if args.quick else [])
    log = os.path.join(args.out, 'keops.log')
    with open(log, 'w') as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=common.REPO,
                           timeout=args.step_timeout)
    res = common.read_json(os.path.join(args.out, 'keops.json'), {})
    k = res.get('stages', {}).get('kernels', {}).get('keops')
    if p.returncode != 0 or k is None:
        raise RuntimeError('the KeOps projector child process ended with exit code %d '
                           '(negative: killed by that signal, -11 = segmentation fault); '
                           'last lines:\n%s' % (p.returncode, common.tail(log, 6)))
    return dict(keops=k)


def _train(args, name, star, ref, epochs, extra, threads, batch, device):
    runs = os.path.join(args.work, 'runs')
    os.makedirs(runs, exist_ok=True)
    extra = list(extra) + ['--device', device]
    with GpuMemorySampler() as mem:
        r = BS.train_run(name, star, ref, runs, epochs, extra, threads=threads, batch=batch)
    last = r['epochs'][-1]
    return dict(n=r['n'], epochs=epochs, batch=batch, device=device, threads=threads,
                images_per_s=last['images_per_s'],
                images_per_s_by_epoch=[e['images_per_s'] for e in r['epochs']],
                cache_fill_s=r['cache_fill_s'], wall_s=r['wall_s'],
                peak_rss_mb=r['peak_rss_mb'], peak_gpu_mib=mem.peak,
                load=[r.get('load_avg_start'), r.get('load_avg_end')],
                final_loss=r.get('final_loss'), model=os.path.join(runs, name),
                cmd=' '.join(r['cmd'][3:]))  # without the 'nice -n 5' prefix


def _infer(args, model, star, device, threads):
    out = os.path.join(args.work, 'z_%s.npy' % os.path.basename(model))
    log = out + '.log'
    cmd = common.our_cli() + ['infer', '--model', model, '--particles', star, '--out', out,
                              '--device', device, '--threads', str(threads)]
    with GpuMemorySampler() as mem:
        r = common.run_measured(cmd, log, env=common.thread_env(threads), cwd=common.REPO,
                                timeout=args.step_timeout)
    n = BS.len_star(star)
    z = np.load(out)
    return dict(n=n, wall_s=r['wall_s'], particles_per_s=n / r['wall_s'], peak_gpu_mib=mem.peak,
                finite=bool(np.all(np.isfinite(z))), shape=list(z.shape),
                load=[r.get('load_avg_start'), r.get('load_avg_end')])


def _particles(args, name, n, box, apix, sigma=3.0):
    """(star, reference .npz, seconds to write) of ``n`` particles of
    ``bench_scale.write_set`` (same 800-bead cloud at every box)."""
    cloud = BS.make_cloud(args.atoms, 0.3 * 128 * 1.6)
    ref = os.path.join(args.work, 'ref.npz')
    np.savez(ref, positions=cloud[0], amplitudes=cloud[1], sigma=np.float32(sigma))
    t = time.time()
    star = BS.write_set(os.path.join(args.work, name), n, box, apix, cloud, sigma,
                        log=common.say)
    return star, ref, time.time() - t


def stage_train128(args):
    box, apix = (64, 3.2) if args.quick else (128, 1.6)
    star, ref, write_s = _particles(args, 'set128', args.n, box, apix)
    out = dict(write_s=write_s, box=box, apix=apix)
    out['gpu_b32'] = _train(args, 'gpu_b32', star, ref, args.epochs, [], args.cpu_threads, 32,
                            args.device)
    out['infer_gpu'] = _infer(args, out['gpu_b32']['model'], star, args.device,
                              args.cpu_threads)
    out['gpu_big'] = _train(args, 'gpu_b%d' % args.big_batch, star, ref, args.epochs, [],
                            args.cpu_threads, args.big_batch, args.device)
    small = BS.subset_star(star, args.n_cpu, os.path.join(args.work, 'set128', 'cpu.star'))
    out['cpu_b32'] = _train(args, 'cpu_b32', small, ref, 2, [], args.cpu_threads, 32, 'cpu')
    out['ratio_gpu_over_cpu_b32'] = out['gpu_b32']['images_per_s'] / out['cpu_b32']['images_per_s']
    out['ratio_gpu_big_over_cpu_b32'] = (out['gpu_big']['images_per_s']
                                         / out['cpu_b32']['images_per_s'])
    return out


def stage_train256(args):
    box, apix = (96, 2.133) if args.quick else (256, 0.8)
    star, ref, write_s = _particles(args, 'set256', args.n_256, box, apix)
    out = dict(write_s=write_s, box=box, apix=apix)
    tb = str(box // 2)
    out['crop'] = _train(args, 'gpu256_crop', star, ref, 2, ['--train-box', tb],
                         args.cpu_threads, args.big_batch, args.device)
    out['full'] = _train(args, 'gpu256_full', star, ref, 2, [], args.cpu_threads,
                         args.big_batch, args.device)
    return out


# ----------------------------------------------------------------- report --
def _fmt(v, f='%.1f'):
    return '-' if v is None else f % v


def report(res):
    st = res['stages']
    env = st.get('environment', {})
    out = ['# GPU check and speed', '',
           'Generated by `benchmarks/bench_gpu.py` on %s, device `%s`; host with %s CPUs.'
           % (res['date'], res['device'], res['host']['cpus']), '',
           'Environment: ' + ', '.join('%s %s' % (k, v) for k, v in env.items()
                                       if k not in ('status', 'seconds')), '',
           '| stage | status | seconds |', '|---|---|---|']
    for k, v in st.items():
        out.append('| %s | %s | %.0f |' % (k, v['status'].replace('|', '/')[:400],
                                           v.get('seconds', 0)))
    p = st.get('pytest', {})
    if 'summary' in p:
        out += ['', 'Tests marked gpu: `%s` (rc %s).' % (p['summary'], p['rc'])]
    k = dict(st.get('kernels', {}))
    if 'keops' in st.get('keops', {}):  # the KeOps projector, run in its own stage
        k['keops'] = st['keops']['keops']
    if 'atoms' in k:
        out += ['', '## Kernels on the device against the CPU (float64)', '',
                '%d beads, %d px, batch %d.' % (k['atoms'], k['box'], k['batch']), '',
                '| kernel | max relative error | ms per batch | first call s |',
                '|---|---|---|---|']
        for m in ('exact', 'keops'):
            v = k.get(m, {})
            if 'error' in v:
                out.append('| projector %s | failed: %s | | |' % (m, v['error'][:300]))
            elif v:
                out.append('| projector %s | %.2e | %.2f | %.2f |'
                           % (m, v['max_rel_err_vs_cpu_float64'], v['ms_per_batch'],
                              v['first_call_s']))
        s = k.get('sinkhorn')
        if s:
            out.append('| Sinkhorn (GeomLoss, %d points) | %.2e | %.2f | |'
                       % (s['points'], s['rel_err'], s['ms']))
    rows = []
    for sname in ('train128', 'train256'):
        s = st.get(sname, {})
        for key, v in s.items():
            if isinstance(v, dict) and 'images_per_s' in v:
                rows.append('| %s/%s | %d | %s | %d | %s | %s | %s | %s | %s | %s |' % (
                    sname, key, v['n'], v['device'], v['batch'],
                    ', '.join('%.0f' % x for x in v['images_per_s_by_epoch']),
                    _fmt(v['cache_fill_s']), _fmt(v['wall_s'], '%.0f'),
                    _fmt(v['peak_gpu_mib'], '%.0f'), _fmt(v['peak_rss_mb'], '%.0f'),
                    '%s -> %s' % tuple(_fmt(x) for x in v['load'])))
    if rows:
        out += ['', '## Training', '',
                '| run | N | device | batch | images/s per epoch | cache fill s | wall s '
                '| peak GPU MiB | peak RSS MB | load |', '|---|---|---|---|---|---|---|---|---|---|']
        out += rows
        t = st.get('train128', {})
        if 'ratio_gpu_over_cpu_b32' in t:
            out += ['', 'Last epoch, GPU over this host\'s CPU (%d threads), batch 32: %.1fx; '
                    'GPU at batch %d over CPU at batch 32: %.1fx.'
                    % (t['cpu_b32']['threads'], t['ratio_gpu_over_cpu_b32'],
                       t['gpu_big']['batch'], t['ratio_gpu_big_over_cpu_b32'])]
        i = t.get('infer_gpu')
        if i:
            out += ['', 'Inference (`infer --device %s`, %d particles, encoder + refinement, '
                    'whole command): %.0f s wall, %.0f particles/s, peak GPU %s MiB, '
                    'latents finite: %s.' % (res['device'], i['n'], i['wall_s'],
                                             i['particles_per_s'],
                                             _fmt(i['peak_gpu_mib'], '%.0f'), i['finite'])]
    out += ['', 'Commands: `gpu.json` (`cmd` of each run).', '']
    return '\n'.join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='folder of gpu.md, gpu.json, logs')
    p.add_argument('--work', default=os.path.join(HERE, 'work', 'gpu'))
    p.add_argument('--device', default='cuda')
    p.add_argument('--stages', nargs='+',
                   default=['pytest', 'kernels', 'train128', 'train256', 'keops'])
    p.add_argument('--projectors', nargs='+', default=['exact'],
                   help="projectors of the kernels stage ('keops' runs in its own stage)")
    p.add_argument('--report-name', default='gpu', help='REPORT_NAME.md / .json in --out')
    p.add_argument('--budget', type=float, default=480, help='seconds for all stages')
    p.add_argument('--quick', action='store_true', help='tiny sizes (a dry run of the logic)')
    p.add_argument('--n', type=int, default=20000, help='particles at 128 px (GPU)')
    p.add_argument('--n-cpu', type=int, default=2000, help='particles of the CPU comparison')
    p.add_argument('--n-256', type=int, default=5000)
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--big-batch', type=int, default=256)
    p.add_argument('--atoms', type=int, default=800)
    p.add_argument('--cpu-threads', type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument('--pytest-timeout', type=float, default=240)
    p.add_argument('--step-timeout', type=float, default=300)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.n_cpu, args.n_256, args.big_batch = 300, 200, 200, 64
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    run = Run(args)
    reserves = dict(pytest=60, kernels=30, train128=150, train256=90, keops=30)
    run.stage('environment', lambda: environment(args), 0)
    for name in args.stages:
        fn = dict(pytest=stage_pytest, kernels=stage_kernels, train128=stage_train128,
                  train256=stage_train256, keops=stage_keops)[name]
        run.stage(name, lambda fn=fn: fn(args), reserves[name])
    run.save()
    print(open(os.path.join(args.out, args.report_name + '.md')).read())
    return 0


if __name__ == '__main__':
    sys.exit(main())
