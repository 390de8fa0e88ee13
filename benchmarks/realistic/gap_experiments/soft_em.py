"""Soft-EM fine-tuning of a trained decoder (a measurement for issue 11's gap).

The trained decoder averages neighbouring frames: it learns from point
latents that carry each particle's inference noise (regression to the mean;
hard-EM polishing made it worse).  Here the decoder is fine-tuned on the
marginal likelihood over a shared candidate set instead: K candidate latents
(k-means of the inferred latents, trainable), mixture weights pi_k.  Each
epoch: E-step, every particle's posterior over the K candidates under the
current decoder (no gradients); M-step, the decoder and the candidates follow
the posterior-weighted NLL of each particle's top-M candidates.  At a fixed
point this is the maximum marginal likelihood decoder, which has no
regression-to-the-mean bias.  Latents out: the posterior mean of the
candidates, then the default Gauss-Newton refinement with the new decoder.

    python soft_em.py RUN_DIR SET_DIR [--k 64] [--top 6] [--epochs 6] [--lr 3e-4]

RUN_DIR holds ``model/`` and ``z.npy``; SET_DIR has ``particles.star`` and
``ground_truth.npz``.  Writes RUN_DIR/soft_em/{z_pm.npy, z_refined.npy, score.json}.
"""
import argparse
import json
import os
import time

import numpy as np
import torch

from continuousflex_geodl.core import inference, losses, metrics, particles
from continuousflex_geodl.core.models import imaging
from continuousflex_geodl.core.models.data import make_batch


def score(z, u, tag, log):
    s = float(metrics.latent_spearman_pc1(z, u))
    k = float(metrics.knn_neighbourhood_error(z, u, 10))
    print('%-34s spearman %.4f knn10 %.4f' % (tag, s, k), flush=True)
    log[tag] = dict(spearman=s, knn_error=k)


def e_step(model, pset, C, logpi, batch):
    """NLL of every particle at every candidate, (N, K), no gradients."""
    ctx = inference._RefineContext(model, inference.TrainSettings.mask_radius, 1.0)
    n, K = len(pset), len(C)
    nll = np.zeros((n, K))
    with ctx, torch.no_grad():
        for s in range(0, n, batch):
            ii = np.arange(s, min(n, s + batch))
            b = make_batch(pset, ii, model)
            tgt = ctx.target(b['F_loss'])
            for k in range(K):
                G = ctx.spectra(C[k:k + 1].expand(len(ii), -1), b['rot'], b['shifts'],
                                b['ctf_loss'])
                nll[ii, k] = ((tgt - G).abs() ** 2).sum((-2, -1)).double().numpy()
    lp = -nll + logpi[None]
    w = np.exp(lp - lp.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run')
    ap.add_argument('set')
    ap.add_argument('--k', type=int, default=64)
    ap.add_argument('--top', type=int, default=6)
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--lr', type=float, default=3e-4)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--fixed-candidates', action='store_true')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--tag', default='soft_em')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = os.path.join(a.run, a.tag)
    os.makedirs(out, exist_ok=True)
    g = np.load(os.path.join(a.set, 'ground_truth.npz'))
    u = g['path_coord']
    model = inference.load_model(os.path.join(a.run, 'model'))
    pset = particles.load_particles(os.path.join(a.set, 'particles.star'))
    z = np.load(os.path.join(a.run, 'z.npy')).astype(np.float32)
    n = len(z)
    log = dict(args=vars(a))
    score(z, u, 'start (encoder + GN)', log)
    from sklearn.cluster import KMeans
    C0 = KMeans(a.k, n_init=4, random_state=0).fit(z).cluster_centers_.astype(np.float32)
    C = torch.nn.Parameter(torch.as_tensor(C0))
    logpi = np.full(a.k, -np.log(a.k))
    W = losses.loss_weights(model)
    mask = imaging.circular_mask(model.loss_box, inference.TrainSettings.mask_radius)
    strain = losses.KnnStrain(model.ref_pos.cpu().numpy(), 8)
    params = list(model.decoder.parameters())
    t0 = time.time()
    for ep in range(a.epochs + 1):
        model.eval()
        w = e_step(model, pset, C.detach(), logpi, a.batch)
        logpi = np.log(np.maximum(w.mean(0), 1e-8))
        zpm = (w @ C.detach().numpy()).astype(np.float32)
        ent = float(np.mean(np.exp(-(w * np.log(np.maximum(w, 1e-30))).sum(1))))
        score(zpm, u, 'epoch %d posterior mean (perplexity %.1f, %.0f s)' % (ep, ent, time.time() - t0), log)
        if ep == a.epochs:
            break
        model.train()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        groups = [dict(params=params, lr=a.lr)]
        if not a.fixed_candidates:
            groups.append(dict(params=[C], lr=a.lr * 10))
        opt = torch.optim.Adam(groups)
        top = np.argsort(-w, 1)[:, :a.top]
        perm = np.random.default_rng(ep).permutation(n)
        tot = 0.0
        for s in range(0, n, a.batch):
            idx = np.sort(perm[s:s + a.batch])
            b = make_batch(pset, idx, model)
            kk = top[idx]                                      # (B, M)
            ww = np.take_along_axis(w[idx], kk, 1)
            ww = torch.as_tensor(ww / ww.sum(1, keepdims=True), dtype=torch.float32)
            uk, inv = np.unique(kk, return_inverse=True)
            pos, amp = model.decode(C[torch.as_tensor(uk)])
            sel = torch.as_tensor(inv.reshape(-1))
            B, M = kk.shape
            rep = torch.arange(B).repeat_interleave(M)
            a_sel = amp[sel] if amp.dim() == 2 else amp
            Fh = model.render(pos[sel], a_sel, b['rot'][rep], b['shifts'][rep], b['ctf_loss'][rep])
            nll = losses.image_nll(b['F_loss'][rep], Fh, W, model.noise_var, mask).view(B, M)
            loss = (ww * nll).sum(1).mean() + strain(pos).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * B
        print('epoch %d M-step loss %.3f (%.0f s)' % (ep, tot / n, time.time() - t0), flush=True)
    np.save(os.path.join(out, 'z_pm.npy'), zpm)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    zr = inference.refine_latents(model, pset, zpm)
    np.save(os.path.join(out, 'z_refined.npy'), zr)
    score(zr, u, 'refined from the posterior mean', log)
    zr2 = inference.refine_latents(model, pset, z)
    score(zr2, u, 'refined from the start latents', log)
    log['seconds'] = time.time() - t0
    with open(os.path.join(out, 'score.json'), 'w') as f:
        json.dump(log, f, indent=1)


if __name__ == '__main__':
    main()
