"""Model building blocks against independent references (fast).

Image handling (in-plane de-rotation, mode Jacobians by finite differences,
Fourier cropping), elastic-network modes (eigen-equation, rigid-body
orthogonality), priors (cryoTWIN box mass by numerical integration, VAE KL
by torch.distributions), pose corrections (scipy Rotation), decoders
(identity at start, capacity to represent a hinge), geometric losses
(rigid invariance, Sinkhorn of a translation), reference building.
"""
import math

import numpy as np
import pytest
import torch

from continuousflex_geodl.core.geometry import euler_to_matrix
from continuousflex_geodl.core.models import imaging
from continuousflex_geodl.core.models.nma import anm_hessian, anm_modes
from continuousflex_geodl.core.models.toydata import hinge_deform, two_domain_cloud
from continuousflex_geodl.core.render import project


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def cloud():
    pos, mask, hinge, axis = two_domain_cloud(160, 22.0, rng=0)
    return pos, mask, hinge, axis


def test_rotate_inplane_undoes_psi(cloud):
    pos = torch.as_tensor(cloud[0], dtype=torch.float32)
    amp = torch.ones(len(pos))
    eul = torch.tensor([[30., 60., 75.], [120., 20., -140.], [0., 90., 200.]])
    R = euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2]).float()
    R0 = euler_to_matrix(eul[:, 0], eul[:, 1], 0 * eul[:, 2]).float()
    img = project(pos, amp, 3.0, R, 48, 2.0)
    ref = project(pos, amp, 3.0, R0, 48, 2.0)
    back = imaging.rotate_inplane(img, eul[:, 2])
    for a, b in zip(back, ref):
        corr = float((a * b).sum() / a.norm() / b.norm())
        assert corr > 0.999
    # psi = 0 is the identity
    same = imaging.rotate_inplane(ref, torch.zeros(3))
    assert torch.allclose(same, ref, atol=1e-4 * float(ref.abs().max()))


def test_mode_jacobian_matches_finite_differences(cloud):
    pos = torch.as_tensor(cloud[0], dtype=torch.float32)
    amp = torch.rand(len(pos), generator=torch.Generator().manual_seed(0)) + 0.5
    modes = torch.as_tensor(anm_modes(cloud[0], 6)[0])
    eul = torch.tensor([[10., 50., 20.], [200., 120., -30.]])
    R = euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2]).float()
    sh = torch.tensor([[1.5, -2.0], [0.0, 3.0]])
    C = imaging.ctf_values(np.array([[15000, 14000, 30, 300, 2.7, 0.1, 0]] * 2), 24, 3.0)
    J = imaging.mode_jacobian_spectra(pos, amp, 2.5, R, 24, 3.0, sh, C, 36, modes)
    eps = 1e-2
    for m in range(6):
        Fp = imaging.render_fourier(pos + eps * modes[:, :, m], amp, 2.5, R, 24, 3.0, sh, C, 36)
        Fm = imaging.render_fourier(pos - eps * modes[:, :, m], amp, 2.5, R, 24, 3.0, sh, C, 36)
        fd = (Fp - Fm) / (2 * eps)
        assert float((fd - J[:, m]).abs().norm() / fd.abs().norm()) < 2e-3


def test_render_fourier_on_cropped_grid_matches_cropped_spectrum(cloud):
    """A cloud rendered on a coarse grid has the cropped spectrum of the fine one."""
    pos = torch.as_tensor(cloud[0], dtype=torch.float32)
    amp = torch.ones(len(pos))
    R = torch.as_tensor(euler_to_matrix(np.array([40.]), np.array([70.]), np.array([10.])),
                        dtype=torch.float32)
    sigma = 4.0
    fine = torch.fft.fft2(project(pos, amp, sigma, R, 64, 2.0), norm='ortho')
    coarse = imaging.render_fourier(pos, amp, sigma, R, 32, 4.0, None, None, 64)
    crop = imaging.fourier_crop(fine, 32)
    err = float((coarse - crop).abs().norm() / crop.abs().norm())
    assert err < 0.02  # aliasing of the Gaussians sampled on the coarse grid


def test_anm_modes_eigen_and_rigid_orthogonality(cloud):
    pos = cloud[0]
    modes, lam = anm_modes(pos, n_modes=8, cutoff=12.0)
    H = anm_hessian(pos, 12.0).toarray()
    n = len(pos)
    V = modes.reshape(3 * n, 8)
    # eigen-equation H v = lambda v (modes are scaled eigenvectors)
    assert np.allclose(H @ V, V * lam[None, :], atol=1e-6 * np.abs(H).max() * np.abs(V).max())
    assert np.all(lam > 1e-8) and np.all(np.diff(lam) >= -1e-9)
    # unit RMS displacement per atom
    assert np.allclose((modes ** 2).sum((0, 1)) / n, 1.0, rtol=1e-5)
    # orthogonal to rigid translations and rotations
    c = pos - pos.mean(0)
    rigid = [np.tile(e, (n, 1)).ravel() for e in np.eye(3)]
    rigid += [np.cross(e, c).ravel() for e in np.eye(3)]
    for r in rigid:
        assert np.abs(r @ V).max() < 1e-3 * np.linalg.norm(r) * np.sqrt(n)


def test_anm_sparse_solver_matches_dense():
    rng = np.random.default_rng(1)
    pos = rng.uniform(-25, 25, (1600, 3))  # > 1,500 atoms: sparse shift-invert path
    modes, lam = anm_modes(pos, n_modes=3, cutoff=10.0)
    H = anm_hessian(pos, 10.0)
    V = modes.reshape(-1, 3).astype(np.float64)
    res = H @ V - V * lam[None, :]
    assert np.abs(res).max() < 1e-3 * np.abs(V).max() * np.abs(lam).max() + 1e-6


def test_log_diff_ndtr_stable_in_tails():
    import mpmath
    from continuousflex_geodl.core.models.prior import log_diff_ndtr
    a = torch.tensor([-40.0, -3.0, 0.0, 5.0, 30.0, -1e-4], dtype=torch.float64)
    b = a + torch.tensor([1.0, 0.5, 3.0, 2.0, 0.1, 2e-4], dtype=torch.float64)
    got = log_diff_ndtr(a, b).numpy()
    mpmath.mp.dps = 60
    for ai, bi, gi in zip(a.tolist(), b.tolist(), got):
        phi = lambda x: mpmath.ncdf(x)  # noqa: E731
        ref = float(mpmath.log(phi(bi) - phi(ai)))
        assert np.isfinite(gi) and abs(gi - ref) <= 1e-6 * abs(ref) + 1e-9


def test_gmm_box_mass_matches_numerical_integration():
    from continuousflex_geodl.core.models.prior import GMMPrior
    torch.manual_seed(0)
    prior = GMMPrior(zdim=2, n_components=3, box=3.0, seed=2).double()
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 2.0]]))
        prior.log_scales.copy_(torch.log(torch.tensor([[1.0, 0.5], [0.7, 1.2], [2.0, 0.3]])))
        prior.logits.copy_(torch.tensor([0.0, 0.5, -0.3]))
    z = torch.tensor([[0.3, -0.2], [2.5, 0.7]], dtype=torch.float64)
    with torch.no_grad():
        logq = prior.log_q(z).numpy()
    # numerical integral of the mixture density over the box
    for i, zi in enumerate(z.numpy()):
        g = np.linspace(-1.5, 1.5, 401)
        X, Y = np.meshgrid(zi[0] + g, zi[1] + g, indexing='ij')
        pts = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], 1))
        with torch.no_grad():
            dens = torch.exp(prior.log_density(pts)).numpy().reshape(X.shape)
        trapezoid = getattr(np, 'trapezoid', None) or np.trapz  # np.trapz: numpy < 2
        mass = trapezoid(trapezoid(dens, g, axis=1), g)
        assert abs(math.log(mass) - logq[i]) < 1e-4
    # the rate is minus that, and the mixture density integrates to one
    assert np.allclose(prior.rate(z).detach().numpy(), -logq)


def test_gaussian_prior_kl_matches_torch_distributions():
    from continuousflex_geodl.core.models.prior import GaussianPrior
    from torch.distributions import Normal, kl_divergence
    mu = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    logvar = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    ours = GaussianPrior(3).rate(mu, logvar)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_axis_angle_matches_scipy():
    from scipy.spatial.transform import Rotation
    from continuousflex_geodl.core.models.pose import axis_angle_to_matrix
    w = np.random.default_rng(0).normal(0, 0.3, (6, 3))
    ours = axis_angle_to_matrix(torch.as_tensor(w)).numpy()
    ref = Rotation.from_rotvec(w).as_matrix()
    assert np.allclose(ours, ref, atol=1e-10)
    # zero correction is the identity and keeps a finite gradient
    w0 = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(w0)[0, 0, 1].backward()
    assert torch.isfinite(w0.grad).all() and abs(float(w0.grad[0, 2]) + 1.0) < 1e-6


@pytest.mark.parametrize('conditioning', ['lowrank', 'film'])
def test_point_decoder_starts_at_reference_and_fits_a_hinge(cloud, conditioning):
    from continuousflex_geodl.core.models.decoder import PointDecoder
    pos, mask, hinge, axis = cloud
    torch.manual_seed(0)
    dec = PointDecoder(pos, 1, width=32, conditioning=conditioning, smooth_steps=0)
    d0, amp = dec(torch.randn(4, 1))
    assert amp is None and float(d0.abs().max()) == 0.0
    s = torch.linspace(0, 1, 16)[:, None]
    tgt = torch.as_tensor(np.stack([hinge_deform(pos, mask, hinge, axis, 30 * float(v))
                                    for v in s[:, 0]]) - pos, dtype=torch.float32)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    for _ in range(400):
        d, _ = dec(s)
        loss = ((d - tgt) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    rmsd_ref = float((tgt ** 2).sum(-1).mean().sqrt())
    assert float(loss.sqrt()) < 0.1 * rmsd_ref


def test_mode_decoder_spans_its_basis(cloud):
    from continuousflex_geodl.core.models.decoder import ModeDecoder
    modes, _ = anm_modes(cloud[0], 5)
    dec = ModeDecoder(modes, 2)
    with torch.no_grad():
        dec.mlp[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, -2.0]))
    with torch.no_grad():
        d, _ = dec(torch.zeros(1, 2))
    expect = modes[:, :, 0] - 2 * modes[:, :, 4]
    assert np.allclose(d[0].numpy(), expect, atol=1e-5)


def test_knn_strain_is_rigid_invariant(cloud):
    from scipy.spatial.transform import Rotation
    from continuousflex_geodl.core.losses import KnnStrain
    pos = cloud[0]
    strain = KnnStrain(pos, k=6)
    R = Rotation.from_euler('zyz', [30, 40, 50], degrees=True).as_matrix()
    moved = pos @ R.T + np.array([3.0, -1.0, 2.0])
    stretched = pos * np.array([1.1, 1.0, 1.0])
    out = strain(torch.as_tensor(np.stack([pos, moved, stretched]), dtype=torch.float32))
    assert float(out[0]) < 1e-6 and float(out[1]) < 1e-4
    # a 10 % stretch along x: strain = mean over edges of (0.1 dx^2 / d)^2 approx
    assert float(out[2]) > 1e-2


def test_sinkhorn_of_a_translation():
    from continuousflex_geodl.core.losses import sinkhorn
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=g) * 10
    t = torch.tensor([2.0, 0.0, 0.0])
    s0 = float(sinkhorn(x, x, blur=0.5))
    s1 = float(sinkhorn(x, x + t, blur=0.5))
    assert abs(s0) < 1e-3
    # p = 2 cost |x - y|^2 / 2: a pure translation costs |t|^2 / 2 = 2 A^2
    assert abs(s1 - 2.0) < 0.2


def test_reference_from_atoms_sizes_and_keeps_small_models():
    from continuousflex_geodl.core.models import reference as refmod
    rng = np.random.default_rng(0)
    # a 60 A globule of atoms 1.5 A apart: coarse-grained to ~ V / max(2 apix, 4 A)^3
    pos = rng.uniform(-30, 30, (40000, 3))
    pos = pos[np.linalg.norm(pos, axis=1) < 30][:8000]
    ref = refmod.from_atoms(pos, np.ones(len(pos)), apix=2.0)
    vol = refmod.molecular_volume(pos)
    assert abs(vol - 4 / 3 * np.pi * 33 ** 3) / vol < 0.25  # probe 3 A widens the ball
    assert len(ref.positions) == refmod.default_n_atoms(vol, 2.0)
    assert 1500 < len(ref.positions) < 3500  # 4/3 pi 33^3 / 4^3 ~ 2350
    assert abs(ref.amplitudes.mean() - 1) < 1e-5
    # explicit sizes; 'all' / a model already smaller than asked keeps atom order
    small = pos[:150]
    kept = refmod.from_atoms(small, None, apix=2.0, n_atoms=500)
    assert np.allclose(kept.positions, small.astype(np.float32))
    assert len(refmod.from_atoms(pos, None, apix=2.0, n_atoms=300).positions) == 300
    assert len(refmod.from_atoms(pos[:1000], None, apix=2.0, n_atoms='all').positions) == 1000
    with pytest.raises(ValueError):
        refmod.from_atoms(pos, None, apix=2.0, n_atoms=2)


def test_reference_fitted_to_a_map_reproduces_it(cloud):
    from continuousflex_geodl.core.models import reference as refmod
    from continuousflex_geodl.core.render import render_volume
    pos = torch.as_tensor(cloud[0], dtype=torch.float32)
    vol = render_volume(pos, torch.ones(len(pos)), 3.0, 40, 2.0).numpy()
    ref = refmod.from_map(vol, 2.0, n_atoms=120)
    assert len(ref.positions) == 120
    fit = render_volume(torch.as_tensor(ref.positions), torch.as_tensor(ref.amplitudes),
                        ref.sigma, 40, 2.0).numpy()
    corr = np.corrcoef(vol.ravel(), fit.ravel())[0, 1]
    assert corr > 0.95


def test_encoder_inputs_in_sub_batches_are_identical():
    from continuousflex_geodl.core import engine
    from continuousflex_geodl.core.models.data import make_batch
    from continuousflex_geodl.core.models.toydata import make_toy_particles
    parts, truth = make_toy_particles(n=12, box=24, apix=5.0, n_atoms=80, snr=1.0, seed=2)
    model = engine.build_model(dict(zdim=2, box=24, apix=5.0, sigma=truth['sigma'],
                                    enc_modes=4), truth['reference'], truth['amplitudes'])
    b = make_batch(parts, np.arange(12), model)
    f1, i1 = model.encoder_inputs(b)
    f2, i2 = model.encoder_inputs(b, max_elements=80 * model.enc_box * 4 * 5)  # 5 at a time
    assert f1.shape == (12, 8) and i1.shape == (12, 2, model.enc_box, model.enc_box)
    assert torch.allclose(f1, f2, rtol=1e-5, atol=1e-6)
    assert torch.allclose(i1, i2, rtol=1e-5, atol=1e-6)


def test_large_cloud_modes_are_interpolated_smoothly():
    """Above max_atoms the modes come from a subsample: still unit-RMS and
    smooth (neighbouring atoms move alike)."""
    from scipy.spatial import cKDTree
    rng = np.random.default_rng(3)
    pos = rng.uniform(-30, 30, (1500, 3))
    modes, lam = anm_modes(pos, n_modes=3, max_atoms=300)
    assert modes.shape == (1500, 3, 3)
    assert np.allclose((modes ** 2).sum((0, 1)) / 1500, 1.0, rtol=1e-4)
    _, nn = cKDTree(pos).query(pos, k=2)
    diff = np.linalg.norm(modes[:, :, 0] - modes[nn[:, 1], :, 0], axis=1).mean()
    assert diff < 0.5 * np.linalg.norm(modes[:, :, 0], axis=1).mean()
