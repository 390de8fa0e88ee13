"""Pose repair on a realistic set: rotation / shift errors against the truth.

Local refinement (``core.poses.refine_poses``) of the particles' poses
against (``--mode``):

* ``none``      -- nothing (the starting poses' errors);
* ``reference`` -- one reference, the set's reference_closed.pdb (as
  ``poses --local --reference``: twice train's default pseudo-atoms);
* ``model``     -- per-particle clouds of a trained model at each particle's
  latent (``core.poses.joint.repair_poses``, as ``poses --model``);
* ``oracle``    -- per-particle TRUE structure: the AdK frame each particle was
  simulated from (``data/adk_dims_heavy.npz``), coarse-grained like the
  reference (``coarse_grain_bound.ideal_clouds``, same number of
  pseudo-atoms): the oracle local search.

``--start star`` starts from the star's poses; ``--start trueD`` from the
true poses rotated by D degrees about random axes (seeded) with the star's
shifts.  Prints one JSON line (median / mean rotation error in degrees and
shift error in A, before and after) and optionally writes the star.

    python benchmarks/realistic/pose_repair.py SET_DIR --mode model --model MODEL \
        [--start true10] [--n 500] [--out-star REPAIRED.star]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

from continuousflex_geodl.core.geometry import (euler_to_matrix, matrix_to_euler,  # noqa: E402
                                                rotation_angle_deg)
from continuousflex_geodl.core.particles import load_particles  # noqa: E402

MASS = dict(C=12.011, N=14.007, O=15.999, S=32.06)


def errors(euler, shifts, gt, idx):
    rot = rotation_angle_deg(euler_to_matrix(*np.asarray(euler).T),
                             euler_to_matrix(*gt['euler_true'][idx].T))
    sh = np.linalg.norm(np.asarray(shifts) - gt['shifts_true'][idx], axis=1)
    return dict(rot_median=float(np.median(rot)), rot_mean=float(np.mean(rot)),
                shift_median=float(np.median(sh)), shift_mean=float(np.mean(sh)))


def perturbed_start(gt, idx, deg, seed):
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(len(idx), 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    R = Rotation.from_rotvec(axis * np.radians(deg)).as_matrix() @ \
        euler_to_matrix(*gt['euler_true'][idx].T)
    return np.stack(matrix_to_euler(R), 1)


def oracle_clouds(gt, idx, apix, n_atoms):
    import coarse_grain_bound as C
    import simulator as S
    adk = S.load_adk()
    masses = np.array([MASS.get(str(e).strip().upper()[:1], 12.0) for e in adk['elements']])
    clouds, amp, sig = C.ideal_clouds(adk['coords'], masses, apix, n_atoms, None)
    return clouds[gt['frame'][idx]].astype(np.float32), amp.astype(np.float32), float(sig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('set')
    ap.add_argument('--mode', choices=('none', 'reference', 'model', 'oracle'), required=True)
    ap.add_argument('--model')
    ap.add_argument('--latents', help='model mode: latents (.npy) of all the particles')
    ap.add_argument('--start', default='star', help="'star' or 'trueD' (D degrees)")
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--n', type=int, default=0, help='first n particles (0: all)')
    ap.add_argument('--n-atoms', type=int, default=None,
                    help='reference / oracle pseudo-atoms (default: 2 x train default)')
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--ignore-refined-poses', action='store_true')
    ap.add_argument('--out-star')
    a = ap.parse_args()
    import torch
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
    gt = np.load(os.path.join(a.set, 'ground_truth.npz'))
    pset = load_particles(os.path.join(a.set, 'particles.star'))
    N = len(pset)
    idx = np.arange(N if a.n <= 0 else min(a.n, N))
    pset = pset.subset(idx)
    if os.path.basename(os.path.normpath(a.set)).endswith('_noisy'):  # sign check
        assert np.allclose(pset.shifts, gt['shifts_star'][idx], atol=1e-3), 'shift convention'
    if a.mode == 'model':
        from continuousflex_geodl.core.commands.infer import use_training_poses
        use_training_poses(a.model, pset, ignore=a.ignore_refined_poses)
    if a.start.startswith('true'):
        pset.euler = perturbed_start(gt, idx, float(a.start[4:]), a.seed)
    before = errors(pset.euler, pset.shifts, gt, idx)
    t0 = time.time()
    from continuousflex_geodl.core.models.reference import build_reference
    from continuousflex_geodl.core.poses import refine_poses
    ref_pdb = os.path.join(a.set, 'reference_closed.pdb')
    n_atoms = a.n_atoms or 2 * len(build_reference(ref_pdb, apix=pset.apix).positions)
    res = None
    if a.mode == 'reference':
        res = refine_poses(pset, build_reference(ref_pdb, n_atoms=n_atoms, apix=pset.apix))
    elif a.mode == 'oracle':
        res = refine_poses(pset, oracle_clouds(gt, idx, pset.apix, n_atoms))
    elif a.mode == 'model':
        from continuousflex_geodl.core.inference import load_model
        from continuousflex_geodl.core.poses.joint import repair_poses
        model = load_model(a.model)
        z = None if not a.latents else np.load(a.latents)[idx]
        res, _ = repair_poses(pset, model, z=z, rounds=a.rounds)
    after = before if res is None else errors(res.euler, res.shifts, gt, idx)
    out = dict(set=os.path.basename(os.path.normpath(a.set)), mode=a.mode, start=a.start,
               n=len(idx), model=a.model, rounds=a.rounds, n_atoms=n_atoms,
               before=before, after=after, seconds=round(time.time() - t0, 1))
    if a.out_star and res is not None:
        from continuousflex_geodl.core.io.star import write_star
        from continuousflex_geodl.core.poses import posed_particles
        write_star(a.out_star, posed_particles(pset, res))
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    main()
