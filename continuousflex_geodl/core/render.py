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

#: relative L2 error bound of the 'fft' backend against 'exact' (see tests)
FFT_TOLERANCE = 0.02


def pixel_coordinates(box, apix, dtype=None, device=None):
    """(D,) coordinates (A) of pixel centres, origin at pixel D // 2."""
    import torch
    return (torch.arange(box, dtype=dtype or torch.float32, device=device)
            - box // 2) * apix


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


def _project_exact(uv, amplitudes, sigma, box, apix):
    import torch
    grid = pixel_coordinates(box, apix, uv.dtype, uv.device)
    inv = 1.0 / (2.0 * sigma ** 2)
    gx = torch.exp(-(grid.view(1, 1, -1) - uv[..., 0:1]) ** 2 * inv)  # (B, N, D)
    gy = torch.exp(-(grid.view(1, 1, -1) - uv[..., 1:2]) ** 2 * inv)
    gx = gx * (amplitudes * (math.sqrt(2 * math.pi) * sigma)).unsqueeze(-1)
    return torch.bmm(gy.transpose(1, 2), gx)  # (B, D[y], D[x])


def apply_ctf(images, ctf):
    """Image formation filter ``-C`` applied in Fourier space; (B, D, D)."""
    import torch
    f = torch.fft.fft2(images)
    return torch.fft.ifft2(f * (-ctf).to(f.dtype)).real


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
        from .render_fft import project_fft
        img = project_fft(uv, amps, sigma, box, apix)
    elif method == 'keops':
        from .render_keops import project_keops
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
        g = torch.exp(-(grid.view(1, 1, -1) - p.unsqueeze(-1)) ** 2 * inv)  # (n,3,D)
        gxy = (g[:, 1, :, None] * g[:, 0, None, :]).reshape(p.shape[0], -1)  # (n, D*D)
        vol += (g[:, 2, :] * a.unsqueeze(-1)).T @ gxy
    return vol.reshape(box, box, box)


def project_volume(volume, apix):
    """Line integral of a (D, D, D) [iz, iy, ix] volume along z: (D, D) in A units."""
    return volume.sum(0) * apix if hasattr(volume, 'sum') else np.sum(volume, 0) * apix
