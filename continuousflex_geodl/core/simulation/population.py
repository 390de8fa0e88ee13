"""Population laws over unit coordinates u in [0, 1]^k (``Population``):
'three_mode', 'uniform', 'grid' (see ``core.simulate``)."""
import numpy as np
from scipy.stats import norm

from ..settings import Population as PopulationKind

POPULATIONS = tuple(PopulationKind.values())

#: default population parameters (unit coordinates)
THREE_MODE_CENTRES_1D = ((0.1,), (0.5,), (0.9,))
THREE_MODE_CENTRES_2D = ((0.1, 0.3), (0.5, 0.8), (0.9, 0.3))
THREE_MODE_WEIGHTS = (0.4, 0.2, 0.4)
THREE_MODE_SD = 0.05


class Population:
    """A law over unit coordinates u in [0, 1]^dim; see the module docstring.

    ``sample(n, rng) -> (u (n, dim), labels (n,))`` where labels are the
    mixture component (three_mode), the grid state (grid) or -1 (uniform).
    """

    def __init__(self, kind='three_mode', dim=1, weights=None, centres=None,
                 sd=THREE_MODE_SD, n_states=None):
        if kind not in POPULATIONS:
            raise ValueError("Unknown population '%s': choose one of %s."
                             % (kind, ', '.join(POPULATIONS)))
        if dim not in (1, 2):
            raise ValueError('Populations are defined in 1 or 2 dimensions (got %r).' % dim)
        self.kind, self.dim, self.sd = kind, int(dim), float(sd)
        if kind == 'three_mode':
            c = centres if centres is not None else (
                THREE_MODE_CENTRES_1D if dim == 1 else THREE_MODE_CENTRES_2D)
            w = weights if weights is not None else THREE_MODE_WEIGHTS
        elif kind == 'grid':
            n = n_states or (5 if dim == 1 else 3)
            g = np.linspace(0.0, 1.0, n) if dim == 1 else np.linspace(0.1, 0.9, n)
            if centres is not None:
                c = centres
            elif dim == 1:
                c = g[:, None]
            else:
                c = np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2)
            w = weights if weights is not None else np.ones(len(c))
        else:
            c, w = np.zeros((0, dim)), np.zeros(0)
        self.centres = np.asarray(c, dtype=np.float64).reshape(-1, dim)
        w = np.asarray(w, dtype=np.float64)
        if len(w) != len(self.centres):
            raise ValueError('%d population weights for %d states.' % (len(w), len(self.centres)))
        if len(w) and (np.any(w < 0) or w.sum() <= 0):
            raise ValueError('Population weights must be non-negative with a positive sum.')
        self.weights = w / w.sum() if len(w) else w

    def sample(self, n, rng):
        rng = np.random.default_rng(rng)
        if self.kind == 'uniform':
            return rng.uniform(0.0, 1.0, size=(n, self.dim)), -np.ones(n, dtype=int)
        labels = rng.choice(len(self.centres), size=n, p=self.weights)
        u = self.centres[labels].copy()
        if self.kind == 'three_mode':
            u = np.clip(u + self.sd * rng.standard_normal((n, self.dim)), 0.0, 1.0)
        return u, labels.astype(int)

    def state_coords(self):
        """Unit coordinates of representative states: the mode centres / grid
        states, or the ends and middle for 'uniform'."""
        if self.kind != 'uniform':
            return self.centres.copy()
        if self.dim == 1:
            return np.array([[0.0], [0.5], [1.0]])
        return np.array([[0.5, 0.5], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

    def cdf(self, x, axis=0):
        """Marginal CDF along ``axis`` at ``x`` (exact, clipping included)."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == 'uniform':
            F = np.clip(x, 0.0, 1.0)
        elif self.kind == 'grid':
            F = np.sum(self.weights * (self.centres[:, axis] <= x[..., None]), -1)
        else:
            z = (x[..., None] - self.centres[:, axis]) / self.sd
            F = np.sum(self.weights * norm.cdf(z), -1)
        return np.where(x < 0, 0.0, np.where(x >= 1, 1.0, F))

    def describe(self):
        return {'kind': self.kind, 'dim': self.dim, 'centres': self.centres.tolist(),
                'weights': self.weights.tolist(),
                'sd': self.sd if self.kind == 'three_mode' else None}
