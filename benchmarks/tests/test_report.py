"""Smoke tests of the benchmark's report writer and helpers on fake inputs.

Run with ``pytest benchmarks/tests``; part of the default test run (pytest.ini testpaths).
"""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import report  # noqa: E402
import run_benchmarks as rb  # noqa: E402
import cryodrgn_runner as cd  # noqa: E402


def _fake_results(tmp_path, ratio=3.5):
    rng = np.random.default_rng(0)
    n = 300
    u = rng.uniform(0, 1, (n, 1))
    arrays = {}
    for tool in ('ours', 'cryodrgn'):
        p = tmp_path / ('%s.npz' % tool)
        np.savez(p, pc=np.column_stack([u[:, 0] + 0.1 * rng.normal(size=n),
                                        rng.normal(size=n)]).astype(np.float32),
                 unit=u.astype(np.float32), recovered_unit=u.astype(np.float32))
        arrays[tool] = str(p)

    def score(tool, sp, knn, auc):
        return dict(status='ok', spearman=sp, knn_error=knn, fsc_auc=auc,
                    fsc_auc_per_conf=[auc] * 3, conf_centres=[[0.1], [0.5], [0.9]],
                    population_emd=0.05, middle_fraction_true=0.2,
                    middle_fraction_recovered=0.18, arrays=arrays[tool])
    ds = dict(name=rb.BAR_DATASET, spec=dict(motion='hinge', population='three_mode'),
              summary=dict(n_particles=n, box=64, apix=2.0, snr_target=0.1, snr_measured=0.1),
              ours=dict(status='ok', images_per_s=10.0 * ratio, train_s=100.0, wall_s=120.0,
                        cpu_s=200.0, peak_rss_mb=800.0, load_avg=[1.0, 1.1],
                        epochs=30, n_particles=n,
                        infer=dict(images_per_s=500.0, peak_rss_mb=600.0, wall_s=9.0,
                                   n_particles=n),
                        infer_encoder_only=dict(wall_s=2.0, peak_rss_mb=500.0)),
              cryodrgn=dict(status='ok', images_per_s=10.0, train_s=300.0, wall_s=330.0,
                            cpu_s=600.0, peak_rss_mb=1200.0, load_avg=[1.0, 1.2],
                            epochs=20, n_particles=n,
                            infer=dict(images_per_s=200.0, peak_rss_mb=1100.0, wall_s=18.0)),
              cryodrgn_other_policies=[dict(status='ok', omp_wait_policy='PASSIVE',
                                            images_per_s=8.0, epochs=20,
                                            load_avg=[1.0, 1.1])],
              score_ours=score('ours', 0.95, 0.05, 0.30),
              score_cryodrgn=score('cryodrgn', 0.90, 0.08, 0.25))
    missing = dict(name='nma2d_b64_snr0.1', spec={}, summary=None,
                   ours=dict(status='unavailable', error='continuousflex-geodl has no train'),
                   cryodrgn=None, score_ours=None, score_cryodrgn=None)
    scaling = dict(
        scaling_particles=dict(status='ok', rows=[
            dict(tool='ours', n_particles=1000, status='ok', train_peak_rss_mb=700.0,
                 train_peak_anon_mb=600.0, infer_peak_anon_mb=400.0, infer_peak_rss_mb=500.0,
                 images_per_s=30.0, train_wall_s=40.0,
                 infer_images_per_s=400.0, infer_wall_s=3.0),
            dict(tool='ours', n_particles=10000, status='ok', train_peak_rss_mb=900.0,
                 train_peak_anon_mb=610.0, infer_peak_anon_mb=404.0, infer_peak_rss_mb=510.0,
                 images_per_s=31.0, train_wall_s=330.0,
                 infer_images_per_s=410.0, infer_wall_s=25.0),
            dict(tool='cryodrgn', n_particles=1000, status='failed', error='boom')]),
        scaling_box=None,
        scaling_render=dict(status='ok', rows=[
            dict(axis='atoms', method='exact', n_atoms=500, box=64, status='ok',
                 s_per_batch=0.02, first_s=0.05, peak_rss_mb=400.0, batch=32),
            dict(axis='atoms', method='exact', n_atoms=2000, box=64, status='ok',
                 s_per_batch=0.08, first_s=0.1, peak_rss_mb=450.0, batch=32),
            dict(axis='atoms', method='keops', n_atoms=2000, box=64, status='timeout',
                 batch=32)]))
    stage_times = {'ours+cryodrgn': dict(wall_s=600.0, finished='x'),
                   'score': dict(wall_s=100.0, finished='y')}
    probe = dict(status='ok', threads=2, n_particles=500, chosen=dict(ours='PASSIVE',
                                                                      cryodrgn='ACTIVE'),
                 best=dict(ours=dict(PASSIVE=400.0, ACTIVE=190.0),
                           cryodrgn=dict(PASSIVE=27.0, ACTIVE=60.0)),
                 rows=[dict(tool='cryodrgn', policy='ACTIVE', status='ok', images_per_s=60.0),
                       dict(tool='cryodrgn', policy='ACTIVE', status='ok', images_per_s=55.0),
                       dict(tool='cryodrgn', policy='PASSIVE', status='ok', images_per_s=27.0),
                       dict(tool='ours', policy='PASSIVE', status='ok', images_per_s=400.0),
                       dict(tool='ours', policy='ACTIVE', status='ok', images_per_s=190.0)])
    return dict(profile='quick', cfg=dict(rb.PROFILES['quick']), stage_times=stage_times,
                wait_policy_probe=probe,
                machine=dict(cpu='fake', cpus=2), datasets=[ds, missing], scaling=scaling)


def test_report_writes_tables_plots_and_verdicts(tmp_path):
    res = _fake_results(tmp_path)
    out = tmp_path / 'report'
    md = report.write_report(res, str(out))
    text = open(md).read()
    assert 'Training throughput ratio' in text and '**3.50**' in text and 'PASS' in text
    assert '| training images/s (per-epoch timers) | 35.0 | 10.0 | 3.50 |' in text
    assert 'latent Spearman: ours 0.950 vs cryoDRGN 0.900 (ratio 1.06) -> PASS' in text
    assert 'kNN error: ours 0.050 vs cryoDRGN 0.080 (ratio 0.62) -> PASS' in text
    assert 'population EMD: ours 0.050 vs cryoDRGN 0.050 (ratio 1.00) -> better' in text
    # inference is timed as a whole command for both, with what each one does
    assert 'Inference (latents of all 300 particles, whole command): ours 9.0 s' in text
    assert 'cryoDRGN `eval_images` 18.0 s (encoder only' in text
    assert 'ours encoder only (`--refine-steps 0`): 2.0 s (ratio 0.11)' in text
    # every part of the bar measured and passed -> one overall PASS line
    assert '**BAR: PASS**' in text
    # the wait-policy probe: cryoDRGN gets the policy that was fastest for it
    assert '| cryoDRGN | ACTIVE | 60.0 | 60.0, 55.0 | **used** |' in text
    assert '| continuousflex_geodl | PASSIVE | 400.0 | 400.0 | **used** |' in text
    assert ('with OMP_WAIT_POLICY=PASSIVE: 8.0 images/s over 20 epochs (ratio ours / it: '
            '4.38; load average 1.0 -> 1.1)') in text
    assert '| ours+cryodrgn | 600 | 10.0 |' in text and '| **total** | 700 |' in text
    # flatness is judged on anonymous memory (mapped stack pages are page cache)
    assert ('Peak anonymous memory of training, 1000 -> 10000 particles: 600 -> 610 MB '
            '(x1.02) -> PASS') in text
    assert 'total RSS incl. memory-mapped stack pages 700 -> 900 MB' in text
    # what was not measured is listed, with its reason
    assert 'nma2d_b64_snr0.1 / ours: unavailable' in text
    assert 'scaling_box: not run' in text
    assert 'keops' in text and 'timeout' in text
    for f in ('throughput.png', 'latents_%s.png' % rb.BAR_DATASET,
              'fsc_auc_%s.png' % rb.BAR_DATASET, 'populations_%s.png' % rb.BAR_DATASET,
              'scaling_particles.png', 'scaling_render.png'):
        assert (out / f).exists(), f


def test_report_fails_the_bar_when_throughput_is_short(tmp_path):
    res = _fake_results(tmp_path, ratio=2.0)
    text = open(report.write_report(res, str(tmp_path / 'r'))).read()
    assert '**2.00**' in text and '-> FAIL (bar: >= 3)' in text
    assert '**BAR: FAIL** (throughput >= 3x)' in text


def test_report_fails_the_bar_on_worse_accuracy_and_says_incomplete(tmp_path):
    res = _fake_results(tmp_path)
    e = res['datasets'][0]
    e['score_ours']['fsc_auc'] = 0.20          # below cryoDRGN's 0.25
    text = open(report.write_report(res, str(tmp_path / 'r'))).read()
    assert 'FSC-AUC: ours 0.200 vs cryoDRGN 0.250 (ratio 0.80) -> FAIL' in text
    assert '**BAR: FAIL** (FSC-AUC)' in text
    e['score_cryodrgn'] = None
    text = open(report.write_report(res, str(tmp_path / 'r2'))).read()
    assert '**BAR: INCOMPLETE**' in text and 'FSC-AUC' in text


def test_conformation_bins_and_medoid():
    rng = np.random.default_rng(1)
    u = rng.uniform(0, 1, (1000, 1))
    bins = rb.conformation_bins(u, 10)
    assert len(bins) == 10
    assert sum(len(s) for s, _ in bins) == 1000
    for sel, centre in bins:
        assert np.all(np.abs(u[sel, 0] - centre[0]) < 0.1)
    u2 = rng.uniform(0, 1, (2000, 2))
    assert len(rb.conformation_bins(u2, 16)) == 16
    z = np.concatenate([np.zeros((5, 2)), np.ones((1, 2)) * 10])
    assert rb.medoid(z, np.arange(6), rng) < 5


def test_parse_cryodrgn_epoch_lines(tmp_path):
    log = tmp_path / 'train_vae.log'
    log.write_text(
        '(INFO) (train_vae.py) (x) # =====> Epoch: 1 Average gen loss = 0.490421, KLD = '
        '1.003930, total loss = 0.490734; Finished in 0:02:51.208571\n'
        '(INFO) (train_vae.py) (x) # =====> Epoch: 2 Average gen loss = 0.45, KLD = 1.0, '
        'total loss = 0.46; Finished in 1:00:01.5\n')
    ep = cd.parse_epochs(str(log))
    assert ep[0][0] == 1 and ep[0][2] == pytest.approx(171.208571)
    assert ep[1][2] == pytest.approx(3601.5) and ep[1][1] == pytest.approx(0.45)


def test_subset_star_keeps_optics_and_absolute_paths(tmp_path):
    starfile = pytest.importorskip('starfile')
    import pandas as pd
    optics = pd.DataFrame(dict(rlnOpticsGroup=[1], rlnImagePixelSize=[2.0], rlnImageSize=[64]))
    parts = pd.DataFrame(dict(rlnImageName=['%06d@particles.mrcs' % (i + 1) for i in range(20)],
                              rlnAngleRot=np.arange(20.0)))
    src = tmp_path / 'particles.star'
    starfile.write(dict(optics=optics, particles=parts), src)
    out = rb.subset_star(str(src), 5, str(tmp_path / 'sub' / 'subset.star'))
    back = starfile.read(out, always_dict=True)
    assert len(back['particles']) == 5 and len(back['optics']) == 1
    assert back['particles']['rlnImageName'].iloc[4] == '000005@%s' % (tmp_path / 'particles.mrcs')
