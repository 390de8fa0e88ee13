"""Conformational states: clustering of latents, populations with uncertainty.

``fit_states(z, method, n_states)``:

* ``n_states='auto'`` with ``method='gmm'`` (the default) -- **the basins of
  the free-energy map** (``method`` 'map' in the result; ``space='map'``).
  The map is the one ``landscape analyze`` draws: the binned Gaussian KDE
  of the 2D embedding (PCA by default; ``embedding`` any fitted Embedding),
  with the same cross-validated width, adaptive kernel and grid
  (``density.map_bandwidth``, ``local_width_factors``, ``map_grid``,
  ``binned_density``), so what the user sees and the state
  list agree: every state is a region of the map around one of its minima.
  Basins are found by persistence on the grid's cells (``basins.map_basins``)
  and each particle belongs to the basin of its cell (basin of attraction).
  A basin is kept only if its barrier to its neighbour is

  - at least ``barrier`` kT (default ``MAP_BARRIER`` = 0.3 kT): a floor for
    large data sets, where any bump becomes statistically significant -- a
    path with no states mapped by a non-isometric encoder and projected on
    the map shows bumps of up to 0.17 kT (uniform-path null beds, 8,000
    particles, 8D); and
  - at least ``significance`` (``MAP_SIGNIFICANCE`` = 3) times its sampling
    s.d. (delta method for the Poisson bootstrap of the KDE,
    ``basins.barrier_std``): about p = 0.001 one-sided per candidate, which
    leaves room for the several candidate bumps of a map and for picking
    the deepest point of each; on 60 uniform-path and Gaussian null sets
    (500-8,000 particles, 4-8D) no noise bump reached z = 3 with 0.3 kT.

  otherwise it is merged into its neighbour; basins with less than
  ``min_population`` of the particles are merged as well (far outliers
  join the nearest basin).

  The kernel is adaptive by default (``kernel='adaptive'``,
  ``density.local_width_factors``): the cross-validated width times
  (p/g)^-1/2 of the fixed-width density p at each particle (Abramson's
  law).  Why: a VAE with a Gaussian prior moves its latents at very
  different speeds along a path, so on the map a minor state can be 2-5
  times narrower than its neighbours, and one width -- set mostly by the
  broad states and by outliers -- smooths its barriers away.  On the
  independent realistic benchmark (issue 11; 24 runs with the Gaussian
  prior, ``benchmarks/report/realistic_kernel.md``) the fixed kernel gave 3
  states with populations within 0.03 (uniform set: 1) in 19 -- it merged
  the middle state in 3 and misplaced its boundary in 1; the adaptive kernel
  in 21 -- 1 merge, and 2 runs with the middle population 0.035 off (every
  interval held the truth with both).  On five beds with an exact truth
  (20 seeds each; same report) 90 against 85 of 100: better where basins
  differ in width (Gaussian basins 20 / 18; with 2 % outliers 15 / 7),
  worse on curved 8-D paths (``three_state_curve`` 17 / 20,
  ``latent_bed('three')`` 18 / 20), where it can split a broad state in two
  at a bump of the projected path (0.4-0.5 kT, one part usually flagged
  unresolved) that the fixed kernel smooths over.  On 60 null beds (uniform
  paths and Gaussians, 500-8,000 particles, 4-8D) neither kernel kept a
  second basin through both thresholds.  ``kernel='fixed'`` gives the
  one-width map.  Why not the previous default (a BIC Gaussian
  mixture in latent space, basins on a k-NN graph, 1 kT): the density of a
  mixture in 4-8 latent dimensions at each particle follows the particle's
  own noise level (heteroscedastic posterior uncertainty) more than its
  place along the landscape, and 1 kT was more than the minor middle
  state's barrier on the map (0.4-1.1 kT at the held-out run's noise
  level): it returned 1-2 states where the map showed three (issue 11).
* ``method='gmm'`` with an integer or ``'bic'`` -- Gaussian mixture (full
  covariances, scikit-learn), one state per component; ``method='kmeans'``
  -- k-means ('auto': as many clusters as the map has basins);
  ``prior=Mixture`` -- the trained prior of the model
  (``mixture.load_prior``) is the density model, its basins on a k-NN graph
  of the particles are the states (``space='latent'`` does the same with a
  BIC-selected mixture): topological persistence (``basins.py``), merging
  basins separated by less than ``barrier`` kT (default 1 kT here), after
  averaging the density over each particle's graph neighbourhood (``smooth``
  steps, default 2; ``basins.smooth_log_density``).

Populations and their 95 % intervals (map basins): the point estimate is
the fraction of all particles in each basin.  ``n_boot`` (default 100)
Poisson-bootstrap replicates re-run the whole finder (new map with the same
width and grid, new basins, new significance tests); replicate basins are
paired with the states by particle overlap (``_match_replicate``), so a
state a replicate merges gets 0 there.  ``found`` is the fraction of
replicates that find each state; a state found in fewer than ``RESOLVED``
(90 %) is reported as *not resolved* (``resolved``, ``notes()``, and in
states.json), and its interval then reaches 0.  Intervals are the union of
the 2.5-97.5 percentiles of (a) the replicates' basin populations and (b)
the replicates' *soft* populations, so that they also cover the assignment
uncertainty of particles in the tail of one state beyond the saddle, which
a hard partition gives wholly to the neighbour -- the bias that multinomial
counting alone would certify with a tight interval.  The reported
``populations`` are the soft ones (``soft_populations``: a Gaussian mixture
on the map, one component started from each minimum of the map, summed per
state, with a uniform background for outliers; on the three-state test beds
their largest error was 0.029 against 0.040 for the basin fractions);
``counts``/``labels`` and ``info['basin_populations']`` are the basin
partition.  A minimum of the map (>= ``min_population``) that is not a
state is named in the notes with the state that holds it, and (with two or
more states) that state's interval extends down to its population without
it: the data cannot tell whether it is a state of its own.

Mixture, k-means and latent/prior basins -- large sets: models are fitted
on at most ``max_fit`` random particles (the "nodes"); every particle is then assigned (``States.predict``: nearest
k-means centre, most probable mixture component, or the basin of its nearest
node -- found by a kd-tree within 1.5x the exact nearest distance, which
agreed with the exact assignment for 99.99 % of 10^6 toy particles at 2.5x
the speed).

(Map basins use every particle: the binned map is O(N); above ``max_fit``
particles the soft fit and the bootstrap replicates work on the occupied
grid cells weighted by their particle counts -- a cell's Poisson(1) weights
sum to Poisson(count) -- so a replicate costs O(cells), not O(N).)
Populations are the fraction of *all* particles assigned to each state.
Uncertainty (mixture, k-means, latent/prior basins): ``n_boot`` bootstrap replicates resample the fitted particles
with replacement, refit the model (warm-started, same number of states) and
re-assign; ``population_std`` and the 95 % percentile interval
``population_ci`` come from the replicates.  For N > max_fit this is
conservative (it reflects a sample of max_fit particles).  Basins: each
replicate keeps the same number of states (its most persistent basins), so
the interval is that of the populations of these states; how often a
replicate finds that number by itself (barrier rule) is reported as
``bootstrap_same_n_states``.

States are numbered from 0, by decreasing population.
"""
from dataclasses import dataclass, field

import numpy as np

from ..artifacts import LandscapeDir
from ..io.latents import as_latents
from ..settings import LandscapeSettings, MapKernel
from .basins import knn_edges, persistence_basins, smooth_log_density
from .mixture import Mixture


@dataclass
class States:
    method: str                 # 'gmm', 'kmeans' or 'prior'
    selection: str              # 'user', 'bic' or 'basins'
    labels: np.ndarray          # (N,) state of every particle
    centres: np.ndarray         # (S, K) latent point representing each state
    populations: np.ndarray     # (S,) fraction of particles
    population_std: np.ndarray  # (S,)
    population_ci: np.ndarray   # (S, 2) 2.5 / 97.5 percentiles
    mixture: Mixture = None     # density model (gmm, prior, or the basins' mixture)
    component_state: np.ndarray = None  # (C,) state of each mixture component
    kmeans_centres: np.ndarray = None   # (S, K)
    nodes: np.ndarray = None            # (n, K) fitted particles (basins)
    node_labels: np.ndarray = None      # (n,)
    barriers: np.ndarray = None         # (S,) kT, basins only
    bic: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    # map basins (method 'map'): the embedding and grid of the free-energy map
    embedding: object = None            # embedding.Embedding (latent -> map)
    grid: dict = None                   # lo, width, bins, bandwidth of the map
    cell_labels: np.ndarray = None      # (n_cells,) state of each map cell, -1 empty
    barrier_z: np.ndarray = None        # (S,) barrier / its sampling s.d.
    found: np.ndarray = None            # (S,) fraction of bootstrap replicates finding it
    resolved: np.ndarray = None         # (S,) bool: found in >= RESOLVED of replicates

    @property
    def n_states(self):
        return len(self.populations)

    def predict(self, z, chunk=1 << 17):
        """State of each (M, K) latent point with the fitted model."""
        z = np.asarray(z)
        if z.ndim == 1:
            z = z[None]
        out = np.empty(len(z), np.int64)
        if self.method == 'map':
            return self._predict_map(z, chunk)
        if self.selection == 'basins' and self.method != 'kmeans':
            from scipy.spatial import cKDTree
            tree = cKDTree(self.nodes, compact_nodes=False)
            for s in range(0, len(z), chunk):  # (1 + 0.5)-approximate nearest node
                _, i = tree.query(np.asarray(z[s:s + chunk], np.float64), eps=0.5)
                out[s:s + chunk] = self.node_labels[i]
            return out
        if self.method == 'kmeans':
            from scipy.spatial import cKDTree
            tree = cKDTree(self.kmeans_centres, compact_nodes=False)
            for s in range(0, len(z), chunk):
                out[s:s + chunk] = tree.query(np.asarray(z[s:s + chunk], np.float64))[1]
            return out
        for s in range(0, len(z), chunk):
            out[s:s + chunk] = self.component_state[self.mixture.predict(z[s:s + chunk])]
        return out

    def _predict_map(self, z, chunk):
        from .density import cell_centres, cell_index
        g = self.grid
        lo, width, bins = g['lo'], g['width'], [int(b) for b in g['bins']]
        out = np.empty(len(z), np.int64)
        live = np.nonzero(self.cell_labels >= 0)[0]
        tree = None
        for s in range(0, len(z), chunk):
            y = self.embedding.transform(np.asarray(z[s:s + chunk]))[:, :len(bins)]
            lab = self.cell_labels[cell_index(y, lo, width, bins)]
            bad = lab < 0
            if bad.any():  # beyond the kernel's reach: the state of the nearest live cell
                from scipy.spatial import cKDTree
                if tree is None:
                    tree = cKDTree(cell_centres(lo, width, bins)[live] / width)
                lab[bad] = self.cell_labels[live[tree.query(y[bad] / width)[1]]]
            out[s:s + chunk] = lab
        return out

    def notes(self):
        """Plain-language statements on what the data resolve (map basins)."""
        if self.found is None:
            return []
        out = []
        if self.n_states == 1:
            out.append('One state: no basin of the free-energy map is separated from the rest '
                       'by a barrier that is both >= %.2g kT and >= %g times its sampling '
                       's.d.; the data do not resolve states on this map.'
                       % (self.info.get('barrier_kT', np.nan),
                          self.info.get('significance', np.nan)))
        for s in range(self.n_states):
            lost = [p for t, p in self.info.get('absorbed_minima', []) if t == s]
            if lost:
                out.append('State %d holds %d more minimum(a) of the map (%s of the particles) '
                           'whose barrier is below %.2g kT or %g sampling s.d.: the data do not '
                           'resolve %s as separate state(s)%s.' % (
                               s, len(lost), ', '.join('%.3f' % p for p in lost),
                               self.info.get('barrier_kT', np.nan),
                               self.info.get('significance', np.nan),
                               'it' if len(lost) == 1 else 'them',
                               '; its interval extends to its population without them'
                               if self.n_states > 1 else ''))
        if not self.info.get('n_boot', 1):
            out.append('No bootstrap replicates: population intervals and whether each state '
                       'is resolved were not estimated.')
        for i in np.nonzero(~np.asarray(self.resolved, bool))[0]:
            out.append('State %d is not resolved by the data: the bootstrap found it in only '
                       '%.0f %% of %d replicates; its population interval (%.3f-%.3f) includes '
                       'its absence.' % (i, 100 * self.found[i], self.info.get('n_boot', 0),
                                         self.population_ci[i][0], self.population_ci[i][1]))
        return out

    # ------------------------------------------------------------------ files
    def to_json(self):
        """The human-readable summary written to states.json."""
        d = dict(method=self.method, selection=self.selection, n_states=int(self.n_states),
                 n_particles=int(len(self.labels)),
                 populations=[float(p) for p in self.populations],
                 population_std=[float(p) for p in self.population_std],
                 population_ci95=[[float(a), float(b)] for a, b in self.population_ci],
                 counts=[int(c) for c in np.bincount(self.labels, minlength=self.n_states)],
                 centres=np.asarray(self.centres, float).tolist(),
                 bic={str(k): float(v) for k, v in self.bic.items()})
        if self.barriers is not None:
            d['barriers_kT'] = [float(b) if np.isfinite(b) else None for b in self.barriers]
        if self.mixture is not None:
            d['mixture_components'] = int(self.mixture.n_components)
            d['component_state'] = [int(s) for s in self.component_state]
        if self.found is not None:
            d['barrier_z'] = [float(b) if np.isfinite(b) else None for b in self.barrier_z]
            d['bootstrap_found'] = [float(f) for f in self.found]
            d['resolved'] = [bool(r) for r in self.resolved]
            d['bandwidth'] = [float(h) for h in self.grid['bandwidth']]
            d['kernel'] = str(self.grid.get('kernel', 'fixed'))
            d['notes'] = self.notes()
        d.update(self.info)
        return d

    def save(self, folder):
        """``states.json`` (summary), ``states_model.npz`` (to predict later
        particles) and ``labels.npy`` (N,) int in ``folder`` (file names:
        ``core.artifacts.LandscapeDir``)."""
        arrays = dict(method=np.array(self.method), selection=np.array(self.selection),
                      centres=self.centres, populations=self.populations,
                      population_std=self.population_std, population_ci=self.population_ci)
        if self.mixture is not None:
            arrays.update(means=self.mixture.means, covariances=self.mixture.covariances,
                          weights=self.mixture.weights, component_state=self.component_state)
        for name in ('kmeans_centres', 'nodes', 'node_labels', 'barriers', 'cell_labels',
                     'barrier_z', 'found', 'resolved'):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        if self.grid is not None:
            arrays.update({'grid_' + k: np.asarray(v) for k, v in self.grid.items()})
        if self.embedding is not None:
            arrays['emb_method'] = np.array(self.embedding.method)
            arrays['emb_n_components'] = np.array(self.embedding.n_components)
            arrays.update({'emb_' + k: v for k, v in self.embedding.arrays.items()})
        LandscapeDir(folder).write_states(self.to_json(), arrays, self.labels)
        return folder


def load_states(folder):
    """States saved by ``States.save`` (labels, model, summary)."""
    summary, a, labels = LandscapeDir(folder).read_states_model()
    mix = Mixture(a['means'], a['covariances'], a['weights']) if 'means' in a else None
    labels = labels if labels is not None else np.zeros(0, np.int64)
    emb = None
    if 'emb_method' in a:
        from .embedding import Embedding
        emb = Embedding(str(a['emb_method']), int(a['emb_n_components']),
                        **{k[4:]: v for k, v in a.items()
                           if k.startswith('emb_') and k not in ('emb_method',
                                                                 'emb_n_components')})
    grid = {k[5:]: v for k, v in a.items() if k.startswith('grid_')} or None
    return States(str(a['method']), str(a['selection']), labels, a['centres'],
                  a['populations'], a['population_std'], a['population_ci'], mix,
                  a.get('component_state'), a.get('kmeans_centres'), a.get('nodes'),
                  a.get('node_labels'), a.get('barriers'),
                  {int(k): v for k, v in summary.get('bic', {}).items()},
                  info={k: summary[k] for k in ('barrier_kT', 'significance', 'n_boot',
                                                'map_minima', 'min_population')
                        if k in summary},
                  embedding=emb, grid=grid, cell_labels=a.get('cell_labels'),
                  barrier_z=a.get('barrier_z'), found=a.get('found'),
                  resolved=a.get('resolved'))


# ------------------------------------------------------------------ fitting

def _scale(z):
    mean = z.mean(0)
    s = float(np.sqrt(((z - mean) ** 2).mean(0).mean()))
    return mean, (s if s > 0 else 1.0)


def _gmm(k, seed, **kw):
    from sklearn.mixture import GaussianMixture
    # tight convergence: warm-started bootstrap refits must not drift from the fit
    return GaussianMixture(int(k), covariance_type='full', reg_covar=1e-6, max_iter=500,
                           tol=1e-5, random_state=int(seed), **kw)


def _to_mixture(g, mean, s):
    m = Mixture.from_sklearn(g)
    return Mixture(mean + s * m.means, s * s * m.covariances, m.weights)


def select_by_bic(u, max_states=10, seed=0, patience=2, n_init=1):
    """Fit GMMs with 1..max_states components on standardised points ``u``;
    return (best fitted model, {k: BIC}).  Stops after ``patience`` rises."""
    bic, models = {}, {}
    best, rises = None, 0
    for k in range(1, int(max_states) + 1):
        if k > len(u):
            break
        g = _gmm(k, seed, n_init=n_init).fit(u)
        bic[k] = float(g.bic(u))
        models[k] = g
        if best is None or bic[k] < bic[best]:
            best, rises = k, 0
        else:
            rises += 1
            if rises >= patience:
                break
    return models[best], bic


def _populations(labels, n_states, weights=None):
    c = np.bincount(labels, weights, minlength=n_states)
    return c / max(c.sum(), 1e-300)


def _match(ref, new, n_ref):
    """Map labels ``new`` onto reference labels by maximum overlap (Hungarian)."""
    from scipy.optimize import linear_sum_assignment
    n_new = int(new.max()) + 1 if len(new) else 0
    tab = np.zeros((n_new, n_ref))
    np.add.at(tab, (new, ref), 1)
    r, c = linear_sum_assignment(-tab)
    mapping = np.full(n_new, -1)
    mapping[r] = c
    return mapping


MAP_BARRIER = 0.3       # kT, least barrier of a map basin (see module docstring)
MAP_SIGNIFICANCE = 3.0  # least barrier / sampling s.d. of a map basin
RESOLVED = 0.9          # a state is resolved if >= this fraction of replicates find it


def fit_states(z, method='gmm', n_states='auto', prior=None, max_states=10, barrier=None,
               min_population=0.01, knn=10, n_boot=100, max_fit=20000, seed=0, smooth=2,
               space='map', embedding=None, bandwidth='cv', bins=None,
               significance=MAP_SIGNIFICANCE, kernel=LandscapeSettings.kernel):
    """Cluster latents (N, K) into states (see module docstring).  Returns States.

    ``space``: where 'auto' states are basins -- 'map' (default): of the
    free-energy map of ``embedding`` (default: PCA to 2D) with the map's
    ``bandwidth``, ``kernel`` and ``bins``, kept when the barrier is >= ``barrier`` kT
    (default 0.3) and >= ``significance`` sampling s.d.; 'latent': of a
    BIC-selected mixture on a k-NN graph of the latents (``barrier`` default
    1 kT; also used with a prior).
    ``smooth``: latent basins only -- steps of neighbourhood averaging of the
    density on the k-NN graph before persistence (0: the density at each
    particle).
    """
    z = as_latents(z, min_rows=10)
    method = 'prior' if prior is not None else str(method).lower()
    if method not in ('gmm', 'kmeans', 'prior'):
        raise ValueError("Unknown state method '%s': use 'gmm' or 'kmeans' (or give a "
                         "prior)." % method)
    if isinstance(n_states, str):
        sel = n_states.strip().lower()
        if sel not in ('auto', 'bic'):
            try:
                n_states = int(sel)
                sel = 'user'
            except ValueError:
                raise ValueError("The number of states must be an integer, 'auto' (free-energy "
                                 "basins) or 'bic'; got '%s'." % n_states) from None
    else:
        sel = 'user'
        n_states = int(n_states)
        if n_states < 1:
            raise ValueError('The number of states must be at least 1.')
    if method == 'prior':
        if prior.dim != z.shape[1]:
            raise ValueError('The prior is %d-dimensional but the latents have %d dimensions: '
                             'use the prior of the model that produced these latents.'
                             % (prior.dim, z.shape[1]))
        if sel == 'bic':
            raise ValueError("n_states='bic' makes no sense with a fixed prior: use 'auto' "
                             "(basins of the prior density) or a number.")
    space = str(space).lower()
    if space not in ('map', 'latent'):
        raise ValueError("Unknown state space '%s': use 'map' (basins of the free-energy "
                         "map) or 'latent'." % space)
    on_map = space == 'map' and method != 'prior' and sel == 'auto'
    if barrier is None:
        barrier = MAP_BARRIER if on_map else 1.0
    if on_map and method == 'gmm':
        return _fit_map_states(z, embedding, bandwidth, bins, barrier, significance,
                               min_population, n_boot, seed, max_fit, kernel)
    if on_map:  # k-means with as many clusters as the map has basins
        n_states = _fit_map_states(z, embedding, bandwidth, bins, barrier, significance,
                                   min_population, 0, seed, max_fit, kernel).n_states
        sel = 'map'
    rng = np.random.default_rng(seed)
    n = len(z)
    fit_idx = np.sort(rng.choice(n, int(max_fit), replace=False)) if n > max_fit else np.arange(n)
    zf = np.asarray(z[fit_idx], np.float64)
    if not np.isfinite(zf).all():
        raise ValueError('Some latent vectors are NaN or infinite: remove those particles '
                         'first.')
    mean, s = _scale(zf)
    u = (zf - mean) / s
    bic = {}
    info = dict(n_fit=int(len(zf)), n_boot=int(n_boot), seed=int(seed))
    gmodel = None  # sklearn model on standardised coordinates (gmm / basins density)
    density = None
    if method == 'prior':
        density = prior
    elif sel == 'user' and method == 'gmm':
        gmodel = _gmm(n_states, seed, n_init=2).fit(u)
        density = _to_mixture(gmodel, mean, s)
    elif not (sel in ('user', 'map') and method == 'kmeans'):
        gmodel, bic = select_by_bic(u, max_states, seed)
        density = _to_mixture(gmodel, mean, s)

    use_basins = sel == 'auto' or method == 'prior'
    edges = basins = None
    if use_basins:  # free-energy basins of the density model
        edges = knn_edges(u, knn)
        f = smooth_log_density(density.log_density(zf), edges, smooth)
        basins = persistence_basins(f, edges, barrier=barrier,
                                    n_basins=n_states if sel == 'user' else None,
                                    min_population=min_population)
        info.update(barrier_kT=float(barrier), knn=int(knn),
                    min_population=float(min_population), density_smoothing=int(smooth))
    if method == 'kmeans':
        from sklearn.cluster import KMeans
        k = {'auto': lambda: basins.labels.max() + 1, 'bic': lambda: gmodel.n_components,
             'user': lambda: n_states, 'map': lambda: n_states}[sel]()
        km = KMeans(int(k), n_init=4, random_state=int(seed)).fit(u)
        st = States('kmeans', sel, None, None, None, None, None, mixture=density,
                    kmeans_centres=mean + s * km.cluster_centers_, bic=bic, info=info)
        node_lab = km.labels_.astype(np.int64)
    elif use_basins:
        st = States(method, 'basins', None, None, None, None, None, mixture=density,
                    nodes=zf, node_labels=basins.labels, barriers=basins.barriers,
                    bic=bic, info=info)
        node_lab = basins.labels
    else:  # gmm, user or bic: one state per component
        st = States('gmm', sel, None, None, None, None, None, mixture=density,
                    component_state=np.arange(density.n_components), bic=bic, info=info)
        node_lab = density.predict(zf)
    if density is not None and st.component_state is None:
        # state of each mixture component: majority state of its particles
        comp = density.predict(zf)
        cs = np.zeros(density.n_components, np.int64)
        for c in range(density.n_components):
            mine = comp == c
            cs[c] = np.bincount(node_lab[mine]).argmax() if mine.any() else \
                node_lab[np.argmin(((zf - density.means[c]) ** 2).sum(1))]
        st.component_state = cs
    n_st = int(node_lab.max()) + 1
    all_lab = st.predict(z) if n > len(zf) else node_lab
    # number states by decreasing population over all particles
    pops = _populations(all_lab, n_st)
    order = np.argsort(-pops, kind='stable')
    remap = np.empty(n_st, np.int64)
    remap[order] = np.arange(n_st)
    all_lab, node_lab, pops = remap[all_lab], remap[node_lab], pops[order]
    if st.kmeans_centres is not None:
        st.kmeans_centres = st.kmeans_centres[order]
    st.component_state = remap[st.component_state] if st.component_state is not None else None
    if st.node_labels is not None:
        st.node_labels = node_lab
    if st.barriers is not None:
        st.barriers = st.barriers[order]
    st.labels, st.populations = all_lab, pops
    st.centres = _centres(st, zf, node_lab, basins, order)
    reps = _bootstrap(st, zf, u, mean, s, node_lab, gmodel, edges, n_st, n_boot, rng,
                      barrier, min_population, sel, method, smooth)
    if len(reps):
        st.population_std = reps.std(0, ddof=1) if len(reps) > 1 else np.zeros(n_st)
        st.population_ci = np.percentile(reps, [2.5, 97.5], axis=0).T
    else:
        st.population_std = np.full(n_st, np.nan)
        st.population_ci = np.full((n_st, 2), np.nan)
    return st


def _fit_map_states(z, embedding, bandwidth, bins, barrier, significance, min_population,
                    n_boot, seed, max_fit=20000, kernel=LandscapeSettings.kernel):
    """States = significant basins of the free-energy map (module docstring).
    The map, basins and replicates use every particle; the soft populations
    a random subsample of at most ``max_fit`` (their EM is O(N) per step)."""
    from .basins import map_basins
    from .density import cell_centres, local_width_factors, map_bandwidth, map_grid
    from .embedding import fit_pca
    n, k = z.shape
    if not np.isfinite(np.asarray(z[:min(n, 1 << 16)])).all():  # full check in fit_pca
        raise ValueError('Some latent vectors are NaN or infinite: remove those particles '
                         'first.')
    emb = embedding if embedding is not None else fit_pca(z, min(k, 2))
    y = np.asarray(emb.transform(z), np.float64)[:, :2]
    if not np.isfinite(y).all():
        raise ValueError('Some latent vectors are NaN or infinite: remove those particles '
                         'first.')
    adaptive = MapKernel.parse(kernel) is MapKernel.ADAPTIVE
    h = map_bandwidth(y, bandwidth, seed=seed)
    lo, width, nb = map_grid(y, h, bins)
    factors = local_width_factors(y, h, lo, width, nb) if adaptive else None
    kw = dict(barrier=barrier, significance=significance, min_population=min_population,
              factors=factors)
    mb = map_basins(y, h, lo, width, nb, **kw)
    n_st = len(mb.peaks)
    # every minimum of the map holding >= min_population (what the eye sees)
    minima = map_basins(y, h, lo, width, nb, barrier=0.0, significance=0.0,
                        min_population=min_population, factors=factors)
    n_minima = len(minima.peaks)
    area = float(np.prod(width * np.asarray(nb)))
    # soft populations: one mixture component per minimum, summed per state
    comp_state = np.array([np.bincount(mb.labels[minima.labels == r], minlength=n_st).argmax()
                           for r in range(n_minima)])
    # the units the soft fit and the bootstrap work on: the particles, or (N >
    # max_fit) the occupied grid cells with their particle counts -- the
    # replicates are then O(cells): a cell's Poisson(1) weights sum to Poisson(count)
    if n > max_fit:
        from .density import cell_index
        cells = cell_index(y, lo, width, nb)
        occ, cnt = np.unique(cells, return_counts=True)
        ys, w0 = cell_centres(lo, width, nb)[occ], cnt.astype(np.float64)
        first = np.unique(cells, return_index=True)[1]  # a particle of each cell
    else:
        ys, w0, first = y, np.ones(n), slice(None)
    comp = minima.labels[first]
    pops = np.bincount(comp_state, soft_populations(ys, comp, n_minima, w0, area),
                       minlength=n_st)
    order = np.argsort(-pops, kind='stable')
    remap = np.empty(n_st, np.int64)
    remap[order] = np.arange(n_st)
    labels, pops, comp_state = remap[mb.labels], pops[order], remap[comp_state]
    basin_pops = np.bincount(labels, minlength=n_st) / n
    cell_labels = np.where(mb.cell_labels >= 0, remap[np.maximum(mb.cell_labels, 0)], -1)
    peaks = mb.peaks[order]
    rng = np.random.default_rng(seed)
    reps = np.zeros((int(n_boot), n_st))
    soft = np.zeros((int(n_boot), n_st))
    found = np.zeros((int(n_boot), n_st), bool)
    cache = {}
    lab0 = labels[first]
    for b in range(int(n_boot)):
        w = rng.poisson(w0).astype(np.float64)
        rb = map_basins(ys, h, lo, width, nb, weights=w, cache=cache, **kw)
        reps[b], found[b] = _match_replicate(lab0, rb.labels, w, n_st, w0)
        soft[b] = np.bincount(comp_state, soft_populations(ys, comp, n_minima, w, area),
                              minlength=n_st)
    centres = cell_centres(lo, width, nb)
    grid = dict(lo=lo, width=width, bins=np.asarray(nb), bandwidth=np.asarray(h),
                kernel='adaptive' if adaptive else 'fixed')
    if adaptive:
        grid['width_factor'] = 2.0 ** factors
    st = States('map', 'basins', labels, None, pops, None, None, embedding=emb, grid=grid,
                cell_labels=cell_labels, barriers=mb.barriers[order],
                barrier_z=mb.barrier_z[order],
                info=dict(n_fit=int(n), n_boot=int(n_boot), seed=int(seed),
                          barrier_kT=float(barrier), significance=float(significance),
                          min_population=float(min_population),
                          resolved_fraction=float(RESOLVED),
                          basin_populations=[float(v) for v in basin_pops],
                          map_minima=int(n_minima),
                          density='binned Gaussian KDE of the %s map (the free-energy map), '
                                  '%s width' % (emb.method, grid['kernel'])))
    st.centres = _map_centres(z, y, labels, centres[peaks], h, st)
    if n_boot:
        st.population_std = reps.std(0, ddof=1) if n_boot > 1 else np.zeros(n_st)
        hard = np.percentile(reps, [2.5, 97.5], axis=0).T
        sft = np.percentile(soft, [2.5, 97.5], axis=0).T
        # partition + assignment uncertainty: the union of both intervals
        # (and the two estimates, which few replicates can leave outside)
        st.population_ci = np.c_[np.minimum.reduce([hard[:, 0], sft[:, 0], pops, basin_pops]),
                                 np.maximum.reduce([hard[:, 1], sft[:, 1], pops, basin_pops])]
        st.found = found.mean(0)
    else:
        st.population_std = np.full(n_st, np.nan)
        st.population_ci = np.full((n_st, 2), np.nan)
        st.found = np.full(n_st, np.nan)
    st.resolved = (st.found >= RESOLVED) | np.isnan(st.found)  # unknown without bootstrap
    _absorbed_minima(st, minima, mb.peaks[order])
    return st


def _absorbed_minima(st, minima, peaks):
    """Minima of the map (>= min_population) that are not states: each lies in
    the state holding most of its particles.  With two or more states, that
    state's interval is extended down to its population without them -- the
    data cannot tell whether they are part of it (one state holds every
    particle by definition, so it keeps [1, 1])."""
    n_st = st.n_states
    own = minima.cell_labels[peaks]  # the minimum at each state's own deepest cell
    absorbed = []
    for r in range(len(minima.peaks)):
        if r in own:
            continue
        s = int(np.bincount(st.labels[minima.labels == r], minlength=n_st).argmax())
        absorbed.append((s, float(minima.populations[r])))
    st.info['absorbed_minima'] = [[s, p] for s, p in absorbed]
    if n_st >= 2 and absorbed and st.population_ci is not None \
            and np.isfinite(st.population_ci).all():
        for s in range(n_st):
            lost = sum(p for t, p in absorbed if t == s)
            if lost > 0:
                st.population_ci[s, 0] = max(0.0, min(st.population_ci[s, 0],
                                                       st.populations[s] - lost))
    return st


def soft_populations(y, labels, n_st, weights=None, area=1.0, n_iter=100, tol=1e-5):
    """Populations of the states with particles shared where states overlap.

    A Gaussian mixture on the map, one component per state started from its
    particles (weighted mean and covariance), plus a uniform background of
    density 1/``area`` for outliers, refined by weighted EM; returns the
    component weights of the states renormalised to sum to 1.  A particle
    in the tail of one state beyond the saddle counts for that state in
    proportion to its responsibility, where the basin partition gives it
    wholly to the other -- the difference is the assignment uncertainty.
    """
    y = np.asarray(y, np.float64)
    n, d = y.shape
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    resp = np.zeros((n, n_st + 1))
    resp[np.arange(n), labels] = 1.0
    prev = None
    for _ in range(int(n_iter)):
        rw = resp * w[:, None]
        nk = rw.sum(0) + 1e-300
        pi = nk / nk.sum()
        logp = np.empty((n, n_st + 1))
        for k in range(n_st):
            m = rw[:, k] @ y / nk[k]
            dy = y - m
            cov = (rw[:, k, None] * dy).T @ dy / nk[k] + 1e-9 * np.eye(d)
            ch = np.linalg.cholesky(cov)
            u = np.linalg.solve(ch, dy.T)
            logp[:, k] = (np.log(pi[k] + 1e-300) - 0.5 * (u * u).sum(0)
                          - np.log(np.diag(ch)).sum() - 0.5 * d * np.log(2 * np.pi))
        logp[:, n_st] = np.log(max(pi[n_st], 1e-3 / max(n, 1))) - np.log(area)
        mx = logp.max(1, keepdims=True)
        resp = np.exp(logp - mx)
        resp /= resp.sum(1, keepdims=True)
        if prev is not None and np.abs(pi - prev).max() < tol:
            break
        prev = pi
    rw = (resp * w[:, None]).sum(0)[:n_st]
    return rw / max(rw.sum(), 1e-300)


def _match_replicate(labels, rep_labels, w, n_st, size=None):
    """Populations of the original states in a bootstrap replicate and
    whether the replicate found each of them.

    Replicate basins are paired with the original states by maximum particle
    overlap (Hungarian); a state is found when its partner overlaps it with a
    Jaccard index >= 0.5.  Every replicate basin gives its (weighted)
    population to its partner, or, if it has none, to the state it overlaps
    most -- so a state the replicate merged into a neighbour gets 0 and the
    neighbour its population.  ``size`` (n,) particles per unit (cells), 1 by
    default.
    """
    from scipy.optimize import linear_sum_assignment
    n_new = int(rep_labels.max()) + 1
    tab = np.zeros((n_new, n_st))
    np.add.at(tab, (rep_labels, labels), 1.0 if size is None else size)
    r, c = linear_sum_assignment(-tab)
    dest = tab.argmax(1)
    dest[r] = c
    size_new, size_old = tab.sum(1), tab.sum(0)
    jac = tab[r, c] / np.maximum(size_new[r] + size_old[c] - tab[r, c], 1e-300)
    found = np.zeros(n_st, bool)
    found[c[jac >= 0.5]] = True
    pop_new = np.bincount(rep_labels, w, minlength=n_new) / max(w.sum(), 1e-300)
    return np.bincount(dest, pop_new, minlength=n_st), found


def _map_centres(z, y, labels, peak_points, h, st):
    """Latent point of each map state: the mean latent of the state's
    particles within one kernel width of its deepest map cell, kept if it
    maps back into the state, else the state's particle nearest that cell."""
    out = np.empty((len(peak_points), z.shape[1]))
    for s, p in enumerate(peak_points):
        mine = np.nonzero(labels == s)[0]
        r2 = (((y[mine] - p) / h) ** 2).sum(1)
        near = mine[r2 <= 1.0]
        if len(near):
            out[s] = np.asarray(z[near], np.float64).mean(0)
            if st.predict(out[s])[0] == s:
                continue
        out[s] = np.asarray(z[mine[np.argmin(r2)]], np.float64)
    return out


def _centres(st, zf, node_lab, basins, order):
    if st.method == 'kmeans':
        return st.kmeans_centres.copy()
    if st.selection != 'basins':  # one state per component: order[state] = component
        return st.mixture.means[order].copy()
    peaks = basins.peaks[order]  # order[new state] = basin index
    out = np.empty((len(peaks), zf.shape[1]))
    from scipy.spatial import cKDTree
    tree = cKDTree(zf, compact_nodes=False)
    for i, p in enumerate(peaks):
        m = st.mixture.find_mode(zf[p])[0]
        # keep the mode only if it lies in the same basin as the peak node
        out[i] = m if node_lab[tree.query(m)[1]] == i else zf[p]
    return out


def _bootstrap(st, zf, u, mean, s, node_lab, gmodel, edges, n_st, n_boot, rng, barrier,
               min_population, sel, method, smooth=2):
    from sklearn.cluster import KMeans
    reps, same = [], []
    nf = len(zf)
    for b in range(int(n_boot)):
        idx = rng.integers(0, nf, nf)
        cnt = np.bincount(idx, minlength=nf).astype(np.float64)
        if method == 'kmeans':  # warm start keeps the state order
            km = KMeans(n_st, init=(st.kmeans_centres - mean) / s, n_init=1,
                        random_state=int(rng.integers(1 << 31))).fit(u[idx])
            lab_b = km.predict(u)
        elif st.selection == 'basins':
            if method == 'prior':
                f = st.mixture.log_density(zf)
            else:
                g = _gmm(gmodel.n_components, int(rng.integers(1 << 31)),
                         weights_init=gmodel.weights_, means_init=gmodel.means_,
                         precisions_init=gmodel.precisions_).fit(u[idx])
                f = g.score_samples(u)
            f = smooth_log_density(f, edges, smooth)
            bas = persistence_basins(f, edges, barrier=barrier,
                                     n_basins=n_st if sel == 'user' else None,
                                     min_population=min_population, weights=cnt)
            same.append(bas.labels.max() + 1 == n_st)
            if not same[-1]:  # populations of the same number of states
                bas = persistence_basins(f, edges, barrier=0.0, n_basins=n_st,
                                         min_population=min_population, weights=cnt)
            lab_b = _match(node_lab, bas.labels, n_st)[bas.labels]
        else:  # one state per component; warm start keeps the component order
            g = _gmm(gmodel.n_components, int(rng.integers(1 << 31)),
                     weights_init=gmodel.weights_, means_init=gmodel.means_,
                     precisions_init=gmodel.precisions_).fit(u[idx])
            lab_b = st.component_state[g.predict(u)]
        ok = lab_b >= 0
        reps.append(np.bincount(lab_b[ok], cnt[ok], minlength=n_st)[:n_st] / nf)
    if same:  # how often a replicate found the same number of basins
        st.info['bootstrap_same_n_states'] = float(np.mean(same))
    return np.array(reps)


def state_structures(states, decode_fn):
    """Structures decoded at the state centres: decode_fn((S, K)) -> (S, N, 3)."""
    return np.asarray(decode_fn(np.asarray(states.centres, np.float32)))
