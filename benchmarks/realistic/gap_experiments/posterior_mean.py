"""Posterior-mean latents by importance weights over a shared candidate set
(k-means centres or random particles latents), at several temperatures.
    python posterior_mean.py MODEL_DIR PARTICLES.star Z.npy GROUND_TRUTH.npz [M]"""
import os, sys, time
import numpy as np, torch
from continuousflex_geodl.core import inference, particles
from continuousflex_geodl.core.models.data import make_batch
from sklearn.cluster import KMeans
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from continuousflex_geodl.core import metrics

mdir, star, zpath, gt = sys.argv[1:5]
M = int(sys.argv[5]) if len(sys.argv) > 5 else 128
torch.set_num_threads(2)
model = inference.load_model(mdir)
pset = particles.load_particles(star)
z = np.load(zpath).astype(np.float32)
u = np.load(gt)['path_coord']
def score(zz, tag):
    pc1 = PCA(1).fit_transform(zz)[:, 0]
    print('%-30s spearman %.4f knn10 %.4f' % (tag, abs(spearmanr(pc1, u)[0]), metrics.knn_neighbourhood_error(zz, u, 10)), flush=True)
score(z, 'map')
rng = np.random.default_rng(0)
cand_sets = {'kmeans%d' % M: KMeans(M, n_init=3, random_state=0).fit(z).cluster_centers_.astype(np.float32),
             'sample%d' % M: z[rng.choice(len(z), M, replace=False)]}
ctx = inference._RefineContext(model, 0.85 if False else inference.TrainSettings.mask_radius, 1.0)
t0 = time.time()
with ctx, torch.no_grad():
    res = {}
    for name, C in cand_sets.items():
        Ct = torch.as_tensor(C)
        pos, amp = model.decode(Ct)  # (M,N,3)
        nll = np.zeros((len(z), M), np.float64)
        prior = ctx.prior_cost(Ct).double().numpy()
        for s in range(0, len(z), 64):
            idx = np.arange(s, min(len(z), s + 64))
            b = make_batch(pset, idx, model)
            tgt = ctx.target(b['F_loss'])
            B = len(idx)
            for j in range(M):
                Fh = model.render(pos[j:j+1].expand(B, -1, -1), amp[j:j+1].expand(B, -1) if amp.dim() == 2 else amp, b['rot'], b['shifts'], b['ctf_loss'])
                from continuousflex_geodl.core import losses
                G = losses.masked_residual(Fh, ctx.mask) * ctx.sqw
                r = tgt - G
                nll[idx, j] = (r.real**2 + r.imag**2).sum((-2, -1)).double().numpy()
        res[name] = (C, nll, prior)
        print(name, 'done', time.time() - t0, flush=True)
np.savez(os.path.splitext(zpath)[0] + '_candidates_%d.npz' % M, **{k + '_C': v[0] for k, v in res.items()}, **{k + '_nll': v[1] for k, v in res.items()}, **{k + '_prior': v[2] for k, v in res.items()})
for name, (C, nll, prior) in res.items():
    for T in (1.0, 2.0, 4.0):
        for use_prior in (False, True):
            L = -(nll + (prior if use_prior else 0)) / T
            L -= L.max(1, keepdims=True)
            w = np.exp(L); w /= w.sum(1, keepdims=True)
            zpm = w @ C
            score(zpm, '%s T%.0f prior%d' % (name, T, use_prior))
            # blend
        print('  ess median', np.median(1 / (w**2).sum(1)))
