"""Calibration before training: intensity scale, noise variance and the
encoder's input standardisation, from the reference projections at the
particles' poses."""
import math

import numpy as np
import torch

from ..losses import loss_weights, masked_residual
from ..models import imaging
from ..models.data import make_batch


def calibrate(model, pset, n=512, batch_size=64, seed=0, device='cpu', mask_radius=0.9):
    """Set intensity scale, noise variance and encoder input statistics.

    Fits ``scale`` by least squares between the particles and the CTF-
    modulated reference projections at their poses (on ``n`` particles chosen
    with ``seed``), ``noise_var`` as the mean weighted residual power per
    Fourier coefficient, and the encoder's input standardisation.
    """
    rng = np.random.default_rng(int(seed) + 7919)
    sel = np.sort(rng.permutation(len(pset))[:min(n, len(pset))])
    W = loss_weights(model, device)
    mask = imaging.circular_mask(model.loss_box, mask_radius, device=device) \
        if mask_radius else None
    with torch.no_grad():
        model.log_scale.zero_()
        batches, scale = _reference_batches(model, pset, sel, batch_size, device, W, mask)
        res = wsum = 0.0
        for b, Fi_m, Fr_m in batches:
            res += float((W * (Fi_m - scale * Fr_m).abs() ** 2).sum())
            wsum += float(W.sum()) * Fi_m.shape[0]
        model.log_scale.fill_(math.log(scale))
        model.feat_log_scale.fill_(math.log(scale))
        model.feat_log_sigma.copy_(model.log_sigma.detach())
        model.noise_var.fill_(res / wsum)
        _standardise_encoder_inputs(model, [b for b, _, _ in batches])
    return dict(scale=scale, noise_var=res / wsum)


def _reference_batches(model, pset, sel, batch_size, device, W, mask):
    """The calibration batches with their masked particle and reference
    spectra, and the least-squares intensity scale."""
    num = den = 0.0
    batches = []
    for s in range(0, len(sel), batch_size):
        b = make_batch(pset, sel[s:s + batch_size], model, device)
        Fr = model.render(model.ref_pos, model.ref_amp, b['rot'], b['shifts'], b['ctf_loss'])
        Fi = b['F_loss']
        Fi_m, Fr_m = masked_residual(Fi, mask), masked_residual(Fr, mask)
        num += float((W * (Fi_m.conj() * Fr_m).real).sum())
        den += float((W * Fr_m.abs() ** 2).sum())
        batches.append((b, Fi_m, Fr_m))
    if den <= 0:
        raise ValueError('The reference renders to an empty image: check its '
                         'positions (A, about the box centre) and amplitudes.')
    scale = num / den
    if scale <= 0:
        raise ValueError(
            'The particles correlate negatively with the reference projections at '
            'their poses: the contrast is probably inverted (particles must be '
            '"protein white", as RELION stacks), or poses/CTF do not match.')
    return batches, scale


def _standardise_encoder_inputs(model, batches):
    """Mean / std of the encoder's mode features and image channels."""
    feats, imgs = [], []
    for b in batches:
        f, im = model.encoder_inputs(b)
        if f is not None:
            feats.append(f)
        if im is not None:
            imgs.append(im)
    enc = model.encoder
    if feats:
        f = torch.cat(feats)
        enc.feat_mean.copy_(f.mean(0))
        enc.feat_std.copy_(f.std(0).clamp_min(1e-6))
    if imgs:
        im = torch.cat(imgs)
        enc.img_std.copy_(im.std((0, 2, 3)).clamp_min(1e-6))
