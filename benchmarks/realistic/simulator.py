"""An independent cryo-EM particle simulator for all-atom structures.

Shares no code with ``continuousflex_geodl`` (it imports only numpy, scipy,
torch and mrcfile), so that a benchmark made with it does not flatter a
model built on the project's own Gaussian pseudo-atoms.

Physics and conventions
-----------------------
* **Atomic potential.**  Each atom scatters with the elastic electron
  scattering factor of its element in the five-Gaussian parametrisation of
  Peng, Ren, Dudarev & Whelan, Acta Cryst. A52 (1996) 257-276 (Table 1,
  0 <= s <= 2 A^-1): ``f(s) = sum_k a_k exp(-b_k s^2)`` (A), with
  ``s = q / 2`` (``q`` = spatial frequency, 1/A), times a Debye-Waller
  factor ``exp(-B s^2)``.  Each term is, in real space, a 3D Gaussian of
  integral ``a_k`` and variance ``(b_k + B) / (8 pi^2)`` per axis, so the
  projected potential of an atom is a sum of five 2D Gaussians whose total
  integral is ``f(0) = sum_k a_k``.  Hydrogens may be folded onto their
  heavy atom ("united atom": ``n_H`` times the hydrogen terms at the heavy
  atom's position).
* **Projection.**  Analytic per pixel: every Gaussian term is integrated
  over each pixel's area (products of error-function differences), on a
  window of +/- 5 sigma around the atom.  The 1D pixel integrals are read
  from a table over the atom's sub-pixel offset, linearly interpolated
  (relative error ~1e-7 against the direct error functions, ``exact=True``);
  ``fast=True`` (the oracle) reads the nearest table entry (~2e-5).
* **Orientation.**  ZYZ Euler angles (rot, tilt, psi) in degrees, RELION's
  ``Euler_angles2matrix``: ``A = Rz(psi) Ry(tilt) Rz(rot)`` with
  ``Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]``,
  ``Ry(b) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]``.  A volume point ``r``
  lands at image position ``(A r)[:2]``; the projection integrates along
  ``(A r)[2]``.  The third row of ``A`` is the viewing direction
  ``(cos rot sin tilt, sin rot sin tilt, cos tilt)``.
* **Image grid.**  Images ``[iy, ix]``; the centre of pixel ``i`` is at
  ``(i - D // 2) * apix`` (RELION).  In-plane shift ``t`` (A): the molecule
  centre lies at box centre + t; RELION stores ``rlnOriginXAngst = -t_x``
  (particle centre = box centre - origin).
* **CTF** (RELION / cryoDRGN sign):
  ``gamma = 2 pi (-1/2 df lambda q^2 + 1/4 Cs lambda^3 q^4) - phase_shift``,
  ``CTF = sqrt(1 - w^2) sin(gamma) - w cos(gamma)``, astigmatic defocus
  ``df(theta) = 1/2 [(dfu + dfv) + (dfu - dfv) cos 2(theta - theta_ast)]``,
  ``theta = atan2(qy, qx)``, relativistic wavelength.  Images are stored
  "protein white" like RELION particle stacks: the image is
  ``IFFT(-CTF * FFT(projection))``.  The CTF is applied on a canvas padded
  to ``pad`` times the box and the box is then cut out, so that, as in a
  micrograph, signal delocalised beyond the box is lost (no wrap-around).
* **Noise.**  White Gaussian noise of variance ``signal variance / SNR``,
  the signal variance being the mean over the data set of each clean image's
  variance over the box.
"""
import math
import os

import numpy as np

#: Peng et al. (1996), Table 1 (elastic, 0 <= s <= 2 A^-1): element -> (a_1..5 [A], b_1..5 [A^2])
PENG1996 = {
    'H': ((0.0349, 0.1201, 0.1970, 0.0573, 0.1195),
          (0.5347, 3.5867, 12.3471, 18.9525, 38.6269)),
    'C': ((0.0893, 0.2563, 0.7570, 1.0487, 0.3575),
          (0.2465, 1.7100, 6.4094, 18.6113, 50.2523)),
    'N': ((0.1022, 0.3219, 0.7982, 0.8197, 0.1715),
          (0.2451, 1.7481, 6.1925, 17.3894, 48.1431)),
    'O': ((0.0974, 0.2921, 0.6910, 0.6990, 0.2039),
          (0.2067, 1.3815, 4.6943, 12.7105, 32.4726)),
    'S': ((0.2497, 0.5628, 1.3899, 2.1865, 0.7715),
          (0.2681, 1.6711, 7.0267, 19.5377, 50.3888)),
}

WINDOW_SIGMAS = 5.0


def scattering_factor(element, s, bfactor=0.0):
    """Peng et al. f(s) in A at ``s = sin(theta)/lambda = q / 2`` (1/A), with B-factor."""
    a, b = (np.asarray(v, dtype=np.float64) for v in PENG1996[element])
    s = np.asarray(s, dtype=np.float64)[..., None]
    return (a * np.exp(-(b + bfactor) * s ** 2)).sum(-1)


class AtomTerms:
    """Gaussian terms of a set of atoms: ``amp`` (N, K) integrals and ``sigma``
    (N, K) widths (A) of the K terms of each atom (5, or 10 when hydrogens are
    folded onto heavy atoms; unused terms have amplitude 0).

    ``elements`` (N,) symbols; ``n_hydrogens`` (N,) hydrogens folded onto each
    atom (united-atom model) or None; ``bfactor`` A^2 (scalar or (N,)).
    """

    def __init__(self, elements, n_hydrogens=None, bfactor=20.0):
        elements = [str(e).strip().upper() for e in elements]
        n = len(elements)
        bf = np.broadcast_to(np.asarray(bfactor, dtype=np.float64), (n,))
        with_h = n_hydrogens is not None and np.any(np.asarray(n_hydrogens) > 0)
        K = 10 if with_h else 5
        self.amp = np.zeros((n, K))
        var = np.empty((n, K))
        ah, bh = (np.asarray(v) for v in PENG1996['H'])
        for i, el in enumerate(elements):
            if el not in PENG1996:
                raise ValueError('no scattering factor for element %r' % el)
            a, b = (np.asarray(v) for v in PENG1996[el])
            self.amp[i, :5] = a
            var[i, :5] = (b + bf[i]) / (8 * math.pi ** 2)
            if with_h:
                self.amp[i, 5:] = float(n_hydrogens[i]) * ah
                var[i, 5:] = (bh + bf[i]) / (8 * math.pi ** 2)
        self.sigma = np.sqrt(var)
        self.n_atoms = n

    def __len__(self):
        return self.n_atoms

    def total(self):
        """Sum of f(0) over atoms: the integral of the whole potential."""
        return float(self.amp.sum())

    def half_window(self, apix):
        """Half width (pixels) of the window that holds +/- WINDOW_SIGMAS sigma."""
        return int(math.ceil(WINDOW_SIGMAS * float(self.sigma.max()) / apix + 0.5))


# ----------------------------------------------------------------------------
# Rotations (RELION Euler_angles2matrix, written from the formula)
# ----------------------------------------------------------------------------

def euler_matrix(rot, tilt, psi):
    """ZYZ Euler angles in degrees (arrays of shape S) -> (S, 3, 3), RELION's matrix."""
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    m = np.empty(np.shape(a) + (3, 3))
    m[..., 0, 0] = cg * cb * ca - sg * sa
    m[..., 0, 1] = cg * cb * sa + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cb * ca - cg * sa
    m[..., 1, 1] = -sg * cb * sa + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sb * ca
    m[..., 2, 1] = sb * sa
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(m):
    """Inverse of ``euler_matrix`` (tilt in [0, 180]); (..., 3, 3) -> rot, tilt, psi (deg)."""
    m = np.asarray(m, dtype=np.float64)
    sb = np.hypot(m[..., 0, 2], m[..., 1, 2])
    tilt = np.arctan2(sb, m[..., 2, 2])
    rot = np.arctan2(m[..., 2, 1], m[..., 2, 0])
    psi = np.arctan2(m[..., 1, 2], -m[..., 0, 2])
    lock = sb < 1e-9  # tilt 0 or 180: put everything in psi
    rot = np.where(lock, 0.0, rot)
    psi = np.where(lock, np.arctan2(-m[..., 1, 0], m[..., 0, 0] * np.sign(m[..., 2, 2])), psi)
    return np.rad2deg(rot), np.rad2deg(tilt), np.rad2deg(psi)


def uniform_eulers(n, rng):
    """Uniformly distributed orientations (Haar measure on SO(3)) as Euler angles."""
    rot = rng.uniform(-180, 180, n)
    tilt = np.rad2deg(np.arccos(rng.uniform(-1, 1, n)))
    psi = rng.uniform(-180, 180, n)
    return np.stack([rot, tilt, psi], 1)


def axis_angle_matrix(v):
    """Rotation matrices (n, 3, 3) from rotation vectors ``v`` (n, 3) in radians (Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    th = np.linalg.norm(v, axis=1)
    k = v / np.maximum(th, 1e-300)[:, None]
    K = np.zeros((len(v), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s, c = np.sin(th)[:, None, None], np.cos(th)[:, None, None]
    return np.eye(3)[None] + s * K + (1 - c) * K @ K


def rotation_angle_deg(m1, m2):
    """Angle (deg) of the rotation m1 m2^T."""
    tr = np.einsum('nij,nij->n', m1, m2)
    return np.rad2deg(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


# ----------------------------------------------------------------------------
# CTF
# ----------------------------------------------------------------------------

def electron_wavelength(kv):
    """Relativistic electron wavelength (A): h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))."""
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = np.asarray(kv, dtype=np.float64) * 1e3
    return h / np.sqrt(2 * m0 * e * v * (1 + e * v / (2 * m0 * c ** 2))) * 1e10


def ctf_at(qx, qy, dfu, dfv, dfang, kv=300.0, cs_mm=2.7, w=0.1, phase_shift=0.0):
    """CTF at spatial frequencies (qx, qy) in 1/A (arrays broadcast together)."""
    q2 = qx ** 2 + qy ** 2
    theta = np.arctan2(qy, qx)
    lam = electron_wavelength(kv)
    df = 0.5 * ((dfu + dfv) + (dfu - dfv) * np.cos(2 * (theta - np.deg2rad(dfang))))
    gamma = 2 * np.pi * (-0.5 * df * lam * q2 + 0.25 * cs_mm * 1e7 * lam ** 3 * q2 ** 2) \
        - np.deg2rad(phase_shift)
    return np.sqrt(1 - w ** 2) * np.sin(gamma) - w * np.cos(gamma)


def ctf_2d(box, apix, dfu, dfv, dfang, kv=300.0, cs_mm=2.7, w=0.1, phase_shift=0.0):
    """CTF on the unshifted FFT grid of a (box, box) image [iy, ix]: (n, box, box) for
    (n,) parameters."""
    q = np.fft.fftfreq(box, d=apix)
    qy, qx = np.meshgrid(q, q, indexing='ij')
    p = [np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None, None]
         for v in (dfu, dfv, dfang, kv, cs_mm, w, phase_shift)]
    return ctf_at(qx[None], qy[None], *p)


# ----------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------

def _torch():
    import torch
    return torch


def _window_weights(torch, centre_px, sigma, apix, half):
    """Pixel integrals of 1D Gaussians on a window around each atom (exact, erf).

    ``centre_px`` (..., N) atom coordinate in pixels (pixel i's centre at i);
    ``sigma`` (N, K) A.  Returns the first pixel index (..., N) and the
    weights (..., N, K, W), W = 2 half + 1: the integral over pixel
    ``first + w`` of a unit 1D Gaussian of width sigma centred on the atom.
    """
    first = torch.round(centre_px).long() - half
    k = torch.arange(2 * half + 2, device=centre_px.device, dtype=centre_px.dtype)
    edges = first.to(centre_px.dtype)[..., None] + k - 0.5 - centre_px[..., None]  # (..., N, W+1)
    z = edges[..., None, :] * (apix / (math.sqrt(2.0) * sigma))[..., None]  # (..., N, K, W+1)
    cdf = 0.5 * torch.erf(z)
    return first, cdf[..., 1:] - cdf[..., :-1]


class _WeightTable:
    """``_window_weights`` tabulated over the sub-pixel offset of the atom and
    linearly interpolated (``n_grid`` intervals per pixel: relative error
    ~ (1 / n_grid)^2 (apix / sigma)^2 / 8, below 1e-6 here).  Atoms whose K
    widths are equal (same element and B-factor) share one table row."""

    def __init__(self, torch, sigma, apix, half, dtype, n_grid=2048):
        from scipy.special import erf
        rows, inv = np.unique(np.round(sigma, 12), axis=0, return_inverse=True)  # (C, K)
        self.cls = torch.as_tensor(inv.reshape(-1))                              # (N,)
        delta = np.linspace(-0.5, 0.5, n_grid + 1)                     # atom - window centre
        w = np.arange(-half, half + 2) - 0.5                           # edges rel. to centre pixel
        z = (w[None, None, None, :] - delta[None, :, None, None]) * apix / \
            (np.sqrt(2.0) * rows[:, None, :, None])                    # (C, G+1, K, W+1)
        cdf = 0.5 * erf(z)
        tab = cdf[..., 1:] - cdf[..., :-1]                             # (C, G+1, K, W)
        pair = np.stack([tab[:, :-1], tab[:, 1:] - tab[:, :-1]], 2)    # (C, G, 2, K, W)
        self.K, self.W = rows.shape[1], 2 * half + 1
        self.tab = torch.as_tensor(pair.reshape(-1, 2 * self.K * self.W), dtype=dtype)
        self.n_grid, self.half = n_grid, half

    def __call__(self, torch, centre_px):
        r = torch.round(centre_px)
        first = r.long() - self.half
        pos = (centre_px - r + 0.5).clamp(0, 1) * self.n_grid              # (..., N)
        j0 = pos.floor().long().clamp(max=self.n_grid - 1)
        frac = (pos - j0.to(pos.dtype))[..., None, None]
        rows = torch.nn.functional.embedding(self.cls * self.n_grid + j0, self.tab)
        rows = rows.reshape(rows.shape[:-1] + (2, self.K, self.W))
        return first, rows[..., 0, :, :] + frac * rows[..., 1, :, :]


class _NearestTable:
    """The fast path: ``_window_weights`` tabulated on a fine sub-pixel grid and
    read at the nearest grid point (no interpolation).  Relative error per
    pixel <= (1 / (2 n_grid)) apix / sigma (~2.4e-4 at 2 A/px, sigma 0.5 A,
    n_grid 16384); used by the oracle, where it changes log-likelihoods by
    ~1e-6 nats at SNR 0.1."""

    def __init__(self, torch, sigma, apix, half, dtype, n_grid=16384):
        from scipy.special import erf
        rows, inv = np.unique(np.round(sigma, 12), axis=0, return_inverse=True)
        self.cls = torch.as_tensor(inv.reshape(-1))
        delta = (np.arange(n_grid) + 0.5) / n_grid - 0.5               # bin centres
        w = np.arange(-half, half + 2) - 0.5
        tab = np.empty((len(rows), n_grid, rows.shape[1], 2 * half + 1))
        for c in range(len(rows)):
            z = (w[None, None, :] - delta[:, None, None]) * apix / (np.sqrt(2.0) *
                                                                     rows[c][None, :, None])
            cdf = 0.5 * erf(z)
            tab[c] = cdf[..., 1:] - cdf[..., :-1]
        self.K, self.W = rows.shape[1], 2 * half + 1
        self.tab = torch.as_tensor(tab.reshape(-1, self.K * self.W), dtype=dtype)
        self.n_grid, self.half = n_grid, half

    def __call__(self, torch, centre_px):
        r = torch.round(centre_px)
        first = r.long() - self.half
        j = ((centre_px - r + 0.5) * self.n_grid).long().clamp(0, self.n_grid - 1)
        rows = torch.nn.functional.embedding(self.cls * self.n_grid + j, self.tab)
        return first, rows.reshape(rows.shape[:-1] + (self.K, self.W))


def _scatter_windows(torch, out, first_list, kernel, box, margin):
    """Add per-atom window kernels (b, N, W, ..., W) into ``out`` (b * (box + 2 margin)**d),
    a canvas with ``margin`` extra pixels on each side (so every index is valid)."""
    d = len(first_list)
    W = kernel.shape[-1]
    Q = box + 2 * margin
    b = kernel.shape[0]
    base = None
    for first in first_list:  # slowest image axis first
        f = (first + margin).clamp(0, Q - W)
        base = f if base is None else base * Q + f
    base = base + (torch.arange(b) * Q ** d).reshape((b,) + (1,) * (base.dim() - 1))
    offs = torch.zeros((), dtype=torch.long)
    for axis in range(d):
        offs = offs[..., None] * Q + torch.arange(W)
    idx = base[..., None] + offs.reshape(-1)
    out.index_add_(0, idx.reshape(-1), kernel.reshape(-1).to(out.dtype))


def project(positions, terms, rotations, shifts, box, apix, dtype='float64', max_elems=4e6,
            exact=False, fast=False):
    """Projected potential images (n, box, box), pixel-integrated (sum = sum of f(0) inside).

    ``positions`` (N, 3) A (one structure for all images) or (n, N, 3) (one per
    image); ``rotations`` (n, 3, 3) (``euler_matrix``); ``shifts`` (n, 2) A
    (molecule centre at box centre + shift).  ``exact``: error functions per
    atom instead of the interpolated table (slower; equal to ~1e-7); ``fast``:
    the nearest-point table (``_NearestTable``, ~2e-4 relative per pixel).
    """
    torch = _torch()
    dt = getattr(torch, dtype)
    pos = torch.as_tensor(np.asarray(positions), dtype=dt)
    R = torch.as_tensor(np.asarray(rotations), dtype=dt)
    t = torch.as_tensor(np.asarray(shifts), dtype=dt)
    n = R.shape[0]
    amp = torch.as_tensor(terms.amp, dtype=dt)
    sig = torch.as_tensor(terms.sigma, dtype=dt)
    half = terms.half_window(apix)
    W = 2 * half + 1
    K = amp.shape[1]
    margin = half + 1
    Q = box + 2 * margin
    table = None if exact else (_NearestTable if fast else _WeightTable)(
        torch, terms.sigma, apix, half, dt)
    out = torch.zeros(n * Q * Q, dtype=dt)
    c = box // 2
    chunk = max(1, int(max_elems // (len(terms) * W * max(W, K))))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        p = pos if pos.dim() == 2 else pos[s:e]
        xyz = torch.einsum('bij,nj->bni', R[s:e], p) if pos.dim() == 2 else \
            torch.einsum('bij,bnj->bni', R[s:e], p)
        u = (xyz[..., :2] + t[s:e, None, :]) / apix + c            # (b, N, 2) pixels
        if table is None:
            fx, wx = _window_weights(torch, u[..., 0], sig, apix, half)  # (b, N, K, W)
            fy, wy = _window_weights(torch, u[..., 1], sig, apix, half)
        else:
            fx, wx = table(torch, u[..., 0])
            fy, wy = table(torch, u[..., 1])
        # per-atom 2D kernel: sum_k amp_k wy_k (outer) wx_k  -> (b, N, W, W)
        kern = torch.matmul((wy * amp[:, :, None]).transpose(-1, -2), wx)
        _scatter_windows(torch, out[s * Q * Q:e * Q * Q], [fy, fx], kern, box, margin)
    out = out.reshape(n, Q, Q)[:, margin:margin + box, margin:margin + box]
    return out.numpy().copy()


def potential_volume(positions, terms, box, apix, dtype='float64'):
    """3D potential on the (box,)^3 grid [iz, iy, ix], voxel-integrated, no CTF."""
    torch = _torch()
    dt = getattr(torch, dtype)
    pos = torch.as_tensor(np.asarray(positions), dtype=dt)[None]
    amp = torch.as_tensor(terms.amp, dtype=dt)
    sig = torch.as_tensor(terms.sigma, dtype=dt)
    half = terms.half_window(apix)
    margin = half + 1
    Q = box + 2 * margin
    u = pos / apix + box // 2
    fx, wx = _window_weights(torch, u[..., 0], sig, apix, half)
    fy, wy = _window_weights(torch, u[..., 1], sig, apix, half)
    fz, wz = _window_weights(torch, u[..., 2], sig, apix, half)
    kern = torch.einsum('nk,bnkz,bnky,bnkx->bnzyx', amp, wz, wy, wx)
    out = torch.zeros(Q ** 3, dtype=dt)
    _scatter_windows(torch, out, [fz, fy, fx], kern, box, margin)
    out = out.reshape(Q, Q, Q)[margin:margin + box, margin:margin + box, margin:margin + box]
    return out.numpy().copy()


def canvas_size(box, pad):
    P = int(round(pad * box))
    return P + P % 2


def ctf_filter_crop(canvas, ctf_params, apix, box):
    """``IFFT(-CTF * FFT(canvas))`` on the (n, P, P) canvas, then the central (box, box)."""
    n, P, _ = canvas.shape
    C = ctf_2d(P, apix, ctf_params['dfu'], ctf_params['dfv'], ctf_params['dfang'],
               ctf_params['kv'], ctf_params['cs'], ctf_params['w'], ctf_params['phase_shift'])
    img = np.fft.ifft2(-C * np.fft.fft2(canvas)).real
    off = P // 2 - box // 2
    return img[:, off:off + box, off:off + box]


def clean_images(positions, terms, rotations, shifts, ctf_params, box, apix, pad=2, **kw):
    """Noise-free CTF-modulated particle images (n, box, box) ("protein white").

    The projection is rendered on a canvas ``pad`` times the box (same centre),
    CTF-filtered there and cut back to the box.
    """
    P = canvas_size(box, pad)
    canvas = project(positions, terms, rotations, shifts, P, apix, **kw)
    return ctf_filter_crop(canvas, ctf_params, apix, box)


# ----------------------------------------------------------------------------
# Files: RELION 3.1 star, MRC, PDB (own writers)
# ----------------------------------------------------------------------------

def write_mrc(path, data, apix):
    import mrcfile
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = float(apix)
        if np.asarray(data).ndim == 3 and path.endswith('.mrcs'):
            m.set_image_stack()


def write_star(path, stack_name, euler, shifts, ctf, apix, box):
    """RELION 3.1 particle star; ``shifts`` t (A) -> rlnOriginXAngst/YAngst = -t."""
    kv, cs, w = float(ctf['kv'][0]), float(ctf['cs'][0]), float(ctf['w'][0])
    lines = ['', '# version 30001', '', 'data_optics', '', 'loop_',
             '_rlnOpticsGroupName #1', '_rlnOpticsGroup #2', '_rlnVoltage #3',
             '_rlnSphericalAberration #4', '_rlnAmplitudeContrast #5', '_rlnImagePixelSize #6',
             '_rlnImageSize #7', '_rlnImageDimensionality #8',
             'opticsGroup1 1 %.3f %.3f %.3f %.6f %d 2' % (kv, cs, w, apix, box), '', '',
             '# version 30001', '', 'data_particles', '', 'loop_']
    cols = ['rlnImageName', 'rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi', 'rlnOriginXAngst',
            'rlnOriginYAngst', 'rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnPhaseShift',
            'rlnOpticsGroup']
    lines += ['_%s #%d' % (c, i + 1) for i, c in enumerate(cols)]
    for i in range(len(euler)):
        lines.append('%06d@%s %.6f %.6f %.6f %.6f %.6f %.3f %.3f %.4f %.4f 1' % (
            i + 1, stack_name, euler[i, 0], euler[i, 1], euler[i, 2], -shifts[i, 0],
            -shifts[i, 1], ctf['dfu'][i], ctf['dfv'][i], ctf['dfang'][i], ctf['phase_shift'][i]))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def read_star_columns(path):
    """Minimal reader of the particles loop of ``write_star`` files (for tests):
    dict column -> list of strings."""
    with open(path) as f:
        text = f.read()
    block = text.split('data_particles', 1)[1]
    cols, rows = [], []
    for ln in block.splitlines():
        ln = ln.strip()
        if ln.startswith('_'):
            cols.append(ln.split()[0][1:])
        elif ln and not ln.startswith(('#', 'loop_')) and cols:
            rows.append(ln.split())
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def write_pdb(path, positions, elements, atom_names, res_names, res_ids, chain='A'):
    """PDB with element columns (all heavy atoms of one model)."""
    lines = []
    for i, (p, el, an, rn, ri) in enumerate(zip(positions, elements, atom_names, res_names,
                                                res_ids)):
        name = (' %-3s' % an) if len(an) < 4 else an[:4]
        lines.append('ATOM  %5d %4s %3s %1s%4d    %8.3f%8.3f%8.3f%6.2f%6.2f          %2s'
                     % ((i + 1) % 100000, name, rn[:3], chain, int(ri) % 10000, p[0], p[1],
                        p[2], 1.0, 20.0, el))
    lines += ['TER', 'END']
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


# ----------------------------------------------------------------------------
# The shipped trajectory
# ----------------------------------------------------------------------------

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


def load_adk(path=None):
    """The AdK closed -> open DIMS path (``extract_adk.py``): dict with
    ``coords`` (F, N, 3) float64 A, ``elements``, ``n_hydrogens``, names,
    ``path_coord`` (F,)."""
    z = np.load(path or os.path.join(DATA, 'adk_dims_heavy.npz'))
    d = {k: z[k] for k in z.files}
    d['coords'] = d.pop('coords_centi').astype(np.float64) / 100.0
    return d
