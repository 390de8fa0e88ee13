"""The model applies the CTF on a padded canvas (``ModelSettings.ctf_pad``).

Reference: the same projection with the CTF applied on a canvas four times
the box (where nothing the CTF delocalises wraps back), then cropped to the
box.  The padded render must match it; the CTF applied on the box itself
(``ctf_pad = 1``) wraps the delocalised signal around and must not.
"""
import numpy as np
import torch

from continuousflex_geodl.core.geometry import euler_to_matrix
from continuousflex_geodl.core.models import imaging


def _cloud(n=60, seed=0):
    rng = np.random.default_rng(seed)
    pos = torch.as_tensor(rng.normal(0, 8, (n, 3)), dtype=torch.float32)
    amp = torch.as_tensor(rng.uniform(0.5, 1.5, n), dtype=torch.float32)
    return pos, amp


def _images(pos, amp, box, apix, canvas, ctf_params, rot, shifts):
    C = imaging.ctf_values(ctf_params, canvas, apix)
    F = imaging.render_fourier(pos, amp, 1.5, rot, box, apix, shifts, C, box)
    return torch.fft.ifft2(F, norm='ortho').real


def test_padded_ctf_matches_a_large_canvas_and_box_ctf_does_not():
    box, apix = 32, 2.0
    pos, amp = _cloud()
    e = np.array([[10.0, 50.0, -30.0], [200.0, 120.0, 75.0]])
    rot = torch.as_tensor(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), dtype=torch.float32)
    shifts = torch.tensor([[3.0, -2.0], [-5.0, 4.0]])
    # strong defocus: delocalisation lambda * df * s_max ~ 0.0197 * 25000 / 4 ~ 120 A > box
    ctf = np.array([[25000.0, 24000.0, 30.0, 300.0, 2.7, 0.1, 0.0]] * 2)
    # reference: CTF on a 4x canvas, cropped (render on the 4x canvas, no wrap)
    big = 4 * box
    C = imaging.ctf_values(ctf, big, apix)
    img = imaging.project(pos, amp, 1.5, rot, big, apix, shifts=shifts)
    img = torch.fft.ifft2(torch.fft.fft2(img) * (-C)).real
    o = big // 2 - box // 2
    ref = img[:, o:o + box, o:o + box]
    padded = _images(pos, amp, box, apix, 2 * box, ctf, rot, shifts)
    on_box = _images(pos, amp, box, apix, box, ctf, rot, shifts)
    err = lambda x: float(((x - ref) ** 2).sum() / (ref ** 2).sum())  # noqa: E731
    assert err(padded) < 0.02
    assert err(on_box) > 5 * err(padded)


def test_padding_changes_nothing_without_a_ctf_effect():
    """A CTF of -1 everywhere (no CTF) on the padded canvas: the same image as
    the unpadded render (the molecule lies inside the box)."""
    box, apix = 32, 2.0
    pos, amp = _cloud(seed=1)
    rot = torch.eye(3)[None]
    shifts = torch.zeros(1, 2)
    one = -torch.ones(1, 2 * box, 2 * box)
    F_pad = imaging.render_fourier(pos, amp, 1.5, rot, box, apix, shifts, one, box)
    F_box = imaging.render_fourier(pos, amp, 1.5, rot, box, apix, shifts,
                                   -torch.ones(1, box, box), box)
    assert torch.allclose(F_pad, F_box, atol=1e-4 * float(F_box.abs().max()))
