"""Projectors (core.render, render_fft, render_keops): analytic values, the
projection / Fourier-slice theorems, shifts, CTF sign, backends and gradients."""
import math

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from continuousflex_geodl.core import ctf, geometry, render  # noqa: E402


def _cloud(n, radius, seed, dtype=torch.float64):
    """A compact positive cloud: n atoms in a few blobs within ``radius`` A."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 3)) * radius / 3
    pos = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 3)) * radius / 5
    keep = np.linalg.norm(pos, axis=1) < radius
    pos = pos[keep]
    amp = rng.uniform(0.5, 1.5, len(pos))
    return torch.tensor(pos, dtype=dtype), torch.tensor(amp, dtype=dtype)


def _rotations(n, seed, dtype=torch.float64):
    return torch.tensor(geometry.random_rotations(n, seed), dtype=dtype)


def _corr(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- exact path

def test_single_atom_projection_is_the_analytic_gaussian():
    box, apix, sigma = 32, 1.5, 2.0
    pos = torch.tensor([[3 * apix, -2 * apix, 7.0]], dtype=torch.float64)
    amp = torch.tensor([2.0], dtype=torch.float64)
    img = render.project(pos, amp, sigma, torch.eye(3, dtype=torch.float64)[None], box, apix)[0]
    c = (torch.arange(box, dtype=torch.float64) - box // 2) * apix
    yy, xx = torch.meshgrid(c, c, indexing='ij')
    ref = 2.0 * math.sqrt(2 * math.pi) * sigma * torch.exp(
        -((xx - 3 * apix) ** 2 + (yy + 2 * apix) ** 2) / (2 * sigma ** 2))
    torch.testing.assert_close(img, ref, rtol=1e-12, atol=1e-12)
    # the peak is at [iy, ix] = [D/2 - 2, D/2 + 3]
    assert divmod(int(img.argmax()), box) == (box // 2 - 2, box // 2 + 3)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_windowed_projection_is_the_direct_sum_of_every_gaussian(dtype):
    """Only pixels within reach of each image's atoms are computed: the image
    (and its gradients) must equal the sum over every atom at every pixel,
    written out here in numpy, for compact clouds, a cloud spread over the
    whole box and atoms beyond the box edge."""
    box, apix, sigma = 40, 2.0, 1.6
    c = (np.arange(box) - box // 2) * apix
    rng = np.random.default_rng(4)
    pos, amp = _cloud(60, 12.0, 1, dtype)
    spread = torch.tensor(rng.uniform(-45, 45, (60, 3)), dtype=dtype)  # beyond the +-40 A box
    for cloud in (pos, spread):
        R = _rotations(5, 2, dtype)
        t = torch.tensor(rng.normal(size=(5, 2)) * 3, dtype=dtype)
        x = cloud.clone().requires_grad_(True)
        img = render.project(x, amp, sigma, R, box, apix, shifts=t)
        uv = (np.einsum('bij,nj->bni', R.numpy()[:, :2].astype(np.float64),
                        cloud.numpy().astype(np.float64)) + t.numpy()[:, None])
        gx = np.exp(-(c[None, None] - uv[..., 0:1]) ** 2 / (2 * sigma ** 2))
        gy = np.exp(-(c[None, None] - uv[..., 1:2]) ** 2 / (2 * sigma ** 2))
        ref = np.einsum('bny,bnx,n->byx', gy, gx, amp.numpy()) * np.sqrt(2 * np.pi) * sigma
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        np.testing.assert_allclose(img.detach().numpy(), ref, atol=tol * ref.max())
        # gradients: same as the full-grid projector's
        w = torch.tensor(rng.normal(size=ref.shape), dtype=dtype)
        (g,) = torch.autograd.grad((img * w).sum(), x)
        saved = render._REACH_F32, render._REACH_F64
        render._REACH_F32 = render._REACH_F64 = 1e9  # every pixel
        try:
            x2 = cloud.clone().requires_grad_(True)
            full = render.project(x2, amp, sigma, R, box, apix, shifts=t)
            (g2,) = torch.autograd.grad((full * w).sum(), x2)
        finally:
            render._REACH_F32, render._REACH_F64 = saved
        np.testing.assert_allclose(g.numpy(), g2.numpy(), atol=tol * float(g2.abs().max()))


def test_render_volume_axes_and_values():
    box, apix, sigma = 24, 2.0, 2.5
    pos = torch.tensor([[3 * apix, -2 * apix, 5 * apix]], dtype=torch.float64)
    vol = render.render_volume(pos, torch.tensor([1.0], dtype=torch.float64), sigma, box, apix)
    assert tuple(vol.shape) == (box, box, box)
    iz, iy, ix = np.unravel_index(int(vol.argmax()), vol.shape)
    assert (iz, iy, ix) == (box // 2 + 5, box // 2 - 2, box // 2 + 3)
    assert float(vol.max()) == pytest.approx(1.0, abs=1e-12)
    # a voxel off the peak: exp(-|r - x|^2 / 2 sigma^2)
    r = np.array([1, 1, 0]) * apix            # voxel [iz, iy, ix] = [12, 13, 13] -> (x, y, z)
    d2 = ((r - pos[0].numpy()) ** 2).sum()
    assert float(vol[box // 2, box // 2 + 1, box // 2 + 1]) == pytest.approx(
        math.exp(-d2 / (2 * sigma ** 2)), rel=1e-12)


def test_projection_equals_line_integral_of_rotated_volume():
    box, apix, sigma = 32, 2.0, 3.0
    pos, amp = _cloud(300, 18.0, 0)
    R = _rotations(3, 1)
    proj = render.project(pos, amp, sigma, R, box, apix)
    for b in range(3):
        vol = render.render_volume(pos @ R[b].T, amp, sigma, box, apix)
        line = render.project_volume(vol, apix)
        assert _corr(proj[b], line) > 0.99
        # z sampling of a Gaussian with sigma >= apix is exact to ~exp(-2 pi^2 sigma^2/apix^2)
        assert _rel(line, proj[b]) < 1e-6


def test_fourier_slice_theorem_grid_aligned():
    """FFT2 of the projection = the central plane of the volume's 3D FFT.

    tilt = 90 (rot = psi = 0) maps image u -> -z, v -> y: the projection is
    along x, and its spectrum is the kx = 0 plane, kz reversed."""
    box, apix, sigma = 32, 2.0, 3.0
    pos, amp = _cloud(200, 18.0, 2)
    R = geometry.euler_to_matrix(torch.zeros(1, dtype=torch.float64),
                                 torch.full((1,), 90.0, dtype=torch.float64),
                                 torch.zeros(1, dtype=torch.float64))
    proj = render.project(pos, amp, sigma, R, box, apix)[0]
    V3 = torch.fft.fftn(render.render_volume(pos, amp, sigma, box, apix)) * apix
    P2 = torch.fft.fft2(proj)                          # [kv, ku]
    ku = torch.arange(box)
    slice_ = V3[(-ku) % box][:, :, 0]                  # [kz = -ku, ky, kx = 0] -> [ku, kv]
    slice_ = slice_.T                                  # [kv, ku]
    err = float((P2 - slice_).abs().norm() / P2.abs().norm())
    cc = float((P2 * slice_.conj()).sum().real / (P2.abs().norm() * slice_.abs().norm()))
    assert cc > 0.99 and err < 1e-6


def test_fourier_slice_theorem_oblique():
    """Same theorem for a general rotation: the 3D Fourier transform of the voxel
    volume evaluated on the rotated central plane k = R^T (ku, kv, 0)."""
    box, apix, sigma = 24, 2.0, 3.0
    pos, amp = _cloud(150, 13.0, 3)
    R = _rotations(1, 4)
    proj = render.project(pos, amp, sigma, R, box, apix)[0]
    vol = render.render_volume(pos, amp, sigma, box, apix)
    c = (torch.arange(box, dtype=torch.float64) - box // 2) * apix
    f = torch.fft.fftfreq(box, d=apix, dtype=torch.float64)
    kv, ku = torch.meshgrid(f, f, indexing='ij')
    k2 = torch.stack([ku.reshape(-1), kv.reshape(-1)], -1)         # (K, 2)
    k3 = k2 @ R[0, :2, :]                                         # R^T (ku, kv, 0): (K, 3)
    ph = lambda kk: torch.exp(-2j * math.pi * kk[:, None] * c[None, :])  # noqa: E731
    ex, ey, ez = ph(k3[:, 0]), ph(k3[:, 1]), ph(k3[:, 2])        # (K, D)
    volc = vol.to(torch.complex128)
    t = torch.einsum('zyx,kx->kzy', volc, ex)
    t = torch.einsum('kzy,ky->kz', t, ey)
    V = torch.einsum('kz,kz->k', t, ez) * apix ** 3
    P = torch.einsum('yx,kx,ky->k', proj.to(torch.complex128), ph(k2[:, 0]), ph(k2[:, 1])) \
        * apix ** 2
    cc = float((P * V.conj()).sum().real / (P.abs().norm() * V.abs().norm()))
    assert cc > 0.99
    assert float((P - V).abs().norm() / P.abs().norm()) < 1e-4


# ---------------------------------------------------------------- shifts

def test_fourier_shift_matches_shifted_positions():
    box, apix, sigma = 48, 1.5, 3.0
    pos, amp = _cloud(200, 18.0, 5)
    R = _rotations(4, 6)
    t = torch.tensor([[3.3, -1.7], [-7.2, 0.4], [0.75, 0.75], [0.0, 10.1]],
                     dtype=torch.float64)
    ref = render.project(pos, amp, sigma, R, box, apix, shifts=t)
    moved = render.fourier_shift(render.project(pos, amp, sigma, R, box, apix), t, apix)
    assert _rel(moved, ref) < 1e-5
    # content moves by +t: the centroid of a single atom lands at t
    one = render.project(torch.zeros(1, 3, dtype=torch.float64),
                         torch.ones(1, dtype=torch.float64),
                         sigma, R[:1], box, apix)
    img = render.fourier_shift(one, t[:1], apix)[0]
    c = (torch.arange(box, dtype=torch.float64) - box // 2) * apix
    cx = float((img.sum(0) * c).sum() / img.sum())
    cy = float((img.sum(1) * c).sum() / img.sum())
    assert (cx, cy) == pytest.approx((3.3, -1.7), abs=1e-6)


# ---------------------------------------------------------------- CTF

def _ctf_values(B, box, apix, dtype=torch.float64, w=0.1):
    freqs = torch.as_tensor(ctf.frequency_grid(box, apix), dtype=dtype)
    dfu = torch.linspace(12000, 20000, B, dtype=dtype)
    return ctf.compute_ctf(freqs, dfu, dfu - 800.0, torch.full((B,), 25.0, dtype=dtype),
                           torch.full((B,), 300.0, dtype=dtype),
                           torch.full((B,), 2.7, dtype=dtype), torch.full((B,), w, dtype=dtype))


def test_protein_white_ctf_image_correlates_with_projection():
    """With the image-formation filter -C, a positive cloud stays white at low
    resolution: mean(I) = w mean(P) exactly, and the image low-passed below the
    first CTF zero correlates positively with the projection."""
    box, apix, sigma = 64, 2.0, 2.5
    pos, amp = _cloud(500, 40.0, 7)
    R = _rotations(4, 8)
    C = _ctf_values(4, box, apix)
    proj = render.project(pos, amp, sigma, R, box, apix)
    img = render.project(pos, amp, sigma, R, box, apix, ctf=C)
    torch.testing.assert_close(img.mean((1, 2)), 0.1 * proj.mean((1, 2)), rtol=1e-10, atol=0)
    s = torch.as_tensor(ctf.frequency_grid(box, apix)).norm(dim=-1)
    first_zero = math.sqrt(1.0 / (20800.0 * ctf.electron_wavelength(300.0)))  # largest df
    lowpass = (s < 0.8 * first_zero).to(torch.float64)
    lp = lambda x: torch.fft.ifft2(torch.fft.fft2(x) * lowpass).real  # noqa: E731
    # below the first zero -C > 0 (and +C < 0) at every frequency, so the sign of
    # the correlation tells the convention apart: white particles correlate positively
    wrong = render.project(pos, amp, sigma, R, box, apix, ctf=-C)   # filter +C
    for b in range(4):
        assert _corr(lp(img[b]), proj[b]) > 0
        assert _corr(lp(wrong[b]), proj[b]) < 0


# ---------------------------------------------------------------- backends

@pytest.mark.parametrize('box,apix,sigma,n', [
    (32, 3.0, 1.5, 500),      # sigma = apix / 2: the hardest realistic sampling
    (64, 2.0, 1.5, 2000),
    (64, 1.0, 2.0, 5000),
    (128, 1.5, 3.0, 3000),
])
def test_fft_projector_matches_exact(box, apix, sigma, n):
    pos, amp = _cloud(n, 0.3 * box * apix, box + n)
    R = _rotations(3, n)
    t = torch.tensor(np.random.default_rng(n).normal(size=(3, 2)) * 2 * apix)
    ex = render.project(pos, amp, sigma, R, box, apix, shifts=t)
    for dtype in (torch.float64, torch.float32):
        ff = render.project(pos.to(dtype), amp.to(dtype), sigma, R.to(dtype), box, apix,
                            shifts=t.to(dtype), method='fft')
        assert ff.dtype == dtype and ff.shape == ex.shape
        for b in range(3):
            assert _rel(ff[b].double(), ex[b]) < render.FFT_TOLERANCE


def test_fft_projector_cloud_cut_by_box_edge():
    # part of the molecule outside the box (and some atoms far outside): the
    # padding must stop tails wrapping round, and far atoms must not reappear
    box, apix, sigma = 48, 2.0, 3.0
    pos, amp = _cloud(800, 30.0, 17)
    R = _rotations(2, 18)
    t = torch.tensor([[0.45 * box * apix, 0.0], [-0.3 * box * apix, 0.5 * box * apix]],
                     dtype=torch.float64)
    far = torch.tensor([[3.0 * box * apix, 0.0, 0.0], [0.0, -1.6 * box * apix, 0.0]],
                       dtype=torch.float64)
    pos = torch.cat([pos, far])
    amp = torch.cat([amp, torch.ones(2, dtype=torch.float64)])
    ex = render.project(pos, amp, sigma, R, box, apix, shifts=t)
    ff = render.project(pos, amp, sigma, R, box, apix, shifts=t, method='fft')
    for b in range(2):
        assert _rel(ff[b], ex[b]) < render.FFT_TOLERANCE


def test_fft_projector_gradient_matches_exact():
    box, apix, sigma = 48, 1.5, 3.0
    pos, amp = _cloud(400, 20.0, 9)
    R = _rotations(2, 10)
    target = torch.randn(2, box, box, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    grads = []
    for method in ('exact', 'fft'):
        p = pos.clone().requires_grad_()
        a = amp.clone().requires_grad_()
        loss = (render.project(p, a, sigma, R, box, apix, method=method) * target).sum()
        grads.append(torch.autograd.grad(loss, (p, a)))
    # gradients weigh high frequencies more: measured up to 4.7e-3 (core.render_fft)
    for g_fft, g_ex in zip(grads[1], grads[0]):
        assert _rel(g_fft, g_ex) < 10 * render.FFT_TOLERANCE


def test_fft_projector_gradcheck():
    from continuousflex_geodl.core.render_fft import project_fft
    rng = np.random.default_rng(11)
    uv = torch.tensor(rng.normal(size=(2, 5, 2)) * 3, requires_grad=True)
    a = torch.tensor(rng.uniform(0.5, 1.5, (2, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, w: project_fft(u, w, 2.0, 12, 1.5), (uv, a),
                                     fast_mode=True)


def test_keops_projector_matches_exact():
    """float32, one KeOps formula (forward only: each formula is ~6 s of g++)."""
    box, apix, sigma = 32, 2.0, 2.5
    pos, amp = _cloud(700, 0.3 * box * apix, 12, dtype=torch.float32)
    R = _rotations(3, 13, dtype=torch.float32)
    t = torch.tensor([[1.3, -2.2], [0.0, 0.5], [-3.1, 2.9]], dtype=torch.float32)
    ex = render.project(pos.double(), amp.double(), sigma, R.double(), box, apix,
                        shifts=t.double())
    ko = render.project(pos, amp, sigma, R, box, apix, shifts=t, method='keops')
    assert ko.dtype == torch.float32 and ko.shape == ex.shape
    for b in range(3):
        assert _rel(ko[b].double(), ex[b]) < 1e-4


def test_unknown_method_is_refused():
    pos, amp = _cloud(10, 5.0, 14)
    with pytest.raises(ValueError, match='exact, fft, keops'):
        render.project(pos, amp, 2.0, _rotations(1, 0), 16, 1.0, method='nufft')


# ---------------------------------------------------------------- gradients

def test_gradcheck_exact_projector_poses_and_structure():
    rng = np.random.default_rng(15)
    pos = torch.tensor(rng.normal(size=(4, 3)) * 3, requires_grad=True)
    amp = torch.tensor(rng.uniform(0.5, 1.5, 4), requires_grad=True)
    ang = torch.tensor([[20.0, 70.0, -30.0], [-100.0, 120.0, 45.0]], dtype=torch.float64,
                       requires_grad=True)
    sh = torch.tensor([[0.7, -0.4], [-1.1, 0.3]], dtype=torch.float64, requires_grad=True)
    box, apix, sigma = 10, 1.5, 1.8

    def f(p, a, e, t):
        R = geometry.euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
        return render.project(p, a, sigma, R, box, apix, shifts=t)

    assert torch.autograd.gradcheck(f, (pos, amp, ang, sh), fast_mode=True)
    C = _ctf_values(2, box, apix, w=0.1)

    def g(p, a, e, t):
        R = geometry.euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
        return render.project(p, a, sigma, R, box, apix, shifts=t, ctf=C)

    assert torch.autograd.gradcheck(g, (pos, amp, ang, sh), fast_mode=True)


def test_gradcheck_fourier_shift():
    rng = np.random.default_rng(16)
    img = torch.tensor(rng.normal(size=(2, 8, 8)), requires_grad=True)
    t = torch.tensor([[0.3, -1.2], [2.1, 0.6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, s: render.fourier_shift(i, s, 1.3), (img, t),
                                     fast_mode=True)
