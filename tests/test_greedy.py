"""Greedy BatchBALD against the brute-force oracle, on both backends."""

import functools
import warnings

import numpy as np
import pytest

import batchbald_fast as bf
from batchbald_fast import _backend, _greedy, _joint, _noise, _pool, _search, _sizes, _workloads
from batchbald_fast._settings import Settings
import oracle
from conftest import random_probs

TIE = 1e-10  # the documented tie tolerance

CASES = [(N, K, C, b, seed, zeros)
         for seed, (N, K, C, b) in enumerate([
             (6, 1, 2, 3), (8, 3, 2, 4), (10, 5, 3, 3), (12, 4, 4, 3), (7, 2, 4, 4),
             (9, 5, 1, 2), (12, 5, 2, 4), (5, 3, 3, 4), (11, 4, 3, 2), (4, 5, 4, 4)])
         for zeros in (False, True)]


def check_against_oracle(probs_N_K_C, result, candidates=None):
    """Walk the engine's picks: at each step every utility matches the brute-force value,
    and the pick is the oracle's best (the lowest index among near-ties)."""
    N = probs_N_K_C.shape[0]
    pool = set(range(N) if candidates is None else candidates)
    batch = []
    for t, pick in enumerate(result.indices):
        util = {x: oracle.mutual_information(probs_N_K_C, batch + [x]) for x in pool}
        best = max(util.values())
        tied = min(x for x in pool if util[x] >= best - TIE)
        assert pick == tied, f"step {t}: picked {pick}, oracle says {tied}"
        np.testing.assert_allclose(result.scores[t], util[pick], rtol=0, atol=1e-10)
        if result.utilities is not None:
            expected = np.full(N, np.nan)
            expected[list(util)] = list(util.values())
            np.testing.assert_allclose(result.utilities[t], expected, rtol=0, atol=1e-10)
        batch.append(int(pick))
        pool.remove(pick)
    assert len(result.indices) == min(len(result.indices), len(pool) + len(batch))


@pytest.mark.parametrize("N, K, C, b, seed, zeros", CASES)
def test_matches_oracle_exact(backend, N, K, C, b, seed, zeros):
    probs_N_K_C = random_probs(np.random.default_rng(seed), N, K, C, zeros=zeros)
    result = bf.batchbald(probs_N_K_C, b, num_samples=C ** b, return_utilities=True)
    assert result.exact.all()
    np.testing.assert_array_equal(result.num_configurations, C ** np.arange(b))
    check_against_oracle(probs_N_K_C, result)
    assert np.isfinite(result.scores).all()


def test_oracle_greedy_agrees_with_walk(backend):
    # The oracle's own greedy run gives the same picks as the engine on a generic case.
    probs_N_K_C = random_probs(np.random.default_rng(42), 10, 4, 3)
    picks, scores, _ = oracle.greedy(probs_N_K_C, 4)
    result = bf.batchbald(probs_N_K_C, 4)
    np.testing.assert_array_equal(result.indices, picks)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-10)


def test_log_probs_give_same_answer(backend):
    probs_N_K_C = random_probs(np.random.default_rng(3), 10, 4, 3, zeros=True)
    with np.errstate(divide="ignore"):
        log_probs_N_K_C = np.log(probs_N_K_C)
    result = bf.batchbald(log_probs_N_K_C, 3, log_probs=True, return_utilities=True)
    check_against_oracle(probs_N_K_C, result)


def test_candidates_subset(backend):
    probs_N_K_C = random_probs(np.random.default_rng(5), 12, 4, 3)
    candidates = [11, 2, 7, 4, 0]
    result = bf.batchbald(probs_N_K_C, 3, candidates=candidates, return_utilities=True)
    assert set(result.indices) <= set(candidates)
    check_against_oracle(probs_N_K_C, result, candidates)
    outside = np.setdiff1d(np.arange(12), candidates)
    assert np.isnan(result.utilities[:, outside]).all()


def test_batch_larger_than_candidates_takes_all(backend):
    probs_N_K_C = random_probs(np.random.default_rng(6), 8, 3, 2)
    result = bf.batchbald(probs_N_K_C, 10, candidates=[1, 5, 6])
    assert sorted(result.indices) == [1, 5, 6]
    check_against_oracle(probs_N_K_C, result, [1, 5, 6])


def test_batch_size_zero_gives_empty_result(backend):
    result = bf.batchbald(random_probs(np.random.default_rng(0), 5, 2, 2), 0,
                          return_utilities=True)
    assert result.indices.shape == (0,) and result.indices.dtype == np.int64
    assert result.scores.shape == (0,) and result.utilities.shape == (0, 5)


def test_ties_go_to_lowest_index(backend):
    rng = np.random.default_rng(8)
    probs_N_K_C = random_probs(rng, 6, 4, 3)
    probs_N_K_C = probs_N_K_C[[3, 1, 4, 1, 5, 3, 0, 2, 3]]  # exact duplicates
    result = bf.batchbald(probs_N_K_C, 4, return_utilities=True)
    check_against_oracle(probs_N_K_C, result)
    first_seen = {}
    for i, row in enumerate(probs_N_K_C):
        first_seen.setdefault(row.tobytes(), i)
    assert result.indices[0] == first_seen[probs_N_K_C[result.indices[0]].tobytes()]


def test_certain_points_score_zero_without_nan(backend):
    # One-hot under every member: no information, and exact zeros must not give nan.
    probs_N_K_C = np.zeros((4, 3, 3))
    probs_N_K_C[:, :, 1] = 1.0
    probs_N_K_C[2] = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]
    result = bf.batchbald(probs_N_K_C, 4, return_utilities=True)
    assert result.indices[0] == 2
    assert np.isfinite(result.scores).all()
    np.testing.assert_allclose(result.scores[1:], result.scores[0], atol=1e-12)
    check_against_oracle(probs_N_K_C, result)


def test_float32_matches_float64_picks(backend):
    probs_N_K_C = random_probs(np.random.default_rng(9), 40, 6, 3, concentration=0.5)
    r64 = bf.batchbald(probs_N_K_C, 4)
    r32 = bf.batchbald(probs_N_K_C.astype(np.float32), 4)
    np.testing.assert_array_equal(r32.indices, r64.indices)
    np.testing.assert_allclose(r32.scores, r64.scores, atol=1e-5)


def test_strided_and_readonly_input(backend):
    base = random_probs(np.random.default_rng(10), 10, 4, 3)
    wide = np.zeros((20, 4, 6))
    wide[::2, :, ::2] = base
    view = wide[::2, :, ::2]
    view.flags.writeable = False
    result = bf.batchbald(view, 3, return_utilities=True)
    check_against_oracle(base, result)


def test_input_not_mutated(backend):
    probs_N_K_C = random_probs(np.random.default_rng(11), 30, 5, 3, zeros=True)
    copy = probs_N_K_C.copy()
    bf.batchbald(probs_N_K_C, 6, num_samples=20, random_state=0)
    np.testing.assert_array_equal(probs_N_K_C, copy)
    with np.errstate(divide="ignore"):
        log_probs_N_K_C = np.log(probs_N_K_C)
    log_copy = log_probs_N_K_C.copy()
    bf.batchbald(log_probs_N_K_C, 6, num_samples=20, random_state=0, log_probs=True)
    np.testing.assert_array_equal(log_probs_N_K_C, log_copy)


def test_bald_entropy_conditional_entropy(backend):
    probs_N_K_C = random_probs(np.random.default_rng(12), 7, 4, 3, zeros=True)
    expected_cond = [oracle.conditional_entropy(probs_N_K_C, n) for n in range(7)]
    expected_ent = [oracle.joint_entropy(probs_N_K_C, [n]) for n in range(7)]
    np.testing.assert_allclose(bf.conditional_entropy(probs_N_K_C), expected_cond, atol=1e-12)
    np.testing.assert_allclose(bf.entropy(probs_N_K_C), expected_ent, atol=1e-12)
    np.testing.assert_allclose(bf.bald(probs_N_K_C),
                               np.subtract(expected_ent, expected_cond), atol=1e-12)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(bf.bald(np.log(probs_N_K_C), log_probs=True),
                                   np.subtract(expected_ent, expected_cond), atol=1e-12)


@pytest.mark.parametrize("N, K, C, b, seed, zeros", CASES)
def test_lazy_greedy_matches_oracle(backend, N, K, C, b, seed, zeros):
    probs_N_K_C = random_probs(np.random.default_rng(seed), N, K, C, zeros=zeros)
    result = bf.batchbald(probs_N_K_C, b, num_samples=C ** b, lazy=True)
    check_against_oracle(probs_N_K_C, result)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("lazy_tile", [1, 5, 64])
def test_lazy_greedy_matches_full_evaluation(backend, seed, lazy_tile):
    rng = np.random.default_rng(100 + seed)
    probs_N_K_C = random_probs(rng, 150, 5, 3, concentration=rng.choice([0.1, 1.0]))
    if seed % 3 == 0:
        probs_N_K_C = probs_N_K_C[rng.integers(0, 50, size=150)]  # many exact ties
    kernels = _backend.kernels_for()
    pool = _pool.ArrayPool(kernels, probs_N_K_C)
    candidates = np.arange(150)
    runs = [_greedy.select(pool, 5, candidates,
                           Settings(3 ** 5, kernels, lazy=lazy, lazy_tile=lazy_tile), None)
            for lazy in (False, True)]
    full, lazy = runs
    np.testing.assert_array_equal(lazy.indices, full.indices)
    np.testing.assert_allclose(lazy.scores, full.scores, rtol=0, atol=1e-12)
    assert (full.num_evaluations == np.arange(150, 145, -1)).all()
    assert (lazy.num_evaluations <= full.num_evaluations).all()
    assert lazy.num_evaluations[1:].sum() < full.num_evaluations[1:].sum()


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("lazy_tile", [1, 8, 64])
def test_bounded_selection_matches_full_evaluation(backend, seed, lazy_tile):
    # Exact, pruned and sampled steps with joints big enough to be coarsened: skipping what
    # the bounds rule out changes nothing a full evaluation reports, noise flags included
    # (sampled steps resolved to the last; the default resolution is tested below).
    rng = np.random.default_rng(200 + seed)
    probs_N_K_C = random_probs(rng, 240, 6, 4, zeros=seed % 4 == 1,
                               concentration=rng.choice([0.3, 1.0, 3.0]))
    if seed % 4 == 2:
        probs_N_K_C = probs_N_K_C[rng.integers(0, 80, size=240)]  # many exact ties
    if seed % 4 == 3:
        probs_N_K_C = probs_N_K_C * rng.uniform(1 - 9e-4, 1 + 9e-4, size=(240, 6, 1))
    kernels = _backend.kernels_for()
    full, bounded = [_greedy.select(
        _pool.ArrayPool(kernels, probs_N_K_C), 7, np.arange(240),
        Settings(600, kernels, tol=1e-3, incremental=True, lazy=lazy, lazy_tile=lazy_tile,
                 coarse_min_work=0, resolve_fraction=0.0, extra_rounds=0),
        np.random.default_rng(seed)) for lazy in (False, None)]
    np.testing.assert_array_equal(bounded.indices, full.indices)
    np.testing.assert_allclose(bounded.scores, full.scores, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(bounded.mode, full.mode)
    np.testing.assert_allclose(bounded.std_errors, full.std_errors, rtol=1e-9)
    np.testing.assert_array_equal(bounded.ambiguous, full.ambiguous)
    assert (full.bound_rows == 0).all() and (full.num_bounded == 0).all()
    assert (bounded.num_evaluations <= full.num_evaluations).all()
    sampled = full.mode == "sampled"
    assert (bounded.bound_rows[sampled] > 0).all()
    skipped = bounded.num_evaluations < full.num_evaluations
    assert skipped[bounded.bound_rows > 0].any()
    if seed % 4 != 1:  # exact zeros leave too few rows (M ~ 150) for tight bounds
        assert skipped[sampled].all()


def test_return_utilities_scores_every_candidate(backend):
    probs_N_K_C = random_probs(np.random.default_rng(13), 600, 4, 2)
    result = bf.batchbald(probs_N_K_C, 4, return_utilities=True)
    np.testing.assert_array_equal(result.num_evaluations, [600, 599, 598, 597])
    assert (~np.isnan(result.utilities[3])).sum() == 597


@pytest.mark.parametrize("N, K, C, b, seed, zeros", CASES[::3])
def test_float32_compute_close_to_oracle(backend, N, K, C, b, seed, zeros):
    probs_N_K_C = random_probs(np.random.default_rng(seed), N, K, C, zeros=zeros)
    result = bf.batchbald(probs_N_K_C, b, num_samples=C ** b, return_utilities=True,
                          dtype=np.float32)
    batch = []
    for t, pick in enumerate(result.indices):
        for x in np.flatnonzero(~np.isnan(result.utilities[t])):
            exact = oracle.mutual_information(probs_N_K_C, batch + [int(x)])
            assert abs(result.utilities[t, x] - exact) < 2e-5
        batch.append(int(pick))


def test_float32_compute_same_picks_when_well_separated(backend):
    probs_N_K_C = random_probs(np.random.default_rng(14), 200, 8, 4, concentration=0.5)
    r64 = bf.batchbald(probs_N_K_C, 6, return_utilities=True)
    r32 = bf.batchbald(probs_N_K_C, 6, return_utilities=True, dtype=np.float32)
    np.testing.assert_allclose(r32.utilities, r64.utilities, atol=2e-5)
    np.testing.assert_array_equal(r32.indices, r64.indices)


def test_bounded_selection_matches_full_evaluation_in_float32(backend):
    probs_N_K_C = random_probs(np.random.default_rng(15), 300, 6, 4, concentration=0.5)
    kernels = _backend.kernels_for()
    full, bounded = [_greedy.select(
        _pool.ArrayPool(kernels, probs_N_K_C, dtype=np.float32), 7, np.arange(300),
        Settings(600, kernels, dtype=np.float32, tol=1e-4, incremental=True, lazy=lazy,
                 coarse_min_work=0, resolve_fraction=0.0, extra_rounds=0),
        np.random.default_rng(0)) for lazy in (False, None)]
    np.testing.assert_array_equal(bounded.indices, full.indices)
    np.testing.assert_allclose(bounded.scores, full.scores, rtol=0, atol=1e-12)
    # A restart's first step (BALD) has no last gains to skip by.
    later = np.flatnonzero(np.diff(bounded.segments, prepend=-1) == 0)
    assert (bounded.num_evaluations[later] < full.num_evaluations[later]).all()
    assert (bounded.bound_rows[bounded.mode == "sampled"] > 0).all()


def test_default_bounds_big_steps_through_the_api(backend, monkeypatch):
    # Steps of ≥ 2^22 candidate × configuration rows get a coarse joint by default. Exact
    # and pruned steps score every candidate that could be best; a sampled step's pick is
    # within its resolution of the best utility of its own estimate, computed here by
    # plain sums from the step's joint state.
    probs_N_K_C = random_probs(np.random.default_rng(16), 2000, 8, 4, concentration=0.5)
    states, original = [], _joint.next_joint

    def next_joint(*args, **kwargs):
        states.append(original(*args, **kwargs))
        return states[-1]
    monkeypatch.setattr(_joint, "next_joint", next_joint)
    full = bf.batchbald(probs_N_K_C, 8, num_samples=5000, random_state=1, lazy=False)
    states.clear()
    bounded = bf.batchbald(probs_N_K_C, 8, num_samples=5000, random_state=1, extra_rounds=0)
    assert (bounded.segments == 0).all()  # states[t - 1] is step t's
    big = full.num_evaluations * full.num_configurations >= 2**22
    assert big.any() and (bounded.bound_rows[big] > 0).all()
    assert (full.resolutions == 0).all() and (bounded.resolutions[bounded.mode != "sampled"]
                                              == 0).all()
    first_sampled = int(np.argmax(bounded.mode == "sampled"))
    np.testing.assert_array_equal(bounded.indices[:first_sampled + 1],
                                  full.indices[:first_sampled + 1])
    assert (bounded.resolutions[first_sampled + 1:] > 0).all()
    cond_entropy_N = -np.sum(probs_N_K_C * np.log(probs_N_K_C), axis=2).mean(axis=1)
    for t in range(first_sampled, 8):
        state = states[t - 1]
        assert state.mode == "sampled"
        P_M_N_C = np.einsum("mk,nkc->mnc", state.joint_M_K, probs_N_K_C)
        entropy_N = state.weights_M @ -np.sum(P_M_N_C * np.log(P_M_N_C), axis=2) \
            + probs_N_K_C.sum(axis=2) @ state.offset_K
        utility_N = entropy_N - cond_entropy_N
        utility_N[bounded.indices[:t]] = -np.inf
        pick = bounded.indices[t]
        assert utility_N[pick] >= utility_N.max() - bounded.resolutions[t] - 1e-9
        assert bounded.num_evaluations[t] < 2000 - t


def test_extra_rounds_score_the_contenders_the_bounds_left(backend, monkeypatch):
    # On steps with coarse bounds, a sampled step first resolved to its noise scores the
    # contenders left (the branch and bound goes on), then takes rounds: its pick is the
    # best over the rounds among every candidate within noise of the step's own best, by
    # plain sums from the captured state, and it reports no resolution.
    probs_N_K_C = random_probs(np.random.default_rng(16), 2000, 8, 4, concentration=0.5)
    monkeypatch.setattr(_sizes, "EXTRA_WORK", 4.0)  # rounds these small steps can afford
    states, original = [], _joint.next_joint

    def next_joint(*args, **kwargs):
        states.append(original(*args, **kwargs))
        return states[-1]
    monkeypatch.setattr(_joint, "next_joint", next_joint)
    plain = bf.batchbald(probs_N_K_C, 10, num_samples=4000, random_state=1,
                         saturation="greedy", extra_rounds=0)
    states.clear()
    rounds = bf.batchbald(probs_N_K_C, 10, num_samples=4000, random_state=1,
                          saturation="greedy")
    took = (rounds.decision_rows > rounds.num_configurations) & (plain.resolutions > 0)
    assert took.any() and (rounds.bound_rows[took] > 0).all()
    assert (rounds.resolutions[took] == 0).all()
    cond_entropy_N = -np.sum(probs_N_K_C * np.log(probs_N_K_C), axis=2).mean(axis=1)
    t = int(np.argmax(took))
    np.testing.assert_array_equal(rounds.indices[:t], plain.indices[:t])
    state = states[t - 1]
    P_M_N_C = np.einsum("mk,nkc->mnc", state.joint_M_K, probs_N_K_C)
    utility_N = state.weights_M @ -np.sum(P_M_N_C * np.log(P_M_N_C), axis=2) \
        + probs_N_K_C.sum(axis=2) @ state.offset_K - cond_entropy_N
    utility_N[rounds.indices[:t]] = -np.inf
    # The pick is a contender: within z = 1.64 paired errors (< 0.02 nats here) of the best.
    assert utility_N[rounds.indices[t]] >= utility_N.max() - 0.02


@pytest.mark.parametrize("scores, expected", [
    ([0.98, 0.87, 0.68, 0.96, 0.54], [0, 3, 1, 2, 4]),
    ([0.5, 0.5, 0.7, 0.5], [2, 0, 1, 3]),  # exact ties: lowest index first
    # 1 and 4 lie within TIE of the best, 2: 1 first; then 2, then 0 ties with 4.
    ([1.0, 1 + 0.4 * TIE, 1 + 1.2 * TIE, 0.5, 1 + 0.4 * TIE], [1, 2, 0, 4, 3]),
    # A chain: each within TIE of the next, the ends not.
    ([1.0, 1 + 0.6 * TIE, 1 + 1.2 * TIE, 1 + 1.8 * TIE], [2, 3, 0, 1]),
    ([3.0], [0]),
    ([], []),
])
def test_top_k_repeats_the_greedy_tie_rule(scores, expected):
    assert _search.top_k(np.array(scores, dtype=float)).tolist() == expected


@pytest.mark.parametrize("seed", range(8))
def test_top_k_follows_the_tie_rule(seed):
    rng = np.random.default_rng(seed)
    # Scores on a grid a fraction of the tolerance apart: exact ties, near-ties, and chains
    # of near-ties wider than the tolerance (where plain index order would be wrong).
    step = _search.TIE_TOLERANCE * rng.choice([0.3, 0.6, 1.5])
    scores = 1.0 + step * rng.integers(0, 12, size=40)
    expected = oracle.tie_rule_order(scores, _search.TIE_TOLERANCE)
    for k in (0, 1, 7, 40, 50):
        assert _search.top_k(scores, k).tolist() == expected[:k]


def test_top_k_without_near_ties_is_a_sort():
    scores = np.random.default_rng(0).random(1000)
    np.testing.assert_array_equal(_search.top_k(scores, 100), np.argsort(-scores)[:100])


def test_saturation_flagged_warned_and_restarted(backend):
    # K = 3 members that disagree completely: two picks identify the member (a(A) = ln 3).
    rng = np.random.default_rng(17)
    probs_N_K_C = random_probs(rng, 60, 3, 6, concentration=0.05)
    with pytest.warns(bf.SaturationWarning, match="K=3"):
        restart = bf.batchbald(probs_N_K_C, 12, num_samples=30, random_state=0)
    assert restart.saturated.any()
    assert (restart.scores <= np.log(3) + 4 * np.nan_to_num(restart.std_errors) + 1e-9).all()
    flagged = np.flatnonzero(restart.saturated & (restart.mode == "sampled"))
    assert len(flagged) and (np.diff(restart.segments) >= 0).all()
    # Every flagged sampled step starts a new run: exact again, BALD's pick among the rest.
    for t in flagged[flagged + 1 < 12]:
        assert restart.segments[t + 1] == restart.segments[t] + 1
        assert restart.mode[t + 1] == "exact"
        bald_N = bf.bald(probs_N_K_C)
        bald_N[restart.indices[:t + 1]] = -np.inf
        assert restart.indices[t + 1] == np.argmax(bald_N)
    with warnings.catch_warnings():  # once per K in a process: not again
        warnings.simplefilter("error")
        again = bf.batchbald(probs_N_K_C, 12, num_samples=30, random_state=0)
    np.testing.assert_array_equal(again.saturated, restart.saturated)
    _noise._WARNED.clear()
    with pytest.warns(bf.SaturationWarning, match="saturation='restart'"):
        greedy = bf.batchbald(probs_N_K_C, 12, num_samples=30, random_state=0,
                              saturation="greedy")
    assert (greedy.segments == 0).all()
    t = flagged[0] + 1
    np.testing.assert_array_equal(greedy.indices[:t], restart.indices[:t])
    assert len(set(greedy.indices)) == len(set(restart.indices)) == 12


def test_a_loop_of_calls_warns_once_per_k(backend):
    rng = np.random.default_rng(17)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for K in (3, 3, 3, 4, 4):
            probs_N_K_C = random_probs(rng, 60, K, 6, concentration=0.05)
            result = bf.batchbald(probs_N_K_C, 12, num_samples=30, random_state=0)
            assert result.saturated.any()  # every call's steps are flagged
    messages = [str(w.message) for w in caught if w.category is bf.SaturationWarning]
    assert len(messages) == 2
    assert "K=3" in messages[0] and "K=4" in messages[1]


@pytest.mark.parametrize("K", [1, 5])
def test_an_uninformed_model_is_told_once_not_as_saturation(backend, K):
    # Every member the same: every gain is 0 from the first pick on.
    probs_N_K_C = np.repeat(random_probs(np.random.default_rng(20), 30, 1, 3), K, axis=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            result = bf.batchbald(probs_N_K_C, 4, random_state=0)
            assert result.saturated.all()
            np.testing.assert_array_equal(result.indices, [0, 1, 2, 3])  # pool order
    messages = [str(w.message) for w in caught if w.category is bf.SaturationWarning]
    assert len(messages) == 1
    assert "predict the same for every candidate" in messages[0]
    assert "saturated" not in messages[0].replace("result.saturated", "")


def test_saturation_choice_is_checked(backend):
    probs_N_K_C = random_probs(np.random.default_rng(18), 10, 3, 2)
    with pytest.raises(ValueError, match="saturation"):
        bf.batchbald(probs_N_K_C, 2, saturation="stop")
    with pytest.raises(TypeError, match="saturation"):
        bf.batchbald(probs_N_K_C, 2, saturation=None)


def test_unsaturated_runs_are_not_flagged(backend):
    probs_N_K_C = random_probs(np.random.default_rng(19), 200, 20, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = bf.batchbald(probs_N_K_C, 3, random_state=0)
    assert not result.saturated.any() and (result.segments == 0).all()


def test_extra_rounds_resolve_sampled_picks_against_the_oracle(backend):
    # Fresh draws for the contenders: picks judged by brute-force enumeration, with and
    # without them, on the same pools and seeds.
    probs_N_K_C = _workloads.make_probs(60, 20, 3, seed=5, scale=1.5)  # near-ties
    regrets = {0: [], 8: []}
    resolved = 0

    @functools.lru_cache(maxsize=None)
    def exact_of(prefix):
        return {x: oracle.mutual_information(probs_N_K_C, list(prefix) + [x])
                for x in range(60) if x not in prefix}
    for seed in range(4):
        for rounds in regrets:
            result = bf.batchbald(probs_N_K_C, 7, num_samples=200, random_state=seed,
                                  saturation="greedy", extra_rounds=rounds)
            sampled = np.flatnonzero(result.mode == "sampled")
            assert len(sampled)
            M = result.num_configurations[sampled]
            if rounds == 0:
                assert (result.decision_rows[sampled] == M).all()
            else:
                assert (result.decision_rows[sampled] >= M).all()
            for t in sampled:
                exact = exact_of(tuple(int(i) for i in result.indices[:t]))
                regret = max(exact.values()) - exact[int(result.indices[t])]
                regrets[rounds].append(regret)
                if rounds and result.decision_rows[t] > M[0] and not result.ambiguous[t]:
                    resolved += 1
                    assert regret < 0.01  # resolved to 1e-3 nats of its estimate
    assert resolved
    right = {r: np.mean(np.array(v) <= 1e-3) for r, v in regrets.items()}
    assert right[8] > right[0], right


def test_extra_rounds_need_certified_lazy_and_a_count(backend):
    probs_N_K_C = random_probs(np.random.default_rng(21), 40, 10, 3)
    every = bf.batchbald(probs_N_K_C, 7, num_samples=100, random_state=0, lazy=False,
                         extra_rounds=8, saturation="greedy")
    sampled = every.mode == "sampled"
    assert (every.decision_rows[sampled] == every.num_configurations[sampled]).all()
    with pytest.raises(ValueError, match="extra_rounds"):
        bf.batchbald(probs_N_K_C, 2, extra_rounds=-1)


def test_bounded_evaluation_resolves_to_its_resolution():
    # Utilities packed within a few hundredths of each other behind bounds 0.01 too loose,
    # as on a late sampled step at b = 100: the best bound's candidates are scored until
    # none left unscored can be more than the resolution above the second best scored
    # (below 0: until none is within it below, as extra rounds need).
    rng = np.random.default_rng(17)
    utility_N = 1.0 - rng.exponential(0.01, size=500)
    looseness_N = rng.uniform(0.005, 0.01, size=500)
    candidates = np.arange(500, dtype=np.intp)
    top_two = np.sort(utility_N)[-2:]
    counts = []
    for resolution in (-0.005, 0.0, 0.002, 0.005, 0.05):
        evaluated, utility_n, _, _, open_bound_n = _search.BranchAndBound(
            [(lambda xs: (utility_N[xs] + looseness_N[xs], np.zeros(len(xs))), 8)],
            lambda xs: (utility_N[xs], np.zeros(len(xs))), candidates, np.full(500, np.inf),
            4).run(1e-10, top=2, resolution=resolution)
        open_bound = open_bound_n.max(initial=-np.inf)
        np.testing.assert_array_equal(utility_n, utility_N[evaluated])
        assert np.sort(utility_n)[-1] >= top_two[1] - max(resolution, 0)
        assert np.sort(utility_n)[-2] >= top_two[0] - max(resolution, 0)
        assert open_bound <= np.sort(utility_n)[-2] + resolution
        if resolution <= 0:  # every candidate that could be in the top two, and more
            assert set(np.flatnonzero(utility_N + looseness_N >= top_two[0] + resolution)) \
                <= set(evaluated)
        counts.append(len(evaluated))
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0] / 4


@pytest.mark.parametrize("n, k", [(1, 1), (10, 3), (200, 16), (200, 199), (50, 80)])
def test_a_tile_is_the_highest_bounds_lowest_index_first(n, k):
    # The branch and bound's tile: the k highest values, ties by the lowest index, as the
    # first k of a stable sort by value descending (by plain loops here), then ascending.
    rng = np.random.default_rng(n + k)
    index_n = np.sort(rng.choice(10 * n, n, replace=False)).astype(np.intp)
    value_n = np.round(rng.normal(size=n), 1)  # many ties
    value_n[::9] = -np.inf
    ranked = sorted(range(n), key=lambda i: (-value_n[i], index_n[i]))
    expected = np.sort(index_n[ranked[:k]])
    np.testing.assert_array_equal(_search._highest(index_n, value_n, k), expected)


def test_branch_and_bound_goes_on_from_where_it_stopped():
    # Extra rounds first resolve a step to the noise, then score the contenders down to a
    # margin below the pick: the second run refines only what the first left, and ends
    # where a single run to the margin would.
    rng = np.random.default_rng(18)
    utility_N = 1.0 - rng.exponential(0.01, size=400)
    looseness_N = rng.uniform(0.005, 0.01, size=400)
    refined, scored = [], []

    def bound(xs):
        refined.extend(xs.tolist())
        return utility_N[xs] + looseness_N[xs], np.zeros(len(xs))

    def utility(xs):
        scored.extend(xs.tolist())
        return utility_N[xs], np.zeros(len(xs))
    search = _search.BranchAndBound([(bound, 8)], utility, np.arange(400, dtype=np.intp),
                                     np.full(400, np.inf), 4)
    first = search.run(1e-10, top=2, resolution=0.004)[0]
    evaluated, utility_n, _, _, open_bound_n = search.run(1e-10, resolution=-0.003)
    assert set(first) <= set(evaluated) and len(first) < len(evaluated)
    assert sorted(refined) == sorted(set(refined)) and sorted(scored) == sorted(evaluated)
    np.testing.assert_array_equal(utility_n, utility_N[evaluated])
    # Every candidate within 0.003 below the best is scored; none left above that.
    assert set(np.flatnonzero(utility_N >= utility_N.max() - 0.003)) <= set(evaluated)
    assert open_bound_n.max() < utility_N.max() - 0.003


def test_contender_rounds_pool_every_round_as_plain_sums_do(backend):
    # Rounds of fresh draws against an oracle written from the labels: each draw's term
    # Σ_c −p(y_A, c) log p(y_A, c) / p(y_A) from mixture probabilities of its labels, a
    # round's estimate their mean, the pick's the mean over rounds, its standard error
    # that of the mean of per-round means.
    rng = np.random.default_rng(22)
    probs_N_K_C = random_probs(rng, 9, 6, 3)
    probs_A_K_C, probs_c_K_C = probs_N_K_C[:5], probs_N_K_C[5:]
    kernels = _backend.kernels_for()
    states = [_joint.fresh_state(probs_A_K_C, 40, np.random.default_rng(s), kernels)
              for s in range(4)]

    def plain(state):
        labels_D_A = state.draws.labels_M_A
        joint_D_K = np.ones((len(labels_D_A), 6))
        for a in range(5):
            joint_D_K *= probs_A_K_C[a][:, labels_D_A[:, a]].T
        q_D = joint_D_K.mean(axis=1)
        P_D_c_C = np.einsum("dk,nkc->dnc", joint_D_K, probs_c_K_C) / 6
        return (-(P_D_c_C * np.log(P_D_c_C)).sum(axis=2) / q_D[:, None]).T  # (c, D)
    terms = [plain(state) for state in states]
    D = terms[0].shape[1]
    estimates_R_c = np.array([g.mean(axis=1) for g in terms])
    for rounds in (1, 2, 4):
        lead, estimate, std_error, ambiguous, extra_rows, rows = \
            _noise.resolve_contenders(
                states[0], probs_c_K_C, estimates_R_c[0] - 0.5, iter(states[1:]).__next__,
                np.inf, rounds - 1, 1e-10,
                lambda state, probs: _joint.estimator_terms(state, probs, kernels), alpha=0.0,
                resolution=-1.0)  # no test decides
        mean_c = estimates_R_c[:rounds].mean(axis=0)
        assert lead == np.argmax(mean_c) and ambiguous
        np.testing.assert_allclose(estimate, mean_c[lead] - 0.5, rtol=0, atol=1e-10)
        variance = sum(g[lead].var(ddof=1) / D for g in terms[:rounds]) / rounds ** 2
        np.testing.assert_allclose(std_error, np.sqrt(variance), rtol=1e-8)
        assert rows == sum(s.num_configurations for s in states[:rounds])
        assert extra_rows == 4 * sum(s.num_configurations for s in states[1:rounds])
