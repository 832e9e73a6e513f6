"""stochastic_batch: the draws' distribution, the without-replacement rule, edge cases."""

import itertools

import numpy as np
import pytest
from scipy.stats import chisquare

from batchbald_fast import bald, epig, stochastic_batch
from conftest import random_probs

DRAWS = 4000
# Draws are seeded: a fixed p-value threshold cannot flake, and a wrong distribution of
# these sizes gives p-values far below it.
MIN_P_VALUE = 1e-3

SCORES = np.array([0.3, 1.0, 0.05, 2.0, 1.0, 0.6])


def expected_weights(scores, mode, beta):
    """The weights from the definitions, by plain loops."""
    if mode == "power":
        return np.array([s ** beta if s > 0 else 0.0 for s in scores])
    if mode == "softmax":
        return np.array([np.exp(beta * s) for s in scores])
    ranks = []
    for s in scores:  # 1 for the highest; equal scores share their ranks' mean
        above = sum(t > s for t in scores)
        equal = sum(t == s for t in scores)
        ranks.append(above + (equal + 1) / 2)
    return np.array([r ** -beta for r in ranks])


def frequencies(draw, cells, draws=DRAWS):
    counts = dict.fromkeys(cells, 0)
    rng = np.random.default_rng(0)
    for _ in range(draws):
        counts[draw(rng)] += 1
    return np.array([counts[c] for c in cells])


@pytest.mark.parametrize("mode, beta", [("power", 1.0), ("power", 2.5), ("softmax", 1.5),
                                        ("softrank", 1.0), ("softrank", 0.5)])
def test_first_draw_distribution(backend, mode, beta):
    w = expected_weights(SCORES, mode, beta)
    cells = list(range(len(SCORES)))
    counts = frequencies(lambda rng: int(stochastic_batch(SCORES, 1, mode=mode, beta=beta,
                                                          random_state=rng)[0]), cells)
    assert chisquare(counts, DRAWS * w / w.sum()).pvalue > MIN_P_VALUE


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_second_draw_is_among_the_points_left(backend, mode):
    # P(first = i, second = j) = w_i / W · w_j / (W − w_i).
    scores = SCORES[:4]
    w = expected_weights(scores, mode, 1.0)
    cells = list(itertools.permutations(range(4), 2))
    expected = np.array([w[i] / w.sum() * w[j] / (w.sum() - w[i]) for i, j in cells])
    counts = frequencies(lambda rng: tuple(stochastic_batch(scores, 2, mode=mode,
                                                            random_state=rng)), cells)
    assert chisquare(counts, DRAWS * expected).pvalue > MIN_P_VALUE
    full = stochastic_batch(scores, 10, mode=mode, random_state=1)
    assert sorted(full.tolist()) == [0, 1, 2, 3]


def test_seeded(backend):
    scores = np.random.default_rng(0).random(1000)
    a = stochastic_batch(scores, 50, random_state=3)
    np.testing.assert_array_equal(a, stochastic_batch(scores, 50, random_state=3))
    assert not np.array_equal(a, stochastic_batch(scores, 50, random_state=4))
    legacy = stochastic_batch(scores, 50, random_state=np.random.RandomState(3))
    assert len(set(legacy.tolist())) == 50


def test_zero_scores_come_last_in_random_order(backend):
    scores = np.array([0.0, 1.0, -1e-12, 2.0, 0.0])
    for seed in range(20):
        batch = stochastic_batch(scores, 5, random_state=seed)
        assert set(batch[:2].tolist()) == {1, 3}
    cells = [0, 2, 4]
    counts = frequencies(lambda rng: int(stochastic_batch(scores, 3, random_state=rng)[2]),
                         cells, draws=2000)
    assert chisquare(counts).pvalue > MIN_P_VALUE
    # beta = 0: uniform over the positive scores, zeros still last.
    assert set(stochastic_batch(scores, 2, beta=0.0, random_state=0).tolist()) == {1, 3}


def test_all_zero_and_batch_sizes(backend):
    zeros = np.zeros(6)
    assert sorted(stochastic_batch(zeros, 6, random_state=0).tolist()) == list(range(6))
    assert stochastic_batch(SCORES, 0).shape == (0,)
    assert stochastic_batch(SCORES, 0).dtype == np.intp
    assert sorted(stochastic_batch(SCORES, 100, random_state=0).tolist()) == list(range(6))


def test_ties_share_the_probability(backend):
    scores = np.array([1.0, 1.0, 1.0, 0.5])
    for mode in ("power", "softmax", "softrank"):
        w = expected_weights(scores, mode, 1.0)
        counts = frequencies(lambda rng: int(stochastic_batch(scores, 1, mode=mode,
                                                              random_state=rng)[0]),
                             [0, 1, 2, 3], draws=2000)
        assert chisquare(counts, 2000 * w / w.sum()).pvalue > MIN_P_VALUE


def test_large_beta_tends_to_top_k(backend):
    scores = np.array([0.1, 3.0, 2.0, 0.5, 1.0])
    for mode in ("power", "softmax", "softrank"):
        batch = stochastic_batch(scores, 3, mode=mode, beta=1e4, random_state=0)
        assert batch.tolist() == [1, 2, 4]


def test_candidates(backend):
    scores = np.array([np.nan, 1.0, 5.0, 2.0, np.inf])  # non-candidates are not read
    batch = stochastic_batch(scores, 10, candidates=[3, 1, 2], random_state=0)
    assert sorted(batch.tolist()) == [1, 2, 3]
    assert stochastic_batch(scores, 2, candidates=[], random_state=0).shape == (0,)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"scores_N": [1.0, np.nan]}, ValueError, r"scores_N\[1\] is nan"),
    ({"scores_N": [np.inf, 1.0]}, ValueError, r"scores_N\[0\] is inf"),
    ({"scores_N": [1.0, -0.5]}, ValueError, r"scores_N\[1\] = -0.5 is negative.*softmax"),
    ({"scores_N": [[1.0]]}, ValueError, "1-D"),
    ({"scores_N": [True, False]}, TypeError, "real numbers"),
    ({"mode": "gibbs"}, ValueError, "mode must be one of"),
    ({"beta": -1.0}, ValueError, "beta must be finite and ≥ 0"),
    ({"beta": np.nan}, ValueError, "beta must be finite"),
    ({"beta": True}, TypeError, "beta must be a real number"),
    ({"batch_size": 1.5}, TypeError, "batch_size"),
    ({"random_state": "x"}, ValueError, "random_state"),
])
def test_bad_input(kwargs, error, match):
    args = {"scores_N": [1.0, 2.0], "batch_size": 1, **kwargs}
    with pytest.raises(error, match=match):
        stochastic_batch(args.pop("scores_N"), args.pop("batch_size"), **args)


def test_negative_scores_in_softmax_and_softrank(backend):
    scores = np.array([-3.0, -1.0, -2.0])
    for mode in ("softmax", "softrank"):
        batch = stochastic_batch(scores, 3, mode=mode, random_state=0)
        assert sorted(batch.tolist()) == [0, 1, 2]


def test_with_bald_and_epig_scores(backend):
    rng = np.random.default_rng(8)
    probs = random_probs(rng, 30, 5, 3)
    for scores in (bald(probs), epig(probs, probs[:10])):
        batch = stochastic_batch(scores, 8, random_state=0)
        assert len(set(batch.tolist())) == 8


@pytest.mark.parametrize("beta, b", [(1.0, 10), (0.5, 40), (2.0, 3), (0.0, 20)])
def test_softrank_ranks_only_what_it_needs(beta, b):
    """The bounded top-b of softrank keys equals the keys of every point ranked, for the
    same noise (scipy's average ranks), ties and crowded scores included."""
    from scipy.stats import rankdata

    from batchbald_fast._stochastic import _softrank_top

    rng = np.random.default_rng(int(beta * 10) + b)
    for scores in (rng.random(5000), np.round(rng.random(5000), 2),
                   np.r_[rng.random(4990) * 1e-9, rng.random(10) * 100],
                   rng.random(5000) * 1e-310, np.r_[rng.random(4999), -1e308, 1e308]):
        noise = rng.gumbel(size=len(scores))
        keys = noise - beta * np.log(rankdata(-scores))
        expected = sorted(range(len(scores)), key=lambda i: (-keys[i], i))[:b]
        assert _softrank_top(scores, noise, beta, b).tolist() == expected
