"""Structures: atomic models, coarse-graining, map fitting, PDB I/O, ENM modes, built-in
molecule."""
import os

import numpy as np
import pytest
import torch

from continuousflex_geodl.core import structure as st
from continuousflex_geodl.core.enm import rigid_body_basis
from continuousflex_geodl.core.render import render_volume

FRAGMENT = os.path.join(st.RESOURCES, 'test_fragment.pdb')
M = {'C': 12.011, 'N': 14.007, 'O': 15.999, 'S': 32.06, 'ZN': 65.38}


def _expected_heavy_atoms():
    """Independent parse of the fixture (fixed PDB columns): heavy atoms, first
    altloc, no water -> list of (chain:resseq, element, xyz), grouped by chain
    (the ZN ion of chain A comes after chain B in the file)."""
    out = []
    for line in open(FRAGMENT):
        if not line.startswith(('ATOM', 'HETATM')):
            continue
        el, alt, resn = line[76:78].strip(), line[16], line[17:20]
        if el == 'H' or resn == 'HOH' or alt not in (' ', 'A'):
            continue
        xyz = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
        out.append(('%s:%d' % (line[21], int(line[22:26])), el, xyz))
    return sorted(out, key=lambda e: e[0].split(':')[0])  # stable: file order within chain


def test_read_atomic_model_heavy_atoms_and_masses():
    m = st.read_atomic_model(FRAGMENT)
    exp = _expected_heavy_atoms()
    assert len(m) == len(exp) == 44  # H, water and the second altloc removed
    np.testing.assert_allclose(m.positions, [e[2] for e in exp], atol=1e-3)
    np.testing.assert_allclose(m.amplitudes, [M[e[1]] for e in exp], rtol=1e-4)
    assert list(m.residues) == [e[0] for e in exp]


def test_residue_coarse_graining_centres_of_mass_and_masses():
    m = st.read_atomic_model(FRAGMENT)
    cg = st.coarse_grain(m, 'residue')
    assert list(cg.residues) == ['A:1', 'A:2', 'A:3', 'A:4', 'A:101', 'B:11', 'B:12', 'B:13']
    # glycine (N, CA, C, O) and zinc: masses from the formula
    assert cg.amplitudes[1] == pytest.approx(2 * M['C'] + M['N'] + M['O'], rel=1e-4)
    assert cg.amplitudes[4] == pytest.approx(M['ZN'], rel=1e-4)
    # methionine: backbone + CB, CG, SD, CE = C5 N O S
    assert cg.amplitudes[5] == pytest.approx(5 * M['C'] + M['N'] + M['O'] + M['S'], rel=1e-4)
    assert cg.amplitudes.sum() == pytest.approx(m.amplitudes.sum())
    sel = m.residues == 'B:12'
    w = m.amplitudes[sel]
    np.testing.assert_allclose(cg.positions[6], (m.positions[sel] * w[:, None]).sum(0)
                               / w.sum(), atol=1e-9)


def test_kmeans_coarse_graining_conserves_mass():
    m = st.read_atomic_model(FRAGMENT)
    cg = st.coarse_grain(m, 'kmeans', atoms_per_bead=4)
    assert len(cg) == 11
    assert cg.amplitudes.sum() == pytest.approx(m.amplitudes.sum())
    assert np.all(cg.amplitudes > 0) and cg.sigma > 0


def test_pdb_multimodel_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(3, 40, 3)) * 20
    amp = np.arange(40.0)
    st.write_pdb(tmp_path / 'a.pdb', pos, amplitudes=amp)
    back, b = st.read_pdb(tmp_path / 'a.pdb', return_bfactors=True)
    assert back.shape == (3, 40, 3)
    np.testing.assert_allclose(back, pos, atol=6e-4)  # PDB keeps 3 decimals
    np.testing.assert_allclose(b, amp, atol=6e-3)
    st.write_pdb(tmp_path / 'one.pdb', pos[0])
    assert st.read_pdb(tmp_path / 'one.pdb').shape == (1, 40, 3)
    assert sorted(os.listdir(tmp_path)) == ['a.pdb', 'one.pdb']  # atomic, no temporaries
    # the written file is a readable atomic model too (CA atoms, carbon)
    m = st.read_atomic_model(tmp_path / 'one.pdb')
    np.testing.assert_allclose(m.amplitudes, M['C'], rtol=1e-4)


def _separated_cloud(n, seed, min_dist=9.0, half=20.0):
    rng = np.random.default_rng(seed)
    while True:
        p = rng.uniform(-half, half, size=(n, 3))
        d = np.linalg.norm(p[:, None] - p[None], axis=-1) + 100 * np.eye(n)
        if d.min() > min_dist:
            return p


@pytest.mark.parametrize('method', ['kmeans', 'ot'])
def test_fit_to_map_recovers_a_sparse_cloud(method):
    truth = _separated_cloud(12, 3)
    amps = np.ones(12)
    vol = render_volume(torch.as_tensor(truth), torch.as_tensor(amps), 2.0, 32, 2.0).numpy()
    fit = st.fit_to_map(vol, 2.0, 12, method=method)
    d = np.linalg.norm(fit.positions[:, None] - truth[None], axis=-1)
    assert np.unique(d.argmin(1)).size == 12  # one fitted point per true atom
    assert d.min(1).max() < 1.0  # within half a voxel (2 A) of it
    # amplitudes: the mass of each blob, equal here
    np.testing.assert_allclose(fit.amplitudes / fit.amplitudes.mean(), 1.0, atol=0.05)
    assert 2.0 < fit.sigma < 8.0  # half the spacing of the fitted points


def test_elastic_network_modes_are_orthonormal_eigenvectors_without_rigid_motion():
    from continuousflex_geodl.core.models.nma import anm_hessian
    mol = st.builtin_molecule()
    modes, eig = st.elastic_network_modes(mol.positions, cutoff=12.0, n_modes=6,
                                          return_eigenvalues=True)
    assert modes.shape == (6, len(mol), 3)
    V = modes.reshape(6, -1)
    np.testing.assert_allclose(V @ V.T, np.eye(6), atol=1e-8)
    rigid = rigid_body_basis(mol.positions)
    assert np.abs(rigid.T @ V.T).max() < 1e-8
    assert np.all(eig > 1e-6) and np.all(np.diff(eig) >= -1e-9)
    # independent check: eigenvectors of the ANM Hessian, with the lowest eigenvalues
    H = anm_hessian(mol.positions, 12.0).toarray()
    np.testing.assert_allclose(H @ V.T, V.T * eig[None, :], atol=2e-4 * eig.max())
    w = np.linalg.eigvalsh(H)
    assert np.abs(w[:6]).max() < 1e-8 * w.max()  # exactly 6 rigid-body zero modes
    np.testing.assert_allclose(eig, w[6:12], rtol=1e-4)


def test_builtin_molecule_is_a_deterministic_two_domain_chain():
    a, b = st.builtin_molecule(), st.builtin_molecule()
    np.testing.assert_array_equal(a.positions, b.positions)
    a.positions[0] += 1.0  # callers get copies
    assert not np.array_equal(a.positions, st.builtin_molecule().positions)
    m = st.builtin_molecule()
    assert 300 <= len(m) <= 500
    steps = np.linalg.norm(np.diff(m.positions, axis=0), axis=1)
    np.testing.assert_allclose(steps, 3.8, atol=1e-9)  # C-alpha trace spacing
    d = np.linalg.norm(m.positions[:, None] - m.positions[None], axis=-1)
    far = np.abs(np.arange(len(m))[:, None] - np.arange(len(m))[None]) > 2
    assert d[far].min() >= 4.2 - 1e-9  # self-avoiding
    assert np.ptp(m.positions, axis=0).max() < 64 * 2.0 * 0.5  # fits a 64 px, 2 A/px box
    np.testing.assert_allclose(m.positions.mean(0), 0.0, atol=1e-9)
    # two compact domains: contiguous labels, each far more compact than the whole
    assert list(np.unique(m.domains)) == [0, 1]
    assert np.all(np.diff(m.domains) >= 0)
    rg = lambda p: np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean())  # noqa: E731
    for k in (0, 1):
        assert rg(m.positions[m.domains == k]) < 0.8 * rg(m.positions)
    # the hinge: at the junction of the domains, axis perpendicular to their separation
    j = np.nonzero(np.diff(m.domains))[0][0]
    np.testing.assert_allclose(m.hinge_point, 0.5 * (m.positions[j] + m.positions[j + 1]))
    sep = m.positions[m.domains == 1].mean(0) - m.positions[m.domains == 0].mean(0)
    assert np.linalg.norm(m.hinge_axis) == pytest.approx(1.0)
    assert abs(np.dot(m.hinge_axis, sep)) < 1e-9
    assert m.labels is m.domains


def test_shipped_builtin_molecule_pdb_matches_the_code():
    pos = st.read_pdb(st.builtin_molecule_pdb())[0]
    np.testing.assert_allclose(pos, st.builtin_molecule().positions, atol=6e-4)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pdb'):
        st.read_atomic_model(tmp_path / 'missing.pdb')
    (tmp_path / 'empty.pdb').write_text('END\n')
    with pytest.raises(ValueError, match='empty.pdb'):
        st.read_atomic_model(tmp_path / 'empty.pdb')
    with pytest.raises(ValueError, match='voxels above the threshold'):
        st.fit_to_map(np.zeros((8, 8, 8)), 1.0, 5, threshold=0.5)
    with pytest.raises(ValueError, match="method 'nope'"):
        st.fit_to_map(np.ones((8, 8, 8)), 1.0, 5, method='nope')
    with pytest.raises(ValueError, match='positions must be'):
        st.write_pdb(tmp_path / 'x.pdb', np.zeros((4, 2)))
    with pytest.raises(ValueError, match='Too few pseudo-atoms'):
        st.elastic_network_modes(np.zeros((3, 3)), n_modes=5)
