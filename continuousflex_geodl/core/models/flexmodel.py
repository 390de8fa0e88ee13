"""The whole conformational model: reference cloud, encoder, decoder, prior.

``FlexModel(config, positions, amplitudes, enc_modes=None, dec_modes=None)``
is rebuilt from its JSON-able ``config`` and the reference arrays, so a model
directory (``config.json``, ``reference.npz``, ``weights.pt``) is enough to
use it again.  Learned globals: ``log_scale`` (particle / rendered intensity
ratio) and ``log_sigma`` (pseudo-atom width, A).

Pipeline for a batch (``models.data.make_batch``): ``encode`` -> z (B, K),
``decode`` -> deformed positions (B, N, 3) and amplitudes, ``render`` ->
CTF-modulated projection spectra on the loss grid, compared with the
particles' spectra in ``core.losses``.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from ..settings import ModelSettings
from . import imaging
from .decoder import ModeDecoder, PointDecoder
from .encoder import Encoder
from .nma import anm_modes
from .pose import PoseCorrection
from .prior import make_prior

#: defaults of every model setting (training ones: ``training.config.TRAIN_DEFAULTS``);
#: defined, with units and help, in ``core.settings.ModelSettings``
MODEL_DEFAULTS = ModelSettings.defaults()


def loss_resolution(value, apix, sigma):
    """Highest resolution (A) compared in the image loss.

    ``None`` (auto): where the pseudo-atoms' Gaussian envelope
    ``exp(-2 pi^2 sigma^2 s^2)`` falls to 2 % (``2.25 sigma``), since higher
    frequencies carry almost no model signal, only noise; never beyond
    Nyquist.  ``0``: Nyquist.  The loss is then computed on a Fourier-cropped
    grid, which makes training faster.
    """
    nyquist = 2.0 * apix
    if value is None:
        return max(nyquist, 2.25 * sigma)
    if float(value) <= 0:
        return nyquist
    return max(nyquist, float(value))


class FlexModel(nn.Module):
    """Reference + encoder + decoder + prior (+ pose corrections)."""

    def __init__(self, config, positions, amplitudes, enc_modes=None, dec_modes=None):
        super().__init__()
        cfg = dict(MODEL_DEFAULTS)
        cfg.update(config)
        self.config = cfg
        if cfg['box'] is None or cfg['apix'] is None or cfg['sigma'] is None:
            raise ValueError('FlexModel needs box, apix and sigma in its config.')
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.float32)
        amp = torch.as_tensor(np.asarray(amplitudes), dtype=torch.float32)
        self.register_buffer('ref_pos', pos)
        self.register_buffer('ref_amp', amp)
        self.box = int(cfg['box'])
        self.apix = float(cfg['apix'])
        self.loss_resolution = loss_resolution(cfg['loss_resolution'], self.apix,
                                               float(cfg['sigma']))
        self.loss_box = imaging.crop_box_for_resolution(self.box, self.apix,
                                                        self.loss_resolution)
        self.enc_box = imaging.crop_box_for_resolution(self.box, self.apix,
                                                       cfg['enc_resolution'])
        pad = float(cfg.get('ctf_pad') or 1.0)
        if pad < 1.0:
            raise ValueError('ctf_pad must be at least 1 (got %g).' % pad)
        #: canvas (px, loss pixel size) on which the CTF is applied in the loss
        self.loss_pad_box = imaging.even_box(int(round(self.loss_box * pad))) \
            if cfg['ctf'] and pad > 1.0 else self.loss_box
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(float(cfg['sigma']))))
        self.register_buffer('noise_var', torch.ones(()))
        # frozen at calibration: encoder inputs are a fixed function of the particle
        self.register_buffer('feat_log_scale', torch.zeros(()))
        self.register_buffer('feat_log_sigma', torch.tensor(math.log(float(cfg['sigma']))))
        zdim = int(cfg['zdim'])
        self.zdim = zdim
        # decoder
        if cfg['decoder'] == 'nma':
            if cfg.get('learn_amplitudes'):
                raise ValueError("learn_amplitudes needs the free-form decoder (decoder "
                                 "'free'), not normal modes.")
            if dec_modes is None:
                raise ValueError("decoder='nma' needs normal modes of the reference.")
            self.decoder = ModeDecoder(dec_modes, zdim, width=cfg['dec_width'])
        elif cfg['decoder'] == 'free':
            self.decoder = PointDecoder(pos.numpy(), zdim, width=cfg['dec_width'],
                                        n_conv=cfg['dec_conv'], k=cfg['dec_k'],
                                        amplitudes=cfg['dec_amplitudes'],
                                        smooth_steps=cfg['dec_smooth'],
                                        conditioning=cfg['dec_conditioning'],
                                        rank=cfg['dec_rank'],
                                        n_segments=cfg['dec_segments'], seed=cfg['seed'],
                                        learn_amplitudes=bool(cfg.get('learn_amplitudes')))
        else:
            raise ValueError("Unknown decoder '%s': use 'free' or 'nma'." % cfg['decoder'])
        # encoder
        inputs = set(str(cfg['encoder_inputs']).replace(',', '+').split('+'))
        unknown = inputs - {'modes', 'image'}
        if unknown:
            raise ValueError("Unknown encoder input(s) %s: use 'modes', 'image' or "
                             "'modes+image'." % sorted(unknown))
        self.use_modes = 'modes' in inputs
        self.use_image = 'image' in inputs
        n_feat = 0
        if self.use_modes:
            if enc_modes is None:
                raise ValueError("Encoder input 'modes' needs normal modes of the reference.")
            self.register_buffer('enc_modes', torch.as_tensor(np.asarray(enc_modes),
                                                              dtype=torch.float32))
            n_feat = 2 * self.enc_modes.shape[-1]
        self.prior = make_prior(cfg['prior'], zdim, cfg['gmm_components'],
                                cfg['gmm_box'], seed=cfg['seed'])
        self.encoder = Encoder(zdim, n_mode_features=n_feat,
                               image_box=self.enc_box if self.use_image else 0,
                               width=cfg['enc_width'],
                               stochastic=self.prior.stochastic_encoder)
        self.pose = PoseCorrection(cfg['n_particles'], rot_sd_deg=cfg['pose_rot_sd'],
                                   shift_sd=cfg['pose_shift_sd']) if cfg['refine_poses'] else None

    # ------------------------------------------------------------------ basics
    @property
    def sigma(self):
        return torch.exp(self.log_sigma)

    @property
    def loss_apix(self):
        return self.apix * self.box / self.loss_box

    @property
    def enc_apix(self):
        return self.apix * self.box / self.enc_box

    def decode(self, z):
        """Deformed clouds for latents z (B, K): positions (B, N, 3), amplitudes
        (N,), or (B, N) when they depend on z (``dec_amplitudes``, or
        ``learn_amplitudes``: the reference's times the learned ones of
        ``decode_all``)."""
        pos, amp, _ = self.decode_all(z)
        return pos, amp

    def decode_all(self, z):
        """``decode`` plus the learned amplitudes in [0, 1] (B, N) (None without
        ``learn_amplitudes``)."""
        if hasattr(self.decoder, 'forward_all'):
            disp, log_amp, learned = self.decoder.forward_all(z)
        else:
            (disp, log_amp), learned = self.decoder(z), None
        pos = self.ref_pos.unsqueeze(0) + disp
        amp = self.ref_amp if log_amp is None else self.ref_amp * torch.exp(log_amp)
        if learned is not None:
            amp = amp * learned
        return pos, amp, learned

    @property
    def learns_amplitudes(self):
        return getattr(self.decoder, 'amplitude_head', None) is not None

    def poses(self, batch):
        """Rotations and shifts, with the learned corrections when enabled."""
        if self.pose is None:
            return batch['rot'], batch['shifts']
        return self.pose(batch['idx_t'], batch['rot'], batch['shifts'])

    def render(self, positions, amplitudes, rotations, shifts, ctf):
        """Spectra on the loss grid of the CTF-modulated projections, scaled."""
        F = imaging.render_fourier(positions, amplitudes, self.sigma, rotations,
                                   self.loss_box, self.loss_apix, shifts, ctf, self.box)
        return F * torch.exp(self.log_scale)

    # ----------------------------------------------------------------- encoder
    @torch.no_grad()
    def encoder_inputs(self, batch, max_elements=2 ** 23):
        """(mode features (B, 2M) or None, images (B, 2, e, e) or None).

        Large clouds are processed in sub-batches of ``max_elements`` /
        (atoms x encoder box x modes) particles (12 at 800 atoms and a 52-px
        encoder grid): the temporary tensors stay small enough for the
        allocator to reuse their memory (fresh large ones cost page faults:
        2 ** 24 took ~470 faults and ~30 % more CPU time per particle).
        """
        B = batch['rot'].shape[0]
        per = self.ref_pos.shape[0] * self.enc_box * (
            self.enc_modes.shape[-1] if self.use_modes else 1)
        step = max(1, int(max_elements // max(per, 1)))
        if step >= B:
            return self._encoder_inputs(batch)
        keys = ('rot', 'shifts', 'ctf_enc', 'F_enc', 'euler')
        parts = [self._encoder_inputs({k: batch[k][s:s + step] for k in keys})
                 for s in range(0, B, step)]
        feats = torch.cat([p[0] for p in parts]) if parts[0][0] is not None else None
        images = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
        return feats, images

    def _encoder_inputs(self, batch):
        e, ea = self.enc_box, self.enc_apix
        R, t, C = batch['rot'], batch['shifts'], batch['ctf_enc']
        scale = torch.exp(self.feat_log_scale)
        sigma = torch.exp(self.feat_log_sigma)
        Fi = batch['F_enc']
        feats = images = None
        Fref = None
        if self.use_modes or self.use_image:
            Fref = imaging.render_fourier(self.ref_pos, self.ref_amp, sigma, R, e, ea,
                                          t, C, self.box) * scale
        W = imaging.lowpass_weights(e, ea, self.config['enc_resolution'],
                                    device=Fi.device)
        if self.use_modes:
            # Jacobian spectra FJ = fft2(J) * gain (``imaging.mode_jacobian_spectra``
            # times scale); f = Re <FJ_m, r>, G = Re <FJ_m, W FJ_n>, from the
            # real-space J without forming FJ on the full grid
            J = imaging.mode_jacobian_images(self.ref_pos, self.ref_amp, sigma, R, e, ea,
                                             t, self.enc_modes)
            gain = (float(self.box) / e) * scale
            if C is not None:
                gain = gain * (-C)
            r = (Fi - Fref) * W
            inv = 1.0 / self.noise_var
            f, G = imaging.mode_normal_equations(J, gain, r, W)
            f, G = f * inv, G * inv
            M = G.shape[-1]
            lam = float(self.config['mode_lambda'])
            a = torch.linalg.solve(G + lam * torch.eye(M, device=G.device), f.unsqueeze(-1))
            diag = torch.diagonal(G, dim1=-2, dim2=-1)
            feats = torch.cat([a.squeeze(-1), torch.log1p(diag)], -1)
        if self.use_image:
            # CTF-multiplied (phase-flipped and weighted), re-centred, low-passed
            Cc = C
            back = (-t) if t is not None else None
            pi = Fi * (-Cc) * W
            pr = Fref * (-Cc) * W
            if back is not None:
                pi = imaging.fourier_shift(pi, back, e, ea)
                pr = imaging.fourier_shift(pr, back, e, ea)
            ii = torch.fft.ifft2(pi, norm='ortho').real
            ir = torch.fft.ifft2(pr, norm='ortho').real
            psi = batch['euler'][:, 2]
            images = torch.stack([imaging.rotate_inplane(ii, psi),
                                  imaging.rotate_inplane(ir, psi)], 1)
        return feats, images

    def encode(self, batch, inputs=None):
        """Latent mean (B, K) and log variance (VAE) or None."""
        feats, images = self.encoder_inputs(batch) if inputs is None else inputs
        return self.encoder(feats, images)

    # ------------------------------------------------------------- persistence
    def arrays(self):
        """Reference and basis arrays needed to rebuild the model (numpy)."""
        out = dict(positions=self.ref_pos.cpu().numpy(),
                   amplitudes=self.ref_amp.cpu().numpy(),
                   sigma=np.float32(float(self.config['sigma'])))
        if self.use_modes:
            out['enc_modes'] = self.enc_modes.cpu().numpy()
        if isinstance(self.decoder, ModeDecoder):
            out['dec_modes'] = self.decoder.modes.cpu().numpy()
        return out


def build_model(model_cfg, positions, amplitudes, enc_modes=None, dec_modes=None):
    """FlexModel from settings and reference arrays; computes the normal-mode
    bases it needs when not given (deterministic: the weights are
    initialised from ``seed``)."""
    cfg = dict(MODEL_DEFAULTS)
    cfg.update(model_cfg)
    inputs = str(cfg['encoder_inputs'])
    if 'modes' in inputs and enc_modes is None:
        enc_modes, _ = anm_modes(positions, n_modes=int(cfg['enc_modes']))
    if cfg['decoder'] == 'nma' and dec_modes is None:
        n = int(cfg['nma_modes']) or 10
        cfg['nma_modes'] = n
        dec_modes, _ = anm_modes(positions, n_modes=n)
    torch.manual_seed(int(cfg['seed']))
    return FlexModel(cfg, positions, amplitudes, enc_modes, dec_modes)
