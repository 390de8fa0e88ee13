"""Fourier cropping of particle images to a smaller box (numpy in and out).

``fourier_crop_images(images, out_box)`` keeps the frequencies of a D-pixel
image that a d-pixel grid of the same physical size can hold (|f| below the
new Nyquist, 1 / (2 * apix * D / d)) and returns the d-pixel image of pixel
size ``apix * D / d``.  Pixel values keep their meaning: a band-limited image
sampled at D pixels becomes the same function sampled at d pixels (the mean,
i.e. the DC term, is unchanged, and so is the integral of the squared image,
sum(img ** 2) * apix ** 2).  Shifts in A are unchanged; the CTF of a cropped
particle is the CTF computed on the coarser pixel size.

Used by the data pipeline (``core.io.stack.CroppedImageSource``, ``train
--train-box``) and by inference on particles larger than a model's box.
"""
import numpy as np


def fourier_crop_images(images, out_box):
    """(n, d, d) float32 images Fourier-cropped from (n, D, D) (or (D, D)).

    ``out_box`` must be even and at most D (D itself returns a float32 copy).
    The kept window is the frequencies -d/2 .. d/2 - 1 along y and 0 .. d/2
    along x of the real FFT; the Nyquist column d/2 is handled by the inverse
    real FFT (its imaginary part, which a real d-pixel image cannot hold, is
    dropped).  Values are scaled by (d / D) ** 2 so that each pixel keeps the
    value of the underlying continuous image.
    """
    a = np.asarray(images, dtype=np.float32)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError('Fourier cropping needs square images (n, D, D); got shape %s'
                         % (a.shape,))
    D, d = int(a.shape[-1]), int(out_box)
    if d > D or d < 2 or d % 2:
        raise ValueError('Cannot Fourier-crop %d-px images to %d px: the new box must be '
                         'even and at most the particle box.' % (D, d))
    if d == D:
        out = a.copy()
        return out[0] if single else out
    import torch  # float32 FFTs that release the GIL (a background reader thread)
    h = d // 2
    F = torch.fft.rfft2(torch.from_numpy(np.ascontiguousarray(a)))  # (n, D, D//2 + 1)
    G = torch.cat([F[:, :h, :h + 1], F[:, D - h:, :h + 1]], dim=1)
    # the Nyquist row -d/2: a real d-pixel image has one coefficient there for
    # +d/2 and -d/2; average the two (symmetric) components of the D grid
    G[:, h, :] = 0.5 * (F[:, D - h, :h + 1] + F[:, h, :h + 1])
    out = (torch.fft.irfft2(G, s=(d, d)) * ((d / D) ** 2)).numpy().astype(np.float32, copy=False)
    return out[0] if single else out


def cropped_apix(apix, box, out_box):
    """Pixel size (A) of ``box``-px images of pixel size ``apix`` cropped to ``out_box``."""
    return float(apix) * int(box) / int(out_box)
