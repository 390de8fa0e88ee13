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
                       weights=None):
    """Basins of the density on a graph (see module docstring).

    ``log_density`` (n,) natural log of p at the nodes; ``edges`` (E, 2)
    undirected graph; ``barrier`` in kT; ``n_basins`` (optional) exact number
    wanted (merging the lowest barriers first); ``min_population`` fraction
    of the total node weight; ``weights`` optional node weights (bootstrap).
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
            events.append((peak_f[young] - saddle, int(ra[t]), int(rb[t]), saddle))
            if old == px:
                uf.parent[y] = x
            else:
                uf.parent[x] = y
    # 3. cut the tree
    uf = _UnionFind(n_raw)
    count = n_raw
    for pers, x, y, _ in events:
        if pers < barrier and uf.union(x, y):
            count -= 1
    if n_basins is not None:
        n_basins = int(n_basins)
        if n_basins < 1:
            raise ValueError('The number of states must be at least 1.')
        for pers, x, y, _ in sorted(events):
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
            links = [(sad, x, y) for _, x, y, sad in events if (sets[x] == s) != (sets[y] == s)]
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
    for _, x, y, sad in events:
        sx, sy = final_of_raw[x], final_of_raw[y]
        if sx != sy:
            for s_ in (sx, sy):
                bar[s_] = min(bar[s_], f[peaks[s_]] - sad)
    return Basins(lab, peaks, bar, pops)
