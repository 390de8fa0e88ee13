"""Landscape analysis of 10^6 particles within memory (slow: about a minute)."""
import os
import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from continuousflex_geodl.core.landscape import pipeline as P
from continuousflex_geodl.core.landscape.toy import STATE_POPULATIONS, three_state_curve


@pytest.mark.slow
def test_million_particles_memory_safe(tmp_path):
    """10^6 x 8 latents: the whole analysis (map on all particles, states fitted
    on a 20,000 subsample and assigned to all), a density path and a subset,
    with a bounded peak of traced memory and the right populations."""
    toy = three_state_curve(10 ** 6, dim=8, seed=0)
    np.save(str(tmp_path / 'z.npy'), toy.latents)
    truth = toy.labels
    del toy
    z = P.load_latents(str(tmp_path / 'z.npy'))  # memory-mapped
    tracemalloc.start()
    with threadpool_limits(1, user_api='openmp'):  # shared cores: no OpenMP spin-waits
        P.analyze(z, str(tmp_path / 'land'), n_boot=5, fe_boot=10, log=lambda *a: None)
        P.compute_path(z, str(tmp_path / 'path'), kind='density',
                       landscape=str(tmp_path / 'land'), log=lambda *a: None)
        info = P.make_subset(str(tmp_path / 'land'), str(tmp_path / 'sub'), states=[2],
                             log=lambda *a: None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print('peak traced memory %.0f MB' % (peak / 1e6))
    assert peak < 1.5e9, 'peak traced memory %.2f GB' % (peak / 1e9)
    lab = np.load(str(tmp_path / 'land' / 'labels.npy'))
    assert lab.shape == (10 ** 6,)
    tab = np.zeros((3, 3))
    np.add.at(tab, (lab, truth), 1)
    pops = np.bincount(lab) / len(lab)
    for s in range(3):
        assert abs(pops[s] - STATE_POPULATIONS[tab[s].argmax()]) < 0.05
    assert info['n_selected'] == int((lab == 2).sum())
    assert np.load(str(tmp_path / 'path' / 'path_latents.npy')).shape == (20, 8)
    assert os.path.exists(str(tmp_path / 'land' / 'landscape.png'))
