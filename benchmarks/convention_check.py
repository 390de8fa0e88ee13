"""Check that cryoDRGN reads our particles (poses, shifts, CTF, sign) as we mean them.

Independent of the project's simulator: a chiral, asymmetric Gaussian
pseudo-atom molecule is projected with ``core.render.project`` (our
conventions: Xmipp/RELION Euler matrix, shifts t = -rlnOrigin, protein white,
``-C`` image formation) at random poses and a random astigmatic CTF, written
as a RELION 3.1 star (no rlnPhaseShift column, which exercises the NaN fix),
and reconstructed with ``cryodrgn backproject_voxel``.  The reconstruction is
compared (FSC, correlation) with ``core.render.render_volume`` of the same
molecule and with its mirror images / axis permutations: the untouched
ground truth must win, and by a clear margin.

    python benchmarks/convention_check.py [--n 3000] [--box 64]
"""
import argparse
import itertools
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WORK, say, write_json  # noqa: E402


def chiral_molecule(rng, n_atoms=400, extent=30.0):
    """A chiral four-lobed cloud: lobes of different sizes on an irregular
    tetrahedron (no mirror plane, no rotation or axis-swap symmetry)."""
    centres = np.array([[12.0, 0.0, -4.0], [-8.0, 10.0, 3.0], [-3.0, -11.0, 9.0],
                        [2.0, 4.0, 14.0]])
    sizes = np.array([7.0, 5.0, 4.0, 3.0])
    weights = np.array([0.45, 0.25, 0.18, 0.12])
    k = rng.choice(len(centres), n_atoms, p=weights)
    pos = centres[k] + rng.normal(size=(n_atoms, 3)) * sizes[k, None]
    pos -= pos.mean(0)
    pos *= extent / np.abs(pos).max()
    return pos, np.ones(n_atoms)


def write_star_31(path, stack_name, apix, box, euler, shifts, ctf):
    """Minimal RELION 3.1 particle star (optics + particles tables), no phase shift."""
    lines = ['', 'data_optics', '', 'loop_', '_rlnOpticsGroup #1', '_rlnOpticsGroupName #2',
             '_rlnImagePixelSize #3', '_rlnImageSize #4', '_rlnImageDimensionality #5',
             '_rlnVoltage #6', '_rlnSphericalAberration #7', '_rlnAmplitudeContrast #8',
             '1 opticsGroup1 %.6f %d 2 %.3f %.3f %.4f' % (apix, box, ctf[0, 3], ctf[0, 4],
                                                          ctf[0, 5]),
             '', '', 'data_particles', '', 'loop_']
    labels = ['rlnImageName', 'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi',
              'rlnOriginXAngst', 'rlnOriginYAngst', 'rlnDefocusU', 'rlnDefocusV',
              'rlnDefocusAngle', 'rlnOpticsGroup']
    lines += ['_%s #%d' % (lab, i + 1) for i, lab in enumerate(labels)]
    for i in range(len(euler)):
        lines.append('%06d@%s %.6f %.6f %.6f %.6f %.6f %.3f %.3f %.3f 1' % (
            i + 1, stack_name, euler[i, 0], euler[i, 1], euler[i, 2],
            -shifts[i, 0], -shifts[i, 1], ctf[i, 0], ctf[i, 1], ctf[i, 2]))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def make_dataset(out, n=3000, box=64, apix=3.0, snr=1.0, seed=0):
    """Write particles.mrcs / particles.star / truth.npz; return paths and truth."""
    import mrcfile
    import torch
    from continuousflex_geodl.core import ctf as ctfmod, geometry, render, runtime
    runtime.setup()
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    pos, amp = chiral_molecule(rng)
    sigma = 2.0 * apix
    euler = np.stack(geometry.matrix_to_euler(geometry.random_rotations(n, rng)), 1)
    R = geometry.euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2])
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = 4.0 * np.sqrt(rng.uniform(0, 1, n))
    shifts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    dfu = rng.uniform(10000, 25000, n)
    ctf = np.stack([dfu, dfu - rng.uniform(0, 300, n), rng.uniform(0, 180, n),
                    np.full(n, 300.0), np.full(n, 2.7), np.full(n, 0.1), np.zeros(n)], 1)
    freqs = ctfmod.frequency_grid(box, apix)
    imgs = np.empty((n, box, box), np.float32)
    for s in range(0, n, 256):
        e = min(n, s + 256)
        C = ctfmod.compute_ctf(freqs, *[ctf[s:e, j] for j in range(7)])
        with torch.no_grad():
            im = render.project(torch.tensor(pos, dtype=torch.float64),
                                torch.tensor(amp, dtype=torch.float64), sigma,
                                torch.tensor(R[s:e]), box, apix,
                                shifts=torch.tensor(shifts[s:e]),
                                ctf=torch.tensor(np.asarray(C)))
        imgs[s:e] = im.numpy()
    noise_sd = np.sqrt(imgs.var() / snr)
    imgs = (imgs + rng.normal(0, noise_sd, imgs.shape)) / noise_sd
    stack = os.path.join(out, 'particles.mrcs')
    with mrcfile.new(stack, overwrite=True) as f:
        f.set_data(imgs.astype(np.float32))
        f.voxel_size = apix
    star = os.path.join(out, 'particles.star')
    write_star_31(star, 'particles.mrcs', apix, box, euler, shifts, ctf)
    with torch.no_grad():
        vol = render.render_volume(torch.tensor(pos), torch.tensor(amp), sigma, box,
                                   apix).numpy()
    np.savez(os.path.join(out, 'truth.npz'), positions=pos, amplitudes=amp, sigma=sigma,
             volume=vol, euler=euler, shifts=shifts, ctf=ctf, apix=apix, box=box)
    return star, vol


def variants(vol):
    """The volume under every axis permutation and mirror: {name: array}."""
    out = {}
    for perm in itertools.permutations(range(3)):
        for flips in itertools.product([False, True], repeat=3):
            v = np.transpose(vol, perm)
            for ax, fl in enumerate(flips):
                if fl:
                    v = np.flip(v, ax)
                    # keep the centre voxel D//2 fixed under the flip
                    v = np.roll(v, 1, ax)
            name = 'perm%s_flip%s' % (''.join(map(str, perm)), ''.join('1' if f else '0'
                                                                       for f in flips))
            out[name] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=3000)
    ap.add_argument('--box', type=int, default=64)
    ap.add_argument('--apix', type=float, default=3.0)
    ap.add_argument('--out', default=os.path.join(WORK, 'convention_check'))
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args(argv)
    import cryodrgn_runner as cd
    from continuousflex_geodl.core import metrics
    say('cryoDRGN', cd.check())
    star, truth = make_dataset(args.out, args.n, args.box, args.apix)
    prep = cd.prepare(star, os.path.join(args.out, 'prep'), threads=args.threads)
    vol, timing = cd.backproject(star, prep, os.path.join(args.out, 'backproject'),
                                 threads=args.threads)
    mask = metrics.soft_spherical_mask(args.box)
    scores = {}
    for name, v in variants(vol).items():
        d = metrics.map_distances(v, truth, args.apix, mask=mask)
        scores[name] = dict(correlation=d['correlation'], res_fsc05=d['res_fsc05'],
                            fsc_auc=d['fsc_auc'])
    ranked = sorted(scores, key=lambda k: -scores[k]['correlation'])
    ident = 'perm012_flip000'
    result = dict(n_particles=args.n, box=args.box, apix=args.apix, prepare=prep,
                  backproject=timing, identity=scores[ident], best=ranked[0],
                  best_score=scores[ranked[0]], runner_up=ranked[1],
                  runner_up_score=scores[ranked[1]], all=scores,
                  passed=ranked[0] == ident)
    write_json(os.path.join(args.out, 'result.json'), result)
    say('identity: corr %.3f, FSC=0.5 at %.1f A, FSC-AUC %.3f; best variant %s; runner-up '
        '%s (corr %.3f, FSC=0.5 at %.1f A, FSC-AUC %.3f)' % (
            scores[ident]['correlation'], scores[ident]['res_fsc05'], scores[ident]['fsc_auc'],
            ranked[0], ranked[1], scores[ranked[1]]['correlation'],
            scores[ranked[1]]['res_fsc05'], scores[ranked[1]]['fsc_auc']))
    say('PASSED' if result['passed'] else 'FAILED: cryoDRGN does not read our conventions '
        'as we write them')
    return 0 if result['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
