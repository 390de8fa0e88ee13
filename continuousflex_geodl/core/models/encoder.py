"""Amortised encoder: particle image (+ its CTF and pose) -> latent z.

Two input branches, either or both (``inputs``):

* ``'modes'`` (physics-informed, CTF- and pose-aware): for a basis of M
  smooth deformations of the reference (elastic-network modes), the
  per-particle linearised amplitude estimate
  ``a = (G + lambda I)^-1 J^T W (I - I_ref)`` where ``J`` are the
  CTF-modulated projections of the mode derivatives at the particle's pose,
  ``G = J^T W J`` (both in units of the noise variance, i.e. Fisher
  information) and ``I_ref`` the CTF-modulated reference projection -- the
  HEMNMA linear step, one pass per particle -- plus ``log(1 + diag G)`` (how
  visible each mode is in this view).  Computed in ``FlexModel.encoder_inputs``.
* ``'image'``: the phase-flipped (CTF-multiplied), re-centred, low-passed and
  cropped particle image, de-rotated in-plane by its psi, stacked with the
  reference projection processed identically (the difference shows the
  motion); a small CNN.

Inputs are standardised with statistics fixed at calibration (buffers); the
concatenated features go through an MLP to ``zdim`` (or ``2 zdim`` -- mean
and log variance -- for the VAE prior).
"""
import torch
import torch.nn as nn


class ImageCNN(nn.Module):
    """(B, C, d, d) -> (B, out): three strided convolutions and a linear layer."""

    def __init__(self, channels, box, out=128, width=16):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.net = nn.Sequential(
            nn.Conv2d(channels, c1, 5, stride=2, padding=2), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.SiLU())
        side = box
        for _ in range(3):
            side = (side + 1) // 2
        self.fc = nn.Linear(c3 * side * side, out)

    def forward(self, x):
        return self.fc(self.net(x).flatten(1))


class Encoder(nn.Module):
    """Features -> z (see module docstring)."""

    def __init__(self, zdim, n_mode_features=0, image_box=0, image_channels=2,
                 width=128, stochastic=False):
        super().__init__()
        self.zdim = int(zdim)
        self.stochastic = bool(stochastic)
        self.n_mode_features = int(n_mode_features)
        self.image_box = int(image_box)
        fin = 0
        if self.n_mode_features:
            self.register_buffer('feat_mean', torch.zeros(self.n_mode_features))
            self.register_buffer('feat_std', torch.ones(self.n_mode_features))
            fin += self.n_mode_features
        if self.image_box:
            self.register_buffer('img_std', torch.ones(image_channels))
            self.cnn = ImageCNN(image_channels, self.image_box, out=width)
            fin += width
        if fin == 0:
            raise ValueError("The encoder needs at least one input: 'modes' or 'image'.")
        out = 2 * self.zdim if self.stochastic else self.zdim
        self.mlp = nn.Sequential(nn.Linear(fin, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, out))

    def forward(self, mode_feats=None, images=None):
        parts = []
        if self.n_mode_features:
            parts.append((mode_feats - self.feat_mean) / self.feat_std)
        if self.image_box:
            parts.append(self.cnn(images / self.img_std.view(1, -1, 1, 1)))
        out = self.mlp(torch.cat(parts, -1))
        if self.stochastic:
            mu, logvar = out.chunk(2, -1)
            return mu, logvar.clamp(-12, 6)
        return out, None
