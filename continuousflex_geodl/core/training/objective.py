"""The training objective of one mini-batch, as a module (so that DDP can
wrap it): per-particle data term, latent rate, kNN strain, pose penalty,
the penalty on learned amplitudes below 1 (``learn_amplitudes``), and
the Sinkhorn divergence of a few deformed clouds to the reference."""
import torch
import torch.nn as nn

from .. import losses
from ..models import imaging


class LossModule(nn.Module):
    """Terms of the loss for a batch: ``forward(batch, noise, ot_local,
    ot_gens)`` returns a dict of per-particle ``data``, ``rate``, ``strain``
    (and ``pose``, ``amplitude``) tensors, and ``ot`` (stacked Sinkhorn divergences of the
    latents at positions ``ot_local``, or None)."""

    def __init__(self, model, train_cfg):
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.strain = losses.KnnStrain(model.ref_pos.cpu().numpy(), train_cfg['knn_k'])
        self.register_buffer('W', losses.loss_weights(model))
        mr = train_cfg['mask_radius']
        self.register_buffer('mask', imaging.circular_mask(model.loss_box, mr)
                             if mr else torch.ones(model.loss_box, model.loss_box))
        self.use_mask = bool(mr)

    def forward(self, batch, noise, ot_local, ot_gens):
        m = self.model
        cfg = self.train_cfg
        mu, logvar = m.encoder(*batch['enc_inputs'])
        if m.prior.stochastic_encoder:
            z = m.prior.perturb(mu, logvar, noise=noise)
            rate = m.prior.rate(mu, logvar)
        else:
            z = m.prior.perturb(mu, noise=noise)
            rate = m.prior.rate(z)
        pos, amp, learned = m.decode_all(z)
        R, t = m.poses(batch)
        Fh = m.render(pos, amp, R, t, batch['ctf_loss'])
        mask = self.mask if self.use_mask else None
        if cfg['loss'] == 'corr':
            data = losses.image_correlation(batch['F_loss'], Fh, self.W, mask) * \
                (self.W.sum() / (2.0 * m.noise_var))
        else:
            data = losses.image_nll(batch['F_loss'], Fh, self.W, m.noise_var, mask)
        strain = self.strain(pos)
        out = dict(data=data, rate=rate, strain=strain)
        if m.pose is not None:
            out['pose'] = m.pose.penalty(batch['idx_t'])
        if learned is not None:  # learned amplitudes below 1 cost w sum_j a0_j (1 - a_j)
            out['amplitude'] = cfg['w_amplitudes'] * ((1.0 - learned) * m.ref_amp).sum(-1)
        ot = []
        for j, g in zip(ot_local, ot_gens):
            ot.append(losses.sinkhorn(pos[j], m.ref_pos, blur=cfg['sinkhorn_blur'],
                                      n_points=cfg['sinkhorn_points'], generator=g))
        out['ot'] = torch.stack(ot) if ot else None
        return out


def make_loss_module(model, train_cfg, device):
    return LossModule(model, train_cfg).to(device)
