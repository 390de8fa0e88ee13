"""Fourier-space image handling shared by the encoder, the losses and inference.

All Fourier transforms here are ``torch.fft.fft2(..., norm='ortho')`` in the
unshifted layout, so white real-space noise of variance s2 per pixel has
variance s2 per Fourier coefficient whatever the box.  A *cropped* Fourier
grid (``fourier_crop``) keeps the low frequencies of a D-pixel image on a
d-pixel grid (pixel size ``apix * D / d``); a cloud rendered directly on that
grid has, after ``render_fourier``, the same coefficients as the cropped
transform of the full-size rendering (up to sampling aliasing of the
Gaussians, small when sigma >= the coarse pixel size / 1.5).

Conventions are those of ``core``: the image-formation filter is ``-C``
(protein white), shifts t in A put the molecule centre at box centre + t.
"""
import math

import numpy as np
import torch
import torch.nn.functional as Fnn

from ..ctf import compute_ctf
from ..geometry import euler_to_matrix
from ..render import _EXP_FLOOR, pixel_coordinates, project

_FREQ_CACHE = {}


def even_box(x):
    """Nearest even integer >= 8 (boxes are even)."""
    return max(8, int(round(x / 2.0)) * 2)


def crop_box_for_resolution(box, apix, resolution):
    """Smallest even box whose Nyquist frequency reaches ``resolution`` (A)."""
    if resolution is None or resolution <= 2 * apix:
        return int(box)
    return min(int(box), even_box(math.ceil(2.0 * box * apix / resolution)))


def freq_grid(box, apix, device=None):
    """(D, D, 2) torch float32 frequencies (fx, fy) in 1/A, unshifted layout."""
    key = (int(box), float(apix), str(device))
    if key not in _FREQ_CACHE:
        f = torch.fft.fftfreq(int(box), d=float(apix))
        fy, fx = torch.meshgrid(f, f, indexing='ij')
        _FREQ_CACHE[key] = torch.stack([fx, fy], -1).to(device=device,
                                                          dtype=torch.float32)
    return _FREQ_CACHE[key]


def ctf_values(ctf_params, box, apix, device=None):
    """CTF values C (B, D, D) float32 from (B, 7) parameters (core layout).

    ``ctf_params`` columns: dfu A, dfv A, dfang deg, voltage kV, cs mm, w,
    phase shift deg.  ``None`` gives an all-(-1) "CTF" (filter -C = 1, i.e. no
    CTF) of batch size 1 that broadcasts.
    """
    freqs = freq_grid(box, apix, device)
    if ctf_params is None:
        return -torch.ones((1, box, box), dtype=torch.float32, device=device)
    p = torch.as_tensor(np.asarray(ctf_params, dtype=np.float64)).to(
        device=device, dtype=torch.float64)
    fr = freqs.to(torch.float64)
    c = compute_ctf(fr, p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4], p[:, 5], p[:, 6])
    return c.to(torch.float32)


def fourier_crop(F, out_box):
    """Keep the central ``out_box`` frequencies of (B, D, D) unshifted spectra."""
    D = F.shape[-1]
    if out_box == D:
        return F
    h = out_box // 2
    idx = torch.cat([torch.arange(0, h), torch.arange(D - h, D)]).to(F.device)
    return F.index_select(-1, idx).index_select(-2, idx)


def fourier_shift(F, shifts, box, apix):
    """Translate images by ``shifts`` (B, 2) A: multiply by exp(-2 pi i f.t)."""
    freqs = freq_grid(box, apix, F.device)
    phase = -2 * math.pi * (freqs[..., 0] * shifts[:, 0, None, None]
                            + freqs[..., 1] * shifts[:, 1, None, None])
    return F * torch.polar(torch.ones_like(phase), phase)


def lowpass_weights(box, apix, resolution=None, edge=0.15, device=None):
    """(D, D) raised-cosine low-pass weights: 1 below 1/resolution, 0 above.

    ``edge`` is the relative width of the soft edge.  ``None`` keeps all
    frequencies up to Nyquist (corners included).
    """
    f = freq_grid(box, apix, device)
    s = torch.sqrt((f ** 2).sum(-1))
    if resolution is None:
        return torch.ones_like(s)
    sc = 1.0 / resolution
    lo = sc * (1 - edge)
    t = ((s - lo) / (sc - lo)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def circular_mask(box, radius_frac=0.9, edge_px=3.0, device=None):
    """(D, D) soft disc of radius ``radius_frac * D / 2`` pixels (cosine edge)."""
    c = torch.arange(box, dtype=torch.float32, device=device) - box // 2
    r = torch.sqrt(c[None, :] ** 2 + c[:, None] ** 2)
    r0 = radius_frac * box / 2.0
    t = ((r - (r0 - edge_px)) / edge_px).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * t))


def image_spectra(images, box_out=None):
    """Ortho FFT of real images (B, D, D), optionally cropped to ``box_out``."""
    F = torch.fft.fft2(images, norm='ortho')
    return F if box_out is None else fourier_crop(F, box_out)


def render_fourier(positions, amplitudes, sigma, rotations, box, apix, shifts,
                   ctf, full_box):
    """Spectra (B, d, d) of CTF-modulated projections rendered on a d-grid.

    The cloud is rendered with the exact separable projector on the d-pixel
    grid of pixel size ``apix`` (already the coarse one), transformed with the
    ortho FFT, scaled by ``full_box / d`` (so it matches ``image_spectra`` of
    full-size images cropped to d) and multiplied by ``-ctf``.  When ``ctf``
    is given on a larger (padded) grid of the same pixel size, the CTF is
    applied to the projection on that canvas and the central d x d window is
    kept (``FlexModel`` setting ``ctf_pad``).
    """
    pad = int(ctf.shape[-1]) if ctf is not None else box
    if pad <= box:
        img = project(positions, amplitudes, sigma, rotations, box, apix, shifts=shifts)
        F = torch.fft.fft2(img, norm='ortho') * (float(full_box) / box)
        if ctf is not None:
            F = F * (-ctf)
        return F
    # CTF on a padded canvas (``ctf`` given on a pad-pixel grid of the same
    # pixel size), then the central d x d window: the particle's own signal
    # that the CTF delocalises beyond the box leaves it, as in a particle
    # extracted from a micrograph, instead of wrapping around
    img = project(positions, amplitudes, sigma, rotations, pad, apix, shifts=shifts)
    img = torch.fft.ifft2(torch.fft.fft2(img) * (-ctf)).real
    o = pad // 2 - box // 2
    img = img[..., o:o + box, o:o + box]
    return torch.fft.fft2(img, norm='ortho') * (float(full_box) / box)


def rotate_inplane(images, psi_deg):
    """Undo the in-plane rotation psi: (B, d, d) images -> frame of psi = 0.

    The image of a pose (rot, tilt, psi) is the image of (rot, tilt, 0)
    rotated in-plane; this samples it back (bilinear) so that the result is
    the projection at (rot, tilt, 0).
    """
    B, d, _ = images.shape
    z = torch.zeros_like(psi_deg)
    Rp = euler_to_matrix(z, z, psi_deg)[:, :2, :2].to(images.dtype)  # u = Rp u0
    # grid_sample: output pixel u0 reads input at u = Rp u0 (normalised coords)
    theta = torch.zeros((B, 2, 3), dtype=images.dtype, device=images.device)
    theta[:, :, :2] = Rp
    # pixel centres: origin at index d//2 -> normalised offset for even boxes
    off = 1.0 / d  # align_corners=False: index d//2 is at +1/d
    theta[:, :, 2] = off - (Rp @ torch.full((2,), off, dtype=images.dtype,
                                           device=images.device))
    grid = Fnn.affine_grid(theta, (B, 1, d, d), align_corners=False)
    return Fnn.grid_sample(images.unsqueeze(1), grid, mode='bilinear',
                           padding_mode='zeros', align_corners=False).squeeze(1)


def mode_jacobian_images(positions, amplitudes, sigma, rotations, box, apix, shifts,
                         modes, n_groups=8, cutoff=None):
    """Real-space d(image)/d(mode amplitude), (B, M, d, d), at the reference.

    ``modes`` (N, 3, M) displacement fields (A per unit amplitude).  Analytic
    derivative of the exact separable projection (``render.project``): for
    atom j at image position (u, v), ``dI/du = a gy(y) gx'(x)`` with
    ``gx' = gx (x - u) / sigma^2``, so that

        J_m[y, x] = sum_n a_n (du_nm gy_n(y) gx'_n(x) + dv_nm gy'_n(y) gx_n(x)).

    The atoms of each image are sorted by v and cut into ``n_groups`` groups
    of equal size; a group only reaches the image rows (and columns) within
    ``cutoff`` sigma of its atoms, so its part of J is one matrix product per
    image, (rows x M) x (2 terms per atom) x columns (the mode projections
    folded into the y factors), added into those rows.  An atom farther than
    ``cutoff`` sigma contributes below ``exp(-cutoff^2 / 2)`` of its peak:
    2e-11 at the float32 default of 7 (float64: 9.5, 2e-20), below the
    round-off of the sums.  ``n_groups=1``: every atom on every row.  No
    Fourier scaling and no CTF: see ``mode_jacobian_spectra``.
    """
    B = rotations.shape[0]
    N, _, M = modes.shape
    dt, dev = positions.dtype, positions.device
    if cutoff is None:
        cutoff = 9.5 if dt == torch.float64 else 7.0
    grid = pixel_coordinates(box, apix, dt, dev)
    uv = torch.einsum('bij,nj->bni', rotations[:, :2, :].to(dt), positions)
    if shifts is not None:
        uv = uv + shifts.to(dt).unsqueeze(1)
    inv = 1.0 / (2.0 * sigma ** 2)
    isig2 = 1.0 / sigma ** 2
    dx = grid.view(1, 1, -1) - uv[..., 0:1]
    # exponent floored as in render._gauss: exp is ~30x slower on underflow
    gx = (-(dx * dx) * inv).clamp_(min=_EXP_FLOOR).exp_()
    # x factors of the two terms of each atom (B, N, 2, d): gx', gx
    Q = torch.stack([gx * dx * isig2, gx], 2)
    norm = math.sqrt(2 * math.pi) * sigma
    # image-plane displacement of each atom for each mode, times its weight
    duv = (torch.einsum('bij,njm->bnim', rotations[:, :2, :].to(dt), modes)
           * (amplitudes * norm).view(1, N, 1, 1)).contiguous()  # (B, N, 2, M)
    u = uv[..., 0].contiguous()
    v_sorted, order = torch.sort(uv[..., 1], dim=1)
    reach = float(cutoff) * float(sigma)
    g0 = float(grid[0])
    size = max(1, int(math.ceil(N / max(1, int(n_groups)))))
    base = (torch.arange(B, device=dev) * N).view(B, 1)
    base_rows = (torch.arange(B, device=dev) * box).view(B, 1)
    Jt = torch.zeros((B * box, M, box), dtype=dt, device=dev)  # (B y, m, x)
    for a in range(0, N, size):
        b = min(N, a + size)
        L = b - a
        vb = v_sorted[:, a:b]
        # rows within reach of the group in each image: S rows from r0
        r_lo = torch.floor((vb[:, 0] - reach - g0) / apix).clamp(min=0).long()
        r_hi = torch.ceil((vb[:, -1] + reach - g0) / apix).clamp(max=box - 1).long()
        S = int((r_hi - r_lo).max()) + 1
        if S <= 0:
            continue  # the whole group lies outside the image
        r0 = r_lo.clamp(max=box - S)
        rows = r0.view(B, 1) + torch.arange(S, device=dev).view(1, S)  # (B, S)
        flat = (order[:, a:b] + base).reshape(-1)
        w = duv.view(B * N, 2, M).index_select(0, flat).view(B, L, 2, M)
        # columns within reach of the group (all images)
        ub = u.view(-1).index_select(0, flat)
        x0 = max(0, int(math.floor((float(ub.min()) - reach - g0) / apix)))
        x1 = min(box, int(math.ceil((float(ub.max()) + reach - g0) / apix)) + 1)
        if x1 <= x0:
            continue
        q = Q.view(B * N, 2, box).index_select(0, flat).view(B, L * 2, box)[..., x0:x1]
        dy = grid[rows].unsqueeze(1) - vb.unsqueeze(-1)  # (B, L, S)
        gy = (-(dy * dy) * inv).clamp_(min=_EXP_FLOOR).exp_()
        # y factors of both terms times the mode weights, modes innermost
        P = w.unsqueeze(3) * torch.stack([gy, gy * dy * isig2], 2).unsqueeze(-1)
        Jb = torch.bmm(P.view(B, L * 2, S * M).transpose(1, 2), q)  # (B, y*M, x)
        Jt[:, :, x0:x1].index_add_(0, (rows + base_rows).view(-1),
                                   Jb.view(B * S, M, x1 - x0))
    return Jt.view(B, box, M, box).transpose(1, 2).contiguous()


def mode_jacobian_spectra(positions, amplitudes, sigma, rotations, box, apix,
                          shifts, ctf, full_box, modes):
    """Spectra of d(image)/d(mode amplitude), (B, M, d, d), at the reference.

    ``modes`` (N, 3, M) displacement fields (A per unit amplitude).
    ``mode_jacobian_images`` transformed with the ortho FFT, with the same
    Fourier scaling and ``-C`` as ``render_fourier``.
    """
    J = mode_jacobian_images(positions, amplitudes, sigma, rotations, box, apix, shifts,
                             modes)
    F = torch.fft.fft2(J, norm='ortho') * (float(full_box) / box)
    if ctf is not None:
        F = F * (-ctf).unsqueeze(1)
    return F


def mode_normal_equations(J, gain, residual, weights):
    """Normal equations of the linearised mode fit, from real-space Jacobians.

    With ``FJ = fft2(J, norm='ortho') * gain`` (the Jacobian spectra; ``gain``
    real, (B, d, d) or a scalar), returns

        f (B, M):    f_m  = Re sum_k conj(FJ_m(k)) residual(k)
        G (B, M, M): G_mn = Re sum_k weights(k) conj(FJ_m(k)) FJ_n(k)

    without forming ``FJ`` on the full grid: f by Parseval in real space
    (``J`` is real: ``f_m = sum_p J_m(p) Re(ifft2(gain * residual))(p)``), G
    on the half spectrum of ``rfft2`` (J real, so FJ(-k) = conj FJ(k) up to
    the gain: the term of -k equals that of k, weighted by its own
    ``gain^2 weights``) as one real matrix product on the stacked real and
    imaginary parts.  Exact (no symmetry of ``gain`` or ``weights`` assumed).
    """
    B, M, d, _ = J.shape
    Jf = J.reshape(B, M, d * d)
    rimg = torch.fft.ifft2(gain * residual, norm='ortho').real
    f = torch.bmm(Jf, rimg.reshape(B, d * d, 1)).squeeze(-1)
    K = (gain * gain) * weights
    K = torch.as_tensor(K, dtype=J.dtype, device=J.device).expand(B, d, d)
    h = d // 2 + 1
    neg = (-torch.arange(d, device=J.device)) % d
    Kneg = K.index_select(-2, neg).index_select(-1, neg[:h])  # K(-k), half plane
    col = torch.arange(h, device=J.device)
    paired = ((col != 0) & (2 * col != d)).to(K.dtype)  # columns whose -k is not in it
    Kh = K[..., :h] + Kneg * paired
    Y = torch.view_as_real(torch.fft.rfft2(J, norm='ortho')).reshape(B, M, d * h * 2)
    w = Kh.unsqueeze(-1).expand(B, d, h, 2).reshape(B, 1, d * h * 2)
    G = torch.bmm(Y * w, Y.transpose(1, 2))
    return f, G
