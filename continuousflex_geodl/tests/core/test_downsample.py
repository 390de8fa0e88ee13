"""Fourier cropping of particle images (``core.downsample``) against analytic
images, and the particle-set view at a training box (``particles.at_box``)."""
import pickle

import numpy as np
import pytest

from continuousflex_geodl.core.downsample import cropped_apix, fourier_crop_images
from continuousflex_geodl.core.particles import ParticleSet, at_box

pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


def _grid(box, apix):
    """Pixel-centre coordinates (A) of a box, origin at index box // 2 (core)."""
    c = (np.arange(box) - box // 2) * apix
    return np.meshgrid(c, c, indexing='xy')


def _cosines(box, apix, extent, terms):
    """Sum of plane waves with integer frequencies (cycles per ``extent``):
    periodic on the box, band-limited below the smallest box's Nyquist."""
    x, y = _grid(box, apix)
    f = np.full((box, box), 0.7)
    for a, kx, ky, ph in terms:
        f += a * np.cos(2 * np.pi * (kx * x + ky * y) / extent + ph)
    return f


@pytest.mark.parametrize('D,d', [(64, 32), (64, 40), (50, 24)])
def test_a_band_limited_image_cropped_equals_the_image_rendered_at_the_small_box(D, d):
    extent = 96.0
    rng = np.random.default_rng(0)
    h = d // 2
    terms = [(rng.normal(), int(rng.integers(-h + 1, h)), int(rng.integers(-h + 1, h)),
              rng.uniform(0, 2 * np.pi)) for _ in range(12)]
    big = _cosines(D, extent / D, extent, terms)
    small = _cosines(d, extent / d, extent, terms)
    out = fourier_crop_images(big, d)
    assert out.shape == (d, d) and out.dtype == np.float32
    np.testing.assert_allclose(out, small, atol=2e-5 * np.abs(small).max())
    # DC (mean) and the integral of the squared image are unchanged
    assert abs(out.mean() - big.mean()) < 1e-5
    e_big = (big.astype(np.float64) ** 2).sum() * (extent / D) ** 2
    e_small = (out.astype(np.float64) ** 2).sum() * (extent / d) ** 2
    assert abs(e_small - e_big) < 1e-5 * e_big


def test_a_gaussian_blob_cropped_matches_the_blob_sampled_on_the_coarse_grid():
    """A Gaussian of width 2 coarse pixels is band-limited to ~1e-8: the crop of
    its 128-px image is its 64-px image (pixel size doubled)."""
    D, d, apix = 128, 64, 1.0
    s = 4.0
    x, y = _grid(D, apix)
    xs, ys = _grid(d, cropped_apix(apix, D, d))
    g = lambda x, y: 3.0 * np.exp(-((x - 7.3) ** 2 + (y + 4.1) ** 2) / (2 * s ** 2))  # noqa
    out = fourier_crop_images(g(x, y)[None], d)[0]
    np.testing.assert_allclose(out, g(xs, ys), atol=1e-5)


def test_white_noise_variance_scales_with_the_pixel_area_and_the_mean_is_kept():
    """Cropping keeps (d/D)^2 of the frequencies: a white-noise pixel variance
    s2 becomes s2 (d/D)^2 (as averaging (D/d)^2 pixels would), times
    (1 - 1/d + 1/(4 d^2)) because the two components of the Nyquist row (and
    column) of the small grid are averaged (half their variance, a quarter
    at the corner); the mean of any image (its DC term) is unchanged."""
    rng = np.random.default_rng(1)
    D, d = 96, 48
    imgs = rng.normal(0.3, 2.0, size=(40, D, D)).astype(np.float32)
    out = fourier_crop_images(imgs, d)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), imgs.mean(axis=(1, 2)), atol=1e-5)
    ratio = out.var() / imgs.var()
    want = (d / D) ** 2 * (1 - 1 / d + 1 / (4 * d ** 2))
    assert abs(ratio - want) < 0.02 * want  # 92,000 pixels: s.e. 0.5 %


def test_crop_to_the_same_box_is_a_copy_and_bad_boxes_are_refused():
    a = np.random.default_rng(2).normal(size=(3, 16, 16)).astype(np.float32)
    out = fourier_crop_images(a, 16)
    assert np.array_equal(out, a) and out is not a
    for bad in (15, 18, 0):
        with pytest.raises(ValueError, match='even and at most'):
            fourier_crop_images(a, bad)
    with pytest.raises(ValueError, match='square'):
        fourier_crop_images(np.zeros((2, 16, 12)), 8)


def test_particle_set_at_a_training_box(tmp_path):
    rng = np.random.default_rng(3)
    n, D, d = 10, 32, 16
    path = tmp_path / 'stack.npy'
    np.save(path, rng.normal(size=(n, D, D)).astype(np.float32))
    mm = np.load(path, mmap_mode='r')
    ctf = np.tile([1.5e4, 1.4e4, 10.0, 300.0, 2.7, 0.1, 0.0], (n, 1))
    pset = ParticleSet(np.memmap(path, dtype=np.float32, mode='r', shape=mm.shape,
                                 offset=mm.offset), 1.2, euler=rng.uniform(0, 90, (n, 3)),
                       shifts=rng.normal(size=(n, 2)), ctf=ctf)
    small = at_box(pset, d)
    assert small.box == d and abs(small.apix - 2.4) < 1e-12 and len(small) == n
    # poses (shifts in A) and CTF parameters unchanged
    assert np.array_equal(small.shifts, pset.shifts) and np.array_equal(small.ctf, pset.ctf)
    idx = np.array([7, 2, 5])
    np.testing.assert_array_equal(small.images[idx], fourier_crop_images(pset.images[idx], d))
    # subsets, pickling (for loader processes) and checks go through the view
    np.testing.assert_array_equal(small.subset([2, 5]).images[:], small.images[[2, 5]])
    again = pickle.loads(pickle.dumps(small.images))
    np.testing.assert_array_equal(again[idx], small.images[idx])
    small.check(require_ctf=True, require_poses=True)
    assert at_box(pset, None) is pset and at_box(pset, D) is pset
    with pytest.raises(ValueError, match='even and at most'):
        at_box(pset, 40)
