"""Run cryoDRGN (train_vae with known poses) on a RELION 3.1 particle set, measured.

cryoDRGN lives in its own virtual environment (default
``benchmarks/work/cryodrgn_venv``; ``--install`` creates it with
``pip install torch==2.13.0 cryodrgn``: the CPU torch wheel, not CUDA).

Conventions checked in cryoDRGN 4.3.1's source:

* ``parse_pose_star`` reads rlnAngleRot/Tilt/Psi through
  ``utils.R_from_relion`` and rlnOriginX/YAngst (divided by the pixel size
  and the box: cryoDRGN stores translations as a fraction of the box), so a
  standard RELION 3.1 star needs no conversion on our side.
* ``parse_ctf_star`` reads rlnPhaseShift from the particle table or the
  optics group; when the column is absent the value is NaN and every CTF
  becomes NaN.  We pass ``--ps 0`` when the star has no phase shift column
  and replace any remaining NaN phase shift by 0 in the .pkl.
* cryoDRGN inverts the sign of the images by default (``--uninvert-data``
  turns it off): its forward model makes protein black, and RELION particle
  stacks (and ours) are protein white, so the default is right.
* ``z.pkl`` holds two pickles, z_mu then z_logvar; we convert z_mu to .npy
  with cryoDRGN's own interpreter (its numpy is newer than ours).

Stages (each usable alone): ``prepare`` (poses/CTF .pkl), ``train``
(train_vae, timing per epoch from its log), ``latents`` (z.npy),
``infer`` (eval_images: encoder throughput), ``volumes`` (eval_vol at given
latent points, read back as arrays).  ``run_all`` chains them and writes
``result.json`` in the output folder.
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (WORK, StageUnavailable, run_measured, say, thread_env,  # noqa: E402
                    write_json)

DEFAULT_VENV = os.path.join(WORK, 'cryodrgn_venv')
EXPECTED_VERSION = '4.3.1'

#: network sizes for the CPU (cryoDRGN's defaults are 1024 wide: 3-20 img/s)
CPU_NETS = dict(enc_dim=256, enc_layers=3, dec_dim=256, dec_layers=3)

#: OMP_WAIT_POLICY of every cryoDRGN command (see common.thread_env); the
#: benchmark driver sets it to the policy measured fastest for cryoDRGN
OMP_WAIT_POLICY = 'PASSIVE'


def _env(threads):
    return thread_env(threads, wait_policy=OMP_WAIT_POLICY)


# ----------------------------------------------------------------------------
# The virtual environment
# ----------------------------------------------------------------------------

def venv_paths(venv=None):
    venv = os.path.abspath(venv or os.environ.get('CRYODRGN_VENV') or DEFAULT_VENV)
    return dict(venv=venv, python=os.path.join(venv, 'bin', 'python'),
                cryodrgn=os.path.join(venv, 'bin', 'cryodrgn'))


def install(venv=None, log=None):
    """Create the venv and pip install the CPU torch wheel and cryoDRGN."""
    p = venv_paths(venv)
    log = log or os.path.join(os.path.dirname(p['venv']), 'cryodrgn_install.log')
    if not os.path.exists(p['python']):
        say('creating %s' % p['venv'])
        subprocess.run(['python3', '-m', 'venv', p['venv']], check=True)
    say('pip install torch==2.13.0 cryodrgn into %s (log %s)' % (p['venv'], log))
    with open(log, 'w') as f:
        subprocess.run([p['python'], '-m', 'pip', 'install', 'torch==2.13.0', 'cryodrgn'],
                       stdout=f, stderr=subprocess.STDOUT, check=True)
    return check(venv)


def check(venv=None):
    """Return cryoDRGN's version string; StageUnavailable if it is not installed."""
    p = venv_paths(venv)
    if not os.path.exists(p['cryodrgn']):
        raise StageUnavailable(
            'cryoDRGN is not installed in %s. Create it with: python3 benchmarks/'
            'cryodrgn_runner.py --install (or: python3 -m venv %s && %s/bin/pip install '
            'torch==2.13.0 cryodrgn). Pin torch: unpinned, pip downloads gigabytes of CUDA.'
            % (p['venv'], p['venv'], p['venv']))
    out = subprocess.run([p['python'], '-c', 'import cryodrgn; print(cryodrgn.__version__)'],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise StageUnavailable('cryoDRGN in %s does not import:\n%s' % (p['venv'], out.stderr))
    return out.stdout.strip()


def _py(venv, code, *args):
    """Run a snippet with cryoDRGN's interpreter (its numpy reads its pickles)."""
    p = venv_paths(venv)
    out = subprocess.run([p['python'], '-c', code] + [str(a) for a in args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError('cryoDRGN helper snippet failed:\n%s' % out.stderr[-3000:])
    return out.stdout


# ----------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------

def _star_has_column(star, label):
    with open(star, errors='replace') as f:
        for line in f:
            if line.strip().split()[:1] == [label]:
                return True
    return False


def prepare(star, outdir, venv=None, threads=2):
    """parse_pose_star + parse_ctf_star -> dict(poses=..., ctf=..., timings)."""
    p = venv_paths(venv)
    if not os.path.exists(star):
        raise FileNotFoundError('Particle file not found: %s' % star)
    os.makedirs(outdir, exist_ok=True)
    poses = os.path.join(outdir, 'poses.pkl')
    ctf = os.path.join(outdir, 'ctf.pkl')
    env = _env(threads)
    t1 = run_measured([p['cryodrgn'], 'parse_pose_star', star, '-o', poses],
                      os.path.join(outdir, 'parse_pose_star.log'), env=env)
    cmd = [p['cryodrgn'], 'parse_ctf_star', star, '-o', ctf]
    has_ps = _star_has_column(star, '_rlnPhaseShift')
    if not has_ps:
        cmd += ['--ps', '0']
    t2 = run_measured(cmd, os.path.join(outdir, 'parse_ctf_star.log'), env=env)
    # any NaN phase shift left (e.g. a partially filled column) -> 0
    n_fixed = int(_py(venv, (
        'import pickle, sys, numpy as np\n'
        'c = pickle.load(open(sys.argv[1], "rb"))\n'
        'bad = ~np.isfinite(c[:, 8]); c[bad, 8] = 0\n'
        'assert np.isfinite(c).all(), "non-finite CTF values besides the phase shift"\n'
        'pickle.dump(c, open(sys.argv[1], "wb")); print(int(bad.sum()))'), ctf).strip())
    info = _py(venv, (
        'import pickle, sys\n'
        'c = pickle.load(open(sys.argv[1], "rb")); print(int(c[0, 0]), float(c[0, 1]), len(c))'),
        ctf).split()
    return dict(poses=poses, ctf=ctf, box=int(info[0]), apix=float(info[1]),
                n_particles=int(info[2]), phase_shift_column=has_ps, phase_shift_nan_fixed=n_fixed,
                parse_wall_s=t1['wall_s'] + t2['wall_s'])


_EPOCH_RE = re.compile(r'Epoch: (\d+) Average gen loss = ([-\d.e+]+).*Finished in '
                       r'(?:(\d+) days?, )?(\d+):(\d+):([\d.]+)')


def parse_epochs(log_path):
    """[(epoch, gen_loss, seconds)] from a train_vae log."""
    out = []
    with open(log_path, errors='replace') as f:
        for line in f:
            m = _EPOCH_RE.search(line)
            if m:
                days = int(m.group(3) or 0)
                sec = (days * 86400 + int(m.group(4)) * 3600 + int(m.group(5)) * 60
                       + float(m.group(6)))
                out.append((int(m.group(1)), float(m.group(2)), sec))
    return out


def train(star, prep, outdir, zdim, epochs=20, batch_size=16, threads=2, seed=0,
          enc_dim=256, enc_layers=3, dec_dim=256, dec_layers=3, venv=None, extra=None,
          timeout=None):
    """cryodrgn train_vae with known poses; measured.  Returns a dict of figures.

    ``images_per_s`` counts training images over the time of the training
    epochs only (cryoDRGN's per-epoch "Finished in"), excluding start-up, data
    loading and the final latent evaluation, which ``wall_s`` includes.
    """
    p = venv_paths(venv)
    os.makedirs(outdir, exist_ok=True)
    cmd = [p['cryodrgn'], 'train_vae', star, '-o', outdir, '--zdim', zdim,
           '--poses', prep['poses'], '--ctf', prep['ctf'], '-n', epochs, '-b', batch_size,
           '--enc-dim', enc_dim, '--enc-layers', enc_layers, '--dec-dim', dec_dim,
           '--dec-layers', dec_layers, '--seed', seed, '--shuffle-seed', seed,
           '--checkpoint', 0, '--no-analysis', '--max-threads', threads,
           '--datadir', os.path.dirname(os.path.abspath(star))]
    cmd += list(extra or [])
    log = os.path.join(outdir, 'train_vae.log')
    say('cryoDRGN train_vae: %d epochs, zdim %d, %dx%d / %dx%d nets, %d threads'
        % (epochs, zdim, enc_layers, enc_dim, dec_layers, dec_dim, threads))
    m = run_measured(cmd, log, env=_env(threads), timeout=timeout)
    ep = parse_epochs(log)
    if not ep:
        raise RuntimeError('No epoch line found in %s; did train_vae change its log format?' % log)
    n = prep['n_particles']
    train_s = sum(e[2] for e in ep)
    return dict(tool='cryodrgn', wall_s=m['wall_s'], peak_rss_mb=m['peak_rss_mb'],
                peak_anon_mb=m.get('peak_anon_mb'), epochs=len(ep), n_particles=n, train_s=train_s,
                images_per_s=n * len(ep) / train_s, epoch_s=[e[2] for e in ep],
                gen_loss=[e[1] for e in ep], zdim=zdim, batch_size=batch_size,
                threads=threads, nets=dict(enc_dim=enc_dim, enc_layers=enc_layers,
                                           dec_dim=dec_dim, dec_layers=dec_layers),
                outdir=outdir, log=log, cpu_s=m['cpu_s'], omp_wait_policy=OMP_WAIT_POLICY,
                images_per_cpu_s=n * len(ep) / m['cpu_s'] if m['cpu_s'] > 0 else None,
                load_avg=[m['load_avg_start'], m['load_avg_end']])


def latents(outdir, venv=None, z_pkl=None):
    """z_mu of the final model as (N, zdim) float32, also saved as z.npy."""
    z_pkl = z_pkl or os.path.join(outdir, 'z.pkl')
    if not os.path.exists(z_pkl):
        raise FileNotFoundError('No cryoDRGN latents at %s (did train_vae finish?).' % z_pkl)
    out = os.path.join(os.path.dirname(z_pkl), os.path.basename(z_pkl)[:-4] + '.npy')
    _py(venv, ('import pickle, sys, numpy as np\n'
               'f = open(sys.argv[1], "rb"); z = pickle.load(f)\n'
               'np.save(sys.argv[2], np.asarray(z, dtype=np.float32))'), z_pkl, out)
    return np.load(out)


def infer(star, prep, outdir, threads=2, batch_size=64, venv=None):
    """cryodrgn eval_images (encoder over every particle); measured."""
    p = venv_paths(venv)
    out = os.path.join(outdir, 'eval_images')
    os.makedirs(out, exist_ok=True)
    cmd = [p['cryodrgn'], 'eval_images', star, os.path.join(outdir, 'weights.pkl'),
           '-c', os.path.join(outdir, 'config.yaml'), '-o', os.path.join(out, 'losses.pkl'),
           '--out-z', os.path.join(out, 'z.pkl'), '--poses', prep['poses'], '--ctf',
           prep['ctf'], '-b', batch_size, '--max-threads', threads,
           '--datadir', os.path.dirname(os.path.abspath(star))]
    m = run_measured(cmd, os.path.join(out, 'eval_images.log'), env=_env(threads))
    n = prep['n_particles']
    return dict(wall_s=m['wall_s'], peak_rss_mb=m['peak_rss_mb'],
                peak_anon_mb=m.get('peak_anon_mb'), n_particles=n,
                images_per_s=n / m['wall_s'], z_path=os.path.join(out, 'z.pkl'),
                cpu_s=m['cpu_s'], load_avg=[m['load_avg_start'], m['load_avg_end']])


def volumes(outdir, z_points, apix, out=None, threads=2, venv=None):
    """cryodrgn eval_vol at ``z_points`` (M, zdim) -> ((M, D, D, D) array, timing)."""
    import mrcfile
    p = venv_paths(venv)
    out = out or os.path.join(outdir, 'eval_vol')
    os.makedirs(out, exist_ok=True)
    z_points = np.atleast_2d(np.asarray(z_points, dtype=np.float64))
    zfile = os.path.join(out, 'z_points.txt')
    np.savetxt(zfile, z_points)
    cmd = [p['cryodrgn'], 'eval_vol', os.path.join(outdir, 'weights.pkl'), '-c',
           os.path.join(outdir, 'config.yaml'), '-o', out, '--zfile', zfile, '--Apix', apix,
           '--vol-start-index', 0]
    m = run_measured(cmd, os.path.join(out, 'eval_vol.log'), env=_env(threads))
    vols = []
    for i in range(len(z_points)):
        path = os.path.join(out, 'vol_%03d.mrc' % i)
        if not os.path.exists(path):
            raise FileNotFoundError('eval_vol did not write %s; see %s' % (
                path, os.path.join(out, 'eval_vol.log')))
        with mrcfile.open(path, permissive=True) as f:
            vols.append(np.array(f.data, dtype=np.float32))
    return np.stack(vols), dict(wall_s=m['wall_s'], peak_rss_mb=m['peak_rss_mb'],
                                n_volumes=len(z_points),
                                s_per_volume=m['wall_s'] / len(z_points))


def backproject(star, prep, out, threads=2, venv=None):
    """cryodrgn backproject_voxel (homogeneous reconstruction) -> volume array.

    Used to check that cryoDRGN reads our poses, shifts and CTF the way we
    write them (its volume must match our ground truth without any flip).
    """
    import mrcfile
    p = venv_paths(venv)
    os.makedirs(out, exist_ok=True)
    # cryoDRGN 4.x treats -o as a folder (backproject.mrc, half maps, FSC inside)
    cmd = [p['cryodrgn'], 'backproject_voxel', star, '--poses', prep['poses'], '--ctf',
           prep['ctf'], '-o', out, '--datadir', os.path.dirname(os.path.abspath(star))]
    m = run_measured(cmd, os.path.join(out, 'backproject.log'), env=_env(threads))
    mrc = os.path.join(out, 'backproject.mrc')
    if not os.path.isfile(mrc):
        raise FileNotFoundError('backproject_voxel wrote no %s; see %s'
                                % (mrc, os.path.join(out, 'backproject.log')))
    with mrcfile.open(mrc, permissive=True) as f:
        vol = np.array(f.data, dtype=np.float32)
    return vol, m


def run_all(star, outdir, zdim, epochs=20, batch_size=16, threads=2, seed=0, nets=None,
            venv=None, infer_too=True, timeout=None):
    """prepare + train + latents (+ eval_images); writes outdir/result.json."""
    version = check(venv)
    if version != EXPECTED_VERSION:
        say('note: cryoDRGN %s (the benchmark was written against %s)'
            % (version, EXPECTED_VERSION))
    prep = prepare(star, os.path.join(outdir, 'prep'), venv, threads)
    res = train(star, prep, os.path.join(outdir, 'train'), zdim, epochs, batch_size, threads,
                seed, venv=venv, timeout=timeout, **(nets or CPU_NETS))
    res['version'] = version
    res['prepare'] = prep
    z = latents(res['outdir'], venv)
    res['z_path'] = os.path.join(res['outdir'], 'z.npy')
    res['z_shape'] = list(z.shape)
    if infer_too:
        res['infer'] = infer(star, prep, res['outdir'], threads, venv=venv)
    write_json(os.path.join(outdir, 'result.json'), res)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('star', nargs='?', help='particles.star (RELION 3.1) with poses and CTF')
    ap.add_argument('--out', help='output folder (default benchmarks/work/cryodrgn/<name>)')
    ap.add_argument('--zdim', type=int, default=4)
    ap.add_argument('--epochs', type=int, default=20)
    ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--venv', default=None, help='cryoDRGN virtualenv (default %s)' % DEFAULT_VENV)
    ap.add_argument('--install', action='store_true', help='create the virtualenv first')
    ap.add_argument('--no-infer', action='store_true', help='skip eval_images')
    args = ap.parse_args(argv)
    if args.install:
        print('cryoDRGN', install(args.venv))
    if not args.star:
        if not args.install:
            print('cryoDRGN', check(args.venv))
        return 0
    out = args.out or os.path.join(WORK, 'cryodrgn', os.path.basename(
        os.path.dirname(os.path.abspath(args.star))))
    res = run_all(args.star, out, args.zdim, args.epochs, args.batch_size, args.threads,
                  args.seed, venv=args.venv, infer_too=not args.no_infer)
    print('cryoDRGN %s: %.1f training images/s, wall %.1f s, peak RSS %.0f MB -> %s'
          % (res['version'], res['images_per_s'], res['wall_s'], res['peak_rss_mb'], out))
    return 0


if __name__ == '__main__':
    sys.exit(main())

__all__ = ['install', 'check', 'prepare', 'train', 'latents', 'infer', 'volumes',
           'backproject', 'run_all', 'parse_epochs', 'CPU_NETS']
