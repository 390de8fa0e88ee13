"""Latent priors and their rate terms (nats per particle).

``GMMPrior`` -- the cryoTWIN trainable Gaussian-mixture prior.  The encoder
gives a deterministic z; during training uniform noise ``u ~ U(-T/2, T/2)^K``
is added (``perturb``), and the rate is ``-log Q(z~)`` with
``Q(z) = int_{box of side T around z} P_psi``.  For a mixture of diagonal
Gaussians this is ``sum_c pi_c prod_k [Phi((z_k + T/2 - mu_ck)/s_ck) -
Phi((z_k - T/2 - mu_ck)/s_ck)]``, evaluated in log space.  Paper settings:
K = 8, C = 100, T = 3, beta = 1/8.

``GaussianPrior`` -- the VAE alternative: the encoder gives a mean and a log
variance, ``perturb`` is the reparameterisation trick and the rate is
``KL(N(mu, s^2) || N(0, I))``.
"""
import math

import torch
import torch.nn as nn
from torch.special import log_ndtr


def log_diff_ndtr(a, b):
    """``log(Phi(b) - Phi(a))`` for a < b, stable in both tails."""
    # reflect into the lower tail, where log_ndtr is accurate
    flip = (a + b) > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    lhi = log_ndtr(hi)
    llo = log_ndtr(lo)
    return lhi + torch.log1p(-torch.exp((llo - lhi).clamp(max=-1e-7)))


class GMMPrior(nn.Module):
    """Trainable diagonal Gaussian mixture with the cryoTWIN box rate."""

    kind = 'gmm'
    stochastic_encoder = False

    def __init__(self, zdim, n_components=100, box=3.0, init_scale=None, seed=0):
        super().__init__()
        self.zdim = int(zdim)
        self.box = float(box)
        g = torch.Generator().manual_seed(int(seed))
        spread = init_scale if init_scale is not None else 2.0 * self.box
        self.means = nn.Parameter(torch.randn(n_components, self.zdim, generator=g) * spread)
        self.log_scales = nn.Parameter(torch.full((n_components, self.zdim),
                                                  math.log(spread)))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def perturb(self, z, generator=None, noise=None):
        """Training-time latent: z + U(-T/2, T/2) (``noise`` given or drawn)."""
        if noise is None:
            noise = torch.rand(z.shape, generator=generator, dtype=z.dtype) - 0.5
        return z + self.box * noise.to(z.device)

    def log_q(self, z):
        """log of the prior mass in the box of side T centred on each z: (B,)."""
        s = torch.exp(self.log_scales)
        h = 0.5 * self.box
        a = (z.unsqueeze(1) - h - self.means) / s  # (B, C, K)
        b = (z.unsqueeze(1) + h - self.means) / s
        per = log_diff_ndtr(a, b).sum(-1)  # (B, C)
        logw = torch.log_softmax(self.logits, 0)
        return torch.logsumexp(per + logw, dim=1)

    def log_density(self, z):
        """log P_psi(z) (mixture density), (B,)."""
        s = torch.exp(self.log_scales)
        x = (z.unsqueeze(1) - self.means) / s
        per = (-0.5 * x ** 2 - self.log_scales - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(per + torch.log_softmax(self.logits, 0), dim=1)

    def rate(self, z, logvar=None):
        """cryoTWIN rate ``-log Q(z)`` in nats, (B,)."""
        return -self.log_q(z)

    def sample(self, n, generator=None):
        """n samples from the mixture (numpy-free, torch)."""
        with torch.no_grad():
            c = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True,
                                  generator=generator)
            eps = torch.randn((n, self.zdim), generator=generator)
            return self.means[c] + eps * torch.exp(self.log_scales[c])


class GaussianPrior(nn.Module):
    """Standard normal prior with the VAE KL rate."""

    kind = 'gaussian'
    stochastic_encoder = True

    def __init__(self, zdim):
        super().__init__()
        self.zdim = int(zdim)

    def perturb(self, mu, logvar=None, generator=None, noise=None):
        if logvar is None:
            return mu
        if noise is None:
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * noise.to(mu.device)

    def rate(self, mu, logvar=None):
        if logvar is None:
            return 0.5 * (mu ** 2).sum(-1)
        return 0.5 * (mu ** 2 + torch.exp(logvar) - 1 - logvar).sum(-1)

    def log_density(self, z):
        return (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)


def make_prior(kind, zdim, n_components=100, box=3.0, seed=0):
    """'gmm' (cryoTWIN, default) or 'gaussian' (VAE KL)."""
    if kind == 'gmm':
        return GMMPrior(zdim, n_components, box, seed=seed)
    if kind in ('gaussian', 'vae', 'kl'):
        return GaussianPrior(zdim)
    raise ValueError("Unknown latent prior '%s': use 'gmm' (cryoTWIN trainable "
                     "Gaussian mixture) or 'gaussian' (VAE KL)." % kind)
