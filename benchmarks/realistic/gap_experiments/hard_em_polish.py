"""Hard-EM polishing: fine-tune the decoder on fixed refined latents (no box noise), re-refine the
latents; repeat.  python hard_em_polish.py MODEL_DIR PARTICLES.star Z.npy GROUND_TRUTH.npz ROUNDS EPOCHS LR"""
import os, sys, time
import numpy as np, torch
from continuousflex_geodl.core import inference, particles, losses, metrics
from continuousflex_geodl.core.models.data import make_batch
mdir, star, zpath, gtp = sys.argv[1:5]
rounds = int(sys.argv[5]); epochs = int(sys.argv[6]); lr = float(sys.argv[7])
noise_T = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
torch.set_num_threads(2); torch.manual_seed(0)
model = inference.load_model(mdir)
pset = particles.load_particles(star)
z = np.load(zpath).astype(np.float32)
g = np.load(gtp); fr = g['frame']; u = g['path_coord']
def score(zz, tag):
    print('%-24s spearman %.4f knn10 %.4f' % (tag, metrics.latent_spearman_pc1(zz, u), metrics.knn_neighbourhood_error(zz, u, 10)), flush=True)
def spread(zz, tag):
    C = np.stack([np.median(zz[fr == f], 0) for f in range(40) if (fr == f).sum() >= 3]).astype(np.float32)
    ctx = inference._RefineContext(model, inference.TrainSettings.mask_radius, 1.0)
    idx = np.arange(0, 2000, 40)
    with ctx, torch.no_grad():
        b = make_batch(pset, idx, model)
        pos, amp = model.decode(torch.as_tensor(C))
        d1 = []
        for j in range(3, len(C) - 3):
            Gs = [losses.masked_residual(model.render(pos[k:k+1].expand(len(idx), -1, -1), amp[k:k+1].expand(len(idx), -1) if amp.dim() == 2 else amp, b['rot'], b['shifts'], b['ctf_loss']), ctx.mask) * ctx.sqw for k in (j, j + 1)]
            d1.append(((Gs[1] - Gs[0]).abs() ** 2).sum((-2, -1)).mean().item())
    print('%-24s model adjacent-frame signal distance %.3f nats (truth via model weights ~0.73)' % (tag, np.mean(d1)), flush=True)
score(z, 'start'); spread(z, 'start')
W = losses.loss_weights(model)
from continuousflex_geodl.core.models import imaging
mask = imaging.circular_mask(model.loss_box, inference.TrainSettings.mask_radius)
strain = losses.KnnStrain(model.ref_pos.cpu().numpy(), 8)
params = [p for n, p in model.decoder.named_parameters()]
for r in range(rounds):
    t0 = time.time()
    model.train()
    for p in model.parameters(): p.requires_grad_(False)
    for p in params: p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    n = len(z)
    for ep in range(epochs):
        perm = np.random.default_rng(100 * r + ep).permutation(n)
        tot = 0
        for s in range(0, n, 32):
            idx = np.sort(perm[s:s + 32])
            b = make_batch(pset, idx, model)
            zz = torch.as_tensor(z[idx])
            if noise_T: zz = zz + noise_T * (torch.rand_like(zz) - 0.5)
            pos, amp = model.decode(zz)
            Fh = model.render(pos, amp, b['rot'], b['shifts'], b['ctf_loss'])
            loss = losses.image_nll(b['F_loss'], Fh, W, model.noise_var, mask) + strain(pos)
            opt.zero_grad(); loss.mean().backward(); opt.step(); tot += loss.sum().item()
        print('round %d epoch %d loss %.3f (%.0f s)' % (r, ep, tot / n, time.time() - t0), flush=True)
    model.eval()
    for p in model.parameters(): p.requires_grad_(False)
    z = inference.refine_latents(model, pset, z)
    score(z, 'round %d' % r); spread(z, 'round %d' % r)
np.save(os.path.splitext(zpath)[0] + '_polished.npy', z)
