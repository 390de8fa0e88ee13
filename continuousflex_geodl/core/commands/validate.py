"""Half-set validation: train two models on random halves and compare them.

Splits the particles into two random halves (seeded; the split is written),
trains one model per half with the same settings (every option of
``train``), infers the latents of ALL particles with both models, maps the
second model's latent space onto the first (Procrustes or affine, fitted on
the particles of half 1, scored on the held-out particles of half 2) and
reports:

* per-particle latent agreement: correlation per aligned dimension and
  along PC1 (Pearson and Spearman/rank), per-particle relative error;
* FSC between the two models' maps decoded at matched latents (the state
  centres and a path of half 1's landscape; the second model at the
  inverse-mapped points), with the resolutions at FSC 0.143 and 0.5;
* error estimates of the state positions, populations and free energies
  (``landscape analyze`` of each model's latents, compared state by state).

Output folder (``core.artifacts.ValidationDir``): split.npz, half1/2.star,
model_half1/2, latents, alignment.npz, landscape_half1/2, path, maps/,
fsc.npz, fe_maps.npz, validation.json + validation.md, latent_agreement.png,
fsc.png, landscape_comparison.png, run.log.  Example::

    continuousflex-geodl validate --particles P.star --reference REF.pdb --out VAL
"""
import argparse
import logging
import os
import time

import numpy as np

from .. import logs
from ..settings import (InferSettings, LandscapeSettings as L, ValidateSettings as V,
                        add_setting, add_settings)
from . import train as train_command

logger = logging.getLogger(__name__)


def add_args(p):
    train_command.add_args(p)  # the inputs and every training option of train
    helps = {'out': 'output folder of the validation (created)',
             'resume': 'continue each half-set model from its last checkpoint in --out'}
    for a in p._actions:
        if a.dest in helps:
            a.help = helps[a.dest]
    g = p.add_argument_group('validation')
    add_settings(g, V, 'split_seed', 'align', 'path_points', 'fe_max_dG', 'mask_width')
    add_settings(g, InferSettings, 'refine_steps')
    add_setting(g, '--n-states', L, 'n_states', choices=None,
                help="states of each landscape: a number, 'auto' (free-energy basins; "
                     "default) or 'bic'")
    add_settings(g, L, 'bootstrap', 'fe_bootstrap')


def _n_states(text):
    from .landscape import _n_states as parse
    return parse(text)


def _train_half(args, star, out):
    ns = argparse.Namespace(**vars(args))
    ns.particles, ns.out = star, out
    train_command.train_from_args(ns)


def _infer(model_dir, pset, device, refine_steps):
    from ..inference import infer_latents, load_model, refine_latents
    model = load_model(model_dir, device=device)
    z = infer_latents(model, pset, batch_size=InferSettings.batch_size)
    if refine_steps:
        z = refine_latents(model, pset, z, steps=refine_steps,
                           batch_size=InferSettings.refine_batch_size)
    return np.asarray(z, np.float32), model


def main(args):
    logs.start_run_log(args.out, args)
    return run(args)


def run(args):
    """The validation (``main`` without the run log); returns 0."""
    from ..artifacts import LandscapeDir, PathDir, ValidationDir
    from ..inference import decode_volumes
    from ..io.mrc import write_mrc
    from ..landscape.pipeline import analyze, compute_path
    from ..particles import load_particles, write_particles_star
    from ..runtime import resolve_device
    from .. import validation as VAL
    t0 = time.time()
    device = resolve_device(args.device, allow_cpu_fallback=args.allow_cpu_fallback or None)
    dev = 'cpu' if device.type == 'cpu' else args.device
    if args.path_points < 2:
        raise ValueError('--path-points must be at least 2 (got %d).' % args.path_points)
    n_states = _n_states(args.n_states)
    pset = load_particles(args.particles)
    n = len(pset)
    out = ValidationDir(args.out).make()

    # -------------------------------------------------------------- split
    h1, h2 = VAL.split_halves(n, args.split_seed)
    if args.resume and os.path.exists(out.split_path):
        o1, o2 = out.split()
        if not (np.array_equal(o1, h1) and np.array_equal(o2, h2)):
            raise ValueError('--resume: the half-set models in %s were trained on another '
                             'split (other particles or --split-seed); use a new --out.'
                             % args.out)
    out.write_split(h1, h2, args.split_seed, n)
    for half, rows in ((1, h1), (2, h2)):
        write_particles_star(out.half_star_path(half), pset.subset(rows))
    logger.info('validate: %d particles split into halves of %d and %d (seed %d)',
                n, len(h1), len(h2), args.split_seed)

    # -------------------------------------------------------------- train
    for half in (1, 2):  # with --resume, a finished model is kept (train --resume)
        logger.info('validate: training the model of half %d', half)
        _train_half(args, out.half_star_path(half), out.model_path(half))

    # -------------------------------------------------------------- infer
    zs, models = {}, {}
    for half in (1, 2):
        logger.info('validate: latents of all %d particles with the model of half %d', n, half)
        zs[half], models[half] = _infer(out.model_path(half), pset, dev, args.refine_steps)
        out.write_latents(half, zs[half])
    z1, z2 = zs[1].astype(np.float64), zs[2].astype(np.float64)

    # -------------------------------------------------------------- align
    ali = VAL.fit_alignment(z2[h1], z1[h1], args.align)
    z2a = ali.apply(z2)
    out.write_aligned(z2a)
    out.write_alignment(ali, h1)
    spread = float(np.sqrt(((z1 - z1.mean(0)) ** 2).sum(1).mean()))
    err_all = np.linalg.norm(z1 - z2a, axis=1) / (spread if spread > 0 else 1.0)
    held = np.zeros(n, bool)
    held[h2] = True
    out.write_agreement(err_all, held)
    ag = VAL.latent_agreement(z1[h2], z2a[h2])
    ag.update(relative_error_median=float(np.median(err_all[held])),
              relative_error_p90=float(np.percentile(err_all[held], 90)),
              relative_error_median_fitted=float(np.median(err_all[~held])),
              align_method=ali.method, scored_on='half 2 (held out, %d particles)' % len(h2),
              fitted_on='half 1 (%d particles)' % len(h1))
    del ag['relative_error']
    logger.info('validate: held-out agreement after %s alignment: Pearson per dimension %s, '
                'PC1 Pearson %.3f / Spearman %.3f, median relative error %.3f', ali.method,
                ' '.join('%.3f' % r for r in ag['pearson']), ag['pc1_pearson'],
                ag['pc1_spearman'], ag['relative_error_median'])

    # ---------------------------------------------------------- landscapes
    land = {}
    for half, z in ((1, z1), (2, z2a)):
        logger.info('validate: landscape of the model of half %d%s', half,
                    ' (aligned latents)' if half == 2 else '')
        analyze(z.astype(np.float32), out.landscape_path(half), n_states=n_states,
                n_boot=args.bootstrap, fe_boot=args.fe_bootstrap, seed=args.seed)
        land[half] = LandscapeDir(out.landscape_path(half))
    emb = land[1].embedding_model()
    y1, y2 = emb.transform(z1), emb.transform(z2a)
    fe1, fe2, maps_info = VAL.compare_maps(y1, y2, max_dG=args.fe_max_dG, seed=args.seed)
    c = {h: np.asarray(land[h].state_centres(), np.float64) for h in (1, 2)}
    pops = {h: land[h].states()['populations'] for h in (1, 2)}
    sp1, sp2 = emb.transform(c[1]), emb.transform(c[2])
    dG1 = fe1.at(sp1[:, :fe1.ndim])
    dG2 = fe2.at(sp2[:, :fe2.ndim])
    states = VAL.compare_states(c[1], c[2], pops[1], pops[2], dG1, dG2, land[1].labels(),
                                land[2].labels(), scale=spread)
    out.write_fe_maps(fe1, fe2, sp1, sp2)

    # ---------------------------------------------------------------- path
    kind = 'density' if len(c[1]) >= 2 else 'pca'
    info = compute_path(z1.astype(np.float32), out.path_dir, kind=kind,
                        landscape=out.landscape_path(1), n_points=args.path_points,
                        seed=args.seed)
    path_z = np.asarray(PathDir(out.path_dir).latents(), np.float64)

    # ----------------------------------------------------------------- FSC
    apix = float(models[1].apix)
    tables, first = {}, {}
    for kind_name, pts in (('state', c[1]), ('path', path_z)):
        logger.info('validate: decoding %d %s point(s) with both models', len(pts), kind_name)
        m1 = decode_volumes(models[1], pts.astype(np.float32))
        m2 = decode_volumes(models[2], ali.inverse(pts).astype(np.float32))
        for i in range(len(pts)):
            write_mrc(out.map_path(1, kind_name, i), m1[i], apix)
            write_mrc(out.map_path(2, kind_name, i), m2[i], apix)
        tables[kind_name] = VAL.fsc_table(m1, m2, apix, mask_width=args.mask_width)
        first[kind_name] = m1
    # contrast: how much the conformations themselves differ (one model, path ends)
    tables['contrast'] = VAL.fsc_table(first['path'][:1], first['path'][-1:], apix,
                                       mask_width=args.mask_width)
    freqs = tables['state']['freqs']
    out.write_fsc(freqs=freqs, state_curves=tables['state']['curves'],
                  path_curves=tables['path']['curves'], state_latents=c[1],
                  path_latents=path_z,
                  state_res_0143=tables['state']['resolution'][0.143],
                  state_res_05=tables['state']['resolution'][0.5],
                  path_res_0143=tables['path']['resolution'][0.143],
                  path_res_05=tables['path']['resolution'][0.5],
                  contrast_curve=tables['contrast']['curves'][0],
                  contrast_res_0143=tables['contrast']['resolution'][0.143][0],
                  contrast_res_05=tables['contrast']['resolution'][0.5][0])

    # -------------------------------------------------------------- report
    report = _report(args, n, h1, h2, ali, ag, tables, dict(state=c[1], path=path_z), states,
                     maps_info, land, info, apix, spread, time.time() - t0)
    out.write_report(report, _markdown(report))
    from ..validation_plots import save_figures
    save_figures(out.path)
    for line in _summary_lines(report):
        logger.info('validate: %s', line)
    logger.info('validate: wrote %s in %.1f s', args.out, time.time() - t0)
    return 0


def _res_rows(table, latents):
    return [dict(index=i, latent=np.asarray(latents[i]).tolist(),
                 resolution_0143=float(table['resolution'][0.143][i]),
                 resolution_05=float(table['resolution'][0.5][i]))
            for i in range(len(latents))]


def _report(args, n, h1, h2, ali, ag, tables, points, states, maps_info, land, path_info,
            apix, spread, seconds):
    st = tables['state']
    pa = tables['path']
    nyq = 2.0 * apix
    fsc = dict(
        mask='soft sphere, radius box/2 - %g px, edge %g px' % (args.mask_width,
                                                                args.mask_width),
        matched_latents='point z of half 1\'s latent space; the model of half 2 decodes '
                        'A^-1(z) (inverse of the alignment)',
        nyquist_A=nyq, thresholds=[0.143, 0.5],
        states=_res_rows(st, points['state']),
        path=_res_rows(pa, points['path']),
        path_kind=path_info.get('kind'),
        median_state_resolution_0143=float(np.median(st['resolution'][0.143])),
        median_path_resolution_0143=float(np.median(pa['resolution'][0.143])),
        median_path_resolution_05=float(np.median(pa['resolution'][0.5])),
        min_state_fsc=float(st['curves'][:, 1:].min()),
        min_path_fsc=float(pa['curves'][:, 1:].min()),
        contrast=dict(
            what='FSC between the maps of the two ends of the path, both from the model of '
                 'half 1: how much the conformations differ, against which the half-set '
                 'FSC is read',
            resolution_0143=float(tables['contrast']['resolution'][0.143][0]),
            resolution_05=float(tables['contrast']['resolution'][0.5][0]),
            min_fsc=float(tables['contrast']['curves'][0, 1:].min())))
    landscape = dict(
        states=states, maps=maps_info, max_dG=float(args.fe_max_dG),
        n_states_half1=int(land[1].states()['n_states']),
        n_states_half2=int(land[2].states()['n_states']),
        note='both landscapes from the latents of ALL particles; half 2 aligned into '
             "half 1's space; maps on half 1's PCA plane, one grid and kernel width")
    errors = dict(
        state_position_sigma_latent=states['position_sigma'],
        # per coordinate, against the rms spread per coordinate
        state_position_sigma_relative=(states['position_sigma'] * np.sqrt(ali.matrix.shape[1])
                                       / spread) if spread else None,
        population_sigma=states['population_sigma'],
        dG_sigma_kT=states.get('dG_sigma'),
        map_dG_sigma_kT=maps_info['sigma'],
        model='two estimates from independent halves differ by d, E[d^2] = 2 sigma^2: '
              'sigma of one half-set estimate = sqrt(mean d^2 / 2)')
    return dict(
        title='Half-set validation: %d particles, %d latent dimensions' % (n, ali.matrix.shape[1]),
        n_particles=int(n), halves=dict(n_half1=int(len(h1)), n_half2=int(len(h2)),
                                        split_seed=int(args.split_seed)),
        alignment=dict(ali.as_dict(), fitted_on='particles of half 1',
                       scored_on='particles of half 2 (held out)'),
        latent_agreement=ag, fsc=fsc, landscape=landscape, error_estimates=errors,
        latent_spread=spread, settings=logs.settings_of(args), seconds=round(seconds, 1))


def _fmt(v, f='%.3f'):
    return 'n/a' if v is None or (isinstance(v, float) and not np.isfinite(v)) else f % v


def _summary_lines(r):
    ag, fsc, e = r['latent_agreement'], r['fsc'], r['error_estimates']
    return [
        'latent agreement (held out, %s): Pearson per dimension %s; PC1 Pearson %s, '
        'Spearman %s; median relative error %s'
        % (ag['align_method'], ' '.join(_fmt(x) for x in ag['pearson']),
           _fmt(ag['pc1_pearson']), _fmt(ag['pc1_spearman']),
           _fmt(ag['relative_error_median'])),
        'FSC at the states: resolution at 0.143 %s A, at 0.5 %s A (Nyquist %.2f A)'
        % (' '.join(_fmt(s['resolution_0143'], '%.2f') for s in fsc['states']),
           ' '.join(_fmt(s['resolution_05'], '%.2f') for s in fsc['states']),
           fsc['nyquist_A']),
        'FSC along the path: median resolution %s A (0.143), %s A (0.5); lowest FSC %s '
        '(contrast, path ends of one model: %s A at 0.143, %s A at 0.5)'
        % (_fmt(fsc['median_path_resolution_0143'], '%.2f'),
           _fmt(fsc['median_path_resolution_05'], '%.2f'), _fmt(fsc['min_path_fsc']),
           _fmt(fsc['contrast']['resolution_0143'], '%.2f'),
           _fmt(fsc['contrast']['resolution_05'], '%.2f')),
        'states: %d (half 1) / %d (half 2); half-set sigma of position %s (latent units), '
        'population %s, dG %s kT; dG maps %s kT'
        % (r['landscape']['n_states_half1'], r['landscape']['n_states_half2'],
           _fmt(e['state_position_sigma_latent']), _fmt(e['population_sigma']),
           _fmt(e['dG_sigma_kT'], '%.2f'), _fmt(e['map_dG_sigma_kT'], '%.2f'))]


def _markdown(r):
    ag, fsc, land, e = r['latent_agreement'], r['fsc'], r['landscape'], r['error_estimates']
    k = len(ag['pearson'])
    lines = ['# %s' % r['title'], '',
             'Halves: %d + %d particles (split seed %d). Latent space of the model of half 2 '
             'mapped onto that of half 1 by a %s map fitted on the particles of half 1; '
             'agreement scored on the %d held-out particles of half 2.'
             % (r['halves']['n_half1'], r['halves']['n_half2'], r['halves']['split_seed'],
                ag['align_method'], r['halves']['n_half2']), '',
             '## Per-particle latent agreement', '',
             '| | ' + ' | '.join('z%d' % (i + 1) for i in range(k)) + ' | PC1 |',
             '|---|' + '---|' * (k + 1),
             '| Pearson | ' + ' | '.join(_fmt(x) for x in ag['pearson']) +
             ' | %s |' % _fmt(ag['pc1_pearson']),
             '| Spearman (rank) | ' + ' | '.join(_fmt(x) for x in ag['spearman']) +
             ' | %s |' % _fmt(ag['pc1_spearman']), '',
             'Canonical correlations (no alignment): %s. Relative per-particle error '
             '|z1 - A(z2)| / rms spread: median %s, 90th percentile %s (held out); median %s '
             'on the particles the map was fitted on.'
             % (' '.join(_fmt(x) for x in ag['canonical_correlations']),
                _fmt(ag['relative_error_median']), _fmt(ag['relative_error_p90']),
                _fmt(ag['relative_error_median_fitted'])), '',
             '![latent agreement](latent_agreement.png)', '',
             '## FSC between the half-set models at matched latents', '',
             'Mask: %s. Nyquist %.2f A. %s.' % (fsc['mask'], fsc['nyquist_A'],
                                                fsc['matched_latents']), '',
             '| point | resolution at FSC 0.143 (A) | at FSC 0.5 (A) |', '|---|---|---|']
    for s in fsc['states']:
        lines.append('| state %d | %s | %s |' % (s['index'], _fmt(s['resolution_0143'], '%.2f'),
                                                 _fmt(s['resolution_05'], '%.2f')))
    for s in fsc['path']:
        lines.append('| %s path %d | %s | %s |' % (fsc['path_kind'], s['index'],
                                                   _fmt(s['resolution_0143'], '%.2f'),
                                                   _fmt(s['resolution_05'], '%.2f')))
    con = fsc['contrast']
    lines += ['', 'A resolution equal to Nyquist (%.2f A) means the FSC stays above the '
              'threshold up to Nyquist; lowest FSC over all shells: %s (states), %s (path). '
              'Contrast (%s): %s A at FSC 0.143, %s A at FSC 0.5, lowest FSC %s.'
              % (fsc['nyquist_A'], _fmt(fsc['min_state_fsc']), _fmt(fsc['min_path_fsc']),
                 con['what'], _fmt(con['resolution_0143'], '%.2f'),
                 _fmt(con['resolution_05'], '%.2f'), _fmt(con['min_fsc'])),
              '', '![FSC](fsc.png)', '', '## Landscape: states, populations, free energies',
              '', 'States: %d (half 1), %d (half 2); %s. Particles in matched states: %s.'
              % (land['n_states_half1'], land['n_states_half2'], land['note'],
                 _fmt(land['states'].get('same_state_fraction'))), '',
              '| states (half 1 / 2) | distance (latent) | population 1 | population 2 | '
              'dG 1 (kT) | dG 2 (kT) |', '|---|---|---|---|---|---|']
    for s in land['states']['states']:
        lines.append('| %d / %d | %s | %s | %s | %s | %s |' % (
            s['state1'], s['state2'], _fmt(s['distance']), _fmt(s['population1']),
            _fmt(s['population2']), _fmt(s.get('dG1'), '%.2f'), _fmt(s.get('dG2'), '%.2f')))
    lines += ['', 'Half-set error estimates (%s):' % e['model'], '',
              '* state position: %s latent units per coordinate (%s of the rms spread of '
              'the latents per coordinate)'
              % (_fmt(e['state_position_sigma_latent']),
                 _fmt(e['state_position_sigma_relative'])),
              '* population: %s' % _fmt(e['population_sigma']),
              '* free energy at the states: %s kT' % _fmt(e['dG_sigma_kT'], '%.2f'),
              '* free-energy map (cells below %g kT in both, %d cells): %s kT (rms difference '
              '%s kT)' % (land['max_dG'], land['maps']['n_cells'],
                          _fmt(e['map_dG_sigma_kT'], '%.2f'),
                          _fmt(land['maps']['rms_difference'], '%.2f')),
              '', '![landscapes](landscape_comparison.png)', '']
    return '\n'.join(lines)
