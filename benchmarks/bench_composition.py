"""Compositional heterogeneity benchmark (issue 15, point 3): a domain of AdK
absent from a fraction of the particles, (a) alone and (b) together with the
closed -> open motion, imaged by the independent simulator of the realistic
benchmark (``benchmarks/realistic/simulator.py``: all-atom Peng scattering
factors, its own CTF, projection and star writer; no code of the package).

For each case the same particles are used by two runs of ours, both with the
defaults otherwise (``train``, ``infer``, ``landscape analyze``):

* ``--learn-amplitudes``: per-pseudo-atom amplitudes in [0, 1] that depend
  on the latent;
* without it (the default model), for comparison.

Measured, against the ground truth of each particle (domain present or not):

* present/absent accuracy of a 2-component Gaussian mixture fitted to the
  latents (labels matched to the truth the better way round);
* the same for the states of ``landscape analyze`` (defaults: free-energy
  basins), each state given the majority class of its particles;
* with learned amplitudes: accuracy of thresholding at 0.5 the mean decoded
  amplitude of the domain's pseudo-atoms (pseudo-atoms whose nearest heavy
  atom of the reference belongs to the domain), and the mean decoded
  amplitude of the domain and of the rest for present / absent particles;
* case (b): |Spearman| of latent PC1 against the true path coordinate
  (as ``realistic/score_latents.py``), over all particles and within the
  present and the absent ones;
* ``decode`` at the mean latents of the present and of the absent particles:
  the learned amplitudes read back from the PDB's occupancy column and the
  domain's share of the decoded volumes' mass.

Writes ``benchmarks/report/composition.md`` (+ ``.json`` and
``composition_amplitudes.png``).  Usage::

    python benchmarks/bench_composition.py                 # make, runs, report
    python benchmarks/bench_composition.py --stages report
    python benchmarks/bench_composition.py --quick         # smoke test (few epochs)

Costs (64 px, 1,500 particles, 2 shared CPU cores): making both sets ~2 min;
each run (train 30 epochs + infer + landscape) ~10-20 min at 1 thread.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, 'realistic'))
sys.path.insert(0, HERE)

import common  # noqa: E402
import datasets as D  # noqa: E402
import simulator as S  # noqa: E402

WORK = os.path.join(HERE, 'work', 'composition')
REPORT = os.path.join(HERE, 'report')
#: removable domains of AdK (residue ranges, inclusive)
DOMAINS = {'lid': (122, 159), 'nmp': (30, 59)}
CASES = {'a': 'domain absent, no motion (all particles in the closed state)',
         'b': 'domain absent + closed -> open motion (path coordinate uniform)'}
MODES = {'amp': ['--learn-amplitudes'], 'default': []}
ACC_BAR = 0.95


# ----------------------------------------------------------------------------
# Particle sets (simulator only)
# ----------------------------------------------------------------------------

def domain_mask(adk, domain):
    lo, hi = DOMAINS[domain]
    rid = np.asarray(adk['res_ids'])
    return (rid >= lo) & (rid <= hi)


def make_set(a, case):
    """Write the set of ``case`` under ``a.work/case``; returns its folder."""
    d = os.path.join(a.work, 'set_' + case)
    if os.path.exists(os.path.join(d, 'set.json')) and not a.force:
        return d
    os.makedirs(os.path.join(d, 'Stacks'), exist_ok=True)
    t0 = time.time()
    adk = S.load_adk()
    pc = adk['path_coord']
    mask = domain_mask(adk, a.domain)
    nh = np.asarray(adk['n_hydrogens'])
    terms = {True: S.AtomTerms(adk['elements'], nh, D.BFACTOR),
             False: S.AtomTerms(np.asarray(adk['elements'])[~mask], nh[~mask], D.BFACTOR)}
    base = D.make_base(a.n, a.box, a.apix, a.seed, pc)
    rng = np.random.default_rng([a.seed, 15])
    present = rng.random(a.n) >= a.absent
    frames = base['frames']['uniform'] if case == 'b' else np.zeros(a.n, int)
    clean = np.empty((a.n, a.box, a.box))
    for s in range(0, a.n, 100):
        idx = np.arange(s, min(a.n, s + 100))
        for flag in (True, False):
            sel = idx[present[idx] == flag]
            if not len(sel):
                continue
            pos = adk['coords'][frames[sel]]
            if not flag:
                pos = pos[:, ~mask]
            clean[sel] = S.clean_images(pos, terms[flag], S.euler_matrix(*base['euler'][sel].T),
                                        base['shifts'][sel], D._ctf_slice(base['ctf'], sel),
                                        a.box, a.apix, pad=D.PAD)
    sig_var = float(clean.var(axis=(1, 2)).mean())
    sigma = np.sqrt(sig_var / a.snr)
    imgs = np.empty((a.n, a.box, a.box), np.float32)
    for s in range(0, a.n, 500):
        e = min(a.n, s + 500)
        imgs[s:e] = clean[s:e] + sigma * D.noise_images(base['noise_seed'], s, e, a.box)
    S.write_mrc(os.path.join(d, 'Stacks', 'particles.mrcs'), imgs, a.apix)
    S.write_star(os.path.join(d, 'particles.star'), 'Stacks/particles.mrcs', base['euler'],
                 base['shifts'], base['ctf'], a.apix, a.box)
    S.write_pdb(os.path.join(d, 'reference_closed.pdb'), adk['coords'][0], adk['elements'],
                adk['atom_names'], adk['res_names'], adk['res_ids'])
    # share of the domain in the clean signal (what the data can tell)
    diff_var = None
    if present.any():
        i = np.nonzero(present)[0][:50]
        R = S.euler_matrix(*base['euler'][i].T)
        ctf = D._ctf_slice(base['ctf'], i)
        full = S.clean_images(adk['coords'][frames[i]], terms[True], R, base['shifts'][i], ctf,
                              a.box, a.apix, pad=D.PAD)
        part = S.clean_images(adk['coords'][frames[i]][:, ~mask], terms[False], R,
                              base['shifts'][i], ctf, a.box, a.apix, pad=D.PAD)
        diff_var = float(((full - part) ** 2).mean(axis=(1, 2)).mean())
    np.savez_compressed(os.path.join(d, 'ground_truth.npz'), present=present, frame=frames,
                        path_coord=pc[frames], domain_atoms=mask,
                        reference_coords=adk['coords'][0], noise_sigma=sigma,
                        signal_var=sig_var)
    info = dict(case=case, what=CASES[case], domain=a.domain, residues=DOMAINS[a.domain],
                domain_heavy_atoms=int(mask.sum()), heavy_atoms=int(len(mask)),
                domain_mass_fraction=float(terms[True].amp[mask].sum() / terms[True].total()),
                n_particles=a.n, absent_fraction_asked=a.absent,
                n_absent=int((~present).sum()), box=a.box, apix=a.apix, snr=a.snr,
                noise_sigma=float(sigma), signal_var=sig_var,
                domain_difference_msd_over_noise_var=None if diff_var is None
                else diff_var / sigma ** 2, bfactor=D.BFACTOR, seed=a.seed,
                make_s=time.time() - t0)
    with open(os.path.join(d, 'set.json'), 'w') as f:
        json.dump(info, f, indent=1)
    common.say('wrote %s (%d absent of %d, %.0f s)' % (d, info['n_absent'], a.n, info['make_s']))
    return d


# ----------------------------------------------------------------------------
# Runs and scores
# ----------------------------------------------------------------------------

def class_accuracy(labels, truth):
    """Accuracy of ``labels`` (any ints) as present/absent: each label takes the
    majority class of its particles."""
    labels, truth = np.asarray(labels), np.asarray(truth, bool)
    pred = np.zeros(len(truth), bool)
    for k in np.unique(labels):
        sel = labels == k
        pred[sel] = truth[sel].mean() >= 0.5
    return float(np.mean(pred == truth))


def gmm2_accuracy(z, truth, seed=0):
    from sklearn.mixture import GaussianMixture
    lab = GaussianMixture(2, covariance_type='full', n_init=5, random_state=seed).fit_predict(z)
    acc = float(np.mean((lab == 1) == np.asarray(truth, bool)))
    return max(acc, 1.0 - acc)


def pseudo_atom_domain(ref_positions, coords, mask):
    """Pseudo-atoms whose nearest heavy atom of the reference is in the domain."""
    from scipy.spatial import cKDTree
    _, j = cKDTree(coords).query(ref_positions)
    return np.asarray(mask)[j]


def run_one(a, case, mode):
    sdir = os.path.join(a.work, 'set_' + case)
    rdir = os.path.join(a.work, 'run_%s_%s' % (case, mode))
    res_path = os.path.join(rdir, 'result.json')
    if os.path.exists(res_path) and not a.force and not a.rescore:
        with open(res_path) as f:
            return json.load(f)
    star = os.path.join(sdir, 'particles.star')
    model, zf, land, dec = (os.path.join(rdir, x) for x in ('model', 'z.npy', 'landscape',
                                                           'decoded'))
    res = dict(case=case, mode=mode, commands=[])
    if os.path.exists(res_path) and a.rescore:
        with open(res_path) as f:
            res = json.load(f)
    else:
        if os.path.exists(rdir):
            shutil.rmtree(rdir)
        os.makedirs(rdir)
        steps = [('train', ['train', '--particles', star, '--reference',
                            os.path.join(sdir, 'reference_closed.pdb'), '--out', model,
                            '--threads', a.threads] + MODES[mode] + a.train_extra),
                 ('infer', ['infer', '--model', model, '--particles', star, '--out', zf,
                            '--threads', a.threads] + a.infer_extra),
                 ('landscape', ['landscape', 'analyze', '--latents', zf, '--out', land])]
        for key, args in steps:
            wall, line = common.run_cli(args, os.path.join(rdir, key + '.log'), a.threads,
                                        nice=a.nice, cwd=REPO)
            res[key + '_wall_s'] = wall
            res['commands'].append(line.replace(sys.executable, 'python'))
    with np.load(os.path.join(sdir, 'ground_truth.npz')) as g:
        gt = {k: g[k] for k in g.files}
    present = gt['present'].astype(bool)
    z = np.load(zf)
    from continuousflex_geodl.core import metrics
    from continuousflex_geodl.core.artifacts import LandscapeDir
    from continuousflex_geodl.core.inference import (decode_learned_amplitudes,
                                                     decode_positions, load_model)
    res['gmm2_accuracy'] = gmm2_accuracy(z, present)
    try:
        states = np.asarray(LandscapeDir(land).labels())
        res['landscape_states'] = int(len(np.unique(states[states >= 0])))
        res['landscape_state_accuracy'] = class_accuracy(states, present)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        res['landscape_error'] = str(exc)
    if case == 'b':
        u = gt['path_coord']
        res['spearman_all'] = float(metrics.latent_spearman_pc1(z, u))
        res['spearman_present'] = float(metrics.latent_spearman_pc1(z[present], u[present]))
        res['spearman_absent'] = float(metrics.latent_spearman_pc1(z[~present], u[~present]))
    m = load_model(model)
    dom = pseudo_atom_domain(m.ref_pos.numpy(), gt['reference_coords'], gt['domain_atoms'])
    res['n_pseudo_atoms'] = int(len(dom))
    res['n_domain_pseudo_atoms'] = int(dom.sum())
    # how the decoded structures differ between the classes (mean latents):
    # without learned amplitudes the decoder can only move the domain's atoms
    zz = np.stack([z[present].mean(0), z[~present].mean(0)]).astype(np.float32)
    P = decode_positions(m, zz)
    shift = np.sqrt(((P[1] - P[0]) ** 2).sum(1))
    res['domain_shift_rms_A'] = float(np.sqrt((shift[dom] ** 2).mean()))
    res['rest_shift_rms_A'] = float(np.sqrt((shift[~dom] ** 2).mean()))
    amp = decode_learned_amplitudes(m, z)
    if amp is not None:
        dmean = amp[:, dom].mean(1)
        rmean = amp[:, ~dom].mean(1)
        res['amplitude_accuracy'] = float(np.mean((dmean > 0.5) == present))
        res['domain_amp_present'] = float(dmean[present].mean())
        res['domain_amp_absent'] = float(dmean[~present].mean())
        res['rest_amp_present'] = float(rmean[present].mean())
        res['rest_amp_absent'] = float(rmean[~present].mean())
        res['domain_amp_absent_q90'] = float(np.quantile(dmean[~present], 0.9))
        res['domain_amp_present_q10'] = float(np.quantile(dmean[present], 0.1))
        np.save(os.path.join(rdir, 'per_atom_amp.npy'),
                np.stack([amp[present].mean(0), amp[~present].mean(0)]))
        np.save(os.path.join(rdir, 'domain_pseudo_atoms.npy'), dom)
        # decode CLI at the mean latents of the present / absent particles
        np.save(os.path.join(rdir, 'z_classes.npy'), zz)
        common.run_cli(['decode', '--model', model, '--latents',
                        os.path.join(rdir, 'z_classes.npy'), '--out', dec], os.path.join(
                            rdir, 'decode.log'), a.threads, nice=a.nice, cwd=REPO)
        from continuousflex_geodl.core.io.pdb import read_structure
        from continuousflex_geodl.core.io.mrc import read_mrc
        st = read_structure(os.path.join(dec, 'structures.pdb'))
        occ = np.array([[at.occ for ch in mdl for r in ch for at in r] for mdl in st])
        res['decoded_pdb_domain_occupancy'] = [float(o[dom].mean()) for o in occ]
        res['decoded_pdb_rest_occupancy'] = [float(o[~dom].mean()) for o in occ]
        vols = [np.asarray(read_mrc(os.path.join(dec, 'vol_%03d.mrc' % i))[0]) for i in range(2)]
        res['decoded_volume_mass_ratio_absent_over_present'] = float(vols[1].sum() /
                                                                     vols[0].sum())
    with open(res_path, 'w') as f:
        json.dump(res, f, indent=1)
    return res


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------

def _f(x, fmt='%.3f'):
    return '-' if x is None else fmt % x


def plot_amplitudes(a, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    done = False
    for ax, case in zip(axes, ('a', 'b')):
        rdir = os.path.join(a.work, 'run_%s_amp' % case)
        f = os.path.join(rdir, 'per_atom_amp.npy')
        if not os.path.exists(f):
            ax.set_visible(False)
            continue
        amp, dom = np.load(f), np.load(os.path.join(rdir, 'domain_pseudo_atoms.npy'))
        order = np.argsort(dom, kind='stable')
        x = np.arange(len(order))
        ax.plot(x, amp[0][order], '.', ms=4, label='present particles')
        ax.plot(x, amp[1][order], '.', ms=4, label='absent particles')
        ax.axvspan(int((~dom).sum()) - 0.5, len(dom) - 0.5, color='0.9', zorder=0,
                   label='%s pseudo-atoms' % a.domain.upper())
        ax.set_title('case (%s): %s' % (case, 'domain absent' if case == 'a'
                                         else 'domain absent + motion'), fontsize=10)
        ax.set_xlabel('pseudo-atom (rest, then domain)')
        ax.set_ylim(-0.05, 1.05)
        done = True
    axes[0].set_ylabel('mean decoded amplitude')
    axes[0].legend(fontsize=8, loc='lower left')
    fig.tight_layout()
    if done:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return done


def write_report(a, results):
    sets = {}
    for case in ('a', 'b'):
        f = os.path.join(a.work, 'set_' + case, 'set.json')
        if os.path.exists(f):
            with open(f) as fh:
                sets[case] = json.load(fh)
    s0 = next(iter(sets.values()), {})
    lines = [
        '# Compositional heterogeneity benchmark (issue 15, point 3)', '',
        'Made by `python benchmarks/bench_composition.py%s` on %s UTC.' % (
            ''.join(' ' + x for x in a.argv), time.strftime('%Y-%m-%d %H:%M', time.gmtime())),
        '',
        'Particles: the AdK all-atom path of the realistic benchmark imaged by its '
        'independent simulator (`realistic/simulator.py`: Peng scattering factors, B = %g A^2, '
        'own CTF on a 2x canvas, true poses in the star). The %s domain (residues %d-%d, '
        '%s of %s heavy atoms, %.1f %% of the scattering mass) is removed from %s of %s '
        'particles (asked: %.0f %%); %d px, %.1f A/px, SNR %g. The energy of the domain in a '
        'clean image is %.3f x the noise variance per pixel (summed over the image: the '
        'log-likelihood ratio of present vs absent is about half of it, %.0f nats).' % (
            D.BFACTOR, a.domain.upper(), DOMAINS[a.domain][0], DOMAINS[a.domain][1],
            s0.get('domain_heavy_atoms'), s0.get('heavy_atoms'),
            100 * (s0.get('domain_mass_fraction') or 0), s0.get('n_absent'), s0.get('n_particles'),
            100 * a.absent, a.box, a.apix, a.snr,
            s0.get('domain_difference_msd_over_noise_var') or float('nan'),
            0.5 * a.box ** 2 * (s0.get('domain_difference_msd_over_noise_var') or float('nan'))),
        '',
        '* case (a): %s;' % CASES['a'], '* case (b): %s.' % CASES['b'], '',
        'Each set is run twice with the defaults (`train`, `infer`, `landscape analyze`%s): '
        'with `--learn-amplitudes` (per-pseudo-atom amplitudes in [0, 1] depending on the '
        'latent, penalty `w_amplitudes` = 0.01 nats per pseudo-atom below 1) and without it. '
        'Accuracies are of present/absent per particle; bar: >= %.0f %%.' % (
            (' with ' + ' '.join(a.train_extra + a.infer_extra)) if a.quick else '',
            100 * ACC_BAR), '',
        '| case | model | GMM-2 on latents | landscape states (n) | amplitude < 0.5 | '
        'domain amplitude present / absent | rest amplitude present / absent | '
        'domain / rest shift (A) | |Spearman| PC1 all / present / absent | train s | bar |',
        '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        accs = [r.get('gmm2_accuracy'), r.get('landscape_state_accuracy'),
                r.get('amplitude_accuracy')]
        best = max(x for x in accs if x is not None)
        lines.append('| (%s) | %s | %s | %s (%s) | %s | %s / %s | %s / %s | %s / %s | %s | %s '
                     '| %s |' % (
            r['case'], '--learn-amplitudes' if r['mode'] == 'amp' else 'default',
            _f(r.get('gmm2_accuracy')), _f(r.get('landscape_state_accuracy')),
            r.get('landscape_states', '-'), _f(r.get('amplitude_accuracy')),
            _f(r.get('domain_amp_present')), _f(r.get('domain_amp_absent')),
            _f(r.get('rest_amp_present')), _f(r.get('rest_amp_absent')),
            _f(r.get('domain_shift_rms_A'), '%.1f'), _f(r.get('rest_shift_rms_A'), '%.1f'),
            ' / '.join(_f(r.get(k)) for k in ('spearman_all', 'spearman_present',
                                                'spearman_absent')) if r['case'] == 'b'
            else '-', _f(r.get('train_wall_s'), '%.0f'),
            'pass' if best >= ACC_BAR else 'FAIL'))
    lines += ['', '"bar": the best of the three accuracies against %.0f %%. GMM-2: a '
              '2-component Gaussian mixture on the latents. Landscape states: `landscape '
              'analyze` defaults (free-energy basins), each state labelled with the majority '
              'class of its particles (a single state scores the majority fraction). '
              'Amplitude < 0.5: the mean decoded amplitude of the domain\'s pseudo-atoms '
              '(nearest heavy atom in the domain) thresholded at 0.5. Domain / rest shift: '
              'RMS displacement of the domain\'s / the other pseudo-atoms between the '
              'structures decoded at the mean latent of the present and of the absent '
              'particles (without learned amplitudes the decoder can only move the '
              'domain).' % (100 * ACC_BAR), '']
    by = {(r['case'], r['mode']): r for r in results}
    for case in ('a', 'b'):
        amp, dflt = by.get((case, 'amp')), by.get((case, 'default'))
        if not (amp and dflt):
            continue
        lines.append(
            '* case (%s): with `--learn-amplitudes` the domain\'s decoded amplitude is %.2f in '
            'present and %.2f in absent particles (rest %.2f / %.2f), and thresholding it '
            'classifies %.1f %% of the particles; without it the landscape separates the '
            'classes too (states %.1f %%, GMM-2 %.1f %%) but the decoder can only move the '
            'domain, by %.1f A RMS between the class structures, instead of removing it.' % (
                case, amp['domain_amp_present'], amp['domain_amp_absent'],
                amp['rest_amp_present'], amp['rest_amp_absent'],
                100 * amp['amplitude_accuracy'], 100 * dflt['landscape_state_accuracy'],
                100 * dflt['gmm2_accuracy'], dflt['domain_shift_rms_A']))
    if any(k[0] == 'b' for k in by):
        lines.append('* case (b): the domain\'s shift with learned amplitudes is that of '
                     'pseudo-atoms of amplitude ~0 in the absent structure, where their '
                     'position does not matter. GMM-2 on the latents is lower in case (b): '
                     'with the motion, a 2-component mixture can split the latents along the '
                     'motion rather than by composition; the state finder and the amplitudes '
                     'do not.')
    lines.append('')
    dec = [r for r in results if 'decoded_pdb_domain_occupancy' in r]
    if dec:
        lines += ['`decode` at the mean latent of the present and of the absent particles '
                  '(learned amplitudes read back from the PDB occupancy column; mass of the '
                  'decoded volumes):', '',
                  '| case | domain occupancy present / absent | rest occupancy present / absent '
                  '| volume mass absent / present |', '|---|---|---|---|']
        for r in dec:
            o, q = r['decoded_pdb_domain_occupancy'], r['decoded_pdb_rest_occupancy']
            lines.append('| (%s) | %.3f / %.3f | %.3f / %.3f | %.3f |' % (
                r['case'], o[0], o[1], q[0], q[1],
                r['decoded_volume_mass_ratio_absent_over_present']))
        lines += ['', 'Expected mass ratio if exactly the domain vanished: %.3f (1 - its mass '
                  'fraction).' % (1 - (s0.get('domain_mass_fraction') or 0)), '']
    name = a.name
    if plot_amplitudes(a, os.path.join(REPORT, name + '_amplitudes.png')):
        lines += ['![mean decoded amplitude per pseudo-atom](%s_amplitudes.png)' % name, '',
                  'Mean decoded amplitude of each pseudo-atom over the present and over the '
                  'absent particles (runs with `--learn-amplitudes`); shaded: the pseudo-atoms '
                  'of the removed domain.', '']
    others = sorted(f for f in os.listdir(REPORT) if f.startswith('composition')
                    and f.endswith('.md') and f != name + '.md' and 'quick' not in f)
    if others:
        lines += ['Other runs of this benchmark: %s.' % ', '.join(
            '[%s](%s)' % (f[:-3], f) for f in others), '']
    lines += ['Commands:', '']
    for r in results:
        lines += ['    ' + c.replace(REPO + os.sep, '') for c in r.get('commands', [])]
    with open(os.path.join(REPORT, name + '.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    common.write_json(os.path.join(REPORT, name + '.json'), dict(sets=sets, runs=results))
    common.say('report: %s' % os.path.join(REPORT, name + '.md'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--stages', nargs='+', default=['make', 'runs', 'report'],
                    choices=['make', 'runs', 'report'])
    ap.add_argument('--cases', nargs='+', default=['a', 'b'], choices=sorted(CASES))
    ap.add_argument('--modes', nargs='+', default=['amp', 'default'], choices=sorted(MODES))
    ap.add_argument('--domain', default='lid', choices=sorted(DOMAINS))
    ap.add_argument('--n', type=int, default=1500, help='particles per set')
    ap.add_argument('--absent', type=float, default=0.4, help='fraction without the domain')
    ap.add_argument('--box', type=int, default=64)
    ap.add_argument('--snr', type=float, default=0.1)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', default='1')
    ap.add_argument('--nice', type=int, default=5)
    ap.add_argument('--name', default='composition',
                    help='report name (REPORT/NAME.md) and work folder (work/NAME)')
    ap.add_argument('--work', default=None, help='work folder (default: work/NAME)')
    ap.add_argument('--force', action='store_true', help='redo sets and runs')
    ap.add_argument('--rescore', action='store_true', help='rescore finished runs')
    ap.add_argument('--quick', action='store_true', help='smoke test: 300 particles, 3 epochs')
    a = ap.parse_args(argv)
    a.argv = [x for x in (sys.argv[1:] if argv is None else argv)
              if x not in ('--stages', 'make', 'runs', 'report', '--rescore', '--force')]
    a.apix = 128.0 / a.box  # same physical box as the realistic benchmark
    a.train_extra, a.infer_extra = [], []
    a.work = a.work or os.path.join(os.path.dirname(WORK), a.name)
    if a.quick:
        a.n = min(a.n, 300)
        a.name += '_quick'
        a.work = a.work + '_quick'
        a.train_extra, a.infer_extra = ['--epochs', '3'], ['--refine-steps', '3']
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(REPORT, exist_ok=True)
    if 'make' in a.stages:
        for case in a.cases:
            make_set(a, case)
    if 'runs' in a.stages:
        for case in a.cases:
            for mode in a.modes:
                r = run_one(a, case, mode)
                common.say('case %s %s: GMM-2 %.3f amplitude %s' % (
                    case, mode, r['gmm2_accuracy'], _f(r.get('amplitude_accuracy'))))
    if 'report' in a.stages:
        results = []
        for case in ('a', 'b'):
            for mode in ('amp', 'default'):
                f = os.path.join(a.work, 'run_%s_%s' % (case, mode), 'result.json')
                if os.path.exists(f):
                    with open(f) as fh:
                        results.append(json.load(fh))
        write_report(a, results)


if __name__ == '__main__':
    main()
