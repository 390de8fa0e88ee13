"""Free-energy basins of a particle cloud by topological persistence (ToMATo).

Chazal, Guibas, Oudot & Skraba (2013) "Persistence-based clustering in
Riemannian manifolds", J. ACM 60:41.  Given a log density ``f = ln p`` at the
particles (nodes) and a k-nearest-neighbour graph:

1. every node points to its highest neighbour (graph gradient ascent); the
   nodes that reach the same local maximum form a raw basin;
2. raw basins are joined across their highest connecting edge (the saddle,
   value ``min(f_i, f_j)``) in decreasing saddle order; at each join the
   basin with the lower peak dies with persistence ``f_peak - f_saddle``,
   which is its free-energy barrier in kT (dG = -kT ln p);
3. basins whose barrier is below ``barrier`` kT are merged into their
   neighbour (or, with ``n_basins``, the lowest barriers are merged until
   that many remain); basins holding less than ``min_population`` of the
   nodes are merged across their highest saddle.

This finds basins of any shape in any dimension (curved ones that a
Gaussian mixture would split), and the barrier threshold is a physical
quantity.

``smooth_log_density`` puts the density at the resolution of the graph
before step 1: each node gets the mean density over its graph
neighbourhood (itself and its neighbours).  A density model evaluated at
single particles also reflects where each particle sits in directions in
which the model is thin (a Gaussian mixture fitted to a cloud whose width
varies along the landscape gives neighbouring particles very different
densities), and a chain of such low values across a basin is read as a
saddle that the particle counts do not show.  Averaging over the k
neighbours removes these particle-scale fluctuations; barriers wider than a
neighbourhood are unchanged.
"""
from dataclasses import dataclass

import numpy as np

from .density import binned_density, cell_centres, cell_index  # noqa: F401 (grid helpers)


def knn_edges(points, k=10):
    """Undirected edges (E, 2) of the symmetrised k-nearest-neighbour graph."""
    from scipy.spatial import cKDTree
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    k = int(min(k, n - 1))
    if k < 1:
        return np.zeros((0, 2), np.int64)
    _, nb = cKDTree(pts, compact_nodes=False).query(pts, k=k + 1)
    i = np.repeat(np.arange(n), k)
    j = nb[:, 1:].ravel()
    e = np.stack([np.minimum(i, j), np.maximum(i, j)], 1)
    e = e[e[:, 0] != e[:, 1]]
    return np.unique(e, axis=0)


def smooth_log_density(log_density, edges, steps=1):
    """ln of the density averaged over each node's graph neighbourhood.

    ``log_density`` (n,) natural log of p at the nodes; ``edges`` (E, 2)
    undirected graph; ``steps`` how many times the neighbourhood mean
    (itself and its neighbours, equal weights) is applied (0: unchanged).
    Returns (n,) in the same units (ln p, same additive constant).
    """
    f = np.asarray(log_density, dtype=np.float64)
    steps = int(steps)
    if steps < 0:
        raise ValueError('The number of density smoothing steps must be 0 or more; got %d.'
                         % steps)
    if steps == 0 or len(f) == 0:
        return f.copy()
    if not np.isfinite(f).all():
        raise ValueError('The density is zero or undefined at some particles; cannot find '
                         'basins.')
    from scipy.sparse import coo_matrix, identity
    n = len(f)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    adj = coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                     shape=(n, n)).tocsr()
    adj = adj + identity(n, format='csr')
    deg = np.asarray(adj.sum(1)).ravel()
    top = f.max()
    p = np.exp(f - top)
    for _ in range(steps):
        p = (adj @ p) / deg
    return np.log(np.maximum(p, 1e-300)) + top


class _UnionFind:
    def __init__(self, n):
        self.parent = list(range(n))

    def find(self, a):
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a, b):
        """Attach b's set under a's root; returns False if already joined."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[rb] = ra
        return True


@dataclass
class Basins:
    """Result of ``persistence_basins`` (all indices refer to the nodes).

    ``labels`` (n,) basin of each node, 0 = most populated; ``peaks`` (B,)
    node of highest density in each basin; ``barriers`` (B,) free-energy
    barrier (kT) from the basin's bottom to its lowest saddle towards another
    basin (inf when alone); ``populations`` (B,) fraction of node weight.
    """
    labels: np.ndarray
    peaks: np.ndarray
    barriers: np.ndarray
    populations: np.ndarray


def persistence_basins(log_density, edges, barrier=1.0, n_basins=None, min_population=0.0,
                       weights=None, significant=None):
    """Basins of the density on a graph (see module docstring).

    ``log_density`` (n,) natural log of p at the nodes; ``edges`` (E, 2)
    undirected graph; ``barrier`` in kT; ``n_basins`` (optional) exact number
    wanted (merging the lowest barriers first); ``min_population`` fraction
    of the total node weight; ``weights`` optional node weights (bootstrap).
    ``significant`` optional test ``(peak_nodes, saddle_nodes, barriers) ->
    bool array``, called on the merge events whose barrier is at least
    ``barrier``: an event it rejects is merged too (``map_basins``).
    """
    f = np.asarray(log_density, dtype=np.float64)
    n = len(f)
    if n == 0:
        raise ValueError('No particles to cluster.')
    if not np.isfinite(f).all():
        raise ValueError('The density is zero or undefined at some particles; cannot find '
                         'basins.')
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    # strict order: rank 0 = highest density (ties broken by index)
    order = np.lexsort((np.arange(n), -f))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    # 1. gradient ascent: each node -> its highest neighbour (or itself)
    best = np.arange(n)
    if len(edges):
        a = np.concatenate([edges[:, 0], edges[:, 1]])
        b = np.concatenate([edges[:, 1], edges[:, 0]])
        srt = np.lexsort((rank[b], a))  # per a, ascending rank of b
        a, b = a[srt], b[srt]
        first = np.ones(len(a), bool)
        first[1:] = a[1:] != a[:-1]
        cand = np.full(n, -1)
        cand[a[first]] = b[first]
        up = (cand >= 0) & (rank[np.maximum(cand, 0)] < rank)
        best[up] = cand[up]
    root = best.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    raw_ids, raw = np.unique(root, return_inverse=True)  # raw basin of each node
    n_raw = len(raw_ids)
    peak_f = f[raw_ids]
    # 2. merge tree over raw basins: edges by decreasing saddle (Kruskal)
    events = []  # (persistence, raw_a, raw_b)
    if len(edges) and n_raw > 1:
        ra, rb = raw[edges[:, 0]], raw[edges[:, 1]]
        cross = ra != rb
        e, ra, rb = edges[cross], ra[cross], rb[cross]
        sad_rank = np.maximum(rank[e[:, 0]], rank[e[:, 1]])
        # only the highest saddle between each pair of raw basins can join them
        key = np.minimum(ra, rb) * n_raw + np.maximum(ra, rb)
        o = np.lexsort((sad_rank, key))
        first = np.ones(len(o), bool)
        first[1:] = key[o][1:] != key[o][:-1]
        o = o[first]
        e, ra, rb, sad_rank = e[o], ra[o], rb[o], sad_rank[o]
        srt = np.argsort(sad_rank, kind='stable')
        uf = _UnionFind(n_raw)
        top = list(range(n_raw))  # set root -> its raw basin with the highest peak
        for t in srt:
            x, y = uf.find(int(ra[t])), uf.find(int(rb[t]))
            if x == y:
                continue
            px, py = top[x], top[y]
            saddle = f[order[sad_rank[t]]]
            young, old = (px, py) if peak_f[px] < peak_f[py] else (py, px)
            events.append((peak_f[young] - saddle, int(ra[t]), int(rb[t]), saddle,
                           int(raw_ids[young]), int(order[sad_rank[t]])))
            if old == px:
                uf.parent[y] = x
            else:
                uf.parent[x] = y
    # 3. cut the tree
    keep = np.array([ev[0] >= barrier for ev in events], bool)
    if significant is not None and keep.any():
        ev = [events[i] for i in np.nonzero(keep)[0]]
        keep[np.nonzero(keep)[0]] = np.asarray(significant(
            np.array([e[4] for e in ev]), np.array([e[5] for e in ev]),
            np.array([e[0] for e in ev])), bool)
    uf = _UnionFind(n_raw)
    count = n_raw
    for (pers, x, y, *_), k in zip(events, keep):
        if not k and uf.union(x, y):
            count -= 1
    if n_basins is not None:
        n_basins = int(n_basins)
        if n_basins < 1:
            raise ValueError('The number of states must be at least 1.')
        for pers, x, y, *_ in sorted(events):
            if count <= n_basins:
                break
            if uf.union(x, y):
                count -= 1
    raw_w = np.bincount(raw, w, minlength=n_raw)
    total = raw_w.sum()
    if min_population > 0:
        while count > 1:
            sets = np.array([uf.find(r) for r in range(n_raw)])
            pops = np.bincount(sets, raw_w, minlength=n_raw) / total
            live = np.unique(sets)
            small = live[pops[live] < min_population]
            if not len(small):
                break
            s = small[np.argmin(pops[small])]
            # its highest-saddle (lowest-persistence) link to another set
            links = [(sad, x, y) for _, x, y, sad, *_ in events
                     if (sets[x] == s) != (sets[y] == s)]
            if not links:
                break
            _, x, y = max(links)
            uf.union(x, y)
            count -= 1
    sets = np.array([uf.find(r) for r in range(n_raw)])
    _, set_of_raw = np.unique(sets, return_inverse=True)
    lab = set_of_raw[raw]
    nb = set_of_raw.max() + 1
    pops = np.bincount(lab, w, minlength=nb) / total
    new = np.argsort(-pops, kind='stable')
    remap = np.empty(nb, np.int64)
    remap[new] = np.arange(nb)
    lab = remap[lab]
    pops = pops[new]
    peaks = np.array([np.nonzero(lab == s)[0][np.argmax(f[lab == s])] for s in range(nb)])
    # barrier of each final basin: lowest persistence among tree links leaving it
    bar = np.full(nb, np.inf)
    final_of_raw = remap[set_of_raw]
    for _, x, y, sad, *_ in events:
        sx, sy = final_of_raw[x], final_of_raw[y]
        if sx != sy:
            for s_ in (sx, sy):
                bar[s_] = min(bar[s_], f[peaks[s_]] - sad)
    return Basins(lab, peaks, bar, pops)


# ------------------------------------------------------ basins of the map

def grid_edges(shape):
    """Edges (E, 2) between neighbouring cells of a 1D or 2D grid (flat C-order
    indices; 2D: the 8 neighbours, so diagonal saddles are not missed)."""
    shape = tuple(int(s) for s in shape)
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 1:
        return np.stack([idx[:-1], idx[1:]], 1)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :]),
             (idx[:-1, :-1], idx[1:, 1:]), (idx[:-1, 1:], idx[1:, :-1])]
    return np.concatenate([np.stack([a.ravel(), b.ravel()], 1) for a, b in pairs])


def barrier_std(y, h, peak_points, saddle_points, weights=None, chunk=1 << 16):
    """Sampling s.d. (kT) of ln p(peak) - ln p(saddle) of a Gaussian KDE of
    width ``h`` -- (D,), or (N, D): one width per particle (adaptive kernel)
    -- over the particles ``y`` (N, D), for (E, D) point pairs.

    Delta method for the Poisson bootstrap (each particle's weight ~
    Poisson(w_i)): with K_i(x) the normalised kernel of particle i at x and
    S(x) = sum_i w_i K_i(x), var = sum_i w_i (K_i(a)/S(a) - K_i(b)/S(b))^2.
    The normalisation of p cancels in the difference.
    """
    y = np.asarray(y, np.float64)
    hp = np.broadcast_to(np.asarray(h, np.float64), y.shape)
    a = np.asarray(peak_points, np.float64).reshape(-1, y.shape[1])
    b = np.asarray(saddle_points, np.float64).reshape(-1, y.shape[1])
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)

    def kern(s, x):
        yy, hh = y[s:s + chunk], hp[s:s + chunk]
        r2 = (((yy[:, None, :] - x[None]) / hh[:, None, :]) ** 2).sum(-1)
        return np.exp(-0.5 * r2) / np.prod(hh, 1)[:, None]

    sa, sb = np.zeros(len(a)), np.zeros(len(b))
    for s in range(0, len(y), chunk):
        sa += w[s:s + chunk] @ kern(s, a)
        sb += w[s:s + chunk] @ kern(s, b)
    var = np.zeros(len(a))
    with np.errstate(divide='ignore', invalid='ignore'):
        for s in range(0, len(y), chunk):
            d = kern(s, a) / sa - kern(s, b) / sb
            var += w[s:s + chunk] @ (d * d)
    return np.sqrt(np.where(np.isfinite(var), var, np.inf))


@dataclass
class MapBasins:
    """Result of ``map_basins``.  Cells are flat indices of the map grid
    (``[iy, ix]`` C order in 2D, as ``FreeEnergyMap.dG``).

    ``cell_labels`` (n_cells,) basin of each cell (-1: no particle within
    reach of the kernel); ``labels`` (N,) basin of each particle;
    ``peaks`` (B,) cell of the deepest point of each basin; ``barriers``
    (B,) kT to the lowest saddle towards another basin (inf when alone);
    ``barrier_z`` (B,) that barrier over its sampling s.d.;
    ``populations`` (B,) fraction of the (weighted) particles.
    """
    cell_labels: np.ndarray
    labels: np.ndarray
    peaks: np.ndarray
    barriers: np.ndarray
    barrier_z: np.ndarray
    populations: np.ndarray
    density: np.ndarray


def map_basins(y, h, lo, width, bins, weights=None, barrier=0.3, significance=3.0,
               min_population=0.01, cache=None, factors=None):
    """Free-energy basins of the map (binned KDE of the embedding ``y``).

    The density is ``density.binned_density`` (the map the user sees, same
    width ``h`` and grid); basins are found by persistence on the grid's
    cells (``persistence_basins``, 8-neighbour graph in 2D), and a basin is
    kept only when its barrier to its neighbour is both at least ``barrier``
    kT and ``significance`` times its sampling s.d. (``barrier_std``); the
    others are merged.  Basins holding less than ``min_population`` of the
    particles are merged.  Each particle belongs to the basin of its cell
    (its basin of attraction on the map).  ``weights`` (N,) optional particle
    weights (bootstrap replicates); the barriers' s.d. is computed from the
    binned (weighted) counts, as the map is; ``cache`` an optional dict kept between
    calls on the same particles and grid (bootstrap replicates); ``factors``
    the per-cell log2 width factors of an adaptive kernel
    (``density.local_width_factors``; None: one width ``h``).
    """
    y = np.asarray(y, np.float64)
    density, counts = binned_density(y, h, lo, width, bins, weights, factors,
                                     return_counts=True)
    dens = np.asarray(density, np.float64).ravel()
    counts = counts.ravel()
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    active = dens > dens.max() * np.exp(-20.0)  # dG < 20 kT
    act_idx = np.nonzero(active)[0]
    node_of = np.full(len(dens), -1)
    node_of[act_idx] = np.arange(len(act_idx))
    cache = {} if cache is None else cache
    if 'edges' not in cache:
        cache['edges'] = grid_edges(tuple(int(b) for b in bins)[::-1])  # [iy, ix]
        cache['cell'] = cell_index(y, lo, width, bins)
        cache['centres'] = cell_centres(lo, width, bins)
    e, centres = cache['edges'], cache['centres']
    e = node_of[e[(active[e[:, 0]]) & (active[e[:, 1]])]]
    cell = cache['cell'].copy()
    if not active[cell].all():  # particles outside the kernel's reach: nearest live cell
        from scipy.spatial import cKDTree
        bad = ~active[cell]
        cell[bad] = act_idx[cKDTree(centres[act_idx] / width).query(
            centres[cell[bad]] / width)[1]]
    node_w = np.bincount(node_of[cell], w, minlength=len(act_idx))
    f = np.log(dens[act_idx])

    occ = np.nonzero(counts > 0)[0]  # the binned particles: same estimate as the map
    cy, cw = centres[occ], counts[occ]
    hy = h if factors is None else np.asarray(h)[None] * 2.0 ** factors[occ][:, None]

    def significant(peaks, saddles, bars):
        sd = barrier_std(cy, hy, centres[act_idx[peaks]], centres[act_idx[saddles]], cw)
        return bars >= significance * sd

    bas = persistence_basins(f, e, barrier=barrier, min_population=min_population,
                             weights=node_w, significant=significant)
    bas = _absorb_islands(bas, node_w, centres[act_idx] / width, min_population)
    cell_labels = np.full(len(dens), -1)
    cell_labels[act_idx] = bas.labels
    peaks = act_idx[bas.peaks]
    bars, z = _final_barriers(cy, hy, cw, f, e, bas, centres[act_idx])
    labels = cell_labels[cell]
    pops = np.bincount(labels, w, minlength=len(peaks)) / w.sum()
    return MapBasins(cell_labels, labels, peaks, bars, z, pops, density)


def _absorb_islands(bas, node_w, pts, min_population):
    """Basins below ``min_population`` that persistence could not merge
    because no cell links them to the rest (outliers farther than the
    kernel's reach) join the basin of the nearest cell of a larger basin."""
    pops = np.bincount(bas.labels, node_w, minlength=len(bas.peaks)) / max(node_w.sum(),
                                                                           1e-300)
    small = pops < min_population
    if not small.any() or small.all():
        return bas
    from scipy.spatial import cKDTree
    keep = np.nonzero(~small)[0]
    new = np.full(len(pops), -1)
    new[keep] = np.arange(len(keep))
    lab = new[bas.labels]
    big = np.nonzero(lab >= 0)[0]
    lost = np.nonzero(lab < 0)[0]
    lab[lost] = lab[big[cKDTree(pts[big]).query(pts[lost])[1]]]
    return Basins(lab, bas.peaks[keep], bas.barriers[keep],
                  np.bincount(lab, node_w, minlength=len(keep)) / max(node_w.sum(), 1e-300))


def _final_barriers(y, h, w, f, e, bas, centres):
    """Barrier (kT) of each final basin to its lowest pass -- the highest edge
    leaving it -- and that barrier over its sampling s.d. (inf, inf when no
    edge leaves it)."""
    lab = bas.labels
    nb = len(bas.peaks)
    bars, z = np.full(nb, np.inf), np.full(nb, np.inf)
    ec = e[lab[e[:, 0]] != lab[e[:, 1]]]
    if not len(ec):
        return bars, z
    sad_val = np.minimum(f[ec[:, 0]], f[ec[:, 1]])
    sad_node = np.where(f[ec[:, 0]] <= f[ec[:, 1]], ec[:, 0], ec[:, 1])
    pk, sd_nodes = [], []
    for s in range(nb):
        mine = (lab[ec[:, 0]] == s) | (lab[ec[:, 1]] == s)
        if mine.any():
            j = np.argmax(np.where(mine, sad_val, -np.inf))
            bars[s] = f[bas.peaks[s]] - sad_val[j]
            pk.append(s)
            sd_nodes.append(sad_node[j])
    if pk:
        sd = barrier_std(y, h, centres[bas.peaks[pk]], centres[np.array(sd_nodes)], w)
        z[pk] = bars[pk] / sd
    return bars, z
