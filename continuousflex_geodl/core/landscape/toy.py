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


# ------------------------------------------------------- latent test beds

BED_STATES = {  # kind -> (populations, positions on the path or plane)
    'three': ((0.4, 0.2, 0.4), (0.1, 0.5, 0.9)),
    'two': ((0.6, 0.4), (0.2, 0.8)),
    'uniform': ((1.0,), None),
    'plane': ((0.45, 0.35, 0.2), ((0.0, 0.0), (3.0, 0.0), (1.5, 2.6))),
}


@dataclass
class LatentBed:
    latents: np.ndarray      # (N, dim)
    labels: np.ndarray       # (N,) generating state (0 for 'uniform')
    populations: np.ndarray  # (S,) generating populations (the truth)
    outliers: np.ndarray     # (N,) bool, particles replaced by outliers
    sigma: np.ndarray        # (N,) per-particle latent noise s.d.
    kind: str


def latent_bed(kind='three', n=2000, dim=6, noise=0.45, seed=0, outliers=0.01,
               width=0.05):
    """Latents shaped like a trained model's, with a known answer.

    * 'three' / 'two' / 'uniform': a 1D coordinate c on [0, 1] -- states at
      ``BED_STATES`` (Gaussian, s.d. ``width``) or uniform -- mapped on a
      curved path: an arc of radius 3 over 2 rad in the first two latent
      dimensions, smooth bends of amplitude 0.3-0.6 in the others.
    * 'plane': three Gaussian basins (s.d. 0.45) in a 2D coordinate, on a
      curved sheet rotated into ``dim`` dimensions.

    Every particle gets isotropic noise with its own s.d. (heteroscedastic,
    like posterior uncertainty): ``noise`` x lognormal(0, 0.35) x (0.7 +
    0.6 c) (it grows along the path).  A fraction ``outliers`` of the
    particles is replaced by points uniform in a box 1.4 x the data's.
    """
    if kind not in BED_STATES:
        raise ValueError("Unknown test bed '%s': use %s." % (kind, ', '.join(BED_STATES)))
    if dim < 2 or (kind == 'plane' and dim < 4):
        raise ValueError('The test beds need dim >= 2 (plane: >= 4).')
    r = np.random.default_rng(seed)
    pops, pos = (np.asarray(v, float) if v is not None else None for v in BED_STATES[kind])
    n = int(n)
    lab = r.choice(len(pops), n, p=pops)
    if kind == 'plane':
        ab = pos[lab] + 0.45 * r.standard_normal((n, 2))
        a, b = ab[:, 0], ab[:, 1]
        sheet = np.c_[a, b, 0.15 * (a - 1.5) ** 2, 0.1 * a * b, np.zeros((n, dim - 4))]
        q = np.linalg.qr(np.random.default_rng(77).standard_normal((dim, dim)))[0]
        base, c = sheet @ q.T, np.full(n, 0.5)
    else:
        c = r.uniform(0, 1, n) if pos is None else pos[lab] + width * r.standard_normal(n)
        g = np.random.default_rng(1000 + dim)
        freq, phase = g.uniform(0.6, 1.4, dim), g.uniform(0, 2 * np.pi, dim)
        amp = g.uniform(0.3, 0.6, dim)
        base = np.empty((n, dim))
        base[:, 0], base[:, 1] = 3.0 * np.cos(2.0 * c), 3.0 * np.sin(2.0 * c)
        for j in range(2, dim):
            base[:, j] = amp[j] * np.sin(np.pi * freq[j] * c + phase[j])
    sig = noise * np.exp(0.35 * r.standard_normal(n)) * (0.7 + 0.6 * c)
    z = base + sig[:, None] * r.standard_normal((n, dim))
    out = r.random(n) < outliers
    lo, hi = z.min(0), z.max(0)
    z[out] = lo - 0.2 * (hi - lo) + 1.4 * (hi - lo) * r.random((int(out.sum()), dim))
    return LatentBed(z, lab, pops, out, sig, kind)
