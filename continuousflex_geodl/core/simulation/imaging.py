"""Random poses and CTFs, and clean CTF-modulated images rendered from them
(core conventions: degrees, ``t`` shifts in A, the ``-C`` image formation)."""
import numpy as np

from ..ctf import compute_ctf, frequency_grid
from ..geometry import euler_to_matrix, matrix_to_euler, random_rotations
from ..render import project

#: CTF / microscope defaults (A, degrees, kV, mm)
DEFAULT_CTF = dict(defocus_range=(10000.0, 25000.0), max_astigmatism=300.0,
                   voltage=300.0, cs=2.7, w=0.1, phase_shift=0.0)


def random_poses(n, rng, max_shift=4.0):
    """Uniform SO(3) Euler angles (n, 3) deg and shifts t (n, 2) A uniform in
    the disk of radius ``max_shift``."""
    rng = np.random.default_rng(rng)
    euler = np.stack(matrix_to_euler(random_rotations(n, rng)), -1)
    r = max_shift * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * np.pi, size=n)
    shifts = np.stack([r * np.cos(phi), r * np.sin(phi)], -1)
    return euler, shifts


def random_ctf(n, rng, defocus_range=DEFAULT_CTF['defocus_range'],
               max_astigmatism=DEFAULT_CTF['max_astigmatism'], voltage=DEFAULT_CTF['voltage'],
               cs=DEFAULT_CTF['cs'], w=DEFAULT_CTF['w'], phase_shift=DEFAULT_CTF['phase_shift']):
    """(n, 7) CTF rows (dfu, dfv A, dfang deg, kV, Cs mm, w, phase shift deg).

    Mean defocus uniform in ``defocus_range`` (A), astigmatism dfu - dfv
    uniform in [0, max_astigmatism] (dfu >= dfv, RELION), angle uniform in
    [0, 180).
    """
    rng = np.random.default_rng(rng)
    mean = rng.uniform(*defocus_range, size=n)
    ast = rng.uniform(0.0, max_astigmatism, size=n)
    ang = rng.uniform(0.0, 180.0, size=n)
    const = np.broadcast_to([voltage, cs, w, phase_shift], (n, 4))
    return np.column_stack([mean + ast / 2, mean - ast / 2, ang, const])


def render_images(positions, amplitudes, sigma, euler, shifts, ctf, box, apix, device='cpu'):
    """Clean CTF-modulated images (B, D, D) float32 numpy with ``render.project``
    (exact method); ``positions`` (N, 3) or (B, N, 3), ``ctf`` (B, 7) rows or None."""
    import torch
    euler = np.asarray(euler, dtype=np.float64).reshape(-1, 3)
    R = torch.as_tensor(euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2]),
                        dtype=torch.float32, device=device)
    C = None
    if ctf is not None:
        p = np.asarray(ctf, dtype=np.float64).reshape(-1, 7).T
        C = torch.as_tensor(compute_ctf(frequency_grid(box, apix), *p),
                            dtype=torch.float32, device=device)
    with torch.no_grad():
        img = project(torch.as_tensor(positions, dtype=torch.float32, device=device),
                      torch.as_tensor(amplitudes, dtype=torch.float32, device=device),
                      float(sigma), R, box, apix,
                      shifts=None if shifts is None else torch.as_tensor(
                          shifts, dtype=torch.float32, device=device).reshape(-1, 2),
                      ctf=C, method='exact')
    return img.cpu().numpy().astype(np.float32)


def circular_mask(box, apix, radius):
    """(D, D) boolean disk of ``radius`` A about the box centre."""
    g = (np.arange(box) - box // 2) * apix
    return (g[None, :] ** 2 + g[:, None] ** 2) <= radius ** 2
