"""Synthetic particle sets of a moving molecule, with the ground truth.

A Gaussian pseudo-atom structure (by default ``structure.builtin_molecule()``)
moves along known conformational coordinates; each particle is one
conformation drawn from a population law, projected in a uniformly random
orientation, shifted, modulated by its own astigmatic CTF, and buried in
white Gaussian noise at a target SNR.  Conventions and units are those of
``core.__init__`` (A, degrees, ``t`` shifts, ``-C`` image formation).

Motions (``Motion.conformation(c) -> positions``)
    ``'hinge'``   one domain (the smaller) rotates rigidly about a hinge axis
                  through the inter-domain linker (or the interface centre),
                  so that the interface opens like a clam; ``c`` in [0, 1]
                  maps to the angle ``c * max_angle``.  By default
                  ``max_angle`` is chosen so that the all-atom RMSD between
                  ``c = 0`` and ``c = 1`` is ``end_rmsd`` (6 A).
    ``'linear'``  straight interpolation ``(1 - c) start + c end`` between two
                  structures with the same atoms; by default ``end`` is the
                  molecule with its smaller domain translated away from the
                  rest so that RMSD(start, end) = ``end_rmsd``.
    ``'nma'``     elastic-network normal modes: ``k`` = 1 or 2 coordinates that
                  are mode amplitudes in A, each mode scaled to an RMS atom
                  displacement of 1 A (amplitude ``a`` = RMSD ``|a|`` from the
                  reference); the range is ``[-end_rmsd / 2, end_rmsd / 2]``.

Populations are laws over *unit* coordinates ``u`` in [0, 1]^k, mapped to the
motion's coordinates (identity for hinge/linear, ``(2u - 1) end_rmsd / 2``
for nma): ``'uniform'``; ``'three_mode'`` (Gaussian modes of sd 0.05 with
weights 0.4 / 0.2 / 0.4 at u = 0.1 / 0.5 / 0.9 - a less populated middle
state on a continuous path - clipped to [0, 1]; in 2D the three centres lie
on an arc (0.1, 0.3), (0.5, 0.8), (0.9, 0.3)); ``'grid'`` (discrete states:
5 evenly spaced values in 1D, a 3 x 3 grid in 2D, equal weights).

SNR definition (the one used everywhere in this project)
    ``snr = var(signal) / var(noise)`` where the signal is the clean
    CTF-modulated image and the variance is pooled over **all pixels of the
    whole box** of all particles (as cryoDRGN / CryoBench).  The noise is
    white, with one standard deviation for the whole set.  The stored images
    are scaled so that the noise has unit variance (RELION-like
    normalisation); the ground-truth ``amplitudes`` include that scale, so
    ``render.project(gt positions, gt amplitudes, sigma, ...)`` reproduces
    the clean images.  The JSON summary also reports the SNR with the signal
    variance measured inside the circular mask of the particle (larger).
"""
import json
import os

import numpy as np

MOTIONS = ('hinge', 'linear', 'nma')
POPULATIONS = ('three_mode', 'uniform', 'grid')

#: default population parameters (unit coordinates)
THREE_MODE_CENTRES_1D = ((0.1,), (0.5,), (0.9,))
THREE_MODE_CENTRES_2D = ((0.1, 0.3), (0.5, 0.8), (0.9, 0.3))
THREE_MODE_WEIGHTS = (0.4, 0.2, 0.4)
THREE_MODE_SD = 0.05

#: CTF / microscope defaults (A, degrees, kV, mm)
DEFAULT_CTF = dict(defocus_range=(10000.0, 25000.0), max_astigmatism=300.0,
                   voltage=300.0, cs=2.7, w=0.1, phase_shift=0.0)


# --------------------------------------------------------------------------
# Motions
# --------------------------------------------------------------------------

def rmsd(a, b):
    """All-atom RMSD (A) between position arrays (..., N, 3), no superposition."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return np.sqrt(np.mean(np.sum(d * d, axis=-1), axis=-1))


def _rotation_about_axis(axis, angles_rad):
    """Rodrigues: (M,) angles about the unit ``axis`` -> (M, 3, 3)."""
    k = np.asarray(axis, dtype=np.float64)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    th = np.asarray(angles_rad, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


class Motion:
    """A conformational motion with known coordinates.

    ``kind`` is 'hinge', 'linear' or 'nma'; ``reference`` (N, 3) A is the
    structure at coordinate 0; ``amplitudes`` (N,) and ``sigma`` (A) are the
    pseudo-atom parameters; ``params`` holds the numpy arrays that define the
    motion (saved in ground_truth.npz); ``n_coords`` is k.
    """

    def __init__(self, kind, reference, amplitudes, sigma, params):
        if kind not in MOTIONS:
            raise ValueError("Unknown motion '%s': choose one of %s." % (kind, ', '.join(MOTIONS)))
        self.kind = kind
        self.reference = np.asarray(reference, dtype=np.float64)
        self.amplitudes = np.asarray(amplitudes, dtype=np.float64)
        self.sigma = float(sigma)
        self.params = {k: np.asarray(v) for k, v in params.items()}
        if kind == 'nma':
            self.n_coords = int(self.params['modes'].shape[0])
        else:
            self.n_coords = 1

    # -- coordinates -------------------------------------------------------
    @property
    def coord_range(self):
        """(k, 2) range of the motion's own coordinates (A for nma)."""
        if self.kind == 'nma':
            a = float(self.params['amplitude_max'])
            return np.array([[-a, a]] * self.n_coords)
        return np.array([[0.0, 1.0]])

    def unit_to_coords(self, u):
        """Unit coordinates in [0, 1]^k -> the motion's coordinates."""
        lo, hi = self.coord_range.T
        return lo + np.asarray(u, dtype=np.float64) * (hi - lo)

    def coords_to_unit(self, c):
        lo, hi = self.coord_range.T
        return (np.asarray(c, dtype=np.float64) - lo) / (hi - lo)

    def _as_batch(self, c):
        c = np.asarray(c, dtype=np.float64)
        k = self.n_coords
        if k == 1:
            if c.ndim == 0:
                return c.reshape(1, 1), True
            if c.ndim == 1:
                return c.reshape(-1, 1), False
            if c.ndim == 2 and c.shape[1] == 1:
                return c, False
        else:
            if c.ndim == 1 and c.shape[0] == k:
                return c.reshape(1, k), True
            if c.ndim == 2 and c.shape[1] == k:
                return c, False
        raise ValueError('Coordinates of shape %s do not fit a %s motion with %d '
                         'coordinate(s): give a scalar / (M,) / (M, 1) array for one '
                         'coordinate, or (k,) / (M, k) for k coordinates.'
                         % (c.shape, self.kind, k))

    def conformation(self, c):
        """Positions (N, 3) A at coordinate ``c`` (one point), or (M, N, 3) for M points.

        One coordinate: a scalar gives (N, 3); an (M,) or (M, 1) array gives
        (M, N, 3).  k coordinates: (k,) gives (N, 3); (M, k) gives (M, N, 3).
        """
        cb, single = self._as_batch(c)
        x0 = self.reference
        if self.kind == 'hinge':
            mask = self.params['moving_mask'].astype(bool)
            p = self.params['hinge_point']
            R = _rotation_about_axis(self.params['hinge_axis'],
                                     np.deg2rad(float(self.params['max_angle_deg'])) * cb[:, 0])
            out = np.broadcast_to(x0, (len(cb),) + x0.shape).copy()
            out[:, mask] = np.einsum('mij,nj->mni', R, x0[mask] - p) + p
        elif self.kind == 'linear':
            d = self.params['end_positions'] - x0
            out = x0[None] + cb[:, 0, None, None] * d[None]
        else:
            out = x0[None] + np.einsum('mk,knd->mnd', cb, self.params['modes'])
        return out[0] if single else out

    def describe(self):
        """JSON-able description (kind, scalar parameters)."""
        d = {'kind': self.kind, 'n_coords': self.n_coords, 'n_atoms': int(len(self.reference)),
             'sigma': self.sigma, 'coord_range': self.coord_range.tolist(),
             'end_to_end_rmsd': float(self.end_to_end_rmsd())}
        for k, v in self.params.items():
            if v.ndim == 0:
                d[k] = v.item()
            elif v.size <= 3:
                d[k] = v.tolist()
        if self.kind == 'hinge':
            d['n_moving_atoms'] = int(self.params['moving_mask'].sum())
        return d

    def end_to_end_rmsd(self):
        """RMSD (A) between the two ends of the coordinate range (corners in 2D)."""
        lo, hi = self.coord_range.T
        a, b = self.conformation(lo if self.n_coords > 1 else lo[0]), \
            self.conformation(hi if self.n_coords > 1 else hi[0])
        return float(rmsd(a, b))

    # -- persistence -------------------------------------------------------
    def to_arrays(self, prefix='motion_'):
        out = {prefix + 'kind': np.array(self.kind),
               prefix + 'reference': self.reference,
               'amplitudes': self.amplitudes, 'sigma': np.array(self.sigma)}
        for k, v in self.params.items():
            out[prefix + k] = v
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix='motion_'):
        kind = str(np.asarray(arrays[prefix + 'kind']))
        params = {k[len(prefix):]: np.asarray(arrays[k]) for k in arrays
                  if k.startswith(prefix) and k not in (prefix + 'kind', prefix + 'reference')}
        return cls(kind, arrays[prefix + 'reference'], arrays['amplitudes'],
                   float(np.asarray(arrays['sigma'])), params)


_CACHE = {}


def _builtin_molecule():
    """``structure.builtin_molecule()``, built once per process (it takes seconds)."""
    if 'builtin' not in _CACHE:
        from .structure import builtin_molecule
        _CACHE['builtin'] = builtin_molecule()
    return _CACHE['builtin']


def _structure_arrays(structure):
    """(positions, amplitudes, sigma, domain labels or None) from a Structure."""
    if structure is None:
        structure = _builtin_molecule()
    pos = np.array(structure.positions, dtype=np.float64)
    amp = getattr(structure, 'amplitudes', None)
    amp = np.ones(len(pos)) if amp is None else np.array(amp, dtype=np.float64)
    sigma = getattr(structure, 'sigma', None)
    labels = None
    for name in ('domains', 'domain', 'domain_labels', 'labels'):
        v = getattr(structure, name, None)
        if v is not None:
            labels = np.asarray(v)
            break
    return pos, amp, sigma, labels


def _split_domains(pos, labels, moving_domain):
    """Boolean mask of the moving domain."""
    if labels is None:
        # no labels: split along the longest principal axis at the median
        centred = pos - pos.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        return proj > np.median(proj)
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        raise ValueError('The structure has a single domain label (%r): a hinge motion '
                         'needs at least two domains.' % (values[0],))
    if moving_domain is None:
        moving_domain = values[np.argmin(counts)]  # the smaller domain moves
    mask = labels == moving_domain
    if not mask.any():
        raise ValueError('No atom has domain label %r (labels present: %s).'
                         % (moving_domain, ', '.join(map(str, values))))
    return mask


def _interdomain_gap(pos, mask):
    """Mean distance (A) from each moving atom to the nearest fixed atom."""
    from scipy.spatial import cKDTree
    return float(np.mean(cKDTree(pos[~mask], compact_nodes=False).query(pos[mask])[0]))


def _hinge_geometry(pos, mask):
    """Hinge point and axis (unit) for a rigid rotation of the moving domain.

    The hinge point is the chain linker between the domains when the atoms
    are in chain order (one or two label changes along the atom list), else
    the centre of the domain interface.  The axis is perpendicular to the
    inter-domain vector and to the hinge-to-interface vector, so that the
    interface opens like a clam; the sense of rotation is chosen in
    ``make_motion`` (opening).
    """
    from scipy.spatial import cKDTree
    fixed, moving = pos[~mask], pos[mask]
    d, j = cKDTree(fixed, compact_nodes=False).query(moving)
    order = np.argsort(d)[:max(3, min(20, len(moving) // 10))]
    interface = 0.5 * (moving[order] + fixed[j[order]]).mean(0)
    junctions = np.nonzero(mask[1:] != mask[:-1])[0]
    if 1 <= len(junctions) <= 2:
        point = 0.5 * (pos[junctions] + pos[junctions + 1]).mean(0)
    else:
        point = interface
    v = moving.mean(0) - fixed.mean(0)
    v /= np.linalg.norm(v)
    u = interface - point
    u -= (u @ v) * v
    if np.linalg.norm(u) > 2.0:
        axis = np.cross(v, u)
    else:
        # no lever arm: the principal axis of the molecule most perpendicular
        # to the inter-domain vector, made exactly perpendicular to it
        _, _, vt = np.linalg.svd(pos - pos.mean(0), full_matrices=False)
        cand = vt[np.argmin(np.abs(vt @ v))]
        axis = cand - (cand @ v) * v
    return point, axis / np.linalg.norm(axis)


def make_motion(kind='hinge', structure=None, end_rmsd=6.0, max_angle=None,
                moving_domain=None, hinge_axis=None, hinge_point=None,
                end_positions=None, start_positions=None, n_modes=2, modes=None,
                nma_cutoff=None, sigma=None):
    """Build a ``Motion`` of ``structure`` (default: the built-in molecule).

    ``end_rmsd`` (A) sets the size of the motion (RMSD between the ends)
    unless ``max_angle`` (degrees, hinge) or ``end_positions`` (linear) are
    given.  ``start_positions``/``end_positions`` (N, 3) A, or Structures,
    define a linear motion between two given structures.  ``modes``
    (k, N, 3) overrides the elastic-network modes for 'nma'.
    """
    if kind not in MOTIONS:
        raise ValueError("Unknown motion '%s': choose one of %s." % (kind, ', '.join(MOTIONS)))
    pos, amp, s0, labels = _structure_arrays(structure)
    if sigma is None:
        sigma = s0 if s0 is not None else 2.0
    if kind == 'hinge':
        mask = _split_domains(pos, labels, moving_domain)
        point, axis = _hinge_geometry(pos, mask)
        if hinge_point is not None:
            point = np.asarray(hinge_point, dtype=np.float64)
        if hinge_axis is not None:
            axis = np.asarray(hinge_axis, dtype=np.float64)
            axis = axis / np.linalg.norm(axis)
        if max_angle is None:
            # RMSD(theta) = 2 sin(theta / 2) sqrt(sum_moving r_perp^2 / N)
            rel = pos[mask] - point
            rperp2 = np.sum(rel ** 2, 1) - (rel @ axis) ** 2
            scale = np.sqrt(rperp2.sum() / len(pos))
            ratio = end_rmsd / (2 * scale)
            if ratio >= 1:
                raise ValueError('An end-to-end RMSD of %.1f A cannot be reached by rotating '
                                 'this domain (at most %.1f A); ask for less.'
                                 % (end_rmsd, 2 * scale))
            max_angle = np.rad2deg(2 * np.arcsin(ratio))
        if hinge_axis is None:
            # positive angles open the interface: of the two senses of rotation,
            # keep the one that leaves the moving domain further from the rest
            ends = [_rotation_about_axis(sgn * axis, [np.deg2rad(max_angle)])[0]
                    for sgn in (1.0, -1.0)]
            gaps = []
            for R in ends:
                x = pos.copy()
                x[mask] = (pos[mask] - point) @ R.T + point
                gaps.append(_interdomain_gap(x, mask))
            if gaps[1] > gaps[0]:
                axis = -axis
        params = dict(moving_mask=mask, hinge_point=point, hinge_axis=axis,
                      max_angle_deg=np.array(float(max_angle)))
        return Motion('hinge', pos, amp, sigma, params)
    if kind == 'linear':
        if start_positions is not None:
            pos = np.asarray(getattr(start_positions, 'positions', start_positions), float)
        if end_positions is None:
            mask = _split_domains(pos, labels, moving_domain)
            v = pos[mask].mean(0) - pos[~mask].mean(0)
            v /= np.linalg.norm(v)
            end = pos.copy()
            end[mask] += v * end_rmsd / np.sqrt(mask.mean())
        else:
            end = np.asarray(getattr(end_positions, 'positions', end_positions), float)
            if end.shape != pos.shape:
                raise ValueError('The start and end structures of a linear motion must have '
                                 'the same atoms: shapes %s and %s.' % (pos.shape, end.shape))
        return Motion('linear', pos, amp, sigma, dict(end_positions=end))
    # nma
    if modes is None:
        if n_modes not in (1, 2):
            raise ValueError('An nma motion has 1 or 2 coordinates (n_modes=%r).' % (n_modes,))
        modes = _elastic_modes(pos, n_modes, nma_cutoff)
    modes = np.asarray(modes, dtype=np.float64)
    if modes.ndim != 3 or modes.shape[1:] != pos.shape:
        raise ValueError('Normal modes must have shape (k, %d, 3); got %s.'
                         % (len(pos), modes.shape))
    modes = modes / np.sqrt(np.mean(np.sum(modes ** 2, -1), -1))[:, None, None]
    return Motion('nma', pos, amp, sigma,
                  dict(modes=modes, amplitude_max=np.array(end_rmsd / 2.0)))


def _elastic_modes(pos, n_modes, cutoff):
    """Lowest non-rigid anisotropic-network modes (k, N, 3) (core.structure)."""
    from .structure import elastic_network_modes
    key = ('enm', pos.tobytes(), n_modes, cutoff)
    if key not in _CACHE:
        kw = {} if cutoff is None else {'cutoff': cutoff}
        _CACHE[key] = np.asarray(elastic_network_modes(pos, n_modes=n_modes, **kw),
                                 dtype=np.float64)
        if len(_CACHE) > 8:  # keep a few
            del _CACHE[next(k for k in _CACHE if k != 'builtin')]
    return _CACHE[key].copy()


# --------------------------------------------------------------------------
# Populations
# --------------------------------------------------------------------------

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
        from scipy.stats import norm
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


# --------------------------------------------------------------------------
# Poses, CTF, rendering
# --------------------------------------------------------------------------

def random_poses(n, rng, max_shift=4.0):
    """Uniform SO(3) Euler angles (n, 3) deg and shifts t (n, 2) A uniform in
    the disk of radius ``max_shift``."""
    from .geometry import matrix_to_euler, random_rotations
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
    from .ctf import compute_ctf, frequency_grid
    from .geometry import euler_to_matrix
    from .render import project
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


def _circular_mask(box, apix, radius):
    g = (np.arange(box) - box // 2) * apix
    return (g[None, :] ** 2 + g[:, None] ** 2) <= radius ** 2


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

def _tmp_name(path):
    d, b = os.path.split(path)
    return os.path.join(d, '.tmp-%d-%s' % (os.getpid(), b))


def _atomic_text(path, text):
    from .fileio import atomic_write
    with atomic_write(path, 'w') as fh:
        fh.write(text)


def _atomic_npz(path, arrays):
    from .fileio import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as fh:
            np.savez(fh, **arrays)


class _RawStack:
    """An MRC stack written and read in chunks with plain file I/O.

    No memory map: resident memory does not grow with the number of images.
    The header is written first (mrcfile); header statistics are set by
    ``close(stats)``.
    """

    def __init__(self, path, n, box, apix):
        import mrcfile
        self.path, self.n, self.box = path, int(n), int(box)
        with mrcfile.new_mmap(path, shape=(self.n, box, box), mrc_mode=2,
                              overwrite=True) as m:
            m.set_image_stack()
            m.voxel_size = apix
            self.offset = 1024 + int(m.header.nsymbt)
            self.dtype = m.data.dtype
        self.fh = open(path, 'r+b')

    def _seek(self, start):
        self.fh.seek(self.offset + start * self.box * self.box * self.dtype.itemsize)

    def write(self, start, images):
        self._seek(start)
        self.fh.write(np.ascontiguousarray(images, dtype=self.dtype).tobytes())

    def read(self, start, stop):
        self._seek(start)
        count = (stop - start) * self.box * self.box
        data = np.frombuffer(self.fh.read(count * self.dtype.itemsize), dtype=self.dtype)
        return data.reshape(stop - start, self.box, self.box).astype(np.float32)

    def close(self, stats=None):
        self.fh.close()
        if stats is not None:
            import mrcfile
            with mrcfile.mmap(self.path, mode='r+') as m:
                stats.set_header(m)


class _Stats:
    """Streaming min / max / mean / rms of float arrays (float64 sums)."""

    def __init__(self):
        self.n, self.s, self.s2 = 0, 0.0, 0.0
        self.lo, self.hi = np.inf, -np.inf

    def add(self, x):
        x = np.asarray(x, dtype=np.float64)
        self.n += x.size
        self.s += x.sum()
        self.s2 += np.sum(x * x)
        self.lo, self.hi = min(self.lo, x.min()), max(self.hi, x.max())

    @property
    def mean(self):
        return self.s / self.n

    @property
    def var(self):
        return max(self.s2 / self.n - self.mean ** 2, 0.0)

    def set_header(self, mrc):
        mrc.header.dmin, mrc.header.dmax = self.lo, self.hi
        mrc.header.dmean, mrc.header.rms = self.mean, np.sqrt(self.var)


def _write_volume(path, positions, amplitudes, sigma, box, apix):
    import torch
    from .io.mrc import write_mrc
    from .render import render_volume
    with torch.no_grad():
        vol = render_volume(torch.as_tensor(positions, dtype=torch.float32),
                            torch.as_tensor(amplitudes, dtype=torch.float32),
                            float(sigma), box, apix)
    write_mrc(path, vol.numpy().astype(np.float32), apix)


def _write_pdb(path, positions, amplitudes=None):
    from .structure import write_pdb
    write_pdb(path, np.asarray(positions, dtype=np.float64), amplitudes=amplitudes)


def _chunk_size(n_atoms, box, requested=None):
    if requested:
        return int(requested)
    # exact projector temporaries ~ 2 * B * N * D floats: keep them near 200 MB
    return int(max(1, min(256, 2.5e7 // max(1, n_atoms * box))))


# --------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------

def simulate_dataset(out_dir, n_particles=2000, box=64, apix=2.0, snr=0.1, motion='hinge',
                     population='three_mode', seed=0, sigma=None, structure=None,
                     end_rmsd=6.0, n_modes=2, max_shift=4.0, population_weights=None,
                     population_sd=THREE_MODE_SD, n_states=None, ctf_params=None,
                     keep_clean=False, chunk_size=None, device='cpu', log=None,
                     motion_kwargs=None):
    """Simulate a particle set with ground truth in ``out_dir``; returns the paths.

    ``motion`` is a name ('hinge', 'linear', 'nma': see the module
    docstring; ``n_modes`` 1 or 2 for nma) or a ready ``Motion``;
    ``population`` a name or a ``Population``.  ``sigma`` (A) overrides the
    pseudo-atom width.  ``snr`` is var(clean CTF image over the whole box) /
    var(noise).  Shifts are uniform in a disk of radius ``max_shift`` A;
    ``ctf_params`` overrides ``random_ctf`` keywords.  ``keep_clean`` also
    writes the noise-free stack ``particles_clean.mrcs``.  Images are rendered
    and written in chunks of ``chunk_size`` (memory does not grow with N).
    Same ``seed``, same files.

    Writes particles.mrcs, particles.star (RELION 3.1), ground_truth.npz,
    reference.pdb / .mrc / .npz (the structure at the coordinate origin:
    c = 0 for hinge/linear, zero amplitude for nma), states/state_XX.pdb and
    .mrc (representative states), summary.json.
    """
    if box % 2 or box < 8:
        raise ValueError('The box size must be an even number of pixels, at least 8 '
                         '(got %r).' % (box,))
    if apix <= 0 or snr <= 0 or n_particles < 1:
        raise ValueError('apix, snr and n_particles must be positive (got %r, %r, %r).'
                         % (apix, snr, n_particles))
    say = log or (lambda *a, **k: None)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, 'states'), exist_ok=True)
    ss = np.random.SeedSequence(seed)
    rng_pop, rng_pose, rng_ctf, rng_noise = (np.random.default_rng(s) for s in ss.spawn(4))

    # -- ground truth -------------------------------------------------------
    if isinstance(motion, Motion):
        mot = motion
    else:
        mot = make_motion(motion, structure=structure, end_rmsd=end_rmsd, n_modes=n_modes,
                          sigma=sigma, **(motion_kwargs or {}))
    if sigma is not None:
        mot.sigma = float(sigma)
    pop = population if isinstance(population, Population) else Population(
        population, dim=mot.n_coords, weights=population_weights, sd=population_sd,
        n_states=n_states)
    if pop.dim != mot.n_coords:
        raise ValueError('The population has %d dimension(s) but the %s motion has %d '
                         'coordinate(s).' % (pop.dim, mot.kind, mot.n_coords))
    u, labels = pop.sample(n_particles, rng_pop)
    coords = mot.unit_to_coords(u)
    euler, shifts = random_poses(n_particles, rng_pose, max_shift=max_shift)
    ctf = random_ctf(n_particles, rng_ctf, **(ctf_params or {}))
    say('Motion %s (%d atoms, %d coordinate(s), end-to-end RMSD %.2f A), population %s, '
        '%d particles, box %d px at %.3f A/px.' % (mot.kind, len(mot.reference), mot.n_coords,
                                                  mot.end_to_end_rmsd(), pop.kind, n_particles,
                                                  box, apix))

    # -- pass 1: clean images (raw scale) -> clean stack -------------------
    p = {name: os.path.join(out_dir, name) for name in (
        'particles.mrcs', 'particles.star', 'ground_truth.npz', 'reference.pdb',
        'reference.mrc', 'reference.npz', 'summary.json', 'particles_clean.mrcs')}
    clean_tmp, noisy_tmp = _tmp_name(p['particles_clean.mrcs']), _tmp_name(p['particles.mrcs'])
    chunk = _chunk_size(len(mot.reference), box, chunk_size)
    radius = min(box // 2 * apix, float(np.max(np.linalg.norm(
        mot.conformation(mot.unit_to_coords(pop.state_coords() if pop.dim > 1 else
                                            pop.state_coords()[:, 0])), axis=-1)))
        + 2 * mot.sigma + max_shift)
    mask = _circular_mask(box, apix, radius)
    sig_all, sig_mask = _Stats(), _Stats()
    starts = list(range(0, n_particles, chunk))
    every = max(1, len(starts) // 10)
    clean = noisy = None
    try:
        clean = _RawStack(clean_tmp, n_particles, box, apix)
        for k, s in enumerate(starts):
            e = min(n_particles, s + chunk)
            c = coords[s:e] if mot.n_coords > 1 else coords[s:e, 0]
            img = render_images(mot.conformation(c), mot.amplitudes, mot.sigma, euler[s:e],
                                shifts[s:e], ctf[s:e], box, apix, device=device)
            clean.write(s, img)
            sig_all.add(img)
            sig_mask.add(img[:, mask])
            if (k + 1) % every == 0 or e == n_particles:
                say('  rendered %d / %d images' % (e, n_particles))

        # -- pass 2: scale so that the noise has unit variance, add noise ------
        scale = 1.0 / np.sqrt(sig_all.var / snr)
        clean_stats, noisy_stats, noise_stats = _Stats(), _Stats(), _Stats()
        noisy = _RawStack(noisy_tmp, n_particles, box, apix)
        for s in starts:
            e = min(n_particles, s + chunk)
            c = (clean.read(s, e).astype(np.float64) * scale).astype(np.float32)
            noise = rng_noise.standard_normal((e - s, box, box), dtype=np.float32)
            x = c + noise
            clean.write(s, c)
            noisy.write(s, x)
            clean_stats.add(c)
            noise_stats.add(noise)
            noisy_stats.add(x)
        clean.close(clean_stats)
        noisy.close(noisy_stats)
        os.replace(noisy_tmp, p['particles.mrcs'])
        if keep_clean:
            os.replace(clean_tmp, p['particles_clean.mrcs'])
    finally:
        for stack in (clean, noisy):
            if stack is not None and not stack.fh.closed:
                stack.fh.close()
        for tmp in (clean_tmp, noisy_tmp):
            if os.path.exists(tmp):
                os.remove(tmp)
    amplitudes = mot.amplitudes * scale
    snr_measured = clean_stats.var / noise_stats.var
    snr_mask = sig_mask.var * scale ** 2 / noise_stats.var
    say('Noise added: target SNR %g, measured %.4g over the box (%.4g inside the particle '
        'mask of radius %.1f A).' % (snr, snr_measured, snr_mask, radius))

    # -- states, reference ----------------------------------------------------
    state_unit = pop.state_coords()
    state_coords = mot.unit_to_coords(state_unit)
    state_pos = mot.conformation(state_coords if mot.n_coords > 1 else state_coords[:, 0])
    ref_pos = mot.reference
    paths = {'out_dir': out_dir, 'particles_mrcs': p['particles.mrcs'],
             'particles_star': p['particles.star'], 'ground_truth': p['ground_truth.npz'],
             'reference_pdb': p['reference.pdb'], 'reference_mrc': p['reference.mrc'],
             'reference_npz': p['reference.npz'], 'summary': p['summary.json'],
             'states_pdb': [], 'states_mrc': []}
    if keep_clean:
        paths['clean_mrcs'] = p['particles_clean.mrcs']
    for i, x in enumerate(state_pos):
        base = os.path.join(out_dir, 'states', 'state_%02d' % (i + 1))
        _write_pdb(base + '.pdb', x, amplitudes)
        _write_volume(base + '.mrc', x, amplitudes, mot.sigma, box, apix)
        paths['states_pdb'].append(base + '.pdb')
        paths['states_mrc'].append(base + '.mrc')
    _write_pdb(p['reference.pdb'], ref_pos, amplitudes)
    _write_volume(p['reference.mrc'], ref_pos, amplitudes, mot.sigma, box, apix)
    _atomic_npz(p['reference.npz'], dict(positions=ref_pos, amplitudes=amplitudes,
                                         sigma=np.array(mot.sigma)))

    # -- ground truth, star, summary ------------------------------------------
    gt = dict(coords=coords, coords_unit=u, states=labels, euler=euler, shifts=shifts,
              ctf=ctf, state_coords=state_coords, state_coords_unit=state_unit,
              state_positions=state_pos, reference_positions=ref_pos,
              apix=np.array(apix), box=np.array(box), snr_target=np.array(snr),
              snr_measured=np.array(snr_measured), noise_sd=np.array(1.0),
              image_scale=np.array(scale),
              motion=np.array(json.dumps(mot.describe())),
              population=np.array(json.dumps(pop.describe())))
    gt.update(mot.to_arrays())
    gt['amplitudes'] = amplitudes
    _atomic_npz(p['ground_truth.npz'], gt)
    _write_star(p['particles.star'], p['particles.mrcs'], apix, euler, shifts, ctf)
    summary = dict(n_particles=int(n_particles), box=int(box), apix=float(apix), seed=seed,
                   snr_target=float(snr), snr_measured=float(snr_measured),
                   snr_definition='var(clean CTF-modulated image over the whole box) / '
                                  'var(noise), pooled over all particles',
                   snr_in_particle_mask=float(snr_mask), mask_radius_A=float(radius),
                   noise_sd=1.0, image_scale=float(scale), max_shift_A=float(max_shift),
                   motion=mot.describe(), population=pop.describe(),
                   state_coords=state_coords.tolist(),
                   state_fractions=[float(np.mean(labels == i)) for i in range(len(pop.centres))],
                   ctf=dict(defocus_A=[float(ctf[:, :2].min()), float(ctf[:, :2].max())],
                            voltage_kV=float(ctf[0, 3]), cs_mm=float(ctf[0, 4]),
                            amplitude_contrast=float(ctf[0, 5])),
                   files={k: v for k, v in paths.items() if k != 'out_dir'})
    _atomic_text(p['summary.json'], json.dumps(summary, indent=2))
    say('Wrote %d particles to %s' % (n_particles, out_dir))
    return paths


def _write_star(path, stack, apix, euler, shifts, ctf):
    """RELION 3.1 star through core.particles (structio's writer)."""
    from .particles import ParticleSet, write_particles_star
    from .io.mrc import open_stack
    pset = ParticleSet(images=open_stack(stack), apix=float(apix), euler=euler,
                       shifts=shifts, ctf=ctf, metadata=None)
    write_particles_star(path, pset, stack_path=stack, version='3.1')


# --------------------------------------------------------------------------
# Reading the ground truth back
# --------------------------------------------------------------------------

def load_ground_truth(path_or_dir):
    """ground_truth.npz (file or simulation folder) -> dict of numpy arrays."""
    path = path_or_dir
    if os.path.isdir(path):
        path = os.path.join(path, 'ground_truth.npz')
    if not os.path.exists(path):
        raise FileNotFoundError('No ground truth at %s: give the ground_truth.npz written by '
                                '"continuousflex-geodl simulate" or its folder.' % path)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def motion_from_ground_truth(gt):
    """The ``Motion`` of a simulation (dict from ``load_ground_truth`` or a path)."""
    if not isinstance(gt, dict):
        gt = load_ground_truth(gt)
    return Motion.from_arrays(gt)


def ground_truth_positions(gt, coords=None, indices=None):
    """True atom positions (M, N, 3) A.

    ``coords`` (M, k) (or (M,) for one coordinate) in the motion's own units;
    default: the coordinates of the particles ``indices`` (default all) of the
    simulation.  ``gt`` is a path or the dict of ``load_ground_truth``.
    """
    if not isinstance(gt, dict):
        gt = load_ground_truth(gt)
    mot = Motion.from_arrays(gt)
    if coords is None:
        coords = np.asarray(gt['coords'])
        if indices is not None:
            coords = coords[np.asarray(indices)]
    c = np.asarray(coords, dtype=np.float64)
    if mot.n_coords == 1:
        c = c.reshape(-1)
    else:
        c = c.reshape(-1, mot.n_coords)
    return mot.conformation(c)
