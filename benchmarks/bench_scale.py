"""Training at scale on the CPU: speed of every epoch and peak memory in N, and
256-px particles trained at ``--train-box 128`` and at 256 directly.

Data (fast, not realistic: only speed and memory are measured): a cloud of
pseudo-atoms (``--atoms``, in A) is projected at ``--templates`` random poses,
each with its own CTF; particle i is template i mod K plus one of 512 white-
noise images (SNR about 0.1), with that template's pose and CTF.  The
particles are written as RELION writes them, one ``.mrcs`` per "micrograph"
of 100 particles, with one ``.star`` file; training reads them memory-mapped.

Runs (``continuousflex-geodl train``, 2 threads, ``nice -n 5``, a child
process measured by ``common.run_measured``):

* 128 px (1.6 A/px): N = 10^4 (3 epochs) and N = 10^5 (``--epochs-large``
  epochs): images/s of every epoch and its ratio to the second epoch, the
  one-time encoder-input cache built before epoch 1, peak RSS of the process
  and its anonymous part (RSS without the file-backed pages of the memory-
  mapped stacks and feature cache, which are page cache the kernel can
  drop): the memory the training holds;
* 256 px (0.8 A/px, same field of view), ``--n-256`` particles: trained with
  ``--train-box 128`` and at 256 directly.

The 1-minute load average is sampled every 2 s and reported with every
epoch: other work on the machine slows wall-clock figures.  Data go to
``benchmarks/work/scale`` (git-ignored) and are deleted at the end unless
``--keep``.  Writes ``benchmarks/report/scale.md`` and ``scale.json``.
Usage::

    python benchmarks/bench_scale.py                    # everything (about 45 min)
    python benchmarks/bench_scale.py --runs n1e4 b256   # some runs only
    python benchmarks/bench_scale.py --quick            # 2,000 / 5,000 particles
"""
import argparse
import glob
import os
import re
import shutil
import sys
import threading
import time

import numpy as np

import common  # benchmarks/common.py (this script's folder is on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, 'work', 'scale')
PER_STACK = 100


# ------------------------------------------------------------------ data --
def make_cloud(n_atoms, radius, seed=0):
    """Pseudo-atoms filling an ellipsoid of semi-axes radius * (1, 0.8, 0.6) A."""
    rng = np.random.default_rng(seed)
    pts = []
    while sum(len(p) for p in pts) < n_atoms:
        p = rng.uniform(-1, 1, (4 * n_atoms, 3))
        pts.append(p[(p ** 2).sum(1) <= 1])
    pos = np.concatenate(pts)[:n_atoms] * radius * np.array([1.0, 0.8, 0.6])
    return pos.astype(np.float32), np.ones(n_atoms, np.float32)


def write_set(folder, n, box, apix, cloud, sigma, n_templates=256, seed=0, log=print):
    """``n`` particles in stacks of 100 + particles.star (see module docstring).
    Returns the star path."""
    import torch
    from continuousflex_geodl.core.geometry import random_rotations, matrix_to_euler
    from continuousflex_geodl.core.io.mrc import StackWriter
    from continuousflex_geodl.core.models import imaging
    from continuousflex_geodl.core.particles import ImageSource, ParticleSet, \
        write_particles_star
    from continuousflex_geodl.core.render import project
    star = os.path.join(folder, 'particles.star')
    if os.path.exists(star):
        return star
    os.makedirs(folder, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng(seed)
    K = int(n_templates)
    R = random_rotations(K, rng)
    rot, tilt, psi = matrix_to_euler(R)
    euler = np.stack([rot, tilt, psi], 1)
    shifts = rng.uniform(-3, 3, (K, 2))
    df = rng.uniform(8000, 25000, K)
    ctf = np.stack([df, df * 0.97, rng.uniform(0, 180, K), np.full(K, 300.0),
                    np.full(K, 2.7), np.full(K, 0.1), np.zeros(K)], 1)
    pos, amp = cloud
    with torch.no_grad():
        img = project(torch.as_tensor(pos), torch.as_tensor(amp), float(sigma),
                      torch.as_tensor(R, dtype=torch.float32), box, apix,
                      shifts=torch.as_tensor(shifts, dtype=torch.float32))
        C = imaging.ctf_values(ctf, box, apix)
        tmpl = torch.fft.ifft2(torch.fft.fft2(img) * (-C)).real.numpy().astype(np.float32)
    noise_sd = float(np.sqrt(tmpl.var() / 0.1))
    bank = rng.normal(0, noise_sd, (512, box, box)).astype(np.float32)
    files, fidx, iidx = [], [], []
    for s in range(0, n, PER_STACK):
        m = min(PER_STACK, n - s)
        i = np.arange(s, s + m)
        path = os.path.join(folder, 'Particles', 'mic%05d.mrcs' % (s // PER_STACK))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with StackWriter(path, m, box, apix) as w:
            w.write(tmpl[i % K] + bank[(i // K + 7 * i) % len(bank)])
        files.append(path)
        fidx.append(np.full(m, len(files) - 1))
        iidx.append(np.arange(m))
    j = np.arange(n) % K
    pset = ParticleSet(ImageSource.from_arrays(files, np.concatenate(fidx),
                                               np.concatenate(iidx)),
                       apix, euler[j], shifts[j], ctf[j])
    write_particles_star(star, pset)
    log('wrote %d particles of %d px (%d stacks) in %.0f s' % (n, box, len(files),
                                                               time.time() - t0))
    return star


def subset_star(star, n, out):
    from continuousflex_geodl.core.particles import load_particles, write_particles_star
    if not os.path.exists(out):
        write_particles_star(out, load_particles(star).subset(np.arange(n)))
    return out


# --------------------------------------------------------------- measure --
class LoadSampler:
    """1-minute load average every ``every`` s, and the time each 'epoch k/E
    done' line appears in the training log: the mean load of each epoch."""

    def __init__(self, log_path, every=2.0):
        self.log_path, self.every = log_path, every
        self.samples, self.marks = [], {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _scan(self):
        now = time.time()
        self.samples.append((now, os.getloadavg()[0]))
        try:
            with open(self.log_path, errors='replace') as f:
                text = f.read()
        except OSError:
            return
        if re.search(r'encoder inputs of \d+ particles computed', text):
            self.marks.setdefault('cache', now)
        for m in re.finditer(r'epoch (\d+)/\d+ done', text):
            self.marks.setdefault(int(m.group(1)), now)

    def _run(self):
        while not self._stop.is_set():
            self._scan()
            self._stop.wait(self.every)

    def __enter__(self):
        self.t0 = time.time()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self._scan()  # the last epoch may end within the last polling interval

    def mean_load(self, t_from, t_to):
        v = [l for t, l in self.samples if t_from <= t <= t_to]
        return float(np.mean(v)) if v else None


def train_run(name, star, ref, out_dir, epochs, extra=(), threads=2, batch=32):
    """Train once, measured; dict of the figures."""
    from continuousflex_geodl.core.artifacts import ModelDir
    model = os.path.join(out_dir, name)
    shutil.rmtree(model, ignore_errors=True)
    log = os.path.join(out_dir, name + '.log')
    cmd = ['nice', '-n', '5'] + common.our_cli() + [
        'train', '--particles', star, '--reference', ref, '--out', model,
        '--epochs', str(epochs), '--batch-size', str(batch), '--threads', str(threads),
        '--seed', '0'] + list(extra)
    common.say('%s: %s' % (name, ' '.join(cmd[3:])))
    with LoadSampler(log) as ls:
        res = common.run_measured(cmd, log, env=common.thread_env(threads), cwd=common.REPO)
    hist = ModelDir(model).read_history()
    text = open(log, errors='replace').read()
    m = re.search(r'encoder inputs of (\d+) particles computed in ([\d.]+) s', text)
    res['cache_fill_s'] = float(m.group(2)) if m else None
    m = re.search(r'loss grid (\d+) px \(([\d.]+) A/px\), encoder grid (\d+) px', text)
    if m:
        res['loss_box'], res['enc_box'] = int(m.group(1)), int(m.group(3))
    epochs_out = []
    for h in hist:
        end = ls.marks.get(int(h['epoch']))
        start = end - h['seconds'] if end else None
        cpu = h.get('cpu_seconds')
        epochs_out.append(dict(epoch=int(h['epoch']), images_per_s=h['images_per_s'],
                               seconds=h['seconds'], cpu_seconds=cpu,
                               images_per_cpu_s=(h['images_per_s'] * h['seconds'] / cpu
                                                 if cpu else None),
                               load=ls.mean_load(start, end) if end else None))
    second = epochs_out[1]['images_per_s'] if len(epochs_out) > 1 else None
    second_cpu = epochs_out[1]['images_per_cpu_s'] if len(epochs_out) > 1 else None
    for e in epochs_out:
        e['vs_second'] = e['images_per_s'] / second if second else None
        e['cpu_vs_second'] = (e['images_per_cpu_s'] / second_cpu
                              if second_cpu and e['images_per_cpu_s'] else None)
    res['final_loss'] = hist[-1]['loss'] if hist else None
    res.update(name=name, epochs=epochs_out, n=len_star(star),
               cache_load=ls.mean_load(ls.t0, ls.marks.get('cache', ls.t0)))
    common.say('%s: %s; peak RSS %.0f MB (anonymous %.0f MB)'
               % (name, ', '.join('%.1f img/s (load %.1f)' % (e['images_per_s'],
                                                            e['load'] or -1)
                                  for e in epochs_out), res['peak_rss_mb'],
                  res['peak_anon_mb']))
    return res


def len_star(star):
    from continuousflex_geodl.core.particles import load_particles
    return len(load_particles(star))


# ---------------------------------------------------------------- report --
def fmt(x, f='%.1f'):
    return '-' if x is None else f % x


def write_report(results, args):
    out = ['# Training at scale (CPU)', '',
           'Generated by `benchmarks/bench_scale.py` on %s; 2 threads, `nice -n 5`, '
           'on a machine of %d cores shared with other work (load averages below). '
           'Batch 32, %d pseudo-atoms, particles in stacks of %d (one `.mrcs` per '
           'micrograph, read memory-mapped through one `.star`).'
           % (time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), os.cpu_count(),
              args.atoms, PER_STACK), '']
    out += ['## Epoch speed and memory', '',
            '| run | N | box (train) | cache fill s (load) | epoch: images/s (load, vs epoch 2) '
            '| epoch: images per CPU-s (vs epoch 2) | peak RSS MB | peak anonymous MB '
            '| wall s |',
            '|---|---|---|---|---|---|---|---|---|']
    for r in results.values():
        ep = '; '.join('%d: %.1f (%s, %s)' % (e['epoch'], e['images_per_s'],
                                              fmt(e['load']), fmt(e['vs_second'], '%.2f'))
                       for e in r['epochs'])
        cp = '; '.join('%d: %s (%s)' % (e['epoch'], fmt(e.get('images_per_cpu_s')),
                                        fmt(e.get('cpu_vs_second'), '%.2f'))
                       for e in r['epochs'])
        out.append('| %s | %d | %s | %s (%s) | %s | %s | %.0f | %.0f | %.0f |' % (
            r['name'], r['n'], r.get('box_label', ''), fmt(r['cache_fill_s']),
            fmt(r['cache_load']), ep, cp, r['peak_rss_mb'], r['peak_anon_mb'],
            r['wall_s']))
    a, b = results.get('n1e4'), results.get('n1e5')
    out.append('')
    if a and b:
        out += ['Memory from 10^4 to 10^5 particles: peak anonymous %+.1f %% (%.0f -> %.0f '
                'MB), peak RSS %+.1f %% (%.0f -> %.0f MB; the RSS includes the pages of the '
                'memory-mapped stacks and feature cache, i.e. page cache).'
                % (100 * (b['peak_anon_mb'] / a['peak_anon_mb'] - 1), a['peak_anon_mb'],
                   b['peak_anon_mb'], 100 * (b['peak_rss_mb'] / a['peak_rss_mb'] - 1),
                   a['peak_rss_mb'], b['peak_rss_mb']), '']
    c, f = results.get('b256_crop'), results.get('b256_full')
    if c and f:
        def last(r, key):
            return r['epochs'][-1].get(key)
        out += ['256-px particles: last epoch %s images/s (%s per CPU-s) with `--train-box 128` '
                'and %s (%s) at 256; loss grid %s and %s px, encoder grid %s and %s px, '
                'final loss %s and %s (the model compares images on a grid cropped to its '
                'resolution in both cases; the training box saves reading and the FFT of the '
                'full images).'
                % (fmt(last(c, 'images_per_s')), fmt(last(c, 'images_per_cpu_s')),
                   fmt(last(f, 'images_per_s')), fmt(last(f, 'images_per_cpu_s')),
                   c.get('loss_box'), f.get('loss_box'), c.get('enc_box'), f.get('enc_box'),
                   fmt(c.get('final_loss'), '%.3f'), fmt(f.get('final_loss'), '%.3f')), '']
    out += ['Columns: *cache fill*: the encoder inputs of every particle computed once '
            'before epoch 1 (stored in a disk memory map and read back by every epoch); '
            '*vs epoch 2*: images/s of the epoch over those of epoch 2; *load*: mean '
            '1-minute load average during the epoch (2 cores: a load above 2 means the '
            'run shared its cores); *images per CPU-s*: images of the epoch over the CPU '
            'time of the training process in it (all threads; barely changed by other '
            'work, unlike images/s); *peak anonymous*: peak RSS without file-backed '
            'pages.', '']
    out += ['Commands: see `scale.json` (`cmd` of each run).', '']
    common.atomic_write_text(os.path.join(common.REPORT, 'scale.md'), '\n'.join(out))
    common.write_json(os.path.join(common.REPORT, 'scale.json'), results)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', nargs='+', default=['n1e4', 'n1e5', 'b256_crop', 'b256_full'],
                   choices=['n1e4', 'n1e5', 'b256_crop', 'b256_full'])
    p.add_argument('--quick', action='store_true', help='2,000 / 5,000 particles')
    p.add_argument('--epochs-large', type=int, default=2)
    p.add_argument('--n-256', type=int, default=3000)
    p.add_argument('--atoms', type=int, default=800)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--keep', action='store_true', help='keep the generated particles')
    p.add_argument('--report-only', action='store_true',
                   help='rewrite scale.md from scale.json (and the kept run folders)')
    args = p.parse_args(argv)
    if args.report_only:
        results = common.read_json(os.path.join(common.REPORT, 'scale.json'), {})
        for name, r in results.items():
            hist = os.path.join(WORK, 'runs', name, 'history.json')
            if r.get('final_loss') is None and os.path.exists(hist):
                r['final_loss'] = common.read_json(hist)[-1]['loss']
        write_report(results, args)
        return 0
    n_small, n_large = (2000, 5000) if args.quick else (10 ** 4, 10 ** 5)
    os.makedirs(WORK, exist_ok=True)
    extent = 128 * 1.6
    cloud = make_cloud(args.atoms, 0.3 * extent)
    sigma = 3.0
    ref = os.path.join(WORK, 'ref.npz')
    np.savez(ref, positions=cloud[0], amplitudes=cloud[1], sigma=np.float32(sigma))
    json_path = os.path.join(common.REPORT, 'scale.json')
    results = common.read_json(json_path, {}) or {}
    runs = os.path.join(WORK, 'runs')
    os.makedirs(runs, exist_ok=True)
    try:
        for name in args.runs:  # in the order given
            if name in ('n1e4', 'n1e5'):
                big = write_set(os.path.join(WORK, 'set128'), n_large, 128, 1.6, cloud,
                                sigma, log=common.say)
                star = big if name == 'n1e5' else subset_star(
                    big, n_small, os.path.join(WORK, 'set128', 'small.star'))
                ep, extra, label = (args.epochs_large if name == 'n1e5' else 3), [], \
                    '128 (128)'
            else:
                star = write_set(os.path.join(WORK, 'set256'), args.n_256, 256, 0.8, cloud,
                                 sigma, log=common.say)
                ep = 2
                extra, label = ((['--train-box', '128'], '256 (128)') if name == 'b256_crop'
                                else ([], '256 (256)'))
            results[name] = train_run(name, star, ref, runs, ep, extra, threads=args.threads)
            results[name]['box_label'] = label
            write_report(results, args)
    finally:
        if not args.keep:
            for d in glob.glob(os.path.join(WORK, 'set*')) + [runs]:
                shutil.rmtree(d, ignore_errors=True)
    write_report(results, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
