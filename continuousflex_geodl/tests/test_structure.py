"""Structures: atomic model reading, coarse-graining, map fitting, PDB I/O, ENM modes."""
import numpy as np
import pytest
import torch

from continuousflex_geodl.core import structure as st
from continuousflex_geodl.core.render import render_volume

PDB = """\
ATOM      1  N   GLY A   1       0.000   0.000   0.000  1.00  0.00           N
ATOM      2  CA  GLY A   1       1.450   0.000   0.000  1.00  0.00           C
ATOM      3  C   GLY A   1       2.000   1.400   0.000  1.00  0.00           C
ATOM      4  O   GLY A   1       1.300   2.400   0.000  1.00  0.00           O
ATOM      5  H   GLY A   1       0.500  -0.900   0.000  1.00  0.00           H
ATOM      6  N   SER A   2       3.300   1.500   0.000  1.00  0.00           N
ATOM      7  CA  SER A   2       4.000   2.800   0.000  1.00  0.00           C
ATOM      8  OG  SER A   2       5.400   2.600   0.300  1.00  0.00           O
HETATM    9  O   HOH A 101      20.000  20.000  20.000  1.00  0.00           O
END
"""


def test_atomic_model_heavy_atoms_and_residue_coarse_graining(tmp_path):
    (tmp_path / 'm.pdb').write_text(PDB)
    m = st.read_atomic_model(tmp_path / 'm.pdb')
    assert len(m) == 7  # hydrogen and water removed
    cg = st.coarse_grain(m, 'residue')
    assert len(cg) == 2
    gly_mass = 14.007 + 2 * 12.011 + 15.999
    assert cg.amplitudes[0] == pytest.approx(gly_mass, rel=1e-3)
    w = m.amplitudes[:4]
    np.testing.assert_allclose(cg.positions[0], (m.positions[:4] * w[:, None]).sum(0) / w.sum(),
                               atol=1e-6)


def test_pdb_multimodel_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(3, 40, 3)) * 20
    st.write_pdb(tmp_path / 'a.pdb', pos, amplitudes=np.arange(40.0))
    back = st.read_pdb(tmp_path / 'a.pdb')
    assert back.shape == (3, 40, 3)
    np.testing.assert_allclose(back, pos, atol=1e-3)  # PDB keeps 3 decimals


def test_fit_to_map_recovers_a_sparse_cloud():
    rng = np.random.default_rng(3)
    truth = rng.uniform(-20, 20, size=(12, 3))
    while True:  # keep the true centres well separated
        d = np.linalg.norm(truth[:, None] - truth[None], axis=-1) + 100 * np.eye(12)
        if d.min() > 9:
            break
        truth = rng.uniform(-20, 20, size=(12, 3))
    vol = render_volume(torch.as_tensor(truth), torch.ones(12, dtype=torch.float64),
                        2.0, 32, 2.0).numpy()
    fit = st.fit_to_map(vol, 2.0, 12)
    d = np.linalg.norm(fit.positions[:, None] - truth[None], axis=-1)
    assert d.min(1).max() < 1.0  # every fitted centre within 1 A of a true one
    assert np.unique(d.argmin(1)).size == 12
    np.testing.assert_allclose(fit.amplitudes / fit.amplitudes.mean(), 1.0, atol=0.1)


def test_elastic_network_modes_orthonormal_and_not_rigid():
    mol = st.builtin_molecule()
    modes, eig = st.elastic_network_modes(mol.positions, n_modes=6, return_eigenvalues=True)
    M = modes.reshape(6, -1)
    np.testing.assert_allclose(M @ M.T, np.eye(6), atol=1e-8)
    rigid = st._rigid_body_basis(mol.positions)
    assert np.abs(rigid.T @ M.T).max() < 1e-6
    assert np.all(eig > 1e-6) and np.all(np.diff(eig) >= -1e-9)


def test_builtin_molecule_is_deterministic_two_domain_chain():
    a, b = st.builtin_molecule(), st.builtin_molecule()
    np.testing.assert_array_equal(a.positions, b.positions)
    assert set(np.unique(a.domains)) == {0, 1}
    steps = np.linalg.norm(np.diff(a.positions, axis=0), axis=1)
    np.testing.assert_allclose(steps, 3.8, atol=1e-6)
    assert np.ptp(a.positions, axis=0).max() < 64 * 2.0 * 0.8  # fits a 64 px, 2 A/px box


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.read_atomic_model(tmp_path / 'missing.pdb')
    (tmp_path / 'empty.pdb').write_text('END\n')
    with pytest.raises(ValueError, match='no'):
        st.read_atomic_model(tmp_path / 'empty.pdb')
    with pytest.raises(ValueError, match='voxels above the threshold'):
        st.fit_to_map(np.zeros((8, 8, 8)), 1.0, 5, threshold=0.5)
