"""Conformational motions with known coordinates (``Motion``, ``make_motion``).

``'hinge'``: one domain rotates rigidly about a hinge axis; ``'linear'``:
straight interpolation between two structures; ``'nma'``: elastic-network
normal modes (see ``core.simulate`` for the definitions and units).
"""
import numpy as np
from scipy.spatial import cKDTree

from ..builtin import builtin_molecule
from ..enm import elastic_network_modes
from ..metrics import rmsd
from ..settings import Motion as MotionKind

MOTIONS = tuple(MotionKind.values())


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
    """``builtin.builtin_molecule()``, built once per process (it takes seconds)."""
    if 'builtin' not in _CACHE:
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
    """Lowest non-rigid anisotropic-network modes (k, N, 3) (``core.enm``)."""
    key = ('enm', pos.tobytes(), n_modes, cutoff)
    if key not in _CACHE:
        kw = {} if cutoff is None else {'cutoff': cutoff}
        _CACHE[key] = np.asarray(elastic_network_modes(pos, n_modes=n_modes, **kw),
                                 dtype=np.float64)
        if len(_CACHE) > 8:  # keep a few
            del _CACHE[next(k for k in _CACHE if k != 'builtin')]
    return _CACHE[key].copy()
