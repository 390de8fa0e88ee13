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


# ------------------------------------------------------- extra stages --
def _rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def fill_run(star, cloud, sigma, threads, chunk=256):
    """Encoder inputs of every particle of ``star`` (what ``FeatureCache.fill``
    computes before epoch 1), timed in this process for the current
    implementation and for the first one (``reference_encoder_inputs`` of
    ``tests/core/test_mode_features.py``, sub-batched as it was), chunk by
    chunk alternately (same machine state); both outputs compared."""
    import torch
    from continuousflex_geodl.core.models.data import make_batch
    from continuousflex_geodl.core.models.flexmodel import build_model
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.tests.core.test_mode_features import reference_encoder_inputs
    torch.set_num_threads(threads)
    pset = load_particles(star)
    n = len(pset)
    model = build_model(dict(box=int(pset.box), apix=float(pset.apix), sigma=sigma,
                             n_particles=n), cloud[0], cloud[1])
    per = model.ref_pos.shape[0] * model.enc_box * model.enc_modes.shape[-1]
    step = max(1, 2 ** 24 // per)  # the former sub-batches

    def former(batch):
        keys = ('rot', 'shifts', 'ctf_enc', 'F_enc', 'euler')
        parts = [reference_encoder_inputs(model, {k: batch[k][s:s + step] for k in keys})
                 for s in range(0, len(batch['idx']), step)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    tot = {k: dict(wall_s=0.0, cpu_s=0.0, loads=[]) for k in ('current', 'former')}
    err_f = err_i = 0.0
    read_s = 0.0
    common.say('fill: %d particles, %d atoms, encoder grid %d px, %d modes, %d threads'
               % (n, model.ref_pos.shape[0], model.enc_box, model.enc_modes.shape[-1], threads))
    with torch.no_grad():
        for k, s in enumerate(range(0, n, chunk)):
            t = time.perf_counter()
            batch = make_batch(pset, np.arange(s, min(n, s + chunk)), model)
            read_s += time.perf_counter() - t
            out = {}
            order = ('current', 'former') if k % 2 == 0 else ('former', 'current')
            for name in order:
                fn = model.encoder_inputs if name == 'current' else former
                l0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
                out[name] = fn(batch)
                tot[name]['wall_s'] += time.perf_counter() - t0
                tot[name]['cpu_s'] += time.process_time() - c0
                tot[name]['loads'] += [l0, os.getloadavg()[0]]
            err_f = max(err_f, _rel_err(out['current'][0], out['former'][0]))
            err_i = max(err_i, _rel_err(out['current'][1], out['former'][1]))
    res = dict(kind='fill', n=n, atoms=int(model.ref_pos.shape[0]), enc_box=model.enc_box,
               modes=int(model.enc_modes.shape[-1]), threads=threads, chunk=chunk,
               read_fft_s=read_s, max_rel_err_features=err_f, max_rel_err_images=err_i,
               date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    for name, v in tot.items():
        res[name] = dict(wall_s=v['wall_s'], cpu_s=v['cpu_s'],
                         load=float(np.mean(v['loads'])),
                         ms_per_particle=1e3 * v['wall_s'] / n,
                         cpu_ms_per_particle=1e3 * v['cpu_s'] / n)
    res['speedup_wall'] = res['former']['wall_s'] / res['current']['wall_s']
    res['speedup_cpu'] = res['former']['cpu_s'] / res['current']['cpu_s']
    common.say('fill: current %.1f s (%.1f CPU s, load %.1f), former %.1f s (%.1f CPU s, '
               'load %.1f); max relative difference %.1e (features), %.1e (images)'
               % (res['current']['wall_s'], res['current']['cpu_s'], res['current']['load'],
                  res['former']['wall_s'], res['former']['cpu_s'], res['former']['load'],
                  err_f, err_i))
    return res


def _epoch_summary(r):
    last = r['epochs'][-1]
    return dict(images_per_s=last['images_per_s'], images_per_cpu_s=last['images_per_cpu_s'],
                load=last['load'], epoch=last['epoch'], cache_fill_s=r['cache_fill_s'],
                cache_load=r['cache_load'], peak_rss_mb=r['peak_rss_mb'],
                peak_anon_mb=r['peak_anon_mb'], wall_s=r['wall_s'], cmd=r.get('cmd'),
                epochs=r['epochs'], final_loss=r.get('final_loss'))


def atoms_run(args, sigma, runs):
    """Training speed and memory at 128 px for each pseudo-atom count."""
    extent = 128 * 1.6
    star = write_set(os.path.join(WORK, 'set128_atoms'), args.atoms_particles, 128, 1.6,
                     make_cloud(args.atoms, 0.3 * extent), sigma, log=common.say)
    rows = []
    for na in args.atom_counts:
        ref = os.path.join(WORK, 'ref_atoms_%d.npz' % na)
        pos, amp = make_cloud(na, 0.3 * extent, seed=1)
        np.savez(ref, positions=pos, amplitudes=amp, sigma=np.float32(sigma))
        try:
            r = train_run('atoms_%d' % na, star, ref, runs, args.atom_epochs,
                          threads=args.threads)
        except RuntimeError as exc:  # e.g. out of memory: recorded, next count
            rows.append(dict(atoms=na, error=str(exc)[-500:]))
            continue
        rows.append(dict(atoms=na, **_epoch_summary(r)))
    return dict(kind='atoms', n=args.atoms_particles, box=128, apix=1.6,
                epochs=args.atom_epochs, threads=args.threads, rows=rows,
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))


def vs_cryodrgn_run(args, cloud, sigma, runs):
    """Ours and cryoDRGN train_vae on the same particles at 64, 128, 256 px."""
    import cryodrgn_runner as cr
    ref = os.path.join(WORK, 'ref.npz')
    rows = []
    for box, n in zip((64, 128, 256), args.vs_n):
        apix = 204.8 / box  # same field of view at every box
        star = write_set(os.path.join(WORK, 'vs%d' % box), n, box, apix, cloud, sigma,
                         log=common.say)
        ours = _epoch_summary(train_run('vs_ours_%d' % box, star, ref, runs, args.vs_epochs,
                                        threads=args.threads))
        cd = os.path.join(runs, 'vs_cryodrgn_%d' % box)
        shutil.rmtree(cd, ignore_errors=True)
        prep = cr.prepare(star, os.path.join(cd, 'prep'), threads=args.threads)
        c = cr.train(star, prep, os.path.join(cd, 'train'), 4, epochs=args.vs_cryodrgn_epochs,
                     threads=args.threads, **cr.CPU_NETS)
        rows.append(dict(box=box, apix=apix, n=n, ours=ours, cryodrgn=c,
                         ratio_images_per_s=ours['images_per_s'] / c['images_per_s'],
                         ratio_images_per_cpu_s=(ours['images_per_cpu_s']
                                                 / c['images_per_cpu_s']
                                                 if c.get('images_per_cpu_s') else None),
                         ratio_peak_rss=ours['peak_rss_mb'] / c['peak_rss_mb']))
        common.say('vs cryoDRGN %d px: ours %.1f img/s, cryoDRGN %.1f img/s (x%.1f)'
                   % (box, ours['images_per_s'], c['images_per_s'],
                      rows[-1]['ratio_images_per_s']))
    return dict(kind='vs_cryodrgn', threads=args.threads, rows=rows,
                ours_epochs=args.vs_epochs, cryodrgn_epochs=args.vs_cryodrgn_epochs,
                cryodrgn_nets=cr.CPU_NETS,
                date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))


def _plot_atoms(res):
    rows = [r for r in res['rows'] if 'error' not in r]
    if len(rows) < 2:
        return None
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = [r['atoms'] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].loglog(x, [r['images_per_s'] for r in rows], 'o-', label='images/s')
    ax[0].loglog(x, [r['images_per_cpu_s'] for r in rows], 's--', label='images per CPU-s')
    ax[0].set_xlabel('pseudo-atoms')
    ax[0].set_title('training speed, 128 px')
    ax[0].legend()
    ax[1].semilogx(x, [r['peak_anon_mb'] for r in rows], 'o-', label='peak anonymous')
    ax[1].semilogx(x, [r['peak_rss_mb'] for r in rows], 's--', label='peak RSS')
    ax[1].set_xlabel('pseudo-atoms')
    ax[1].set_ylabel('MB')
    ax[1].set_title('memory')
    ax[1].legend()
    fig.tight_layout()
    path = os.path.join(common.REPORT, 'scale_atoms.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.basename(path)


def extra_sections(results):
    """Markdown of the fill, atoms and vs_cryodrgn runs (when present)."""
    out = []
    f = results.get('fill')
    if f:
        c, o = f['current'], f['former']
        out += ['## Encoder-input cache fill: current and former implementation', '',
                'Run `fill` (%s): the encoder inputs of the %d particles of the 10^4 set '
                '(128 px, %d pseudo-atoms, encoder grid %d px, %d modes), computed in this '
                'process with %d threads in chunks of %d, each chunk by both implementations '
                'one after the other (alternating which goes first), so that both see the same '
                'machine state. Reading and FFT of the images (%.1f s) excluded.'
                % (f['date'], f['n'], f['atoms'], f['enc_box'], f['modes'], f['threads'],
                   f['chunk'], f['read_fft_s']), '',
                '| implementation | wall s | ms per particle | CPU s | CPU ms per particle '
                '| load |', '|---|---|---|---|---|---|',
                '| former (`mode_jacobian_spectra` + complex einsums, sub-batches of 2^24) '
                '| %.1f | %.2f | %.1f | %.2f | %.1f |' % (o['wall_s'], o['ms_per_particle'],
                                                          o['cpu_s'], o['cpu_ms_per_particle'],
                                                          o['load']),
                '| current (`mode_jacobian_images` by groups of atoms sorted by height + '
                '`mode_normal_equations`, sub-batches of 2^23) | %.1f | %.2f | %.1f | %.2f '
                '| %.1f |'
                % (c['wall_s'], c['ms_per_particle'], c['cpu_s'], c['cpu_ms_per_particle'],
                   c['load']), '',
                'Speed-up %.1fx in wall time, %.1fx in CPU time. Largest difference between '
                'the two, relative to the largest value: %.1e for the mode features, %.1e for '
                'the images (float32 round-off; `tests/core/test_mode_features.py` checks the '
                'same equality, and exactness in float64).'
                % (f['speedup_wall'], f['speedup_cpu'], f['max_rel_err_features'],
                   f['max_rel_err_images']), '']
        fills = ['`%s` %.1f s, %.2f of its first epoch (%.1f s; load %s)'
                 % (k, r['cache_fill_s'], r['cache_fill_s'] / r['epochs'][0]['seconds'],
                    r['epochs'][0]['seconds'], fmt(r['cache_load']))
                 for k, r in sorted(results.items())
                 if k.startswith('n1e4') and r.get('cache_fill_s') and r.get('epochs')]
        if fills:
            out += ['Cache fill in the training runs of 10^4 particles (table above; runs '
                    'made before 2026-12-03 15:00 UTC used the former implementation, the one '
                    'of 2026-12-03 15:30 an intermediate one, in bands of rows): '
                    + '; '.join(fills) + '.', '']
    a = results.get('atoms')
    if a:
        out += ['## Pseudo-atom scaling (128 px)', '',
                'Run `atoms` (%s): %d particles at 128 px (1.6 A/px), %d epochs, batch 32, %d '
                'threads; synthetic clouds of the given size in the same ellipsoid. Speed of the '
                'last epoch.' % (a['date'], a['n'], a['epochs'], a['threads']), '',
                '| pseudo-atoms | images/s (load) | images per CPU-s | cache fill s | '
                'peak RSS MB | peak anonymous MB | wall s |', '|---|---|---|---|---|---|---|']
        for r in a['rows']:
            if 'error' in r:
                out.append('| %d | failed: %s | | | | | |'
                           % (r['atoms'], r['error'].strip().splitlines()[-1][:120]))
                continue
            out.append('| %d | %.1f (%s) | %s | %s | %.0f | %.0f | %.0f |' % (
                r['atoms'], r['images_per_s'], fmt(r['load']), fmt(r['images_per_cpu_s']),
                fmt(r['cache_fill_s']), r['peak_rss_mb'], r['peak_anon_mb'], r['wall_s']))
        png = _plot_atoms(a)
        out += ([''] + (['![pseudo-atom scaling](%s)' % png] if png else [])) + ['']
    v = results.get('vs_cryodrgn')
    if v:
        out += ['## Training side by side with cryoDRGN (CPU)', '',
                'Run `vs_cryodrgn` (%s): the same particles (field of view 204.8 A) for both, '
                '%d threads each, one after the other. Ours: `train`, %d epochs, batch 32, '
                'speed of the last epoch. cryoDRGN 4.3.1 `train_vae` with known poses, %d '
                'epoch(s), batch 16, encoder and decoder 3x256 (`cryodrgn_runner.CPU_NETS`), '
                'zdim 4; its images/s over its own epoch times. Load: 1-minute load average '
                '(ours: mean over the epoch; cryoDRGN: start / end of its run).'
                % (v['date'], v['threads'], v['ours_epochs'], v['cryodrgn_epochs']), '',
                '| box | N | ours images/s (load) | cryoDRGN images/s (load) | ratio | ours '
                'images per CPU-s | cryoDRGN images per CPU-s | ratio | peak RSS MB ours / '
                'cryoDRGN |', '|---|---|---|---|---|---|---|---|---|']
        for r in v['rows']:
            o, c = r['ours'], r['cryodrgn']
            out.append('| %d | %d | %.1f (%s) | %.2f (%s) | %.1fx | %s | %s | %s | %.0f / %.0f |'
                       % (r['box'], r['n'], o['images_per_s'], fmt(o['load']),
                          c['images_per_s'], '/'.join('%.1f' % x for x in c['load_avg']),
                          r['ratio_images_per_s'], fmt(o['images_per_cpu_s']),
                          fmt(c.get('images_per_cpu_s'), '%.2f'),
                          fmt(r['ratio_images_per_cpu_s'], '%.1fx'), o['peak_rss_mb'],
                          c['peak_rss_mb']))
        out += ['', 'cryoDRGN images per CPU-s counts its whole process (start-up, data '
                'loading, final latent evaluation), so that ratio favours ours. The ratio grows '
                'with the box because the two models do not work at the same resolution: '
                'cryoDRGN decodes every pixel of the box (D^2 decoder evaluations per image), '
                'while ours compares images on a Fourier grid cropped to the resolution its '
                'pseudo-atoms carry (sigma 3 A here: a 60-px loss grid and a 52-px encoder '
                'grid at every box, as in the 256-px rows above), so that only reading and the '
                'FFT of the particles grow with the box.', '']
    return out


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
        if r.get('kind'):  # fill / atoms / vs_cryodrgn: own sections
            continue
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
    out += extra_sections(results)
    common.atomic_write_text(os.path.join(common.REPORT, 'scale.md'), '\n'.join(out))
    common.write_json(os.path.join(common.REPORT, 'scale.json'), results)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', nargs='+', default=['n1e4', 'n1e5', 'b256_crop', 'b256_full'],
                   choices=['n1e4', 'n1e5', 'b256_crop', 'b256_full', 'fill', 'atoms',
                            'vs_cryodrgn'],
                   help='fill: encoder-input cache fill of the 10^4 set, current and former '
                   'implementation; atoms: training at each --atom-counts; vs_cryodrgn: ours and '
                   'cryoDRGN train_vae at 64, 128, 256 px (--vs-n particles)')
    p.add_argument('--quick', action='store_true', help='2,000 / 5,000 particles')
    p.add_argument('--epochs-large', type=int, default=2)
    p.add_argument('--n-256', type=int, default=3000)
    p.add_argument('--atoms', type=int, default=800)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--atom-counts', type=int, nargs='+',
                   default=[500, 1000, 2000, 5000, 10000, 20000])
    p.add_argument('--atoms-particles', type=int, default=300)
    p.add_argument('--atom-epochs', type=int, default=2)
    p.add_argument('--vs-n', type=int, nargs=3, default=[1000, 500, 200],
                   help='particles at 64, 128 and 256 px (vs_cryodrgn)')
    p.add_argument('--vs-epochs', type=int, default=2, help='our epochs (vs_cryodrgn)')
    p.add_argument('--vs-cryodrgn-epochs', type=int, default=1)
    p.add_argument('--keep', action='store_true', help='keep the generated particles')
    p.add_argument('--report-only', action='store_true',
                   help='rewrite scale.md from scale.json (and the kept run folders)')
    args = p.parse_args(argv)
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # as the CLI (before torch loads)
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
            if name == 'fill' or (name == 'n1e4' and 'n1e5' not in args.runs):
                # the 10^4 set alone (no 10^5 set to write)
                star = write_set(os.path.join(WORK, 'set128_n%d' % n_small), n_small, 128, 1.6,
                                 cloud, sigma, log=common.say)
            if name == 'fill':
                results[name] = fill_run(star, cloud, sigma, args.threads)
                write_report(results, args)
                continue
            if name == 'atoms':
                results[name] = atoms_run(args, sigma, runs)
                write_report(results, args)
                continue
            if name == 'vs_cryodrgn':
                results[name] = vs_cryodrgn_run(args, cloud, sigma, runs)
                write_report(results, args)
                continue
            key = name
            if name == 'n1e4' and 'n1e5' not in args.runs:
                # a row of its own: the rows of a full run (with 10^5) are kept
                key = 'n1e4_%s' % time.strftime('%Y%m%d_%H%M', time.gmtime())
                ep, extra, label = 3, [], '128 (128)'
            elif name in ('n1e4', 'n1e5'):
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
            results[key] = train_run(key, star, ref, runs, ep, extra, threads=args.threads)
            results[key]['box_label'] = label
            write_report(results, args)
    finally:
        if not args.keep:
            for d in glob.glob(os.path.join(WORK, 'set*')) + glob.glob(
                    os.path.join(WORK, 'vs*')) + [runs]:
                shutil.rmtree(d, ignore_errors=True)
    write_report(results, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
