"""Linearised normal-mode features of the encoder against the first implementation.

``imaging.mode_jacobian_images`` + ``imaging.mode_normal_equations`` (one
real matrix product for J, f by Parseval, G on the rfft half spectrum) must
give the features of the straightforward implementation they replaced
(copied below as the reference: J through (B, N, d, M) intermediates, its
full FFT, f and G as complex einsums over every frequency): exactly in
float64 (round-off only), to float32 round-off in float32.
"""
import math

import numpy as np
import pytest
import torch

from continuousflex_geodl.core.geometry import euler_to_matrix
from continuousflex_geodl.core.models import imaging
from continuousflex_geodl.core.models.nma import anm_modes
from continuousflex_geodl.core.models.toydata import two_domain_cloud
from continuousflex_geodl.core.render import pixel_coordinates


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


def reference_jacobian_spectra(positions, amplitudes, sigma, rotations, box, apix,
                               shifts, ctf, full_box, modes):
    """The first ``imaging.mode_jacobian_spectra`` (kept verbatim as the reference)."""
    B = rotations.shape[0]
    N, _, M = modes.shape
    grid = pixel_coordinates(box, apix, positions.dtype, positions.device)
    rot = torch.einsum('bij,nj->bni', rotations, positions)
    uv = rot[..., :2]
    if shifts is not None:
        uv = uv + shifts.unsqueeze(1)
    dx = grid.view(1, 1, -1) - uv[..., 0:1]
    dy = grid.view(1, 1, -1) - uv[..., 1:2]
    inv = 1.0 / (2.0 * sigma ** 2)
    gx = torch.exp(-dx ** 2 * inv)
    gy = torch.exp(-dy ** 2 * inv)
    norm = math.sqrt(2 * math.pi) * sigma
    a = (amplitudes * norm).view(1, N, 1)
    gxd = gx * dx / sigma ** 2
    gyd = gy * dy / sigma ** 2
    duv = torch.einsum('bij,njm->bnim', rotations[:, :2, :], modes)
    A = (a.unsqueeze(-1) * duv[:, :, 0, :].unsqueeze(2) * gxd.unsqueeze(-1))
    Bm = (a.unsqueeze(-1) * duv[:, :, 1, :].unsqueeze(2) * gx.unsqueeze(-1))
    A = A.reshape(B, N, box * M)
    Bm = Bm.reshape(B, N, box * M)
    J = torch.bmm(gy.transpose(1, 2), A) + torch.bmm(gyd.transpose(1, 2), Bm)
    J = J.reshape(B, box, box, M).permute(0, 3, 1, 2)
    F = torch.fft.fft2(J, norm='ortho') * (float(full_box) / box)
    if ctf is not None:
        F = F * (-ctf).unsqueeze(1)
    return F


def reference_encoder_inputs(model, batch):
    """The first ``FlexModel._encoder_inputs`` (verbatim): (mode features, images).
    Also the reference of ``benchmarks/bench_scale.py --runs fill``."""
    e, ea = model.enc_box, model.enc_apix
    R, t, C = batch['rot'], batch['shifts'], batch['ctf_enc']
    scale = torch.exp(model.feat_log_scale)
    sigma = torch.exp(model.feat_log_sigma)
    Fi = batch['F_enc']
    Fref = imaging.render_fourier(model.ref_pos, model.ref_amp, sigma, R, e, ea,
                                  t, C, model.box) * scale
    W = imaging.lowpass_weights(e, ea, model.config['enc_resolution'], device=Fi.device)
    J = reference_jacobian_spectra(model.ref_pos, model.ref_amp, sigma, R, e, ea,
                                   t, C, model.box, model.enc_modes) * scale
    r = (Fi - Fref) * W
    inv = 1.0 / model.noise_var
    f = torch.einsum('bmyx,byx->bm', J.conj(), r).real * inv
    G = torch.einsum('bmyx,bnyx->bmn', J.conj(), J * W.unsqueeze(0)).real * inv
    M = G.shape[-1]
    lam = float(model.config['mode_lambda'])
    a = torch.linalg.solve(G + lam * torch.eye(M, dtype=G.dtype), f.unsqueeze(-1))
    diag = torch.diagonal(G, dim1=-2, dim2=-1)
    feats = torch.cat([a.squeeze(-1), torch.log1p(diag)], -1)
    back = -t
    pi = imaging.fourier_shift(Fi * (-C) * W, back, e, ea)
    pr = imaging.fourier_shift(Fref * (-C) * W, back, e, ea)
    ii = torch.fft.ifft2(pi, norm='ortho').real
    ir = torch.fft.ifft2(pr, norm='ortho').real
    psi = batch['euler'][:, 2]
    images = torch.stack([imaging.rotate_inplane(ii, psi), imaging.rotate_inplane(ir, psi)], 1)
    return feats, images


def reference_mode_features(model, batch):
    """Mode features of ``reference_encoder_inputs``."""
    return reference_encoder_inputs(model, batch)[0]


def _setup(dtype, n_atoms=150, B=5, box=28, apix=3.0, M=6, seed=0):
    pos, _, _, _ = two_domain_cloud(n_atoms, 25.0, rng=seed)
    g = torch.Generator().manual_seed(seed)
    amp = (torch.rand(n_atoms, generator=g) + 0.5).to(dtype)
    modes = torch.as_tensor(anm_modes(pos, M)[0]).to(dtype)
    eul = torch.rand(B, 3, generator=g, dtype=torch.float64) * torch.tensor([360., 180., 360.])
    R = euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2]).to(dtype)
    sh = (torch.rand(B, 2, generator=g) * 6 - 3).to(dtype)
    df = np.linspace(9000, 22000, B)
    C = imaging.ctf_values(np.stack([df, df - 300, np.linspace(0, 170, B), np.full(B, 300.),
                                     np.full(B, 2.7), np.full(B, 0.1), np.zeros(B)], 1),
                           box, apix).to(dtype)
    return torch.as_tensor(pos).to(dtype), amp, R, sh, C, modes, box, apix


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_jacobian_spectra_match_reference(dtype, tol):
    pos, amp, R, sh, C, modes, box, apix = _setup(dtype)
    ref = reference_jacobian_spectra(pos, amp, 2.5, R, box, apix, sh, C, 48, modes)
    new = imaging.mode_jacobian_spectra(pos, amp, 2.5, R, box, apix, sh, C, 48, modes)
    assert new.shape == ref.shape == (R.shape[0], modes.shape[-1], box, box)
    assert float((new - ref).abs().max() / ref.abs().max()) < tol
    # any number of atom groups (1: every atom on every row; 150: one atom each)
    for groups in (1, 3, 8, 16, 150):
        J = imaging.mode_jacobian_images(pos, amp, 2.5, R, box, apix, sh, modes,
                                         n_groups=groups)
        F = torch.fft.fft2(J, norm='ortho') * (48.0 / box) * (-C).unsqueeze(1)
        assert float((F - ref).abs().max() / ref.abs().max()) < tol


@pytest.mark.parametrize('d', [12, 13])
def test_normal_equations_match_full_spectrum_sums(d):
    """f and G from the real-space J equal the complex sums over the full
    spectrum for arbitrary (asymmetric) real gains and weights, even and odd
    grids (float64: the identities are exact)."""
    g = torch.Generator().manual_seed(d)
    B, M = 3, 4
    J = torch.randn(B, M, d, d, generator=g, dtype=torch.float64)
    gain = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    W = torch.rand(d, d, generator=g, dtype=torch.float64) * (torch.rand(d, d, generator=g) > 0.3)
    r = torch.randn(B, d, d, generator=g, dtype=torch.complex128)
    FJ = torch.fft.fft2(J, norm='ortho') * gain.unsqueeze(1)
    f_ref = torch.einsum('bmyx,byx->bm', FJ.conj(), r).real
    G_ref = torch.einsum('bmyx,bnyx->bmn', FJ.conj(), FJ * W).real
    f, G = imaging.mode_normal_equations(J, gain, r, W)
    assert torch.allclose(f, f_ref, rtol=1e-12, atol=1e-12 * float(f_ref.abs().max()))
    assert torch.allclose(G, G_ref, rtol=1e-12, atol=1e-12 * float(G_ref.abs().max()))
    # a scalar gain (no CTF)
    f1, G1 = imaging.mode_normal_equations(J, 2.0, r, W)
    FJ1 = torch.fft.fft2(J, norm='ortho') * 2.0
    assert torch.allclose(G1, torch.einsum('bmyx,bnyx->bmn', FJ1.conj(), FJ1 * W).real,
                          rtol=1e-12, atol=1e-9)
    assert torch.allclose(f1, torch.einsum('bmyx,byx->bm', FJ1.conj(), r).real,
                          rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-9), (torch.float32, 1e-5)])
@pytest.mark.parametrize('enc_resolution', [8.0, 4.0])
def test_encoder_mode_features_match_reference(dtype, tol, enc_resolution):
    """Whole encoder inputs of a toy set (CTF, shifts, low-pass weights that
    vanish at the Nyquist rows (8 A) or not (4 A: the encoder grid is the full
    box)) against the first implementation; float32 error is round-off
    through the ridge solve."""
    from continuousflex_geodl.core import engine
    from continuousflex_geodl.core.models.data import make_batch
    from continuousflex_geodl.core.models.toydata import make_toy_particles
    parts, truth = make_toy_particles(n=10, box=48, apix=2.5, n_atoms=120, snr=1.0, seed=4)
    model = engine.build_model(dict(zdim=2, box=48, apix=2.5, sigma=truth['sigma'],
                                    enc_modes=5, enc_resolution=enc_resolution),
                               truth['reference'], truth['amplitudes'])
    model.noise_var.fill_(0.7)
    model.feat_log_scale.fill_(0.3)
    b = make_batch(parts, np.arange(10), model)
    if dtype == torch.float64:
        model = model.double()
        b = {k: (v.to(torch.complex128) if torch.is_tensor(v) and v.is_complex() else
                 v.double() if torch.is_tensor(v) and v.is_floating_point() else v)
             for k, v in b.items()}
    feats, images = model.encoder_inputs(b)
    with torch.no_grad():
        ref, ref_images = reference_encoder_inputs(model, b)
    assert feats.dtype == dtype and feats.shape == ref.shape == (10, 10)
    assert float((feats - ref).abs().max() / ref.abs().max()) < tol
    assert torch.equal(images, ref_images)  # the image inputs are computed as before
