"""How much of a realistic set's information a pseudo-atom representation can hold.

For a coarse-graining (number of pseudo-atoms N, Gaussian width sigma, highest
resolution of the image loss), the *ideal* decoder: the reference cloud is
fitted to the closed structure exactly as ``train`` does (``core.cloud.fit_atoms``),
each heavy atom belongs to its nearest pseudo-atom, and in every true frame a
pseudo-atom sits at the mass-weighted mean of its atoms.  These ideal clouds are
rendered with the package's Gaussian image formation at every particle's true
pose and CTF; one global scale and the effective noise (noise + misfit, as the
model's calibration does) are fitted; the posterior over the frames (true frame
law as prior) gives a posterior-mean path coordinate, scored like a latent.
No training is involved: this is the best a model with that representation and
loss can reach, to compare with the oracle (true structures, true simulator).

    python benchmarks/realistic/coarse_grain_bound.py SET_DIR [--n 1000] [--out J.json]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import datasets as D  # noqa: E402
import simulator as S  # noqa: E402

from continuousflex_geodl.core import cloud, metrics  # noqa: E402
from continuousflex_geodl.core.simulation.imaging import render_images  # noqa: E402

MASS = dict(C=12.011, N=14.007, O=15.999, S=32.06)

#: (label, n_atoms, sigma or None (automatic), loss resolution A or None (Nyquist))
CONFIGS = [
    ('default: auto N, auto sigma, loss to 2% of the Gaussian', None, None, 'auto'),
    ('auto N, auto sigma, Nyquist', None, None, None),
    ('800, auto sigma, Nyquist', 800, None, None),
    ('800, sigma 1.5, Nyquist', 800, 1.5, None),
    ('every heavy atom, sigma 1.0, Nyquist', 0, 1.0, None),
    ('every heavy atom, sigma 0.7, Nyquist', 0, 0.7, None),
]


def ideal_clouds(coords, masses, apix, n_atoms, sigma):
    """(F, M, 3) ideal pseudo-atom positions, (M,) amplitudes, sigma."""
    centres, amp, sig = cloud.fit_atoms(coords[0], masses, apix, n_atoms, sigma)
    if len(centres) == coords.shape[1]:
        return coords, amp, sig
    from scipy.spatial import cKDTree
    _, lab = cKDTree(centres).query(coords[0])
    M = len(centres)
    w = np.bincount(lab, weights=masses, minlength=M)
    out = np.stack([np.stack([np.bincount(lab, weights=masses * c[:, k], minlength=M)
                              for k in range(3)], -1) / w[:, None] for c in coords])
    return out, amp, sig


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('set')
    ap.add_argument('--n', type=int, default=1000, help='particles scored (first n)')
    ap.add_argument('--configs', type=int, nargs='*', help='indices into CONFIGS')
    ap.add_argument('--out')
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
    with open(os.path.join(a.set, 'set.json')) as f:
        info = json.load(f)
    box, apix = int(info['box']), float(info['apix'])
    g = np.load(os.path.join(a.set, 'ground_truth.npz'))
    n = min(a.n, len(g['frame']))
    fr, u, pf, pcf = g['frame'][:n], g['path_coord'][:n], g['frame_prob'], g['frame_path_coord']
    eul, sh = g['euler_true'][:n], g['shifts_true'][:n]
    ctf = np.stack([g['ctf_' + k][:n] for k in ('dfu', 'dfv', 'dfang', 'kv', 'cs', 'w',
                                                 'phase_shift')], 1)
    stack = D._read_stack(os.path.join(os.path.dirname(a.set), info['stack']))[:n]
    X = np.fft.fft2(stack.astype(np.float64), norm='ortho')
    adk = S.load_adk()
    coords = adk['coords']
    masses = np.array([MASS.get(str(e).strip().upper()[:1], 12.0) for e in adk['elements']])
    F = len(coords)
    q = np.sqrt(np.add.outer(np.fft.fftfreq(box) ** 2, np.fft.fftfreq(box) ** 2)) / apix
    with open(os.path.join(a.set, 'oracle.json')) as f:
        orc = json.load(f)
    results = []
    for ci in (a.configs if a.configs else range(len(CONFIGS))):
        label, n_atoms, sigma, lres = CONFIGS[ci]
        t0 = time.time()
        clouds, amp, sig = ideal_clouds(coords, masses, apix, n_atoms, sigma)
        if lres == 'auto':   # where the Gaussian falls to 2 % (the model's default)
            lres = float(np.pi * sig * np.sqrt(2.0 / np.log(50.0)))
        band = (q <= 1.0 / lres) if lres else np.ones_like(q, bool)
        d2 = np.zeros((n, F))
        Gs = []
        for f in range(F):
            img = render_images(clouds[f], amp, sig, eul, sh, ctf, box, apix)
            Gs.append(np.fft.fft2(img.astype(np.float64), norm='ortho')[:, band])
        Xb = X[:, band]
        Gt = np.stack([Gs[fr[i]][i] for i in range(n)])           # at the true frame
        s = float(np.real(np.vdot(Gt, Xb)) / np.real(np.vdot(Gt, Gt)))
        var = float(np.mean(np.abs(Xb - s * Gt) ** 2))           # noise + misfit per coeff
        for f in range(F):
            d2[:, f] = (np.abs(Xb - s * Gs[f]) ** 2).sum(1)
        lp = -d2 / (2 * var / 2) + np.log(np.maximum(pf, 1e-300))[None]
        # |.|^2 of a complex ortho coefficient has mean var; each real dof has var/2
        w = np.exp(lp - lp.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        pm = (w @ pcf)[:, None]
        r = dict(config=label, n_atoms=int(clouds.shape[1]), sigma=float(sig),
                 loss_resolution=lres, scale=s,
                 spearman=float(metrics.latent_spearman_pc1(pm, u)),
                 knn_error=float(metrics.knn_neighbourhood_error(pm, u, 10)),
                 map_frame_within1=float(np.mean(np.abs(np.argmax(lp, 1) - fr) <= 1)),
                 seconds=time.time() - t0)
        results.append(r)
        print(json.dumps(r), flush=True)
    out = dict(set=a.set, n=n, oracle_spearman=orc['spearman_posterior_mean'],
               oracle_knn_error=orc['knn_error_posterior_mean'], results=results)
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()
