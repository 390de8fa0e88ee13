"""Particle subsets selected from the landscape.

All selections return a boolean mask (N,); ``np.nonzero(mask)[0]`` are the
0-based particle indices (the row order of the latents and of the particle
file they came from).  Selections combine with ``&`` / ``|``.

* ``select_states(labels, states)`` -- particles of the given states.
* ``select_box(y, lows, highs)`` -- inside an axis-aligned box of an
  embedding (any number of axes; bounds inclusive).
* ``select_polygon(y, vertices)`` -- inside a polygon typed as coordinates
  of a 2D embedding (points on the boundary count as inside).
* ``select_free_energy(dG, max_dG)`` -- particles where dG <= max_dG
  (same units as dG); NaN never selected.
* ``select_ball(z, centre, radius)`` -- latents within a Euclidean radius of
  a point (boundary included).
* ``select_mask(selection, ...)`` -- one of the above chosen by a
  ``Selection`` (what the *subset from landscape* protocol offers), or a
  list of particle ids (``Selection.IDS``: a selection made in the
  interactive explorer, ``core.landscape.explore``).
* ``write_indices`` / ``read_indices`` -- plain text, one index per line
  (0-based unless ``one_based``), with a ``#`` comment header.
* ``export_star(particles, indices, out)`` -- the subset as a RELION .star
  (``core.particles.write_particles_star(pset.subset(idx))``).
"""
import enum
import os

import numpy as np


def parse_polygon(text):
    """'x1,y1 x2,y2 x3,y3 ...' (or ';' separated) -> (V, 2) float array."""
    pts = []
    for tok in str(text).replace(';', ' ').split():
        xy = tok.split(',')
        if len(xy) != 2:
            raise ValueError("Polygon vertices must be written 'x,y' separated by spaces; "
                             "could not read '%s'." % tok)
        pts.append([float(xy[0]), float(xy[1])])
    if len(pts) < 3:
        raise ValueError('A polygon needs at least 3 vertices; got %d.' % len(pts))
    return np.array(pts)


def select_states(labels, states):
    labels = np.asarray(labels)
    states = np.atleast_1d(np.asarray(states, dtype=np.int64))
    n_st = int(labels.max()) + 1 if len(labels) else 0
    bad = [int(s) for s in states if s < 0 or s >= n_st]
    if bad:
        raise ValueError('State(s) %s do not exist: the landscape has states 0..%d.'
                         % (bad, n_st - 1))
    return np.isin(labels, states)


def select_box(y, lows, highs):
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    lo = np.atleast_1d(np.asarray(lows, dtype=np.float64))
    hi = np.atleast_1d(np.asarray(highs, dtype=np.float64))
    if lo.shape != hi.shape or len(lo) > y.shape[1]:
        raise ValueError('The box needs one (low, high) pair per embedding axis (at most %d); '
                         'got %d lows and %d highs.' % (y.shape[1], len(lo), len(hi)))
    if np.any(lo > hi):
        raise ValueError('Box bounds must satisfy low <= high on every axis; got %s to %s.'
                         % (lo.tolist(), hi.tolist()))
    d = len(lo)
    return np.all((y[:, :d] >= lo) & (y[:, :d] <= hi), axis=1)


def select_polygon(y, vertices):
    """Even-odd rule point-in-polygon for the first two embedding axes."""
    y = np.asarray(y, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError('Polygon selection needs a 2D embedding (N, 2).')
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ValueError('A polygon needs at least 3 vertices (V, 2).')
    x, yy = y[:, 0], y[:, 1]
    inside = np.zeros(len(y), bool)
    on_edge = np.zeros(len(y), bool)
    for (x1, y1), (x2, y2) in zip(v, np.roll(v, -1, axis=0)):
        cond = (y1 > yy) != (y2 > yy)
        with np.errstate(divide='ignore', invalid='ignore'):
            xc = x1 + (yy - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (x < xc)
        # boundary points: collinear and within the segment's bounding box
        cross = (x2 - x1) * (yy - y1) - (y2 - y1) * (x - x1)
        scale = max(abs(x2 - x1) + abs(y2 - y1), 1e-300)
        on_edge |= (np.abs(cross) <= 1e-12 * scale * (1 + np.abs(x) + np.abs(yy))) & \
            (x >= min(x1, x2)) & (x <= max(x1, x2)) & (yy >= min(y1, y2)) & (yy <= max(y1, y2))
    return inside | on_edge


def select_free_energy(dG, max_dG):
    dG = np.asarray(dG, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        return np.isfinite(dG) & (dG <= float(max_dG))


def select_ball(z, centre, radius):
    """Particles whose latent ``z`` (N, K) lies within ``radius`` of ``centre``
    (K,) (Euclidean, boundary included)."""
    z = np.asarray(z, dtype=np.float64)
    z = z[:, None] if z.ndim == 1 else z
    c = np.atleast_1d(np.asarray(centre, dtype=np.float64))
    if z.ndim != 2 or c.shape != (z.shape[1],):
        raise ValueError('The centre has %d coordinates but the latents have %s dimensions.'
                         % (c.size, z.shape[1] if z.ndim == 2 else '?'))
    if not float(radius) > 0:
        raise ValueError('The radius must be positive; got %s.' % radius)
    return np.linalg.norm(z - c[None], axis=1) <= float(radius)


class Selection(enum.IntEnum):
    """Kinds of particle selection (the values are the protocol's choice indices)."""
    STATES = 0
    BOX = 1
    POLYGON = 2
    FREE_ENERGY = 3
    BALL = 4
    IDS = 5


def select_mask(selection, states=None, zred=None, z=None, dG=None, state_ids=None,
                box=None, polygon=None, max_dG=None, center=None, radius=None, ids=None,
                id_list=None):
    """Boolean mask (N,) of one selection (a ``Selection``, its value or name).

    * STATES: ``states`` (N,) labels that are in ``state_ids`` (same
      numbering, e.g. 1-based in Scipion; ids without particles select none);
    * BOX: ``zred`` (N, >=2) inside ``box`` = (xmin, xmax, ymin, ymax);
    * POLYGON: ``zred`` inside ``polygon`` (V, 2) (boundary included);
    * FREE_ENERGY: ``dG`` (N,) <= ``max_dG`` (NaN never selected);
    * BALL: ``z`` (N, K) within ``radius`` of ``center`` (K,);
    * IDS: ``ids`` (N,) (e.g. Scipion particle ids) that are in ``id_list``
      (the particles chosen in the interactive explorer).
    """
    if isinstance(selection, str):
        try:
            selection = Selection[selection.upper()]
        except KeyError:
            raise ValueError('Unknown selection %r: use one of %s.' % (
                selection, ', '.join(s.name.lower() for s in Selection))) from None
    try:
        selection = Selection(selection)
    except ValueError:
        raise ValueError('Unknown selection %r' % (selection,)) from None
    if selection == Selection.STATES:
        return np.isin(np.asarray(states), np.asarray(state_ids, dtype=int))
    if selection == Selection.BOX:
        xmin, xmax, ymin, ymax = box
        return select_box(zred, [xmin, ymin], [xmax, ymax])
    if selection == Selection.POLYGON:
        return select_polygon(zred, polygon)
    if selection == Selection.FREE_ENERGY:
        return select_free_energy(dG, max_dG)
    if selection == Selection.IDS:
        return np.isin(np.asarray(ids), np.asarray(id_list, dtype=np.int64))
    return select_ball(z, center, radius)


def write_indices(path, indices, one_based=False, header=None):
    """Text file of particle indices, one per line (atomic)."""
    from ..fileio import atomic_write
    idx = np.asarray(indices, dtype=np.int64).ravel()
    with atomic_write(path) as fh:
        fh.write('# %d particles, %s indices%s\n' % (
            len(idx), '1-based' if one_based else '0-based (row of the latent array)',
            ('; ' + header) if header else ''))
        fh.write(''.join('%d\n' % (i + (1 if one_based else 0)) for i in idx))
    return path


def read_indices(path, one_based=False):
    if not os.path.exists(path):
        raise FileNotFoundError("Index file not found: '%s'" % path)
    idx = np.loadtxt(path, dtype=np.int64, comments='#', ndmin=1)
    return idx - (1 if one_based else 0)


def export_star(particles, indices, out, version='3.1'):
    """Write the selected particles (path or ParticleSet) as a RELION .star."""
    from ..particles import ParticleSet, load_particles, write_particles_star
    pset = particles if isinstance(particles, ParticleSet) else load_particles(particles)
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(pset)):
        raise ValueError('Particle index %d is outside the particle file (%d particles): the '
                         'latents and the particles do not correspond.'
                         % (idx.max() if idx.max() >= len(pset) else idx.min(), len(pset)))
    if len(idx) == 0:
        raise ValueError('The selection is empty: no particle to write.')
    return write_particles_star(out, pset.subset(idx), version=version)
