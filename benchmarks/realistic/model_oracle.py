"""Where a trained model loses information: the model-limited oracle of a realistic set.

For each true frame f, the latent c*_f whose decoded images best match clean
images of frame f (rendered by the independent simulator at the poses and
CTFs of ``--fit-particles`` random particles; Adam on the summed model NLL).
Then, for every particle, the posterior over the frames under OUR model's
likelihood at c*_f (same Fourier weights, mask and calibrated noise as
training) with the true frame law as prior: its posterior-mean path
coordinate is scored like a latent.  This is the best any latent inference
can do with this decoder: if it is far from the oracle bound (which uses the
true structures and simulator), the gap is in the model's likelihood, not in
the inference of latents.  Also prints the signal distance between adjacent
frames (mean |G(c*_f+k) - G(c*_f)|^2 in nats, the expected NLL gain of
telling them apart), for the model and for the true clean images seen
through the model's loss weights, and the true one per resolution band.

    python benchmarks/realistic/model_oracle.py RUN_DIR SET_DIR [--out J.json]

RUN_DIR holds ``model/`` and ``z.npy`` (c*_f is saved there as ``cstar.npy``) (``run.py`` or ``ablate.sh`` output);
SET_DIR a set made by ``run.py --stages make``.  ~10-20 min on 2 cores.
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

from continuousflex_geodl.core import inference, losses, metrics, particles  # noqa: E402
from continuousflex_geodl.core.models import imaging  # noqa: E402
from continuousflex_geodl.core.models.data import make_batch  # noqa: E402


def band_distances(clean_a, clean_b, apix, sigma, edges=(1e9, 20, 12, 8, 6, 5, 4)):
    """True signal distance (nats) of two stacks of clean images per resolution band."""
    box = clean_a.shape[-1]
    F = np.fft.fft2(clean_b - clean_a, norm='ortho')
    q = np.sqrt(np.add.outer(np.fft.fftfreq(box) ** 2, np.fft.fftfreq(box) ** 2)) / apix
    res = 1.0 / np.maximum(q, 1e-12)
    d = np.abs(F) ** 2 / (2 * sigma ** 2)
    out = {}
    for hi, lo in zip(edges[:-1], edges[1:]):
        m = (res < hi) & (res >= lo)
        out['%g-%g A' % (min(hi, 999), lo)] = float(d[:, m].sum(1).mean())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run')
    ap.add_argument('set')
    ap.add_argument('--out')
    ap.add_argument('--fit-particles', type=int, default=16)
    ap.add_argument('--fit-steps', type=int, default=40)
    ap.add_argument('--seed', type=int, default=3)
    a = ap.parse_args()
    t0 = time.time()
    g = np.load(os.path.join(a.set, 'ground_truth.npz'))
    with open(os.path.join(a.set, 'set.json')) as f:
        info = json.load(f)
    box, apix = int(info.get('box', 64)), float(info.get('apix', 2.0))
    fr, u, pf, pcf = g['frame'], g['path_coord'], g['frame_prob'], g['frame_path_coord']
    sig = float(g['noise_sigma'])
    n, F = len(fr), len(pcf)
    adk = S.load_adk()
    terms = S.AtomTerms(adk['elements'], adk['n_hydrogens'], D.BFACTOR)
    base = D.make_base(n, box, apix, int(info.get('seed', 0)), adk['path_coord'])
    model = inference.load_model(os.path.join(a.run, 'model'))
    pset = particles.load_particles(os.path.join(a.set, 'particles.star'))
    z = np.load(os.path.join(a.run, 'z.npy')).astype(np.float32)
    ctx = inference._RefineContext(model, inference.TrainSettings.mask_radius, 1.0)
    idx = np.sort(np.random.default_rng(a.seed).choice(n, a.fit_particles, replace=False))
    b = make_batch(pset, idx, model)
    clean = {}
    cstar = []
    with ctx:
        for f in range(F):
            clean[f] = D.render_frames(adk, terms, base, idx, np.full(len(idx), f), fast=True)
            Ft = imaging.fourier_crop(torch.fft.fft2(torch.as_tensor(clean[f], dtype=torch.float32),
                                                     norm='ortho'), model.loss_box)
            tgt = ctx.target(Ft)
            near = np.abs(fr - f) <= 1
            c0 = np.median(z[near], 0) if near.sum() >= 3 else z[np.argmin(np.abs(fr - f))]
            c = torch.tensor(c0, requires_grad=True)
            opt = torch.optim.Adam([c], lr=0.08)
            for _ in range(a.fit_steps):
                G = ctx.spectra(c[None].expand(len(idx), -1), b['rot'], b['shifts'], b['ctf_loss'])
                loss = ((tgt - G).abs() ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            cstar.append(c.detach().numpy().copy())
            print('frame %d/%d fitted (%.0f s)' % (f + 1, F, time.time() - t0), flush=True)
    cstar = np.asarray(cstar, np.float32)
    np.save(os.path.join(a.run, 'cstar.npy'), cstar)   # used by gap_experiments/supervised.py
    res = dict(run=a.run, set=a.set, n_frames=F)
    with ctx, torch.no_grad():
        Gs = [ctx.spectra(torch.as_tensor(cstar[f:f + 1]).expand(len(idx), -1), b['rot'],
                          b['shifts'], b['ctf_loss']) for f in range(F)]
        Ts = [ctx.target(imaging.fourier_crop(torch.fft.fft2(torch.as_tensor(
            clean[f], dtype=torch.float32), norm='ortho'), model.loss_box)) for f in range(F)]
        for k in (1, 2, 5):
            res['model_distance_frame+%d' % k] = float(np.mean(
                [((Gs[f + k] - Gs[f]).abs() ** 2).sum((-2, -1)).mean().item()
                 for f in range(F - k)]))
            res['true_distance_via_model_weights_frame+%d' % k] = float(np.mean(
                [((Ts[f + k] - Ts[f]).abs() ** 2).sum((-2, -1)).mean().item()
                 for f in range(F - k)]))
        res['true_distance_frame+1_by_band'] = {
            k: float(np.mean([band_distances(clean[f], clean[f + 1], apix, sig)[k]
                              for f in range(0, F - 1, 4)]))
            for k in band_distances(clean[0], clean[1], apix, sig)}
        nll = np.zeros((n, F))
        for s in range(0, n, 100):
            ii = np.arange(s, min(n, s + 100))
            bb = make_batch(pset, ii, model)
            tgt = ctx.target(bb['F_loss'])
            for f in range(F):
                G = ctx.spectra(torch.as_tensor(cstar[f:f + 1]).expand(len(ii), -1), bb['rot'],
                                bb['shifts'], bb['ctf_loss'])
                nll[ii, f] = ((tgt - G).abs() ** 2).sum((-2, -1)).double().numpy()
    lp = -nll + np.log(np.maximum(pf, 1e-300))[None]
    w = np.exp(lp - lp.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    pm = (w @ pcf)[:, None]
    res.update(model_oracle_spearman=float(metrics.latent_spearman_pc1(pm, u)),
               model_oracle_knn_error=float(metrics.knn_neighbourhood_error(pm, u, 10)),
               model_oracle_map_frame_exact=float(np.mean(np.argmax(lp, 1) == fr)),
               model_oracle_map_frame_within1=float(np.mean(np.abs(np.argmax(lp, 1) - fr) <= 1)),
               latents_spearman=float(metrics.latent_spearman_pc1(z, u)),
               latents_knn_error=float(metrics.knn_neighbourhood_error(z, u, 10)),
               seconds=time.time() - t0)
    with open(os.path.join(a.set, 'oracle.json')) as f:
        orc = json.load(f)
    res.update(oracle_spearman=orc['spearman_posterior_mean'],
               oracle_knn_error=orc['knn_error_posterior_mean'])
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
