"""End-to-end landscape operations that read and write folders.

These are what ``continuousflex-geodl landscape ...`` runs (and what the
Scipion protocols run through it); the file names and contents are listed in
the docstring of ``core/commands/landscape.py``.  Each takes latents
(N, K) as an array (memory-mapped .npy is fine) and an output folder.
"""
import json
import os
import time

import numpy as np

from .density import DEFAULT_TEMPERATURE, energy_scale, free_energy_map, load_free_energy
from .embedding import fit_embedding, fit_pca, load_embedding
from .states import fit_states, load_states


def load_latents(path):
    """(N, K) latents from .npy (memory-mapped), .npz (first array) or text."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("Latent file not found: '%s'" % path)
    if path.endswith('.npy'):
        z = np.load(path, mmap_mode='r')
    elif path.endswith('.npz'):
        with np.load(path) as f:
            if not f.files:
                raise ValueError("'%s' holds no array." % path)
            z = f['z'] if 'z' in f.files else f[f.files[0]]
    else:
        z = np.loadtxt(path, ndmin=2, comments='#')
    z = z[:, None] if z.ndim == 1 else z
    if z.ndim != 2 or len(z) < 10:
        raise ValueError("'%s' must hold an (N, K) latent array with N >= 10 particles; got "
                         "shape %s." % (path, z.shape))
    return z


def _json_dump(path, obj):
    from ..fileio import atomic_write
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=1, default=_json_default)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    raise TypeError(type(o))


def _save_npy(path, arr):
    from ..fileio import atomic_write
    with atomic_write(path, 'wb') as fh:
        np.save(fh, arr)
    return path


def _axis_labels(method):
    return {'pca': ('PC1', 'PC2'), 'umap': ('UMAP 1', 'UMAP 2'),
            'tsne': ('t-SNE 1', 't-SNE 2')}.get(method, ('embedding 1', 'embedding 2'))


# ------------------------------------------------------------------ analyze

def analyze(z, out, embedding='pca', n_states='auto', method='gmm', prior=None, barrier=1.0,
            min_population=0.01, max_states=10, knn=10, max_fit=20000, n_boot=20,
            fe_boot=50, bins=None, bandwidth='scott', units='kT',
            temperature=DEFAULT_TEMPERATURE, seed=0, decoder=None, latent_dG=False,
            latent_boot=0, smooth=2, log=print):
    """Embedding, free-energy map, states (+ structures at the state centres).

    ``prior`` a Mixture (states from the model's prior).  ``decoder`` an
    optional dict(decode_fn=..., volume_fn=..., apix=..., amplitudes=...,
    sigma=..., box=...) to write the structures at the state centres.
    ``latent_dG``: also dG of every particle directly in latent space
    (``latent_dG.npz``; a KDE of 5,000 particles evaluated at all N, with
    ``latent_boot`` bootstrap replicates for its error).  ``smooth``: steps of
    graph averaging of the density before finding basins (``fit_states``).
    Returns the summary dict (also written to ``summary.json``).
    """
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    energy_scale(units, temperature)  # validate early
    n, k = z.shape
    log('landscape: %d particles, %d latent dimensions' % (n, k))
    pca = fit_pca(z)
    pca.save(os.path.join(out, 'pca_model.npz'))
    n_pc = min(k, 10)
    _save_npy(os.path.join(out, 'pca.npy'), pca.transform(z)[:, :n_pc].astype(np.float32))
    if embedding == 'pca':
        emb = fit_pca(z, min(k, 2))
        y = emb.transform(z)
    else:
        log('landscape: fitting %s on at most %d particles' % (embedding, max_fit))
        emb, y = fit_embedding(z, embedding, 2, max_fit=max_fit, seed=seed,
                               umap_model_path=os.path.join(out, 'embedding_umap.joblib')
                               if embedding == 'umap' else None)
    emb.save(os.path.join(out, 'embedding_model.npz'))
    _save_npy(os.path.join(out, 'embedding.npy'), y.astype(np.float32))
    log('landscape: free energy on the %s map (%d bootstrap replicates)' % (embedding, fe_boot))
    fe = free_energy_map(y, bins=bins, bandwidth=bandwidth, n_boot=fe_boot, seed=seed)
    scale = energy_scale(units, temperature)
    pdg = fe.at(y)
    fe.save(os.path.join(out, 'free_energy.npz'), units, temperature,
            particle_dG=(pdg * scale).astype(np.float32), particle_dG_kT=pdg.astype(np.float32),
            embedding_method=np.array(emb.method))
    if latent_dG:
        from .density import latent_free_energy
        from ..fileio import atomic_write
        log('landscape: free energy in the %d-dimensional latent space' % k)
        ldg, lstd = latent_free_energy(z, n_boot=latent_boot, seed=seed)
        with atomic_write(os.path.join(out, 'latent_dG.npz'), 'wb') as fh:
            np.savez(fh, dG=(ldg * scale).astype(np.float32),
                     dG_std=(lstd * scale).astype(np.float32), units=np.array(str(units)),
                     temperature_K=np.array(float(temperature)), kT=np.array(scale))
    log('landscape: states (%s, n_states=%s)' % ('prior' if prior is not None else method,
                                                  n_states))
    st = fit_states(z, method=method, n_states=n_states, prior=prior, max_states=max_states,
                    barrier=barrier, min_population=min_population, knn=knn, n_boot=n_boot,
                    max_fit=max_fit, seed=seed, smooth=smooth)
    st.save(out)
    _save_npy(os.path.join(out, 'state_centres.npy'), st.centres.astype(np.float32))
    cen_y = emb.transform(st.centres)
    _save_npy(os.path.join(out, 'state_centres_embedding.npy'), cen_y.astype(np.float32))
    cen_dG = fe.at(cen_y)
    names = [str(i) for i in range(st.n_states)]
    from .plots import save_landscape_png
    save_landscape_png(os.path.join(out, 'landscape.png'), fe, st.populations,
                       st.population_ci, units=units, temperature=temperature,
                       state_points=cen_y if fe.ndim == 2 else cen_y[:, 0], state_names=names,
                       axis_labels=_axis_labels(emb.method),
                       title='%d particles, %d states' % (n, st.n_states))
    files = dict(decoded=None)
    if decoder is not None:
        from .series import decode_series
        log('landscape: decoding the %d state centres' % st.n_states)
        res = decode_series(st.centres, decoder['decode_fn'], os.path.join(out, 'states'),
                            'states', volume_fn=decoder.get('volume_fn'),
                            amplitudes=decoder.get('amplitudes'), sigma=decoder.get('sigma'),
                            box=decoder.get('box'), apix=decoder.get('apix'))
        files['decoded'] = dict(pdb=os.path.relpath(res['pdb'], out),
                                mrc=[os.path.relpath(p, out) for p in res['mrc']])
    summary = dict(
        n_particles=int(n), latent_dim=int(k), embedding=emb.method,
        pca_explained_variance_ratio=pca.explained_variance_ratio.tolist(),
        free_energy=dict(units=units, temperature_K=float(temperature),
                         kT_in_units=float(scale), bandwidth=fe.bandwidth.tolist(),
                         grid=[len(c) for c in fe.centres], n_boot=int(fe_boot),
                         convention='dG = -kT ln(p/p_max) of a Gaussian KDE on the map'),
        states=dict(st.to_json(), centre_dG=[None if not np.isfinite(v) else float(v * scale)
                                             for v in cen_dG]),
        files=files, seconds=round(time.time() - t0, 2))
    _json_dump(os.path.join(out, 'summary.json'), summary)
    for i in range(st.n_states):
        lo, hi = st.population_ci[i]
        log('  state %d: population %.3f (95%% CI %.3f-%.3f)' % (i, st.populations[i], lo, hi))
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
                 units='kT', temperature=DEFAULT_TEMPERATURE, decoder=None, log=print,
                 **state_kw):
    """One pathway (see paths.py) written to ``out``; returns its summary dict.

    ``landscape`` a folder written by ``analyze`` (states, embedding and
    free-energy map are reused); without it, states are fitted here
    (``state_kw`` passed to fit_states) and the map is made on PCA.
    """
    from .paths import density_path, pca_path, ridgeline_path
    t0 = time.time()
    kind = str(kind).lower()
    if kind not in ('pca', 'density', 'ridgeline'):
        raise ValueError("Unknown path kind '%s': use pca, density or ridgeline." % kind)
    os.makedirs(out, exist_ok=True)
    st = emb = fe = None
    if landscape:
        emb = load_embedding(os.path.join(landscape, 'embedding_model.npz'))
        fe = load_free_energy(os.path.join(landscape, 'free_energy.npz'))
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
        npts = int(n_points or 10)
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
            p = density_path(z, start, end, n_points=int(n_points or 20), knn=knn, alpha=alpha,
                             max_nodes=max_nodes, seed=seed)
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
    _save_npy(os.path.join(out, 'path_latents.npy'), lat)
    y = emb.transform(lat)
    _save_npy(os.path.join(out, 'path_embedding.npy'), y.astype(np.float32))
    scale = energy_scale(units, temperature)
    dG = fe.at(y[:, :fe.ndim])
    info.update(embedding=emb.method, units=units, temperature_K=float(temperature),
                path_dG=[None if not np.isfinite(v) else float(v * scale) for v in dG])
    if decoder is not None:
        from .series import decode_series
        log('path: decoding %d structures' % len(lat))
        res = decode_series(lat, decoder['decode_fn'], out, 'path',
                            volume_fn=decoder.get('volume_fn'),
                            amplitudes=decoder.get('amplitudes'), sigma=decoder.get('sigma'),
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
    save_figure(fig, os.path.join(out, 'path.png'))
    info['seconds'] = round(time.time() - t0, 2)
    _json_dump(os.path.join(out, 'path.json'), info)
    log('path: %s path with %d points written to %s' % (kind, len(lat), out))
    return info


# ------------------------------------------------------------------ subsets

def make_subset(landscape, out, states=None, box=None, polygon=None, max_dG=None,
                particles=None, one_based=False, log=print):
    """Select particles of a landscape folder; intersection of the criteria
    given.  Writes subset_indices.txt/.npy, subset.json (+ particles.star)."""
    from . import subsets as S
    crit = []
    y = np.load(os.path.join(landscape, 'embedding.npy'), mmap_mode='r')
    mask = np.ones(len(y), bool)
    if states is not None and len(states):
        labels = np.load(os.path.join(landscape, 'labels.npy'))
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
        with np.load(os.path.join(landscape, 'free_energy.npz')) as f:
            pdg, units = f['particle_dG'], str(f['units'])
        mask &= S.select_free_energy(pdg, max_dG)
        crit.append('dG <= %g %s' % (max_dG, units))
    if not crit:
        raise ValueError('Give at least one selection: states, a box, a polygon or a '
                         'free-energy threshold.')
    idx = np.nonzero(mask)[0]
    os.makedirs(out, exist_ok=True)
    S.write_indices(os.path.join(out, 'subset_indices.txt'), idx, one_based,
                    header='; '.join(crit))
    _save_npy(os.path.join(out, 'subset_indices.npy'), idx.astype(np.int64))
    info = dict(n_selected=int(len(idx)), n_particles=int(len(mask)), criteria=crit,
                landscape=os.path.abspath(landscape))
    if particles:
        star = S.export_star(particles, idx, os.path.join(out, 'particles.star'))
        info['particles_star'] = os.path.basename(star)
    _json_dump(os.path.join(out, 'subset.json'), info)
    log('subset: %d of %d particles (%s)' % (len(idx), len(mask), '; '.join(crit)))
    return info


# -------------------------------------------------------------------- apply

def apply_landscape(landscape, z, out, log=print):
    """Place new particles on an existing landscape with the saved mappings:
    embedding.npy, labels.npy, particle_dG.npy (units of the landscape)."""
    emb = load_embedding(os.path.join(landscape, 'embedding_model.npz'))
    st = load_states(landscape)
    fe = load_free_energy(os.path.join(landscape, 'free_energy.npz'))
    if emb.dim != z.shape[1]:
        raise ValueError('The landscape in %s was computed from %d-dimensional latents but '
                         'these have %d.' % (landscape, emb.dim, z.shape[1]))
    os.makedirs(out, exist_ok=True)
    y = emb.transform(z)
    lab = st.predict(z)
    scale = float(fe.extra.get('kT', 1.0))
    dg = fe.at(y[:, :fe.ndim]) * scale
    _save_npy(os.path.join(out, 'embedding.npy'), y.astype(np.float32))
    _save_npy(os.path.join(out, 'labels.npy'), lab.astype(np.int32))
    _save_npy(os.path.join(out, 'particle_dG.npy'), dg.astype(np.float32))
    counts = np.bincount(lab, minlength=st.n_states)
    info = dict(n_particles=int(len(z)), landscape=os.path.abspath(landscape),
                counts=counts.tolist(), populations=(counts / max(len(z), 1)).tolist())
    _json_dump(os.path.join(out, 'apply.json'), info)
    log('apply: %d particles placed; populations %s' % (
        len(z), ' '.join('%.3f' % p for p in info['populations'])))
    return info
