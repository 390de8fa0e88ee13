"""Projectors and volume rendering for Gaussian pseudo-atom clouds (torch).

One interface, several backends (``method``):

* ``'exact'``  separable splat: per image, 1D Gaussians along x and y per
  atom and one batched matrix product.  The value of the continuous line
  integral at every pixel centre.  Reference for the others; default for
  training on the CPU (exact position gradients).
* ``'fft'``    scatter to an oversampled grid, FFT, Gaussian as a Fourier
  multiplier.  Fast for large clouds; see ``FFT_TOLERANCE``.
* ``'keops'``  the exact sum reduced with KeOps lazy tensors (large clouds,
  GPU); agrees with ``'exact'`` to 1e-4 relative.

Conventions are those of ``core.__init__``: positions (N, 3) or (B, N, 3) in
A relative to the box centre, rotations (B, 3, 3) with image position
``(R x)[:2]``, shifts (B, 2) in A (molecule centre at box centre + t), CTF
values ``C`` (B, D, D) in the unshifted FFT layout; the image-formation
filter is ``-C`` (protein white).

A 3D Gaussian of amplitude a and width sigma integrates along z to the 2D
Gaussian ``a * sqrt(2 pi) * sigma * exp(-rho^2 / (2 sigma^2))``: projections
are line integrals in amplitude * A.
"""
import math

import numpy as np

from .render_fft import project_fft
from .render_keops import project_keops

#: relative L2 error bound of the 'fft' backend (default oversampling) against
#: 'exact' for sigma >= apix / 2: worst measured 2.6e-4 (see core.render_fft)
FFT_TOLERANCE = 1e-3


def pixel_coordinates(box, apix, dtype=None, device=None):
    """(D,) coordinates (A) of pixel centres, origin at pixel D // 2."""
    import torch
    return (torch.arange(box, dtype=dtype or torch.float32, device=device)
            - box // 2) * apix


#: exponents below this are clamped before exp: exp(-80) ~ 2e-35 is zero for
#: every purpose, and torch's exp is ~30x slower on inputs that underflow
#: (below about -87 in float32, -708 in float64), which Gaussian tails hit.
_EXP_FLOOR = -80.0


def _gauss(d, inv):
    """exp(-d^2 * inv) with the exponent clamped at ``_EXP_FLOOR`` (fast tails).

    In place wherever autograd allows: these (B, N, D) element-wise passes
    dominate the exact projector's cost (a negation alone took 30 % of the
    Gauss-Newton refinement)."""
    import torch
    e = d.square()
    e = e.mul(-inv) if torch.is_tensor(inv) and inv.requires_grad else e.mul_(-inv)
    e = e.clamp_(min=_EXP_FLOOR)
    return e.exp() if e.requires_grad else e.exp_()


def _prepare(positions, amplitudes, rotations, shifts):
    import torch
    B = rotations.shape[0]
    if positions.ndim == 2:
        positions = positions.unsqueeze(0).expand(B, -1, -1)
    if amplitudes.ndim == 1:
        amplitudes = amplitudes.unsqueeze(0).expand(B, -1)
    rotated = torch.einsum('bij,bnj->bni', rotations.to(positions.dtype), positions)
    uv = rotated[..., :2]
    if shifts is not None:
        uv = uv + shifts.to(positions.dtype).unsqueeze(1)
    return uv, amplitudes, rotated


#: each image's Gaussians are evaluated only within this many sigma of its
#: atoms (float32; float64: ``_REACH_F64``): exp(-7^2 / 2) ~ 2e-11 of the peak
#: is below the round-off of the sums, so the window changes nothing measurable
_REACH_F32 = 7.0
_REACH_F64 = 9.5


def _windows(coords, reach, box, apix):
    """Per image, the first of ``S`` pixels whose centres cover ``reach`` A
    around every atom of that image: (B,) long starts and the common size S."""
    import torch
    g0 = -(box // 2) * apix
    lo = torch.floor((coords.min(1).values - reach - g0) / apix).long().clamp(min=0)
    hi = torch.ceil((coords.max(1).values + reach - g0) / apix).long().clamp(max=box - 1)
    S = max(1, int((hi - lo).max()) + 1)
    return lo.clamp(max=box - S), S


def _project_exact(uv, amplitudes, sigma, box, apix):
    """Separable splat.  Per image, only the rows and columns within reach of
    its atoms are computed (the rest is zero to round-off): a compact
    molecule in a box of twice its size costs ~2-3x less."""
    import torch
    inv = 1.0 / (2.0 * sigma ** 2)
    sig = float(sigma.detach()) if torch.is_tensor(sigma) else float(sigma)
    reach = (_REACH_F64 if uv.dtype == torch.float64 else _REACH_F32) * sig
    B = uv.shape[0]
    grid = pixel_coordinates(box, apix, uv.dtype, uv.device)
    with torch.no_grad():
        x0, Sx = _windows(uv[..., 0], reach, box, apix)
        y0, Sy = _windows(uv[..., 1], reach, box, apix)
    whole = Sx >= box and Sy >= box
    if whole:  # one grid shared by every image
        gxs = gys = grid.view(1, 1, box)
    else:
        cols = x0.view(B, 1) + torch.arange(Sx, device=uv.device).view(1, Sx)  # (B, Sx)
        rows = y0.view(B, 1) + torch.arange(Sy, device=uv.device).view(1, Sy)
        gxs, gys = grid[cols].unsqueeze(1), grid[rows].unsqueeze(1)
    scale = (amplitudes * (math.sqrt(2 * math.pi) * sigma)).unsqueeze(-1)
    gx = _gauss(gxs - uv[..., 0:1], inv) * scale  # (B, N, Sx)
    gy = _gauss(gys - uv[..., 1:2], inv)          # (B, N, Sy)
    img = torch.bmm(gy.transpose(1, 2), gx)       # (B, Sy[y], Sx[x])
    if whole:
        return img
    bi = torch.arange(B, device=uv.device).view(B, 1, 1)
    return img.new_zeros((B, box, box)).index_put(
        (bi, rows.view(B, Sy, 1), cols.view(B, 1, Sx)), img)


def apply_ctf(images, ctf):
    """Image formation filter ``-C`` applied in Fourier space; (B, D, D)."""
    import torch
    f = torch.fft.fft2(images)
    return torch.fft.ifft2(f * (-ctf).to(f.dtype)).real


def fourier_shift(images, shifts, apix):
    """Translate images by sub-pixel ``shifts`` with a Fourier phase ramp.

    ``images`` (B, D, D) (or (D, D)) real torch tensor, ``shifts`` (B, 2) (or
    (2,)) as (tx, ty) in A; the content moves by +t: ``out(r) = in(r - t)``,
    i.e. a molecule centred at c ends up centred at c + t (periodic in the
    box).  Multiplies the spectrum by ``exp(-2 pi i s.t)`` (the real part of
    the inverse transform keeps the result real: symmetric Nyquist terms).
    Differentiable with respect to images and shifts.
    """
    import torch
    shifts = torch.as_tensor(shifts, dtype=images.dtype, device=images.device)
    if shifts.shape[-1] != 2:
        raise ValueError('shifts must be (..., 2) as (tx, ty) in A, got shape %s'
                         % (tuple(shifts.shape),))
    D = images.shape[-1]
    f = torch.fft.fftfreq(D, d=apix, dtype=images.dtype, device=images.device)
    phase = -2 * math.pi * (f.view(1, -1) * shifts[..., 0, None, None]
                            + f.view(-1, 1) * shifts[..., 1, None, None])
    ramp = torch.polar(torch.ones_like(phase), phase)
    return torch.fft.ifft2(torch.fft.fft2(images) * ramp).real


def project(positions, amplitudes, sigma, rotations, box, apix, shifts=None,
            ctf=None, method='exact'):
    """Render B projection images (B, D, D) of a Gaussian point cloud.

    ``positions`` (N, 3) shared or (B, N, 3) per image (deformed clouds),
    ``amplitudes`` (N,) or (B, N), ``sigma`` scalar in A, ``rotations``
    (B, 3, 3), ``shifts`` (B, 2) in A or None, ``ctf`` (B, D, D) CTF values
    (``core.ctf.compute_ctf`` on ``frequency_grid``) or None.
    Differentiable with respect to positions, amplitudes, rotations, shifts.
    """
    uv, amps, _ = _prepare(positions, amplitudes, rotations, shifts)
    if method == 'exact':
        img = _project_exact(uv, amps, sigma, box, apix)
    elif method == 'fft':
        img = project_fft(uv, amps, sigma, box, apix)
    elif method == 'keops':
        img = project_keops(uv, amps, sigma, box, apix)
    else:
        raise ValueError("Unknown projector '%s' (exact, fft, keops)" % method)
    if ctf is not None:
        img = apply_ctf(img, ctf)
    return img


def render_volume(positions, amplitudes, sigma, box, apix, chunk=4096):
    """Voxel volume (D, D, D) [iz, iy, ix] of the cloud, sampled at voxel centres.

    ``V(r) = sum_j a_j exp(-|r - x_j|^2 / (2 sigma^2))``; torch tensors in,
    torch tensor out (separable products, chunked over atoms).
    """
    import torch
    grid = pixel_coordinates(box, apix, positions.dtype, positions.device)
    inv = 1.0 / (2.0 * sigma ** 2)
    vol = torch.zeros((box, box * box), dtype=positions.dtype, device=positions.device)
    for s in range(0, positions.shape[0], chunk):
        p = positions[s:s + chunk]
        a = amplitudes[s:s + chunk]
        g = _gauss(grid.view(1, 1, -1) - p.unsqueeze(-1), inv)  # (n,3,D)
        gxy = (g[:, 1, :, None] * g[:, 0, None, :]).reshape(p.shape[0], -1)  # (n, D*D)
        vol += (g[:, 2, :] * a.unsqueeze(-1)).T @ gxy
    return vol.reshape(box, box, box)


def project_volume(volume, apix):
    """Line integral of a (D, D, D) [iz, iy, ix] volume along z: (D, D) in A units."""
    return volume.sum(0) * apix if hasattr(volume, 'sum') else np.sum(volume, 0) * apix
