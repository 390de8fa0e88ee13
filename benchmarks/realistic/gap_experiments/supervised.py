"""Decoder capacity: fine-tune a trained decoder with each particle's latent fixed at c* of its
true frame (supervised: a measurement, not a method), then the model-limited oracle.
    python supervised.py EPOCHS LR RUN_DIR SET_DIR   (RUN_DIR/cstar.npy from model_oracle.py)"""
import sys, time, numpy as np, torch
from continuousflex_geodl.core import inference, particles, losses, metrics
from continuousflex_geodl.core.models.data import make_batch
from continuousflex_geodl.core.models import imaging
torch.set_num_threads(2); torch.manual_seed(0)
RUN, SET = sys.argv[3], sys.argv[4]
epochs = int(sys.argv[1]); lr = float(sys.argv[2])
g = np.load(SET + '/ground_truth.npz'); fr = g['frame']; u = g['path_coord']; pf = g['frame_prob']; pcf = g['frame_path_coord']
C = np.load(RUN + '/cstar.npy')  # from model_oracle.py
model = inference.load_model(RUN + '/model'); pset = particles.load_particles(SET + '/particles.star')
W = losses.loss_weights(model); mask = imaging.circular_mask(model.loss_box, inference.TrainSettings.mask_radius)
strain = losses.KnnStrain(model.ref_pos.cpu().numpy(), 8)
def oracle(tag):
    ctx = inference._RefineContext(model, inference.TrainSettings.mask_radius, 1.0)
    nll = np.zeros((2000, 40))
    with ctx, torch.no_grad():
        for s in range(0, 2000, 100):
            ii = np.arange(s, s + 100); bb = make_batch(pset, ii, model); tgt = ctx.target(bb['F_loss'])
            for f in range(40):
                G = ctx.spectra(torch.as_tensor(C[f:f+1]).expand(100, -1), bb['rot'], bb['shifts'], bb['ctf_loss'])
                nll[ii, f] = ((tgt - G).abs() ** 2).sum((-2, -1)).double().numpy()
    lp = -nll + np.log(pf)[None]; w = np.exp(lp - lp.max(1, keepdims=True)); w /= w.sum(1, keepdims=True); pm = (w @ pcf)[:, None]
    print('%s: model oracle spearman %.4f knn %.4f within1 %.3f' % (tag, metrics.latent_spearman_pc1(pm, u), metrics.knn_neighbourhood_error(pm, u, 10), np.mean(abs(np.argmax(lp, 1) - fr) <= 1)), flush=True)
params = list(model.decoder.parameters())
for p in model.parameters(): p.requires_grad_(False)
for p in params: p.requires_grad_(True)
opt = torch.optim.Adam(params, lr=lr); t0 = time.time()
for ep in range(epochs):
    perm = np.random.default_rng(ep).permutation(2000); tot = 0
    for s in range(0, 2000, 32):
        idx = np.sort(perm[s:s+32]); b = make_batch(pset, idx, model)
        pos, amp = model.decode(torch.as_tensor(C[fr[idx]]))
        loss = losses.image_nll(b['F_loss'], model.render(pos, amp, b['rot'], b['shifts'], b['ctf_loss']), W, model.noise_var, mask) + strain(pos)
        opt.zero_grad(); loss.mean().backward(); opt.step(); tot += loss.sum().item()
    print('epoch %d loss %.3f %.0f s' % (ep, tot / 2000, time.time() - t0), flush=True)
model.eval()
oracle('supervised %d epochs' % epochs)
