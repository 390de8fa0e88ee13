"""Sets with pose errors between exact and the ``noisy`` level (issue 11: at
which pose-error level does ``train --refine-poses`` start to pay?).

A set ``SET_noisyQ`` (e.g. ``adk_three_state_b64_snr0.1_noisy0.5``) has the
same images, CTF, truth and oracle as ``SET_exact`` (the oracle knows the true
poses), and pose errors Q times those of ``SET_noisy``: every particle's
rotation-error vector and shift error are scaled by Q (Q = 1 gives the noisy
set's poses; the medians scale with Q: 2.75 deg and 1.30 A at Q = 1).
Run the sets with ``state_seeds.py --sets SET_noisyQ`` with and without
``--train-args=--refine-poses``.

Usage::

    python benchmarks/realistic/pose_levels.py --levels 0.25 0.5 [--set adk_three_state_b64_snr0.1]
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datasets as D  # noqa: E402
import run as R  # noqa: E402
import simulator as S  # noqa: E402

COPIED = ('reference_closed.pdb', 'consensus.mrc', 'oracle.json')


def make_level(work, base_set, q, n=2000, seed=0):
    """Write ``{base_set}_noisy{q}`` next to ``{base_set}_exact``; returns its name."""
    exact = os.path.join(work, base_set + '_exact')
    with open(os.path.join(exact, 'set.json')) as f:
        info = json.load(f)
    box, apix = int(info['box']), float(info['apix'])
    name = '%s_noisy%g' % (base_set, q)
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    for fn in COPIED:
        if os.path.exists(os.path.join(exact, fn)):
            shutil.copy(os.path.join(exact, fn), os.path.join(d, fn))
    pc = S.load_adk()['path_coord']
    base = D.make_base(n, box, apix, seed, pc)
    R_true = S.euler_matrix(*base['euler'].T)
    R_obs = S.axis_angle_matrix(q * base['rotvec_err']) @ R_true
    eu = np.stack(S.matrix_to_euler(R_obs), 1)
    sh = base['shifts'] + q * base['shift_err_vec']
    S.write_star(os.path.join(d, 'particles.star'), info['stack'], eu, sh, base['ctf'], apix,
                 box)
    with np.load(os.path.join(exact, 'ground_truth.npz')) as g:
        gt = dict(g)
    assert np.allclose(gt['euler_true'], base['euler']), 'base draws differ from the exact set'
    gt.update(euler_star=eu, shifts_star=sh)
    np.savez_compressed(os.path.join(d, 'ground_truth.npz'), **gt)
    rot = S.rotation_angle_deg(R_obs, R_true)
    info.update(name=name, poses='noisy%g' % q, pose_error=dict(
        scale=q, rotation_median_deg=float(np.median(rot)),
        shift_median_A=float(np.median(np.linalg.norm(sh - base['shifts'], axis=1)))))
    with open(os.path.join(d, 'set.json'), 'w') as f:
        json.dump(info, f, indent=1)
    print('wrote %s: rotation error median %.2f deg, shift error median %.2f A'
          % (name, info['pose_error']['rotation_median_deg'],
             info['pose_error']['shift_median_A']))
    return name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--levels', nargs='+', type=float, default=[0.25, 0.5])
    ap.add_argument('--set', default='adk_three_state_b64_snr0.1',
                    help='set name without its _exact / _noisy suffix')
    ap.add_argument('--work', default=R.WORK)
    a = ap.parse_args(argv)
    for q in a.levels:
        make_level(a.work, a.set, q)
    return 0


if __name__ == '__main__':
    sys.exit(main())
