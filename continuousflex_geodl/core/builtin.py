"""The built-in molecule: a deterministic two-domain protein-like pseudo-atom
model (no download), used by the simulations, tests and demos; also shipped
as ``resources/builtin_molecule.pdb``."""
import functools
import os

import numpy as np

from .atomic_model import Structure
from .io.pdb import write_pdb

#: shipped files (``resources/``)
RESOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'resources')


def builtin_molecule():
    """A deterministic two-domain protein-like pseudo-atom model (no download).

    A C-alpha-trace-like chain of 300 beads: domain 0 (170 residues) and
    domain 1 (130 residues) are compact globules at protein density (about
    135 A^3 per residue; radius of gyration about 19 A, 9-10 neighbours
    within 8 A per bead) joined by a short linker.  Consecutive beads are
    3.8 A apart, beads i, i+2 at least 5 A, all others at least 4.2 A.
    Extent about 55 x 37 x 35 A (fits a 64 px box at 2 A/px with room for
    motion), centred on its centre of mass.  ``domains`` labels the beads,
    ``hinge_point`` is the middle of the bond joining the domains and
    ``hinge_axis`` is perpendicular to the inter-domain direction, so
    rotating domain 1 about it opens/closes the cleft.  Amplitudes 110 Da
    (a residue), sigma 2.5 A.  Also shipped as
    ``resources/builtin_molecule.pdb``.
    """
    pos, dom, hinge_point, hinge_axis = _builtin_arrays()
    keys = np.array(['A:%d' % (i + 1) for i in range(len(pos))])
    return Structure(pos.copy(), np.full(len(pos), 110.0), 2.5, residues=keys,
                     domains=dom.copy(), hinge_point=hinge_point.copy(),
                     hinge_axis=hinge_axis.copy())


@functools.lru_cache(maxsize=1)
def _builtin_arrays(seed=7, n_a=170, n_b=130, linker=8):
    rng = np.random.default_rng(seed)
    ra, rb = [(3 * n * 135.0 / (4 * np.pi)) ** (1 / 3) for n in (n_a, n_b)]
    ca, cb = np.array([-0.85 * ra, 0, 0]), np.array([0.85 * rb, 0, 0])
    shape = np.array([0.85, 1.08, 1.08]) * 1.12  # slightly oblate globules
    hinge = np.zeros(3)
    plan = ([(ca, ra * shape)] * (n_a - 1 - linker) + [(hinge, None)] * linker +
            [(cb, None)] * (linker // 2) + [(cb, rb * shape)] * (n_b - linker // 2))
    pos = _compact_walk(plan, ca, rng)
    dom = np.r_[np.zeros(n_a, np.int64), np.ones(n_b, np.int64)]
    com = pos.mean(0)
    pos = pos - com
    hinge_point = 0.5 * (pos[n_a - 1] + pos[n_a])
    v = pos[dom == 1].mean(0) - pos[dom == 0].mean(0)
    v /= np.linalg.norm(v)
    axis = np.cross(v, [0.0, 0.0, 1.0])
    axis = np.cross(axis, v) if np.linalg.norm(axis) > 1e-6 else np.array([0.0, 1.0, 0.0])
    axis /= np.linalg.norm(axis)  # z made perpendicular to the inter-domain vector
    for a in (pos, dom, hinge_point, axis):
        a.flags.writeable = False
    return pos, dom, hinge_point, axis


def _compact_walk(plan, first, rng, step=3.8, min_nb=4.2, min_13=5.0, n_cand=48,
                  noise=2.0):
    """Self-avoiding chain grown bead by bead: ``plan[k] = (centre, radii)``
    confines bead k+1 to an ellipsoid and pulls it to the centre (radii None:
    only pulled).  Dead ends are undone by backtracking."""
    pts = [np.asarray(first, float)]
    fails = 0
    while len(pts) < len(plan) + 1:
        centre, radii = plan[len(pts) - 1]
        allp = np.asarray(pts)
        d = rng.normal(size=(n_cand, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        cand = allp[-1] + step * d
        ok = np.ones(n_cand, bool)
        if len(allp) > 1:
            ok &= np.linalg.norm(cand - allp[-2], axis=1) >= min_13
        if len(allp) > 2:
            ok &= np.linalg.norm(cand[:, None] - allp[None, :-2], axis=2).min(1) >= min_nb
        if radii is not None:
            r = np.linalg.norm((cand - centre) / radii, axis=1)
            ok &= r <= 1.0
        else:
            r = np.linalg.norm(cand - centre, axis=1) / 10.0
        if not ok.any():
            fails += 1
            if fails > 5000:
                raise RuntimeError('builtin molecule: chain growth failed')
            del pts[-min(len(pts) - 1, 1 + fails // 4):]
            continue
        score = -10.0 * r + noise * rng.normal(size=n_cand)
        score[~ok] = -np.inf
        pts.append(cand[np.argmax(score)])
    return np.asarray(pts)


def builtin_molecule_pdb():
    """Path of the shipped ``resources/builtin_molecule.pdb``."""
    return os.path.join(RESOURCES, 'builtin_molecule.pdb')


def write_builtin_molecule_pdb(path):
    """Write the built-in molecule as a PDB (chain A = domain 0, B = domain 1;
    B-factor = amplitude; hinge in REMARK lines).  Regenerates the resource."""
    m = builtin_molecule()
    hp, ha = m.hinge_point, m.hinge_axis
    return write_pdb(path, m.positions, m.amplitudes, chain=np.where(m.domains == 0, 'A', 'B'),
                     remarks=['continuousflex_geodl built-in two-domain molecule (synthetic, '
                              'structure.builtin_molecule())',
                              'HINGE POINT %.3f %.3f %.3f AXIS %.4f %.4f %.4f'
                              % (hp[0], hp[1], hp[2], ha[0], ha[1], ha[2])])
