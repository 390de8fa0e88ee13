"""The landscape functions on latents of a trained model, scored against the simulation's truth.

Runs ``core.landscape.pipeline`` exactly as ``continuousflex-geodl landscape``
(and the Scipion landscape protocol) does, with its defaults -- PCA map,
states by the default criterion (free-energy basins, not told the true
number), structures decoded by the model -- then the density-following and
the cryoTWIN ridgeline paths between the two end states, and scores:

* states: number found; each found state's population (bootstrap 95 %
  interval) matched to the true modes (``states`` labels of the simulation:
  majority label, one-to-one by the Hungarian method; and, independently,
  by the RMSD of its decoded structure to the true state structures); the
  absolute population error against the true fractions; the RMSD (A,
  pseudo-atoms, same order, no superposition) of the structure decoded at
  each state centre to the true structure of its mode;
* paths between the found states matched to the two end modes: whether
  they pass through the middle state (the criterion of the landscape tests:
  a path point inside the 95 % region of the latents of the true middle
  particles, Mahalanobis; plus the closest latent distance to the found
  middle state's centre and the closest RMSD of a path structure to the
  true middle structure), and the Spearman between path order and the true
  coordinate of each path structure (the nearest of 1,001 structures along
  the true motion, ``motion_from_ground_truth(gt).conformation``);
* diagnostics the pipeline offers (``landscape diagnostics``): isometry
  correlation and the fit (KL) of the model's GMM prior to the latents;
* stability of the state count: 5 seeds of the clustering and 5 bootstrap
  resamples of the particles (with replacement), with the default criterion
  and with the density taken at single particles (``smooth=0``, the
  criterion before graph smoothing was added);
* wall time of each step.

Writes ``<out>/<name>.json``, ``<out>/<name>.md`` and ``<out>/<name>.png``
(free-energy map with the state centres, the true state centres and both
paths; populations against the truth); the pipeline's own folders go to
``--work``.  Usage (about 1-2 min for 2,000 particles)::

    python benchmarks/bench_landscape.py \\
        --sim benchmarks/work/model_bar/sim_n2000_s0 \\
        --model benchmarks/work/model_bar/model \\
        --latents benchmarks/work/model_bar/z.npy --out benchmarks/report
"""
import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# RMSD (A) between (..., N, 3) arrays, broadcast: the package's one definition
from continuousflex_geodl.core.metrics import rmsd  # noqa: E402


def _atomic_text(path, text):
    from continuousflex_geodl.core.fileio import atomic_write
    with atomic_write(path) as f:
        f.write(text)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _retry(fn, what, tries=6, wait=60.0):
    """The model / latent files may be rewritten by a re-training: retry."""
    for t in range(tries):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 -- any read error while files are replaced
            if t == tries - 1:
                raise
            print('%s failed (%s); retrying in %.0f s' % (what, exc, wait), flush=True)
            time.sleep(wait)


def _sha256(path):
    """First 16 hex digits of the file's SHA-256 (which inputs were scored)."""
    import hashlib
    if not os.path.exists(path):
        return None
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ truth

class Truth:
    """Ground truth of a simulation: true modes, their structures, the motion."""

    def __init__(self, sim, n_grid=1001):
        from continuousflex_geodl.core.simulate import (load_ground_truth,
                                                        motion_from_ground_truth)
        gt = load_ground_truth(sim)
        self.labels = np.asarray(gt['states']).astype(int)
        self.u = np.asarray(gt['coords_unit'])[:, 0]
        self.n_modes = int(self.labels.max()) + 1
        self.fractions = np.bincount(self.labels, minlength=self.n_modes) / len(self.labels)
        self.state_u = np.asarray(gt['state_coords_unit'])[:, 0]
        self.state_positions = np.asarray(gt['state_positions'], np.float64)
        mot = motion_from_ground_truth(gt)
        self.grid = np.linspace(0.0, 1.0, int(n_grid))
        self.grid_structures = mot.conformation(mot.unit_to_coords(self.grid[:, None])[:, 0])
        self.reference = np.asarray(gt['reference_positions'], np.float64)
        self.correspondence = None
        # end modes: lowest / highest true coordinate; middle: the other one
        order = np.argsort(self.state_u)
        self.end_modes = (int(order[0]), int(order[-1]))
        self.middle_mode = int(order[len(order) // 2])

    def on_model_atoms(self, model_reference):
        """Express the true structures on the model's pseudo-atoms.

        A model trained from a PDB has its own pseudo-atoms: each is paired
        with the nearest true pseudo-atom of the reference (coordinate 0) and
        follows it (same displacement).  Identity when the model was trained
        on the simulation's own reference.npz.
        """
        from scipy.spatial import cKDTree
        mref = np.asarray(model_reference, np.float64)
        if mref.shape == self.reference.shape and np.allclose(mref, self.reference, atol=1e-3):
            self.correspondence = dict(kind='identity', n_model_atoms=int(len(mref)))
            return self
        d, idx = cKDTree(self.reference).query(mref)
        off = mref - self.reference[idx]
        self.state_positions = self.state_positions[:, idx] + off[None]
        self.grid_structures = self.grid_structures[:, idx] + off[None]
        self.correspondence = dict(kind='nearest reference pseudo-atom',
                                   n_model_atoms=int(len(mref)),
                                   n_true_atoms=int(len(self.reference)),
                                   mean_distance_A=float(d.mean()), max_distance_A=float(d.max()))
        return self

    def coordinate_of(self, positions):
        """(true unit coordinate, RMSD to the nearest structure of the motion)."""
        pos = np.asarray(positions, np.float64)
        d = np.stack([rmsd(p[None], self.grid_structures) for p in pos])  # (M, G)
        i = d.argmin(1)
        return self.grid[i], d[np.arange(len(pos)), i]


# ------------------------------------------------------------------ states

def match_states(found_labels, n_found, truth, centre_structures):
    """Found states <-> true modes, by majority label and by decoded RMSD."""
    from scipy.optimize import linear_sum_assignment
    tab = np.zeros((n_found, truth.n_modes), np.int64)
    np.add.at(tab, (found_labels, truth.labels), 1)
    r, c = linear_sum_assignment(-tab)
    by_label = np.full(n_found, -1)
    by_label[r] = c
    d = rmsd(centre_structures[:, None], truth.state_positions[None])  # (S, modes)
    r2, c2 = linear_sum_assignment(d)
    by_rmsd = np.full(n_found, -1)
    by_rmsd[r2] = c2
    return dict(table=tab, majority=tab.argmax(1), by_label=by_label, by_rmsd=by_rmsd,
                rmsd_to_modes=d)


def state_report(st, truth, centre_structures):
    m = match_states(st.labels, st.n_states, truth, centre_structures)
    rows = []
    for s in range(st.n_states):
        mode = int(m['by_label'][s])
        row = dict(state=s, population=float(st.populations[s]),
                   population_ci95=[float(v) for v in st.population_ci[s]],
                   population_std=float(st.population_std[s]),
                   n_particles=int((st.labels == s).sum()),
                   composition=m['table'][s].tolist(),
                   majority_mode=int(m['majority'][s]),
                   matched_mode_by_label=mode if mode >= 0 else None,
                   matched_mode_by_rmsd=int(m['by_rmsd'][s]) if m['by_rmsd'][s] >= 0 else None,
                   rmsd_to_each_mode=m['rmsd_to_modes'][s].tolist(),
                   barrier_kT=None if st.barriers is None else float(st.barriers[s]))
        if mode >= 0:
            row.update(true_population=float(truth.fractions[mode]),
                       population_abs_error=float(abs(st.populations[s] - truth.fractions[mode])),
                       centre_rmsd_to_true=float(m['rmsd_to_modes'][s, mode]),
                       true_in_ci95=bool(st.population_ci[s][0] <= truth.fractions[mode]
                                         <= st.population_ci[s][1]))
        rows.append(row)
    agree = bool(np.array_equal(m['by_label'], m['by_rmsd']))
    return rows, m, agree


# ------------------------------------------------------------------- paths

def path_report(kind, lat, path_info, truth, decode_fn, z, middle_centre, middle_spread):
    """Scores of one path (latents (M, K) from start to end)."""
    from scipy.stats import chi2, spearmanr
    from continuousflex_geodl.core.landscape.paths import resample_polyline
    lat = np.asarray(lat, np.float64)
    pos = np.asarray(decode_fn(lat.astype(np.float32)), np.float64)
    u, off = truth.coordinate_of(pos)
    rho = float(spearmanr(np.arange(len(u)), u).correlation)
    dense = resample_polyline(lat, 201)
    dpos = np.asarray(decode_fn(dense.astype(np.float32)), np.float64)
    du, _ = truth.coordinate_of(dpos)
    mid = z[truth.labels == truth.middle_mode]
    mu, prec = mid.mean(0), np.linalg.inv(np.cov(mid.T))
    q = float(chi2.ppf(0.95, z.shape[1]))

    def maha(p):
        d = p - mu
        return np.einsum('mi,ij,mj->m', d, prec, d)

    true_mid = truth.state_positions[truth.middle_mode]
    rm_points, rm_dense = rmsd(pos, true_mid[None]), rmsd(dpos, true_mid[None])
    out = dict(kind=kind, n_points=int(len(lat)), latent_length=float(path_info.get('length')),
               from_state=path_info.get('from_state'), to_state=path_info.get('to_state'),
               spearman_order_vs_true_coordinate=rho,
               true_coordinate=u.tolist(), distance_to_true_motion_A=off.tolist(),
               path_dG_kT=path_info.get('path_dG'),
               middle_mahalanobis2_min_points=float(maha(lat).min()),
               middle_mahalanobis2_min_dense=float(maha(dense).min()),
               middle_chi2_95=q,
               passes_middle_95_region=bool(maha(lat).min() <= q),
               passes_middle_95_region_dense=bool(maha(dense).min() <= q),
               closest_rmsd_to_true_middle_points=float(rm_points.min()),
               closest_rmsd_to_true_middle_dense=float(rm_dense.min()),
               closest_true_coordinate_to_middle_dense=float(
                   du[np.argmin(np.abs(du - truth.state_u[truth.middle_mode]))]),
               true_coordinate_range_dense=[float(du.min()), float(du.max())])
    if middle_centre is not None:
        dd = np.linalg.norm(dense - middle_centre[None], axis=1)
        out.update(closest_latent_distance_to_found_middle_centre=float(dd.min()),
                   found_middle_median_particle_distance=float(middle_spread))
    return out, dense


# --------------------------------------------------------------- stability

def stability(z, n=5, seed0=1, smooth=(2, 1, 0)):
    """State counts over ``n`` clustering seeds and ``n`` bootstrap resamples."""
    from continuousflex_geodl.core.landscape.states import fit_states
    out = {}
    rng = np.random.default_rng(12345)
    boots = [rng.integers(0, len(z), len(z)) for _ in range(n)]
    for sm in smooth:
        seeds = [int(fit_states(z, n_boot=0, seed=seed0 + i, smooth=sm).n_states)
                 for i in range(n)]
        boot = [int(fit_states(z[b], n_boot=0, seed=0, smooth=sm).n_states) for b in boots]
        out['smooth%d' % sm] = dict(seeds=seeds, bootstrap=boot)
    return out


# --------------------------------------------------------------- the bench

def run(a):
    from continuousflex_geodl.core import runtime
    from continuousflex_geodl.core.commands.landscape import make_decoder
    from continuousflex_geodl.core.landscape import diagnostics as D
    from continuousflex_geodl.core.landscape import pipeline as P
    from continuousflex_geodl.core.artifacts import LandscapeDir, PathDir
    from continuousflex_geodl.core.landscape.mixture import load_prior
    from continuousflex_geodl.core.landscape.states import fit_states, load_states
    runtime.setup(a.threads)
    times = {}
    t0 = time.time()
    truth = Truth(a.sim)
    z = _retry(lambda: np.asarray(P.load_latents(a.latents), np.float64), 'reading latents')
    if len(z) != len(truth.labels):
        raise ValueError('The latents hold %d particles but the simulation %d: give the latents '
                         'inferred for this simulation, in particle order.'
                         % (len(z), len(truth.labels)))
    dec = _retry(lambda: make_decoder(a.model, 'cpu', volumes=True), 'loading the model')
    decode_fn = dec['decode_fn']
    from continuousflex_geodl.core.artifacts import ModelDir
    truth.on_model_atoms(ModelDir(a.model).read_reference()['positions'])
    times['load'] = time.time() - t0
    land = os.path.join(a.work, 'landscape')

    # 1. landscape analyze, CLI defaults (+ --model)
    t = time.time()
    summary = P.analyze(z, land, decoder=dec, seed=a.seed)
    times['analyze'] = time.time() - t
    st = load_states(land)
    centres = np.asarray(st.centres, np.float64)
    cstruct = np.asarray(decode_fn(centres.astype(np.float32)), np.float64)
    rows, m, agree = state_report(st, truth, cstruct)

    # 2. paths between the found states of the two end modes
    a_end = [s for s in range(st.n_states) if m['by_label'][s] == truth.end_modes[0]]
    b_end = [s for s in range(st.n_states) if m['by_label'][s] == truth.end_modes[1]]
    default_pair = P._farthest_pair(centres) if st.n_states >= 2 else None
    paths, path_points = {}, {}
    if a_end and b_end:
        pair = (a_end[0], b_end[0])
    elif default_pair is not None:
        pair = default_pair
    else:
        pair = None
    mid_state = [s for s in range(st.n_states) if m['by_label'][s] == truth.middle_mode]
    mid_centre = centres[mid_state[0]] if mid_state else None
    mid_spread = (float(np.median(np.linalg.norm(z[st.labels == mid_state[0]] - mid_centre,
                                                 axis=1))) if mid_state else None)
    if pair is not None:
        for kind in ('density', 'ridgeline'):
            t = time.time()
            pdir = os.path.join(a.work, 'path_' + kind)
            try:
                info = P.compute_path(z, pdir, kind=kind, landscape=land, from_state=pair[0],
                                      to_state=pair[1], decoder=dec, seed=a.seed)
            except ValueError as exc:
                paths[kind] = dict(kind=kind, error=str(exc))
                continue
            times['path_' + kind] = time.time() - t
            lat = PathDir(pdir).latents()
            paths[kind], _ = path_report(kind, lat, info, truth, decode_fn, z, mid_centre,
                                         mid_spread)
            path_points[kind] = lat

    # 3. diagnostics (what `landscape diagnostics --model` computes)
    t = time.time()
    diag = {}
    iso = D.isometry_correlation(z, decode_fn, seed=a.seed)
    diag['isometry'] = {k: iso[k] for k in ('pearson', 'spearman', 'n_pairs')}
    try:
        diag['prior_fit'] = D.prior_kl(z, load_prior(a.model), seed=a.seed)
    except ValueError as exc:
        diag['prior_fit'] = dict(skipped=str(exc))
    from scipy.stats import spearmanr
    pca = LandscapeDir(land).pca()
    diag['abs_spearman_pc1_vs_true_coordinate'] = float(abs(spearmanr(pca[:, 0],
                                                                      truth.u).correlation))
    times['diagnostics'] = time.time() - t

    # 4. stability of the state count; the previous criterion on the full set
    t = time.time()
    stab = stability(z, n=a.resamples)
    prev = fit_states(z, n_boot=0, seed=a.seed, smooth=0)
    stab['previous_criterion_full_set'] = dict(
        n_states=int(prev.n_states), populations=prev.populations.tolist(),
        barriers_kT=prev.barriers.tolist())
    times['stability'] = time.time() - t
    times['total'] = time.time() - t0

    # 5. figure
    _figure(os.path.join(a.out, a.name + '.png'), LandscapeDir(land), st, truth, z, path_points)

    sj = summary['states']
    rep = dict(
        name=a.name, inputs=dict(sim=os.path.abspath(a.sim), model=os.path.abspath(a.model),
                                 latents=os.path.abspath(a.latents),
                                 latents_sha256=_sha256(a.latents),
                                 weights_sha256=_sha256(ModelDir(a.model).weights_path)),
        n_particles=int(len(z)), latent_dim=int(z.shape[1]),
        true_fractions=truth.fractions.tolist(), true_state_coordinates=truth.state_u.tolist(),
        atom_correspondence=truth.correspondence,
        pipeline=dict(call='pipeline.analyze(z, out, decoder=make_decoder(model)) -- CLI defaults',
                      selection=sj.get('selection'), barrier_kT=sj.get('barrier_kT'),
                      density_smoothing=sj.get('density_smoothing'),
                      mixture_components=sj.get('mixture_components'),
                      bootstrap_same_n_states=sj.get('bootstrap_same_n_states'),
                      pca_explained_variance_ratio=summary['pca_explained_variance_ratio']),
        n_states_found=int(st.n_states), n_states_true=int(truth.n_modes),
        states=rows, matching_label_and_rmsd_agree=agree,
        path_pair=None if pair is None else [int(pair[0]), int(pair[1])],
        default_cli_pair=None if default_pair is None else list(default_pair),
        paths=paths, diagnostics=diag, stability=stab,
        seconds={k: round(v, 2) for k, v in times.items()},
        work=os.path.abspath(a.work), figure=a.name + '.png')
    rep['max_population_abs_error'] = max(
        [r['population_abs_error'] for r in rows if 'population_abs_error' in r], default=None)
    rep['bar'] = dict(
        three_states=st.n_states == truth.n_modes,
        populations_within_0_05=bool(st.n_states == truth.n_modes and
                                     rep['max_population_abs_error'] < 0.05),
        paths_through_middle={k: p.get('passes_middle_95_region') for k, p in paths.items()},
        paths_spearman_ge_0_95={k: (p.get('spearman_order_vs_true_coordinate') or 0) >= 0.95
                                for k, p in paths.items()})
    rep = _jsonable(rep)
    _atomic_text(os.path.join(a.out, a.name + '.json'), json.dumps(rep, indent=1))
    md = markdown(rep, a)
    _atomic_text(os.path.join(a.out, a.name + '.md'), md)
    print(md)
    return rep


def _figure(path, land, st, truth, z, path_points):
    from continuousflex_geodl.core.landscape.plots import (new_figure, plot_free_energy,
                                                           plot_populations, save_figure)
    emb = land.embedding_model()
    fe = land.free_energy()
    fig = new_figure(12.5, 5.2)
    gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1])
    ax = fig.add_subplot(gs[0])
    tp = emb.transform(np.stack([z[truth.labels == k].mean(0) for k in range(truth.n_modes)]))
    plot_free_energy(ax, fe, state_points=emb.transform(st.centres),
                     paths=[('%s path' % k, emb.transform(p)) for k, p in path_points.items()],
                     axis_labels=('PC1', 'PC2'),
                     title='%d particles: %d states found (true %d)'
                     % (len(z), st.n_states, truth.n_modes))
    ax.scatter(tp[:, 0], tp[:, 1], marker='x', color='r', s=60, zorder=6,
               label='true modes (mean latent)')
    ax.legend(loc='best', fontsize=8)
    m = match_states(st.labels, st.n_states, truth,
                     np.zeros((st.n_states,) + truth.state_positions.shape[1:]))
    tr = [truth.fractions[k] if k >= 0 else np.nan for k in m['by_label']]
    plot_populations(fig.add_subplot(gs[1]), st.populations, st.population_ci, truth=tr)
    save_figure(fig, path)


def _f(v, fmt='%.3f'):
    return '-' if v is None else fmt % v


def markdown(r, a):
    L = ['# Landscape on model latents (bench_landscape.py)', '',
         'Inputs: latents `%s` (%d particles, K = %d; sha256 %s), model `%s` (weights '
         'sha256 %s), simulation `%s`.'
         % (r['inputs']['latents'], r['n_particles'], r['latent_dim'],
            r['inputs']['latents_sha256'], r['inputs']['model'], r['inputs']['weights_sha256'],
            r['inputs']['sim']), '',
         'Pipeline: `%s`; states by %s (barrier %s kT, density smoothing %s, %s mixture '
         'components); the true number was not given.'
         % (r['pipeline']['call'], r['pipeline']['selection'], r['pipeline']['barrier_kT'],
            r['pipeline']['density_smoothing'], r['pipeline']['mixture_components']), '',
         'Structures compared on the model\'s pseudo-atoms (%s).'
         % ', '.join('%s %s' % (k, v if not isinstance(v, float) else '%.2f' % v)
                     for k, v in (r.get('atom_correspondence') or {}).items()), '',
         '## States', '',
         'Found **%d** states (true %d). True populations %s.'
         % (r['n_states_found'], r['n_states_true'],
            ' / '.join('%.3f' % p for p in r['true_fractions'])), '',
         '| state | population (95 % CI) | true mode (label / RMSD match) | true population | '
         '|error| | centre RMSD to true (A) | barrier (kT) | composition (true modes) |',
         '|---|---|---|---|---|---|---|---|']
    for s in r['states']:
        L.append('| %d | %.3f (%.3f-%.3f) | %s / %s | %s | %s | %s | %s | %s |'
                 % (s['state'], s['population'], s['population_ci95'][0],
                    s['population_ci95'][1], s['matched_mode_by_label'],
                    s['matched_mode_by_rmsd'], _f(s.get('true_population')),
                    _f(s.get('population_abs_error')), _f(s.get('centre_rmsd_to_true'), '%.2f'),
                    _f(s.get('barrier_kT'), '%.2f'), s['composition']))
    L += ['', 'Label and RMSD matchings agree: %s. Bootstrap replicates with the same number of '
          'states: %s.' % (r['matching_label_and_rmsd_agree'],
                           r['pipeline']['bootstrap_same_n_states']), '']
    L += ['## Paths between the end states', '',
          'States %s -> %s (matched to the true end modes; the CLI default, the farthest pair, '
          'is %s).' % (tuple(r['path_pair'] or ('-', '-')) + (r['default_cli_pair'],)), '',
          '| path | points | Spearman(order, true coordinate) | in middle 95 % region '
          '(min d^2 / chi2) | closest RMSD to true middle (A) | closest latent distance to '
          'middle centre (median particle distance) | true coordinate range |',
          '|---|---|---|---|---|---|---|']
    for k, p in r['paths'].items():
        if 'error' in p:
            L.append('| %s | failed: %s | | | | | |' % (k, p['error']))
            continue
        L.append('| %s | %d | %.3f | %s (%.2f / %.2f) | %.2f | %s (%s) | %.2f-%.2f |'
                 % (k, p['n_points'], p['spearman_order_vs_true_coordinate'],
                    'yes' if p['passes_middle_95_region'] else 'no',
                    p['middle_mahalanobis2_min_points'], p['middle_chi2_95'],
                    p['closest_rmsd_to_true_middle_dense'],
                    _f(p.get('closest_latent_distance_to_found_middle_centre'), '%.2f'),
                    _f(p.get('found_middle_median_particle_distance'), '%.2f'),
                    p['true_coordinate_range_dense'][0], p['true_coordinate_range_dense'][1]))
    d = r['diagnostics']
    pf = d.get('prior_fit', {})
    L += ['', '## Diagnostics', '',
          '- isometry correlation (nearby pairs, latent vs decoded-structure distance): '
          'Pearson %.3f, Spearman %.3f (%d pairs)'
          % (d['isometry']['pearson'], d['isometry']['spearman'], d['isometry']['n_pairs']),
          '- prior fit: %s' % ('KL(q||p) = %.3f nats, KL(p||q) = %s nats'
                               % (pf['kl_q_p'], _f(pf.get('kl_p_q')))
                               if 'kl_q_p' in pf else pf.get('skipped', 'not computed')),
          '- |Spearman(PC1, true coordinate)| = %.4f' % d['abs_spearman_pc1_vs_true_coordinate'],
          '', '## Stability of the state count', '',
          '| criterion | %d clustering seeds | %d bootstrap resamples |'
          % (len(r['stability']['smooth2']['seeds']), len(r['stability']['smooth2']['bootstrap'])),
          '|---|---|---|',
          '| default (density averaged over 2 graph-neighbour steps) | %s | %s |'
          % (r['stability']['smooth2']['seeds'], r['stability']['smooth2']['bootstrap']),
          '| one averaging step | %s | %s |'
          % (r['stability']['smooth1']['seeds'], r['stability']['smooth1']['bootstrap']),
          '| previous (density at single particles) | %s | %s |'
          % (r['stability']['smooth0']['seeds'], r['stability']['smooth0']['bootstrap']),
          '', 'Previous criterion on the full set: %d states.'
          % r['stability']['previous_criterion_full_set']['n_states'], '',
          '## Time (s, %s)' % ('1 thread'), '',
          ', '.join('%s %.1f' % (k, v) for k, v in r['seconds'].items()), '',
          'Figure: `%s`. Pipeline folders: `%s`.' % (r['figure'], r['work']), '',
          'Command:', '', '```',
          'python benchmarks/bench_landscape.py --sim %s --model %s --latents %s --out %s '
          '--work %s --name %s' % (a.sim, a.model, a.latents, a.out, a.work, a.name), '```', '']
    return '\n'.join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sim', required=True, help='simulation folder (ground_truth.npz)')
    p.add_argument('--model', required=True, help='trained model folder')
    p.add_argument('--latents', required=True, help='(N, K) latents of the simulated particles')
    p.add_argument('--out', default=os.path.join(HERE, 'report'), help='report folder')
    p.add_argument('--work', default=None,
                   help='pipeline output folder (default benchmarks/work/landscape_model/<name>)')
    p.add_argument('--name', default='landscape_model', help='report file name stem')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--resamples', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    a = p.parse_args(argv)
    a.work = a.work or os.path.join(HERE, 'work', 'landscape_model', a.name)
    os.makedirs(a.out, exist_ok=True)
    run(a)
    return 0


if __name__ == '__main__':
    sys.exit(main())
