"""Core (Scipion-free) comparisons of two landscapes and particle selections,
each against an analytic answer or a brute-force reference."""
import numpy as np
import pytest

from continuousflex_geodl.core.landscape import compare as C
from continuousflex_geodl.core.landscape import subsets as S


# ------------------------------------------------------------ agreement ---

def test_agreement_of_a_landscape_with_itself_and_its_similar_copies():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 2))
    same = C.landscape_agreement(a, a.copy(), k=10)
    assert same['n_particles'] == 300 and same['k'] == 10
    assert same['neighbourhood_overlap'] == pytest.approx(1.0)
    assert same['spearman_a_predicts_b'] == pytest.approx([1.0, 1.0])
    assert same['canonical_correlations'] == pytest.approx([1.0, 1.0])
    assert same['knn_error_a_in_b'] == pytest.approx(same['knn_error_b_in_a'])
    # rotation + scale + shift (a similarity) changes nothing
    R = np.array([[0.6, -0.8], [0.8, 0.6]]) * 3.0
    sim = C.landscape_agreement(a, a @ R.T + 5.0, k=10)
    for key in ('neighbourhood_overlap', 'spearman_a_predicts_b', 'spearman_b_predicts_a',
                'canonical_correlations', 'knn_error_a_in_b'):
        assert sim[key] == pytest.approx(same[key]), key


def test_agreement_with_half_of_the_coordinates_shared():
    """zb keeps the first axis of za and replaces the second by independent
    noise: canonical correlations are (1, ~0) and only the shared axis is
    predicted (Spearman 1 vs ~0)."""
    rng = np.random.default_rng(2)
    n = 4000
    za = rng.normal(size=(n, 2))
    zb = np.column_stack([2.0 * za[:, 0] - 1.0, rng.normal(size=n)])
    r = C.landscape_agreement(za, zb, k=10)
    cc = r['canonical_correlations']
    assert cc[0] == pytest.approx(1.0, abs=1e-9)
    # |correlation| of two independent N(0,1) samples: sd 1/sqrt(n)
    assert cc[1] < 4 / np.sqrt(n)
    assert r['spearman_b_predicts_a'][0] == pytest.approx(1.0, abs=1e-9)
    assert r['spearman_b_predicts_a'][1] < 4 / np.sqrt(n)


def test_agreement_of_unrelated_landscapes_is_at_chance_level():
    rng = np.random.default_rng(3)
    n, k = 2000, 10
    r = C.landscape_agreement(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), k=k)
    # shared neighbours of independent spaces: hypergeometric, mean k/(N-1)
    assert r['neighbourhood_overlap'] < 5 * k / (n - 1)
    assert r['knn_error_a_in_b'] > 0.9 and r['knn_error_b_in_a'] > 0.9
    # largest of 2 canonical correlations of independent samples: O(1/sqrt(N))
    assert max(r['canonical_correlations']) < 8 / np.sqrt(n)


def test_agreement_k_is_capped_and_shapes_are_checked():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(6, 2))
    assert C.landscape_agreement(a, a, k=50)['k'] == 5
    with pytest.raises(ValueError, match='same particles'):
        C.landscape_agreement(a, a[:5])
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match='finite'):
        C.landscape_agreement(a, bad)


def test_latent_agreement_is_shared_with_the_diagnostics():
    from continuousflex_geodl.core.landscape import diagnostics as G
    assert G.latent_agreement is C.latent_agreement
    assert G.canonical_correlations is C.canonical_correlations
    rng = np.random.default_rng(5)
    z = rng.normal(size=(500, 3))
    r = C.latent_agreement(z, z[:, ::-1] * 4.0)
    assert r['knn_overlap'] == 1.0
    assert r['mean_canonical_correlation'] == pytest.approx(1.0)
    assert r['knn_overlap_chance'] == pytest.approx(10 / 499)


# ------------------------------------------------------------ selections ---

def test_ball_matches_brute_force_and_includes_the_boundary():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(500, 3))
    c = np.array([0.2, -0.1, 0.3])
    expect = np.array([sum((zi - ci) ** 2 for zi, ci in zip(row, c)) <= 1.0 for row in z])
    np.testing.assert_array_equal(S.select_ball(z, c, 1.0), expect)
    on = np.array([[1.0, 0.0], [0.0, -2.0], [1.0, 1.0]])
    np.testing.assert_array_equal(S.select_ball(on, [0, 0], 1.0), [True, False, False])
    np.testing.assert_array_equal(S.select_ball(on, [0, 0], 2.0), [True, True, True])
    with pytest.raises(ValueError, match='2 dimensions'):
        S.select_ball(on, [0, 0, 0], 1.0)
    with pytest.raises(ValueError, match='positive'):
        S.select_ball(on, [0, 0], 0.0)


def test_select_mask_dispatches_to_each_selection():
    rng = np.random.default_rng(7)
    n = 300
    labels = rng.integers(1, 5, n)
    zred = rng.uniform(-2, 2, (n, 2))
    z = rng.normal(size=(n, 4))
    dG = rng.uniform(0, 5, n)
    dG[:3] = np.nan
    sel = S.Selection
    np.testing.assert_array_equal(
        S.select_mask(sel.STATES, states=labels, state_ids=[2, 4]),
        (labels == 2) | (labels == 4))
    # ids with no particle select none (no error: the numbering is the caller's)
    assert not S.select_mask('states', states=labels, state_ids=[9]).any()
    box = (-1.0, 0.5, 0.0, 2.0)
    in_box = (zred[:, 0] >= -1) & (zred[:, 0] <= 0.5) & (zred[:, 1] >= 0) & (zred[:, 1] <= 2)
    np.testing.assert_array_equal(S.select_mask(sel.BOX, zred=zred, box=box), in_box)
    square = [[-1, 0], [0.5, 0], [0.5, 2], [-1, 2]]
    np.testing.assert_array_equal(S.select_mask('polygon', zred=zred, polygon=square), in_box)
    np.testing.assert_array_equal(S.select_mask(3, dG=dG, max_dG=2.0),
                                  np.nan_to_num(dG, nan=np.inf) <= 2.0)
    np.testing.assert_array_equal(S.select_mask('BALL', z=z, center=np.zeros(4), radius=1.5),
                                  np.linalg.norm(z, axis=1) <= 1.5)
    for bad in ('circle', 7):
        with pytest.raises(ValueError, match='Unknown selection'):
            S.select_mask(bad)
