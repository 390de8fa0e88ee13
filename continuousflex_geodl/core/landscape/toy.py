"""Synthetic landscapes with a known answer (tests, demos, benchmarks).

``three_state_curve`` -- a 1D true coordinate ``c`` drawn from a mixture of
three states at c = 0.1 / 0.5 / 0.9 with populations 0.4 / 0.2 / 0.4 (the
middle one minor), mapped into a K-dimensional latent space by a smooth
curved map (an arc of radius 3 over 1.5 rad in the first two dimensions,
slow sinusoidal bends of amplitude 0.5 in the others) plus isotropic
Gaussian noise.  ``CurveDecoder`` is a known ``decode_fn``: it projects a
latent point on the curve to recover c and returns the point cloud
``(1 - c) A + c B`` between two random clouds, so the true coordinate of any
decoded structure can be read back (``coordinate_of``).
"""
from dataclasses import dataclass

import numpy as np

STATE_CENTRES = (0.1, 0.5, 0.9)
STATE_POPULATIONS = (0.4, 0.2, 0.4)


def curve_map(c, dim, radius=3.0, arc=1.5, bend=0.5, seed=1):
    """Points f(c) (M, dim) of the smooth curve for coordinates c (M,)."""
    c = np.atleast_1d(np.asarray(c, dtype=np.float64))
    if dim < 2:
        raise ValueError('The toy curve needs a latent dimension of at least 2.')
    r = np.random.default_rng(seed)
    freq = r.uniform(0.5, 1.5, dim)
    phase = r.uniform(0.0, 2 * np.pi, dim)
    out = np.empty((len(c), dim))
    out[:, 0] = radius * np.cos(arc * c)
    out[:, 1] = radius * np.sin(arc * c)
    for j in range(2, dim):
        out[:, j] = bend * np.sin(np.pi * freq[j] * c + phase[j])
    return out


@dataclass
class ToyLandscape:
    latents: np.ndarray      # (N, dim) observed latents (curve + noise)
    coordinate: np.ndarray   # (N,) true coordinate c
    labels: np.ndarray       # (N,) true state 0/1/2
    dim: int
    noise: float
    width: float

    def curve(self, c):
        return curve_map(c, self.dim)

    @property
    def state_latents(self):
        """(3, dim) true state centres on the curve."""
        return self.curve(np.array(STATE_CENTRES))


def three_state_curve(n=10000, dim=4, noise=0.15, width=0.08, seed=0):
    """Sample the three-state toy landscape (see module docstring)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=int(n), p=STATE_POPULATIONS)
    c = np.asarray(STATE_CENTRES)[labels] + width * rng.standard_normal(int(n))
    z = curve_map(c, dim) + noise * rng.standard_normal((int(n), dim))
    return ToyLandscape(z.astype(np.float32), c, labels, dim, noise, width)


class CurveDecoder:
    """decode_fn(z (M, K)) -> (M, N, 3): clouds interpolated by the coordinate
    of the closest point of the curve (sampled on ``grid`` values of c)."""

    def __init__(self, dim, n_atoms=50, seed=3, grid=None):
        rng = np.random.default_rng(seed)
        self.a = rng.normal(0, 10.0, (n_atoms, 3))
        self.b = self.a + rng.normal(0, 5.0, (n_atoms, 3))
        self.grid = np.linspace(-0.3, 1.3, 3201) if grid is None else np.asarray(grid)
        self.curve = curve_map(self.grid, dim)

    def coordinate(self, z):
        from scipy.spatial import cKDTree
        _, i = cKDTree(self.curve, compact_nodes=False).query(np.atleast_2d(z))
        return self.grid[i]

    def __call__(self, z):
        c = self.coordinate(z)[:, None, None]
        return (1.0 - c) * self.a[None] + c * self.b[None]

    def coordinate_of(self, positions):
        """Least-squares c of clouds (M, N, 3) under the linear interpolation."""
        d = (self.b - self.a).ravel()
        x = np.asarray(positions).reshape(len(positions), -1) - self.a.ravel()
        return x @ d / (d @ d)
