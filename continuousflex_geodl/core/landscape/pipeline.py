"""End-to-end landscape operations that read and write folders.

These are what ``continuousflex-geodl landscape ...`` runs (and what the
Scipion protocols run through it); the file names and contents are listed in
the docstring of ``core/commands/landscape.py`` and every file is read and
written through ``core.artifacts`` (``LandscapeDir``, ``PathDir``, ...).
Each takes latents (N, K) as an array (memory-mapped .npy is fine) and an
output folder.  Progress goes to this module's logger (``log`` overrides it).
"""
import logging
import os
import time

import numpy as np

from ..artifacts import ApplyDir, LandscapeDir, PathDir, SubsetDir
from ..io.latents import load_latents as read_latents
from ..settings import PATH_POINTS, LandscapeSettings, PathKind
from .density import DEFAULT_TEMPERATURE, energy_scale, free_energy_map
from .embedding import fit_embedding, fit_pca
from .plots import axis_labels
from .states import fit_states, load_states

logger = logging.getLogger(__name__)


def load_latents(path):
    """(N, K) latents of N >= 10 particles (``core.io.latents.load_latents``)."""
    return read_latents(path, min_rows=10)


#: axis names of an embedding method (``plots.axis_labels``)
_axis_labels = axis_labels


# ------------------------------------------------------------------ analyze

def analyze(z, out, embedding='pca', n_states='auto', method='gmm', prior=None, barrier=None,
            min_population=0.01, max_states=10, knn=10, max_fit=20000, n_boot=100,
            fe_boot=50, bins=None, bandwidth='cv', units='kT',
            temperature=DEFAULT_TEMPERATURE, seed=0, decoder=None, latent_dG=False,
            latent_boot=0, smooth=2, kernel=LandscapeSettings.kernel, log=None):
    """Embedding, free-energy map, states (+ structures at the state centres).

    ``prior`` a Mixture (states from the model's prior).  ``decoder`` an
    optional dict(decode_fn=..., volume_fn=..., apix=..., amplitudes=...,
    amplitude_fn=..., sigma=..., box=...) to write the structures at the
    state centres (``amplitude_fn(z)``, when given, the amplitudes at each
    point; ``series.decode_series``).
    ``latent_dG``: also dG of every particle directly in latent space
    (``latent_dG.npz``; a KDE of 5,000 particles evaluated at all N, with
    ``latent_boot`` bootstrap replicates for its error).  ``smooth``: steps of
    graph averaging of the density before finding basins (``fit_states``).
    ``kernel``: the map's kernel, 'adaptive' or 'fixed' (``free_energy_map``).
    Returns the summary dict (also written to ``summary.json``).
    """
    log = log or logger.info
    t0 = time.time()
    land = LandscapeDir(out).make()
    energy_scale(units, temperature)  # validate early
    n, k = z.shape
    log('landscape: %d particles, %d latent dimensions' % (n, k))
    pca = fit_pca(z)
    pca.save(land.pca_model_path)
    n_pc = min(k, 10)
    land.write_pca(pca.transform(z)[:, :n_pc])
    if embedding == 'pca':
        emb = fit_pca(z, min(k, 2))
        y = emb.transform(z)
    else:
        log('landscape: fitting %s on at most %d particles' % (embedding, max_fit))
        emb, y = fit_embedding(z, embedding, 2, max_fit=max_fit, seed=seed,
                               umap_model_path=land.umap_model_path
                               if embedding == 'umap' else None)
    emb.save(land.embedding_model_path)
    land.write_embedding(y)
    log('landscape: free energy on the %s map (%d bootstrap replicates)' % (embedding, fe_boot))
    fe = free_energy_map(y, bins=bins, bandwidth=bandwidth, n_boot=fe_boot, seed=seed,
                         kernel=kernel)
    scale = energy_scale(units, temperature)
    pdg = fe.at(y)
    land.write_free_energy(fe, units, temperature, particle_dG=pdg * scale,
                           particle_dG_kT=pdg, method=emb.method)
    if latent_dG:
        from .density import latent_free_energy
        log('landscape: free energy in the %d-dimensional latent space' % k)
        ldg, lstd = latent_free_energy(z, n_boot=latent_boot, seed=seed)
        land.write_latent_dG(ldg * scale, lstd * scale, units, temperature, scale)
    log('landscape: states (%s, n_states=%s)' % ('prior' if prior is not None else method,
                                                  n_states))
    st = fit_states(z, method=method, n_states=n_states, prior=prior, max_states=max_states,
                    barrier=barrier, min_population=min_population, knn=knn, n_boot=n_boot,
                    max_fit=max_fit, seed=seed, smooth=smooth, embedding=emb,
                    bandwidth=bandwidth, bins=bins, kernel=kernel)  # 'auto': this very map
    st.save(out)
    cen_y = emb.transform(st.centres)
    land.write_state_centres(st.centres, cen_y)
    cen_dG = fe.at(cen_y)
    names = [str(i) for i in range(st.n_states)]
    from .plots import save_landscape_png
    save_landscape_png(land.figure_path, fe, st.populations,
                       st.population_ci, units=units, temperature=temperature,
                       state_points=cen_y if fe.ndim == 2 else cen_y[:, 0], state_names=names,
                       axis_labels=_axis_labels(emb.method),
                       title='%d particles, %d states' % (n, st.n_states))
    files = dict(decoded=None)
    if decoder is not None:
        from .series import decode_series
        log('landscape: decoding the %d state centres' % st.n_states)
        res = decode_series(st.centres, decoder['decode_fn'], land.structures_dir,
                            land.STRUCTURES, volume_fn=decoder.get('volume_fn'),
                            amplitudes=decoder.get('amplitude_fn') or decoder.get('amplitudes'),
                            sigma=decoder.get('sigma'),
                            box=decoder.get('box'), apix=decoder.get('apix'))
        files['decoded'] = dict(pdb=os.path.relpath(res['pdb'], out),
                                mrc=[os.path.relpath(p, out) for p in res['mrc']])
    summary = dict(
        n_particles=int(n), latent_dim=int(k), embedding=emb.method,
        pca_explained_variance_ratio=pca.explained_variance_ratio.tolist(),
        free_energy=dict(units=units, temperature_K=float(temperature),
                         kT_in_units=float(scale), bandwidth=fe.bandwidth.tolist(),
                         kernel=str(getattr(kernel, 'value', kernel)),
                         grid=[len(c) for c in fe.centres], n_boot=int(fe_boot),
                         convention='dG = -kT ln(p/p_max) of a Gaussian KDE on the map'),
        states=dict(st.to_json(), centre_dG=[None if not np.isfinite(v) else float(v * scale)
                                             for v in cen_dG]),
        files=files, seconds=round(time.time() - t0, 2))
    land.write_summary(summary)
    for i in range(st.n_states):
        lo, hi = st.population_ci[i]
        log('  state %d: population %.3f (95%% CI %.3f-%.3f)%s' % (
            i, st.populations[i], lo, hi, '' if st.resolved is None or st.resolved[i]
            else ' NOT RESOLVED (found in %.0f%% of bootstrap replicates)' % (100 * st.found[i])))
    for note in st.notes():
        log('  note: ' + note)
    log('landscape: wrote %s in %.1f s' % (out, time.time() - t0))
    return summary


# ------------------------------------------------------------------- paths

def _farthest_pair(centres):
    c = np.asarray(centres)
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    return (int(min(i, j)), int(max(i, j)))


def compute_path(z, out, kind='density', landscape=None, from_state=None, to_state=None,
                 n_points=None, pc=1, percentiles=(5.0, 95.0), knn=10, alpha=1.0,
                 max_nodes=20000, K=11, omega=2.0, M=1000, prior=None, seed=0,
                 units='kT', temperature=DEFAULT_TEMPERATURE, decoder=None, log=None,
                 **state_kw):
    """One pathway (see paths.py) written to ``out``; returns its summary dict.

    ``landscape`` a folder written by ``analyze`` (states, embedding and
    free-energy map are reused); without it, states are fitted here
    (``state_kw`` passed to fit_states) and the map is made on PCA.
    """
    from .paths import density_path, pca_path, ridgeline_path
    log = log or logger.info
    t0 = time.time()
    kind = str(kind).lower()
    if kind not in PathKind.values():
        raise ValueError("Unknown path kind '%s': use pca, density or ridgeline." % kind)
    pdir = PathDir(out).make()
    st = emb = fe = None
    if landscape:
        land = LandscapeDir(landscape)
        emb = land.embedding_model()
        fe = land.free_energy()
        st = load_states(landscape)
        if emb.dim != z.shape[1]:
            raise ValueError('The landscape in %s was computed from %d-dimensional latents but '
                             'these have %d.' % (landscape, emb.dim, z.shape[1]))
    else:
        emb = fit_pca(z, min(z.shape[1], 2))
        fe = free_energy_map(emb.transform(z), n_boot=0, seed=seed)
        if kind != 'pca':
            log('path: no --landscape given; fitting states')
            st = fit_states(z, prior=prior, n_boot=0, seed=seed, **state_kw)
    info = dict(kind=kind)
    if kind == 'pca':
        npts = int(n_points or PATH_POINTS['pca'])
        p = pca_path(z, axis=int(pc) - 1, n_points=npts, percentiles=percentiles)
        info.update(pc=int(pc))
    else:
        if from_state is None or to_state is None:
            a, b = _farthest_pair(st.centres)
            from_state = a if from_state is None else from_state
            to_state = b if to_state is None else to_state
        for s in (from_state, to_state):
            if not 0 <= int(s) < st.n_states:
                raise ValueError('State %d does not exist: the landscape has states 0..%d.'
                                 % (s, st.n_states - 1))
        if int(from_state) == int(to_state):
            raise ValueError('The start and end states are the same (%d).' % from_state)
        start, end = st.centres[int(from_state)], st.centres[int(to_state)]
        info.update(from_state=int(from_state), to_state=int(to_state),
                    start=start.tolist(), end=end.tolist())
        if kind == 'density':
            p = density_path(z, start, end, n_points=int(n_points or PATH_POINTS['density']),
                             knn=knn, alpha=alpha, max_nodes=max_nodes, seed=seed)
        else:
            mix = prior if prior is not None else st.mixture
            if mix is None:
                from .states import _scale, _to_mixture, select_by_bic
                zf = np.asarray(z[np.random.default_rng(seed).permutation(len(z))[:20000]],
                                np.float64)
                mean, s = _scale(zf)
                g, _ = select_by_bic((zf - mean) / s, 10, seed)
                mix = _to_mixture(g, mean, s)
            if n_points:
                K = int(n_points) - 1
            ci, cj = int(mix.predict(start)[0]), int(mix.predict(end)[0])
            if ci == cj:
                raise ValueError('States %d and %d fall in the same mixture component (%d): a '
                                 'ridgeline needs two components; use the density path, or a '
                                 'mixture with more components.' % (from_state, to_state, ci))
            p = ridgeline_path(mix, ci, cj, K=K, omega=omega, M=M, seed=seed)
            info.update(mixture='prior' if prior is not None else 'states',
                        mixture_components=int(mix.n_components))
    info.update(p.info)
    info['n_points'] = int(len(p.latents))
    info['length'] = p.length
    lat = p.latents.astype(np.float32)
    pdir.write_latents(lat)
    y = emb.transform(lat)
    pdir.write_embedding(y)
    scale = energy_scale(units, temperature)
    dG = fe.at(y[:, :fe.ndim])
    info.update(embedding=emb.method, units=units, temperature_K=float(temperature),
                path_dG=[None if not np.isfinite(v) else float(v * scale) for v in dG])
    if decoder is not None:
        from .series import decode_series
        log('path: decoding %d structures' % len(lat))
        res = decode_series(lat, decoder['decode_fn'], out, pdir.STRUCTURES,
                            volume_fn=decoder.get('volume_fn'),
                            amplitudes=decoder.get('amplitude_fn') or decoder.get('amplitudes'),
                            sigma=decoder.get('sigma'),
                            box=decoder.get('box'), apix=decoder.get('apix'))
        info['files'] = dict(pdb=os.path.basename(res['pdb']),
                             mrc=[os.path.basename(q) for q in res['mrc']])
    from .plots import new_figure, plot_free_energy, plot_profile, save_figure
    fig = new_figure(11.5, 5.0)
    gs = fig.add_gridspec(1, 2, width_ratios=[2.2, 1])
    sp = emb.transform(st.centres) if st is not None else None
    plot_free_energy(fig.add_subplot(gs[0]), fe, units=units, temperature=temperature,
                     state_points=None if sp is None else (sp if fe.ndim == 2 else sp[:, 0]),
                     paths=[('%s path' % kind, y)] if fe.ndim == 2 else None,
                     axis_labels=_axis_labels(emb.method))
    plot_profile(fig.add_subplot(gs[1]), dG * scale, label='ΔG on the map (%s)' % units)
    save_figure(fig, pdir.figure_path)
    info['seconds'] = round(time.time() - t0, 2)
    pdir.write_info(info)
    log('path: %s path with %d points written to %s' % (kind, len(lat), out))
    return info


# ------------------------------------------------------------------ subsets

def make_subset(landscape, out, states=None, box=None, polygon=None, max_dG=None,
                particles=None, one_based=False, log=None):
    """Select particles of a landscape folder; intersection of the criteria
    given.  Writes subset_indices.txt/.npy, subset.json (+ particles.star)."""
    from . import subsets as S
    log = log or logger.info
    land = LandscapeDir(landscape)
    crit = []
    y = land.embedding(mmap=True)
    mask = np.ones(len(y), bool)
    if states is not None and len(states):
        labels = land.labels()
        mask &= S.select_states(labels, states)
        crit.append('states %s' % list(map(int, states)))
    if box is not None:
        b = np.asarray(box, float).reshape(-1, 2)
        mask &= S.select_box(y, b[:, 0], b[:, 1])
        crit.append('box %s' % b.tolist())
    if polygon is not None:
        v = S.parse_polygon(polygon) if isinstance(polygon, str) else np.asarray(polygon)
        mask &= S.select_polygon(y, v)
        crit.append('polygon %s' % v.tolist())
    if max_dG is not None:
        pdg, units = land.particle_dG()
        mask &= S.select_free_energy(pdg, max_dG)
        crit.append('dG <= %g %s' % (max_dG, units))
    if not crit:
        raise ValueError('Give at least one selection: states, a box, a polygon or a '
                         'free-energy threshold.')
    idx = np.nonzero(mask)[0]
    sub = SubsetDir(out).make()
    S.write_indices(sub.indices_txt_path, idx, one_based, header='; '.join(crit))
    sub.write_indices(idx)
    info = dict(n_selected=int(len(idx)), n_particles=int(len(mask)), criteria=crit,
                landscape=os.path.abspath(landscape))
    if particles:
        star = S.export_star(particles, idx, sub.particles_path)
        info['particles_star'] = os.path.basename(star)
    sub.write_info(info)
    log('subset: %d of %d particles (%s)' % (len(idx), len(mask), '; '.join(crit)))
    return info


# -------------------------------------------------------------------- apply

def apply_landscape(landscape, z, out, log=None):
    """Place new particles on an existing landscape with the saved mappings:
    embedding.npy, labels.npy, particle_dG.npy (units of the landscape)."""
    log = log or logger.info
    land = LandscapeDir(landscape)
    emb = land.embedding_model()
    st = load_states(landscape)
    fe = land.free_energy()
    if emb.dim != z.shape[1]:
        raise ValueError('The landscape in %s was computed from %d-dimensional latents but '
                         'these have %d.' % (landscape, emb.dim, z.shape[1]))
    y = emb.transform(z)
    lab = st.predict(z)
    scale = float(fe.extra.get('kT', 1.0))
    dg = fe.at(y[:, :fe.ndim]) * scale
    counts = np.bincount(lab, minlength=st.n_states)
    info = dict(n_particles=int(len(z)), landscape=os.path.abspath(landscape),
                counts=counts.tolist(), populations=(counts / max(len(z), 1)).tolist())
    ApplyDir(out).make().write(y, lab, dg, info)
    log('apply: %d particles placed; populations %s' % (
        len(z), ' '.join('%.3f' % p for p in info['populations'])))
    return info
