"""Greedy joint EPIG against brute-force enumeration, on both backends."""

import warnings

import numpy as np
import pytest

import batchbald_fast as bf
import oracle
from batchbald_fast import _backend, _joint
from conftest import random_probs

TIE = 1e-10


def tiny_case(seed, N=7, T=3, K=4, C=3, zeros=False):
    rng = np.random.default_rng(seed)
    return random_probs(rng, N, K, C, zeros=zeros), random_probs(rng, T, K, C)


def check_against_oracle(probs_N_K_C, targets_T_K_C, result, candidates=None, atol=1e-9):
    """At each step every utility is the brute-force one and the pick the best (the lowest
    index among near-ties; within ``atol`` when that is float32's)."""
    pool = set(range(len(probs_N_K_C)) if candidates is None else candidates)
    batch = []
    for t, pick in enumerate(result.indices):
        util = {x: oracle.joint_epig(probs_N_K_C, targets_T_K_C, batch + [x]) for x in pool}
        best = max(util.values())
        assert util[pick] >= best - atol
        if atol < TIE:
            assert pick == min(x for x in pool if util[x] >= util[pick] - TIE)
        np.testing.assert_allclose(result.scores[t], util[pick], rtol=0, atol=atol)
        if result.utilities is not None:
            for x, value in util.items():
                np.testing.assert_allclose(result.utilities[t, x], value, rtol=0, atol=atol)
        batch.append(int(pick))
        pool.remove(pick)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("zeros", [False, True])
def test_exact_steps_equal_brute_force(backend, seed, zeros):
    probs_N_K_C, targets_T_K_C = tiny_case(seed, zeros=zeros)
    for return_utilities in (False, True):
        result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 4, num_samples=10**6,
                               return_utilities=return_utilities)
        assert (result.mode == "exact").all()
        check_against_oracle(probs_N_K_C, targets_T_K_C, result)


@pytest.mark.parametrize("seed", range(3))
def test_float32_compute_within_its_precision(backend, seed):
    probs_N_K_C, targets_T_K_C = tiny_case(seed, zeros=True)
    result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 4, num_samples=10**6,
                           dtype=np.float32, return_utilities=True)
    assert (result.mode == "exact").all()
    check_against_oracle(probs_N_K_C, targets_T_K_C, result, atol=2e-5)
    with pytest.raises(TypeError, match="dtype"):
        bf.batch_epig(probs_N_K_C, targets_T_K_C, 2, dtype=np.int32)


def test_candidates_and_batches_past_them(backend):
    probs_N_K_C, targets_T_K_C = tiny_case(5, N=8)
    candidates = [1, 2, 4, 7]
    result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 10, num_samples=10**6,
                           candidates=candidates)
    assert sorted(result.indices) == candidates
    check_against_oracle(probs_N_K_C, targets_T_K_C, result, candidates)
    assert len(bf.batch_epig(probs_N_K_C, targets_T_K_C, 0).indices) == 0


def test_bounds_change_no_exact_pick(backend):
    # BatchBALD's gains bound joint EPIG's: with them (default) the exact steps are those
    # of scoring every candidate.
    rng = np.random.default_rng(3)
    probs_N_K_C = random_probs(rng, 300, 6, 2, concentration=0.3)
    targets_T_K_C = random_probs(rng, 4, 6, 2, concentration=0.3)
    full, bounded = [bf.batch_epig(probs_N_K_C, targets_T_K_C, 6, num_samples=10**5,
                                   lazy=lazy) for lazy in (False, None)]
    assert (full.mode == "exact").all()
    np.testing.assert_array_equal(bounded.indices, full.indices)
    np.testing.assert_allclose(bounded.scores, full.scores, rtol=0, atol=1e-12)
    assert bounded.num_evaluations.sum() < full.num_evaluations.sum()


def test_sampled_joints_estimate_the_difference_and_their_terms_are_its_score(backend):
    # On the same draws, the batch's joint and its extension by targets estimate
    # H(y_A, y_x) − (1/T) Σ_t H(y_A, y_x, y*_t) without bias, and the mean of the per-draw
    # terms is the difference of the two joints' scores.
    probs_N_K_C, targets_T_K_C = tiny_case(1)
    batch, x = [0, 1, 2], 5
    T, n = len(targets_T_K_C), len(probs_N_K_C)
    exact = oracle.joint_entropy(probs_N_K_C, batch + [x]) - np.mean([
        oracle.joint_entropy(np.concatenate([probs_N_K_C, targets_T_K_C[[t]]]),
                             batch + [x, n]) for t in range(T)])
    kernels = _backend.kernels_for()

    def score(state):
        out = np.empty(1)
        kernels.score_candidates(state.joint_M_K, state.weights_M, probs_N_K_C,
                                 np.array([x], dtype=np.intp), out)
        return out[0] + probs_N_K_C[x].sum(axis=1) @ state.offset_K

    estimates, errors = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        base = _joint.draws_joint(probs_N_K_C[batch], 40, rng, kernels)
        extended = _joint.with_targets(base, targets_T_K_C, rng)
        estimate = score(base) - score(extended)
        g_D, counts_D = _joint.paired_terms(base, extended, probs_N_K_C[[x]], kernels)
        np.testing.assert_allclose(g_D.mean(), estimate, rtol=0, atol=1e-9)
        estimates.append(estimate)
        errors.append(g_D.std(ddof=1) / np.sqrt(len(counts_D)))
    assert abs(np.mean(estimates) - exact) < 4 * np.std(estimates) / np.sqrt(200)
    # The reported standard error is that of the estimates (targets' stratification only
    # lowers the truth below it).
    assert 0.5 < np.std(estimates) / np.mean(errors) < 1.2


def test_sampled_steps_keep_their_invariants(backend):
    probs_N_K_C, targets_T_K_C = tiny_case(2, N=30, T=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        runs = [bf.batch_epig(probs_N_K_C, targets_T_K_C, 8, num_samples=100, random_state=4)
                for _ in range(2)]
    first, again = runs
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.scores, again.scores)
    assert len(set(first.indices)) == 8
    sampled = first.mode == "sampled"
    assert sampled.any() and (first.std_errors[sampled] > 0).all()
    assert np.isnan(first.std_errors[~sampled]).all()
    # Each sampled score estimates the batch's joint EPIG, within the noise it reports
    # (and its winner's bias: the pick is the largest of many estimates).
    for t in np.flatnonzero(sampled):
        truth = oracle.joint_epig(probs_N_K_C, targets_T_K_C, list(first.indices[:t + 1]))
        assert abs(first.scores[t] - truth) <= 6 * first.std_errors[t] + 0.05


@pytest.mark.parametrize("targets, message", [
    (np.full((3, 5, 3), 1 / 3), "same K posterior samples"),
    (np.full((3, 4, 2), 1 / 2), "same K posterior samples"),
    (np.full((3, 4, 3), 0.5), "sum"),
])
def test_bad_targets_are_clear_errors(targets, message):
    probs_N_K_C, _ = tiny_case(0)
    with pytest.raises(ValueError, match=message):
        bf.batch_epig(probs_N_K_C, targets, 2)


def test_saturation_is_told_in_joint_epigs_words(backend):
    # A budget too small to tell gains from noise: the warning names joint EPIG and its
    # ceiling (the targets' mean BALD), not BatchBALD's ln K.
    probs_N_K_C, targets_T_K_C = tiny_case(2, N=30, T=5)
    with pytest.warns(bf.SaturationWarning) as caught:
        result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 8, num_samples=30, random_state=0)
    assert result.saturated.any()
    message = str(caught[0].message)
    assert message.startswith("Joint EPIG") and "the targets' mean BALD" in message
    assert "ln K" not in message


def test_gains_are_told_from_noise_on_the_steps_own_draws(backend):
    # Small true gains (brute force) below two standard errors of the score: only a gain
    # paired on the step's own draws tells them from nothing, so no step is saturated.
    hidden = 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        probs_N_K_C, targets_T_K_C = random_probs(rng, 12, 6, 3), random_probs(rng, 4, 6, 3)
        result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 5, num_samples=300,
                               random_state=seed)
        sampled = np.flatnonzero(result.mode == "sampled")
        assert len(sampled) and not result.saturated.any()
        for t in sampled:
            gain = oracle.joint_epig(probs_N_K_C, targets_T_K_C, list(result.indices[:t + 1])) \
                - oracle.joint_epig(probs_N_K_C, targets_T_K_C, list(result.indices[:t]))
            assert gain > 0.01
            hidden += gain < 2 * result.std_errors[t]
    assert hidden >= 6


def uninformed_case(seed):
    """Three points the posterior samples disagree on, then six each predicted alike by
    every sample: their labels say nothing of the parameters, nor of any target's."""
    rng = np.random.default_rng(seed)
    informative_3_K_C = random_probs(rng, 3, 6, 3)
    alike_6_K_C = np.repeat(random_probs(rng, 6, 1, 3), 6, axis=1)
    return np.concatenate([informative_3_K_C, alike_6_K_C]), random_probs(rng, 4, 6, 3)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("objective", ["batchbald", "batch_epig"])
def test_sampled_steps_without_any_gain_are_saturated(backend, seed, objective):
    probs_N_K_C, targets_T_K_C = uninformed_case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        if objective == "batchbald":
            result = bf.batchbald(probs_N_K_C, 5, num_samples=20, random_state=seed)
            score = lambda batch: oracle.mutual_information(probs_N_K_C, batch)  # noqa: E731
        else:
            result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 5, num_samples=60,
                                   random_state=seed)
            score = lambda batch: oracle.joint_epig(  # noqa: E731
                probs_N_K_C, targets_T_K_C, batch)
    assert set(result.indices[:3]) == {0, 1, 2}
    picks = list(result.indices)
    gains = [score(picks[:t + 1]) - score(picks[:t]) for t in range(5)]
    np.testing.assert_allclose(gains[3:], 0, atol=1e-12)
    assert (result.mode[3:] == "sampled").all()
    np.testing.assert_array_equal(result.saturated, [False] * 3 + [True] * 2)


def test_contender_rounds_pick_closer_to_the_best(backend):
    """On sampled steps, the picks' exact joint EPIG (brute force, given each run's own
    batch so far) falls short of the step's best less often with contender rounds than
    without, and the rounds leave fewer steps ambiguous."""
    def picks(extra_rounds):
        regrets, ambiguous = [], 0
        for seed in range(12):
            probs_N_K_C, targets_T_K_C = tiny_case(seed, N=14, T=4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bf.SaturationWarning)
                result = bf.batch_epig(probs_N_K_C, targets_T_K_C, 4, num_samples=60,
                                       random_state=seed, extra_rounds=extra_rounds)
            for t in np.flatnonzero(result.mode == "sampled"):
                batch = list(result.indices[:t])
                utility = {x: oracle.joint_epig(probs_N_K_C, targets_T_K_C, batch + [x])
                           for x in range(14) if x not in batch}
                regrets.append(max(utility.values()) - utility[result.indices[t]])
                ambiguous += bool(result.ambiguous[t])
        return np.array(regrets), ambiguous

    plain, plain_ambiguous = picks(0)
    rounds, rounds_ambiguous = picks(16)
    assert len(plain) == len(rounds) > 20
    assert np.mean(rounds <= 1e-3) > np.mean(plain <= 1e-3)
    assert rounds_ambiguous < plain_ambiguous
