"""Conformational states: clustering of latents, populations with uncertainty.

``fit_states(z, method, n_states)``:

* ``method='gmm'`` -- Gaussian mixture (full covariances, scikit-learn);
  ``method='kmeans'`` -- k-means; ``prior=Mixture`` -- the trained prior of
  the model (``mixture.load_prior``) is the density model, nothing is fitted.
* ``n_states``: an integer (the user's choice); ``'bic'`` -- the number of
  mixture components minimising the Bayesian information criterion; or
  ``'auto'`` (default) -- the free-energy basins of the landscape: a
  BIC-selected mixture (or the prior) is the density model, and its basins on
  a k-nearest-neighbour graph of the particles are found by topological
  persistence (``basins.py``), merging basins separated by less than
  ``barrier`` kT.  BIC alone over-splits curved basins (a curved cloud needs
  several Gaussians); persistence does not.  Before that the density is
  averaged over each particle's graph neighbourhood (``smooth`` steps,
  default 2; ``basins.smooth_log_density``): the mixture's value at single
  particles fluctuates with their offset across the cloud where its width
  varies, which made spurious basins (5 instead of 3 states on the latents
  of an 8-epoch model, where particle counts around the 'peaks' and
  'saddles' of 1.0-1.3 kT barriers were equal; 4-7 on resamples of a
  30-epoch model's latents).  One step still left a spurious fourth state
  (1.16 kT) on refined latents of the demo; two steps give the true three
  states on all six model latent sets tried (6-12 A motions, encoder and
  refined latents), three steps merged a real one.  With k-means,
  'auto'/'bic' only choose the number of clusters.

Large sets: models are fitted on at most ``max_fit`` random particles (the
"nodes"); every particle is then assigned (``States.predict``: nearest
k-means centre, most probable mixture component, or the basin of its nearest
node -- found by a kd-tree within 1.5x the exact nearest distance, which
agreed with the exact assignment for 99.99 % of 10^6 toy particles at 2.5x
the speed).

Populations are the fraction of *all* particles assigned to each state.
Uncertainty: ``n_boot`` bootstrap replicates resample the fitted particles
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
import json
import os
from dataclasses import dataclass, field

import numpy as np

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

    @property
    def n_states(self):
        return len(self.populations)

    def predict(self, z, chunk=1 << 17):
        """State of each (M, K) latent point with the fitted model."""
        z = np.asarray(z)
        if z.ndim == 1:
            z = z[None]
        out = np.empty(len(z), np.int64)
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
        d.update(self.info)
        return d

    def save(self, folder):
        """``states.json`` (summary), ``states_model.npz`` (to predict later
        particles) and ``labels.npy`` (N,) int in ``folder``."""
        from ..fileio import atomic_write
        os.makedirs(folder, exist_ok=True)
        with atomic_write(os.path.join(folder, 'states.json')) as fh:
            json.dump(self.to_json(), fh, indent=1)
        arrays = dict(method=np.array(self.method), selection=np.array(self.selection),
                      centres=self.centres, populations=self.populations,
                      population_std=self.population_std, population_ci=self.population_ci)
        if self.mixture is not None:
            arrays.update(means=self.mixture.means, covariances=self.mixture.covariances,
                          weights=self.mixture.weights, component_state=self.component_state)
        for name in ('kmeans_centres', 'nodes', 'node_labels', 'barriers'):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        with atomic_write(os.path.join(folder, 'states_model.npz'), 'wb') as fh:
            np.savez(fh, **arrays)
        with atomic_write(os.path.join(folder, 'labels.npy'), 'wb') as fh:
            np.save(fh, self.labels.astype(np.int32))
        return folder


def load_states(folder):
    """States saved by ``States.save`` (labels, model, summary)."""
    mpath = os.path.join(folder, 'states_model.npz')
    if not os.path.exists(mpath):
        raise FileNotFoundError("No states_model.npz in '%s': run 'continuousflex-geodl "
                                "landscape analyze' first." % folder)
    with open(os.path.join(folder, 'states.json')) as fh:
        summary = json.load(fh)
    with np.load(mpath) as f:
        a = {k: f[k] for k in f.files}
    mix = Mixture(a['means'], a['covariances'], a['weights']) if 'means' in a else None
    lpath = os.path.join(folder, 'labels.npy')
    labels = np.load(lpath) if os.path.exists(lpath) else np.zeros(0, np.int64)
    return States(str(a['method']), str(a['selection']), labels, a['centres'],
                  a['populations'], a['population_std'], a['population_ci'], mix,
                  a.get('component_state'), a.get('kmeans_centres'), a.get('nodes'),
                  a.get('node_labels'), a.get('barriers'),
                  {int(k): v for k, v in summary.get('bic', {}).items()})


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


def fit_states(z, method='gmm', n_states='auto', prior=None, max_states=10, barrier=1.0,
               min_population=0.01, knn=10, n_boot=20, max_fit=20000, seed=0, smooth=2):
    """Cluster latents (N, K) into states (see module docstring).  Returns States.

    ``smooth``: basins only -- steps of neighbourhood averaging of the density
    on the k-NN graph before persistence (0: the density at each particle).
    """
    z = np.asarray(z)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or len(z) < 10:
        raise ValueError('Latents must be an (N, K) array with at least 10 particles; got '
                         'shape %s.' % (z.shape,))
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
    elif not (sel == 'user' and method == 'kmeans'):
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
             'user': lambda: n_states}[sel]()
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
