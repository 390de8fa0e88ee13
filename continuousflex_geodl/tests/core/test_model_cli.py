"""The train / infer / decode / reference commands end to end on files."""
import json
import os

import numpy as np
import pytest
import torch

from continuousflex_geodl.core import cli
from continuousflex_geodl.core.models.toydata import write_toy_dataset


pytestmark = pytest.mark.usefixtures('one_thread')  # conftest.py


@pytest.fixture(scope='module')
def star(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    _, truth = write_toy_dataset(str(d), pdb=True, n=64, box=24, apix=5.0, n_atoms=50,
                                 snr=1.0, seed=1)
    return d, str(d / 'particles.star'), truth


def test_reference_command_npz_pdb_and_map(star, tmp_path):
    from continuousflex_geodl.core.io.mrc import write_mrc
    from continuousflex_geodl.core.render import render_volume
    d, _, truth = star
    out = str(tmp_path / 'r.npz')
    assert cli.main(['reference', '--input', str(d / 'ref.pdb'), '--out', out,
                     '--n-atoms', 'all']) == 0
    r = np.load(out)
    assert np.allclose(r['positions'], truth['reference'], atol=1e-3)  # PDB precision
    assert cli.main(['reference', '--input', str(d / 'ref.pdb'), '--out',
                     str(tmp_path / 'r30.pdb'), '--n-atoms', '30']) == 0
    from continuousflex_geodl.core.structure import read_pdb
    assert read_pdb(str(tmp_path / 'r30.pdb')).shape == (1, 30, 3)
    vol = render_volume(torch.as_tensor(truth['reference'], dtype=torch.float32),
                        torch.ones(50), 4.0, 32, 4.0).numpy()
    write_mrc(str(tmp_path / 'm.mrc'), vol, 4.0)
    assert cli.main(['reference', '--input', str(tmp_path / 'm.mrc'), '--out',
                     str(tmp_path / 'm.npz'), '--n-atoms', '40']) == 0
    m = np.load(str(tmp_path / 'm.npz'))
    assert m['positions'].shape == (40, 3)
    # fitted points lie inside the molecule: near some true pseudo-atom
    from scipy.spatial import cKDTree
    dist, _ = cKDTree(truth['reference']).query(m['positions'])
    assert np.median(dist) < 6.0
    assert cli.main(['reference', '--input', str(tmp_path / 'missing.pdb'), '--out', out]) == 2


def test_train_infer_decode_commands(star, tmp_path, capsys):
    from continuousflex_geodl.core.io.mrc import read_mrc
    from continuousflex_geodl.core.structure import read_pdb
    d, path, truth = star
    model = str(tmp_path / 'model')
    rc = cli.main(['train', '--particles', path, '--reference', str(d / 'ref.npz'),
                   '--out', model, '--zdim', '2', '--epochs', '2', '--batch-size', '16',
                   '--threads', '1', '--prior', 'gaussian', '--refine-poses'])
    assert rc == 0
    cfg = json.load(open(os.path.join(model, 'config.json')))
    assert cfg['zdim'] == 2 and cfg['prior'] == 'gaussian' and cfg['refine_poses']
    assert os.path.exists(os.path.join(model, 'refined_poses.npz'))
    # resume with more epochs continues from the checkpoint
    rc = cli.main(['train', '--particles', path, '--reference', str(d / 'ref.npz'),
                   '--out', model, '--epochs', '3', '--resume', '--threads', '1'])
    assert rc == 0
    assert len(json.load(open(os.path.join(model, 'history.json')))) == 3
    z = str(tmp_path / 'z.npy')
    assert cli.main(['infer', '--model', model, '--particles', path, '--out', z]) == 0
    assert np.load(z).shape == (64, 2)
    # the training particles are inferred with the poses refined in training: the same
    # encoder latents as from refined_particles.star (a star written to 1e-6 deg / A;
    # the encoder alone, as the refinement's few steps can amplify such differences);
    # --ignore-refined-poses uses the input poses
    assert 'using the poses refined in training' in open(z + '.log').read()
    zs = {k: str(tmp_path / ('z_%s.npy' % k)) for k in ('train', 'star', 'input')}
    for k, parts, extra in (('train', path, []),
                            ('star', os.path.join(model, 'refined_particles.star'), []),
                            ('input', path, ['--ignore-refined-poses'])):
        assert cli.main(['infer', '--model', model, '--particles', parts, '--out', zs[k],
                         '--refine-steps', '0'] + extra) == 0
    assert 'not the training set' in open(zs['star'] + '.log').read()
    z_train, z_star, z_input = (np.load(zs[k]) for k in ('train', 'star', 'input'))
    np.testing.assert_allclose(z_train, z_star, atol=1e-4)
    assert np.abs(z_input - z_train).max() > 100 * np.abs(z_star - z_train).max()
    vol = str(tmp_path / 'vols')
    assert cli.main(['decode', '--model', model, '--latents', z, '--out', vol,
                     '--rows', '0,5,7']) == 0
    pdb = read_pdb(os.path.join(vol, 'structures.pdb'))
    assert pdb.shape == (3, 50, 3)
    v, apix = read_mrc(os.path.join(vol, 'vol_002.mrc'))
    assert v.shape == (24, 24, 24) and abs(apix - 5.0) < 1e-4
    # the rendered volume's centre of mass follows the decoded pseudo-atoms
    g = (np.arange(24) - 12) * 5.0
    com = np.array([(v.sum((0, 1)) * g).sum(), (v.sum((0, 2)) * g).sum(),
                    (v.sum((1, 2)) * g).sum()]) / v.sum()
    assert np.linalg.norm(com - pdb[2].mean(0)) < 1.0
    # user errors give one clear line and exit status 2
    assert cli.main(['infer', '--model', str(tmp_path / 'nope'), '--particles', path,
                     '--out', z]) == 2
    assert cli.main(['decode', '--model', model, '--latents', str(tmp_path / 'no.npy'),
                     '--out', vol]) == 2
    err = capsys.readouterr().err
    assert 'ERROR:' in err
