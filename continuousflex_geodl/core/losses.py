"""Training losses (per particle, torch).

* ``image_nll`` -- the data term: Gaussian negative log-likelihood (nats) of
  the particle spectra given the rendered, CTF-modulated projection spectra,
  ``sum_f W(f) |F_i(f) - F_hat_i(f)|^2 / (2 s2)`` with ``s2`` the noise
  variance per ortho-FFT coefficient (= per pixel), optionally after a soft
  real-space mask of the residual.  Fourier weights W (low-pass) select the
  frequencies used.
* ``image_correlation`` -- alternative: 1 - Fourier-weighted correlation.
* ``loss_weights`` -- the Fourier low-pass weights W of a model's loss grid.
* ``knn_strain`` -- local distance preservation: mean over the reference
  k-nearest-neighbour edges of ``(|y_i - y_j| - |x_i - x_j|)^2`` (A^2).
* ``sinkhorn`` -- GeomLoss debiased Sinkhorn divergence (p = 2, A^2)
  between a deformed cloud and the reference, on random subsamples of at
  most ``n_points`` points (tensorized backend; ~0.2 s at 1,000 points on
  the CPU, so the trainer calls it every few steps).
"""
import numpy as np
import torch

from . import runtime
from .cloud import knn_graph
from .models import imaging


def loss_weights(model, device=None):
    """Fourier low-pass weights on the model's loss grid: the frequencies up
    to ``max(loss_resolution, 2 loss_apix)`` (Nyquist of the loss grid)."""
    res = max(model.loss_resolution, 2 * model.loss_apix)
    return imaging.lowpass_weights(model.loss_box, model.loss_apix, res, device=device)


def masked_residual(R, mask):
    """Apply a real-space mask (d, d) to residual spectra R (B, d, d)."""
    if mask is None:
        return R
    r = torch.fft.ifft2(R, norm='ortho').real * mask
    return torch.fft.fft2(r, norm='ortho')


def image_nll(F, F_hat, weights, noise_var, mask=None):
    """Per-particle Gaussian NLL (nats, up to a constant), (B,)."""
    R = masked_residual(F - F_hat, mask)
    return (weights * (R.real ** 2 + R.imag ** 2)).sum((-2, -1)) / (2.0 * noise_var)


def image_correlation(F, F_hat, weights, mask=None):
    """Per-particle ``1 - corr`` of Fourier-weighted spectra, (B,)."""
    if mask is not None:
        F = masked_residual(F, mask)
        F_hat = masked_residual(F_hat, mask)
    num = (weights * (F.conj() * F_hat).real).sum((-2, -1))
    den = torch.sqrt((weights * F.abs() ** 2).sum((-2, -1)) *
                     (weights * F_hat.abs() ** 2).sum((-2, -1)) + 1e-12)
    return 1.0 - num / den


class KnnStrain(torch.nn.Module):
    """Local distance preservation on the reference kNN graph (A^2 per edge).

    Edge vectors are one sparse product with the (E, N) incidence matrix.
    """

    def __init__(self, reference, k=8):
        super().__init__()
        ref = np.asarray(reference, dtype=np.float64)
        nbr = knn_graph(ref, k + 1)[:, 1:]
        i = np.repeat(np.arange(len(ref)), nbr.shape[1])
        j = nbr.ravel()
        d0 = np.sqrt(((ref[i] - ref[j]) ** 2).sum(-1))
        self.n = len(ref)
        e = np.arange(len(i))
        self.register_buffer('inc_idx', torch.as_tensor(np.stack([np.r_[e, e], np.r_[i, j]])))
        self.register_buffer('inc_val', torch.as_tensor(np.r_[np.ones(len(i)), -np.ones(len(i))],
                                                        dtype=torch.float32))
        self.register_buffer('d0', torch.as_tensor(d0, dtype=torch.float32))

    def forward(self, positions):
        B, N, _ = positions.shape
        inc = getattr(self, '_inc', None)
        if inc is None or inc.device != positions.device or inc.dtype != positions.dtype:
            inc = torch.sparse_coo_tensor(self.inc_idx, self.inc_val.to(positions.dtype),
                                          (len(self.d0), N), check_invariants=True).coalesce()
            self._inc = inc
        d = torch.sparse.mm(inc, positions.transpose(0, 1).reshape(N, B * 3))
        d = d.view(-1, B, 3)
        dist = torch.sqrt((d ** 2).sum(-1) + 1e-8)  # (E, B)
        return ((dist - self.d0[:, None]) ** 2).mean(0)


_SINKHORN = {}


def sinkhorn(x, y, blur=2.0, n_points=1000, generator=None, scaling=0.6):
    """Debiased Sinkhorn divergence S(x, y) (p = 2, A^2) of two (N, 3) clouds.

    Uniform weights; both clouds are randomly subsampled (same indices when
    they have the same size, i.e. atom correspondence is kept) to at most
    ``n_points`` points.  ``blur`` in A.
    """
    key = (float(blur), float(scaling))
    if key not in _SINKHORN:
        runtime.init_keops()
        from geomloss import SamplesLoss  # after init_keops: it sets the KeOps cache
        _SINKHORN[key] = SamplesLoss('sinkhorn', p=2, blur=blur, scaling=scaling,
                                     debias=True, backend='tensorized')
    if len(x) == len(y) and len(x) > n_points:
        sel = torch.randperm(len(x), generator=generator)[:n_points].to(x.device)
        x, y = x[sel], y[sel]
    else:
        if len(x) > n_points:
            x = x[torch.randperm(len(x), generator=generator)[:n_points].to(x.device)]
        if len(y) > n_points:
            y = y[torch.randperm(len(y), generator=generator)[:n_points].to(y.device)]
    return _SINKHORN[key](x, y)
