"""Contrast transfer function (docs/DESIGN.md / RELION / cryoDRGN sign convention).

``gamma(s) = 2 pi (-1/2 df lambda s^2 + 1/4 Cs lambda^3 s^4) - phase_shift``
``C = sqrt(1 - w^2) sin(gamma) - w cos(gamma)``, times ``exp(-B s^2 / 4)``
when a B-factor is given.  ``C`` is negative at zero frequency; particle
stacks are "protein white", so the image-formation filter is ``-C``
(see ``core.__init__``).

Units: defocus in A (positive = underfocus), astigmatism angle in degrees,
voltage in kV, Cs in mm, amplitude contrast w as a fraction, phase shift in
degrees (missing = 0), B-factor in A^2, frequencies in 1/A.
"""
import numpy as np


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in A (0.0197 A at 300 kV)."""
    v = np.asarray(voltage_kv, dtype=np.float64) * 1e3
    return 12.2643247 / np.sqrt(v * (1.0 + v * 0.978466e-6))


def frequency_grid(box, apix, lib=np):
    """(D, D, 2) frequencies (fx, fy) in 1/A, unshifted FFT layout, [iy, ix]."""
    f = np.fft.fftfreq(box, d=apix)
    fy, fx = np.meshgrid(f, f, indexing='ij')
    grid = np.stack([fx, fy], axis=-1)
    if lib is np:
        return grid
    return lib.as_tensor(grid)


def compute_ctf(freqs, dfu, dfv, dfang, voltage, cs, w, phase_shift=0.0,
                bfactor=None):
    """CTF values at ``freqs`` (..., 2) in 1/A.

    Parameters are scalars or arrays of shape (B,) (one per image); the
    result then has shape (B, ...).  Works with numpy arrays or torch
    tensors (``freqs`` decides).
    """
    is_np = isinstance(freqs, np.ndarray)
    if is_np:
        lib = np
        p = [np.asarray(v, dtype=np.float64) for v in
             (dfu, dfv, dfang, voltage, cs, w, phase_shift)]
    else:
        import torch
        lib = torch
        p = [torch.as_tensor(v, dtype=freqs.dtype, device=freqs.device) for v in
             (dfu, dfv, dfang, voltage, cs, w, phase_shift)]
    dfu, dfv, dfang, voltage, cs, w, phase_shift = p
    nd = freqs.ndim - 1
    batched = dfu.ndim > 0

    def bc(v):  # broadcast a per-image parameter over the frequency axes
        v = v.reshape(v.shape + (1,) * nd) if v.ndim > 0 else v
        return v

    lam = electron_wavelength(voltage.cpu().numpy() if not is_np else voltage)
    lam = bc(lib.as_tensor(lam, dtype=freqs.dtype, device=freqs.device)
             if not is_np else lam)
    fx, fy = freqs[..., 0], freqs[..., 1]
    if batched:
        fx, fy = fx[None], fy[None]
    s2 = fx ** 2 + fy ** 2
    ang = lib.arctan2(fy, fx)
    dfang = bc(dfang) * np.pi / 180.0
    df = 0.5 * (bc(dfu) + bc(dfv) + (bc(dfu) - bc(dfv)) * lib.cos(2 * (ang - dfang)))
    cs_a = bc(cs) * 1e7
    gamma = 2 * np.pi * (-0.5 * df * lam * s2 + 0.25 * cs_a * lam ** 3 * s2 ** 2) \
        - bc(phase_shift) * np.pi / 180.0
    w = bc(w)
    c = lib.sqrt(1 - w ** 2) * lib.sin(gamma) - w * lib.cos(gamma)
    if bfactor is not None:
        b = bc(lib.as_tensor(bfactor, dtype=freqs.dtype, device=freqs.device)
               if not is_np else np.asarray(bfactor, dtype=np.float64))
        c = c * lib.exp(-b / 4.0 * s2)
    return c
