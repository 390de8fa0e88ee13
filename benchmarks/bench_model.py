"""The model's bar: motion recovered from 2,000 simulated particles on 2 CPU cores.

Measures, on the project's simulator (64 px, 2 A/px, SNR 0.1, hinge motion
with an end-to-end RMSD of 6 and 10 A by default -- one data set each --,
three-mode population, known poses):

* wall time of ``continuousflex-geodl train`` with 2 threads (a child process,
  imports, reference, calibration and every epoch included) and images/s;
* |Spearman| between the first principal axis of the inferred latents and
  the true coordinate, for the encoder alone and for the default inference
  (encoder + per-particle latent refinement);
* RMSD (A, pseudo-atoms vs ground truth, same atom order, no superposition)
  of the structure decoded at the mean latent of the particles of each
  population mode against the true structure at that mode's centre (the two
  end states are modes 1 and 3), and the median per-particle RMSD of the
  structure decoded at each particle's latent against its own true one;
* an information bound for context: the same Spearman for the maximum-
  likelihood coordinate and the posterior mean (true population law) of an
  oracle that knows the true motion, poses, CTF, scale and noise.

Why several amplitudes: the oracle shows how much the data can tell at all.
At SNR 0.1 a 6 A motion bounds |Spearman| near 0.93 (no method can rank the
particles better); the 0.95 bar needs a motion of about 10 A.

Writes ``<report-dir>/model_bar_rmsd<A>.json`` / ``.md`` per amplitude and the
summary ``model_bar.md``.  Usage::

    python benchmarks/bench_model.py                 # the bar, 6 and 10 A (about 12 min)
    python benchmarks/bench_model.py --end-rmsd 6 8 10 12
    python benchmarks/bench_model.py --quick         # 600 particles, fewer epochs
    python benchmarks/bench_model.py --epochs 40 --seed 1 --skip-oracle
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

import common  # benchmarks/common.py (this script's folder is on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _cli(args, threads, log):
    return common.run_cli(args, log, threads=threads, cwd=REPO)


def simulate(sim_dir, n, seed, threads, end_rmsd=6.0):
    from continuousflex_geodl.core import runtime
    from continuousflex_geodl.core.simulate import simulate_dataset
    if os.path.exists(os.path.join(sim_dir, 'summary.json')):
        return
    runtime.setup(threads)
    simulate_dataset(sim_dir, n_particles=n, box=64, apix=2.0, snr=0.1, motion='hinge',
                     population='three_mode', seed=seed, end_rmsd=end_rmsd, log=print)


def oracle(sim_dir, threads, n_grid=41):
    """Spearman of the true-model ML / posterior-mean coordinate (information bound)."""
    import torch
    from scipy.stats import spearmanr
    from continuousflex_geodl.core import runtime
    from continuousflex_geodl.core.particles import load_particles
    from continuousflex_geodl.core.simulate import (Population, load_ground_truth,
                                                    motion_from_ground_truth, render_images)
    runtime.setup(threads)
    gt = load_ground_truth(sim_dir)
    mot = motion_from_ground_truth(gt)
    pset = load_particles(os.path.join(sim_dir, 'particles.star'))
    u_true = np.asarray(gt['coords_unit'])[:, 0]
    grid = np.linspace(0, 1, n_grid)
    structs = mot.conformation(mot.unit_to_coords(grid[:, None])[:, 0])
    n = len(pset)
    nll = np.zeros((n, n_grid))
    box, apix = int(gt['box']), float(gt['apix'])
    for s in range(0, n, 100):
        idx = np.arange(s, min(n, s + 100))
        imgs = np.asarray(pset.images[idx], dtype=np.float64)
        for g in range(n_grid):
            clean = render_images(structs[g], gt['amplitudes'], mot.sigma, gt['euler'][idx],
                                  gt['shifts'][idx], gt['ctf'][idx], box, apix)
            nll[idx, g] = 0.5 * ((imgs - clean) ** 2).sum((1, 2))
    ml = grid[np.argmin(nll, 1)]
    pop = Population('three_mode')
    from scipy.stats import norm
    prior = sum(w * norm.pdf(grid, c[0], pop.sd) for w, c in zip(pop.weights, pop.centres))
    logp = -nll + np.log(prior + 1e-300)[None]
    w = np.exp(logp - logp.max(1, keepdims=True))
    post = (w * grid).sum(1) / w.sum(1)
    return dict(spearman_ml=float(abs(spearmanr(ml, u_true).correlation)),
                spearman_posterior_mean=float(abs(spearmanr(post, u_true).correlation)),
                grid_points=n_grid)


def evaluate(sim_dir, model_dir, z_path):
    from scipy.stats import spearmanr
    from continuousflex_geodl.core.inference import decode_positions, load_model
    from continuousflex_geodl.core.simulate import ground_truth_positions, load_ground_truth
    gt = load_ground_truth(sim_dir)
    z = np.load(z_path)
    u = np.asarray(gt['coords_unit'])[:, 0]
    labels = np.asarray(gt['states'])
    zc = z - z.mean(0)
    _, sv, vt = np.linalg.svd(zc, full_matrices=False)
    pc1 = zc @ vt[0]
    rho = spearmanr(pc1, u).correlation
    model = load_model(model_dir)
    states = []
    for k, centre in enumerate(np.asarray(gt['state_coords_unit'])[:, 0]):
        sel = np.nonzero(labels == k)[0]
        zm = z[sel].mean(0)
        dec = decode_positions(model, zm[None])[0]
        true = np.asarray(gt['state_positions'])[k]
        rmsd = float(np.sqrt(((dec - true) ** 2).sum(1).mean()))
        ref_rmsd = float(np.sqrt(((np.asarray(gt['reference_positions']) - true) ** 2)
                                 .sum(1).mean()))
        sub = sel[:300]
        per = decode_positions(model, z[sub])
        tru = ground_truth_positions(gt, indices=sub)
        per_rmsd = np.sqrt(((per - tru) ** 2).sum(-1).mean(-1))
        states.append(dict(state=k + 1, centre=float(centre), n_particles=int(len(sel)),
                           rmsd_mean_latent=rmsd, rmsd_reference=ref_rmsd,
                           rmsd_per_particle_median=float(np.median(per_rmsd)),
                           mean_latent=zm.tolist()))
    return dict(spearman_pc1=float(abs(rho)), singular_values=(sv / sv[0]).tolist(),
                states=states, n_atoms=int(model.ref_pos.shape[0]))


def markdown(rep):
    r = rep['result']
    lines = ['# Model bar (bench_model.py)', '',
             'Data: %s' % rep['data'], '',
             '| figure | value | bar |', '|---|---|---|',
             '| train wall time (2 threads) | %.1f s (%.1f min) | <= 15 min |'
             % (rep['train_wall_s'], rep['train_wall_s'] / 60),
             '| training images/s (mean over epochs) | %.1f | |' % rep['train_images_per_s'],
             '| epochs | %d | |' % rep['epochs_done'],
             '| inference wall time, encoder only | %.1f s (%.0f images/s incl. start-up) | |'
             % (rep['infer_encoder_wall_s'], rep['n_particles'] / rep['infer_encoder_wall_s']),
             '| inference wall time, encoder + latent refinement (default) | %.1f s | |'
             % rep['infer_wall_s'],
             '| abs Spearman(PC1, true coordinate), encoder only | %.4f | |'
             % r['spearman_pc1_encoder_only'],
             '| abs Spearman(PC1, true coordinate), default inference | %.4f | >= 0.95 |'
             % r['spearman_pc1']]
    for s in r['states']:
        end = s['state'] in (1, len(r['states']))
        lines.append('| RMSD state %d (u = %.1f) at mean latent | %.2f A (reference %.2f A; '
                     'median per particle %.2f A) | %s |'
                     % (s['state'], s['centre'], s['rmsd_mean_latent'], s['rmsd_reference'],
                        s['rmsd_per_particle_median'], '<= 1.5 A' if end else ''))
    if rep.get('oracle'):
        o = rep['oracle']
        lines += ['', 'Information bound (oracle with the true motion, poses, CTF, noise): '
                  '|Spearman| of the ML coordinate %.4f, of the posterior mean under the true '
                  'population %.4f.' % (o['spearman_ml'], o['spearman_posterior_mean'])]
    lines += ['', 'Passed: **%s**' % ('yes' if rep['passed'] else 'no'), '',
              'Commands:', '', '```'] + rep['commands'] + ['```', '']
    return '\n'.join(lines)


def run_one(a, end_rmsd):
    """Simulate, train, infer, decode and score at one motion amplitude."""
    work = os.path.join(a.work, 'rmsd%g' % end_rmsd)
    sim = os.path.join(work, 'sim_n%d_s%d' % (a.n_particles, a.seed))
    model_dir = os.path.join(work, 'model')
    z_path = os.path.join(work, 'z.npy')
    os.makedirs(work, exist_ok=True)
    simulate(sim, a.n_particles, a.seed, a.threads, end_rmsd)
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    ref = os.path.join(sim, 'reference.' + a.reference)
    args = ['train', '--particles', os.path.join(sim, 'particles.star'), '--reference', ref,
            '--out', model_dir, '--threads', a.threads, '--seed', a.train_seed,
            '--time-limit', 14.5]
    if a.reference == 'pdb':
        args += ['--n-atoms', 'all']
    if a.epochs:
        args += ['--epochs', a.epochs]
    args += a.extra.split()
    train_wall, train_cmd = _cli(args, a.threads, os.path.join(work, 'train.log'))
    z_enc = os.path.join(work, 'z_encoder.npy')
    enc_wall, enc_cmd = _cli(['infer', '--model', model_dir, '--particles',
                              os.path.join(sim, 'particles.star'), '--out', z_enc,
                              '--threads', a.threads, '--refine-steps', 0], a.threads,
                             os.path.join(work, 'infer_encoder.log'))
    infer_wall, infer_cmd = _cli(['infer', '--model', model_dir, '--particles',
                                  os.path.join(sim, 'particles.star'), '--out', z_path,
                                  '--threads', a.threads], a.threads,
                                 os.path.join(work, 'infer.log'))
    res = evaluate(sim, model_dir, z_path)
    res['spearman_pc1_encoder_only'] = evaluate(sim, model_dir, z_enc)['spearman_pc1']
    # decode the three mode latents with the CLI (PDB + MRC volumes)
    zs = os.path.join(work, 'state_latents.npy')
    np.save(zs, np.array([s['mean_latent'] for s in res['states']], dtype=np.float32))
    dec_wall, dec_cmd = _cli(['decode', '--model', model_dir, '--latents', zs, '--out',
                              os.path.join(work, 'decoded')], a.threads,
                             os.path.join(work, 'decode.log'))
    from continuousflex_geodl.core.artifacts import ModelDir
    hist = ModelDir(model_dir).read_history()
    ips = float(np.mean([h['images_per_s'] for h in hist]))
    with open(os.path.join(sim, 'summary.json')) as f:
        summ = json.load(f)
    rep = dict(n_particles=a.n_particles, train_wall_s=train_wall, train_images_per_s=ips,
               epochs_done=len(hist), infer_wall_s=infer_wall, decode_wall_s=dec_wall,
               infer_encoder_wall_s=enc_wall,
               result=res, commands=[train_cmd, enc_cmd, infer_cmd, dec_cmd],
               data='%d particles, %d px, %.1f A/px, SNR %.3g (measured %.3g), motion %s '
                    '(end-to-end RMSD %.2f A, %d atoms), population %s'
                    % (summ['n_particles'], summ['box'], summ['apix'], summ['snr_target'],
                       summ['snr_measured'], summ['motion']['kind'],
                       summ['motion']['end_to_end_rmsd'], summ['motion']['n_atoms'],
                       summ['population']['kind']))
    if not a.skip_oracle:
        rep['oracle'] = oracle(sim, a.threads)
    ends = [res['states'][0], res['states'][-1]]
    rep['end_rmsd'] = end_rmsd
    rep['passed'] = bool(train_wall + infer_wall <= 900 and res['spearman_pc1'] >= 0.95 and
                         all(s['rmsd_mean_latent'] <= 1.5 for s in ends))
    os.makedirs(a.report_dir, exist_ok=True)
    name = ('model_bar_quick_rmsd%g' if a.quick else 'model_bar_rmsd%g') % end_rmsd
    common.atomic_write_text(os.path.join(a.report_dir, name + '.json'), json.dumps(rep, indent=2))
    common.atomic_write_text(os.path.join(a.report_dir, name + '.md'), markdown(rep))
    print(markdown(rep))
    return rep


def summary(reps):
    """Markdown table over motion amplitudes."""
    lines = ['# Model bar over motion amplitudes (bench_model.py)', '',
             'Each row: its own simulated set (2,000 particles unless stated, 64 px, SNR 0.1, '
             'hinge, three-mode population), a model trained with the default settings, '
             'latents from `infer` (encoder, and encoder + latent refinement = default). '
             'The oracle knows the true motion, poses, CTF, scale and noise: its |Spearman| '
             'is the information bound of the data.', '',
             '| end-to-end RMSD (A) | oracle bound (posterior mean) | ours, encoder only | '
             'ours, default | RMSD end states (A) | train + infer (s) | bar |',
             '|---|---|---|---|---|---|---|']
    for r in reps:
        res = r['result']
        o = r.get('oracle', {}).get('spearman_posterior_mean')
        lines.append('| %g | %s | %.4f | %.4f | %.2f / %.2f | %.0f + %.0f | %s |' % (
            r['end_rmsd'], '%.4f' % o if o is not None else 'n/a',
            res['spearman_pc1_encoder_only'], res['spearman_pc1'],
            res['states'][0]['rmsd_mean_latent'], res['states'][-1]['rmsd_mean_latent'],
            r['train_wall_s'], r['infer_wall_s'], 'pass' if r['passed'] else 'fail'))
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--work', default=os.path.join(HERE, 'work', 'model_bar'))
    p.add_argument('--report-dir', default=os.path.join(HERE, 'report'))
    p.add_argument('--n-particles', type=int, default=2000)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--epochs', type=int, default=None, help='default: the train default')
    p.add_argument('--seed', type=int, default=0, help='simulation seed')
    p.add_argument('--end-rmsd', type=float, nargs='+', default=[6.0, 10.0],
                   help='end-to-end RMSD(s) (A) of the simulated hinge motion; one run '
                        'per value and a summary table (default 6 10)')
    p.add_argument('--train-seed', type=int, default=0)
    p.add_argument('--reference', default='npz', choices=['npz', 'pdb', 'mrc'],
                   help="simulator's reference file given to train (default npz)")
    p.add_argument('--extra', default='', help='extra train arguments, quoted')
    p.add_argument('--quick', action='store_true', help='600 particles, 15 epochs')
    p.add_argument('--skip-oracle', action='store_true')
    a = p.parse_args(argv)
    if a.quick:
        a.n_particles = min(a.n_particles, 600)
        a.epochs = a.epochs or 15
        a.work = a.work + '_quick'
    reps = []
    for amp in a.end_rmsd:
        reps.append(run_one(a, float(amp)))
    if len(reps) > 1 and not a.quick:
        common.atomic_write_text(os.path.join(a.report_dir, 'model_bar.md'), summary(reps))
        print(summary(reps))
    return 0


if __name__ == '__main__':
    sys.exit(main())
