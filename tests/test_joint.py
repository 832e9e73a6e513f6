"""The joint state: exact enumeration and the sampled estimator, scored by each backend."""

import itertools
import math

import numpy as np
import pytest

import batchbald_fast as bf
import oracle
from batchbald_fast import _backend, _coarse, _joint
from batchbald_fast._settings import Settings
from conftest import random_probs


def kernels():
    """The backend under test's kernels (``backend`` fixture), as the engine gets them."""
    return _backend.kernels_for()


def joint_entropy_estimate(state, probs_N_K_C, x):
    out = np.empty(1)
    _backend.get_kernels().score_candidates(state.joint_M_K, state.weights_M, probs_N_K_C,
                                            np.array([x], dtype=np.intp), out, 1)
    return out[0] + probs_N_K_C[x].sum(axis=1) @ state.offset_K


def test_exact_joint_enumerates_configurations(backend):
    probs_N_K_C = random_probs(np.random.default_rng(0), 3, 4, 3)
    state = _joint.empty_joint(4)
    for a in range(3):
        state = _joint.extend_exact(state, probs_N_K_C[a])
    assert state.exact and state.num_configurations == 27
    q_expected = sorted(
        np.mean([np.prod([probs_N_K_C[a, k, c] for a, c in enumerate(labels)])
                 for k in range(4)])
        for labels in itertools.product(range(3), repeat=3))
    np.testing.assert_allclose(sorted(state.joint_M_K.sum(axis=1)), q_expected, rtol=1e-12)


def test_sampled_joint_entropy_converges(backend):
    # |A| = 6 with C = 3: the exact value has 3^7 configurations, the estimate far fewer.
    rng = np.random.default_rng(1)
    probs_N_K_C = random_probs(rng, 7, 5, 3, concentration=0.7)
    batch, x = list(range(6)), 6
    exact = oracle.joint_entropy(probs_N_K_C, batch + [x])
    rms = []
    for num_samples in (50, 800, 12800):
        errors = [joint_entropy_estimate(
            _joint.sample_joint(probs_N_K_C[batch], num_samples, np.random.default_rng(s),
                                kernels()),
            probs_N_K_C, x) - exact for s in range(30)]
        rms.append(np.sqrt(np.mean(np.square(errors))))
    # 16x the samples: error down ~4x (1/sqrt(M)); allow a wide margin for chance.
    assert rms[1] < rms[0] / 2.5 and rms[2] < rms[1] / 2.5, rms
    assert rms[2] < 0.01, rms


def test_sampled_rows_stay_finite_when_products_underflow(backend):
    # 110 labels of probability 1e-3 each: every J[m, k] is 1e-330, below float64's range
    # unless rows are scaled. Uniform members make the exact value (|A| + 1) log C.
    C, K, A = 1000, 2, 110
    probs_N_K_C = np.full((A + 1, K, C), 1.0 / C)
    state = _joint.sample_joint(probs_N_K_C[:A], 100, np.random.default_rng(0), kernels())
    estimate = joint_entropy_estimate(state, probs_N_K_C, A)
    np.testing.assert_allclose(estimate, (A + 1) * np.log(C), rtol=1e-12)


def test_sampled_steps_follow_the_budget(backend):
    probs_N_K_C = random_probs(np.random.default_rng(2), 30, 4, 3)
    plain = bf.batchbald(probs_N_K_C, 6, num_samples=30, random_state=0, tol=0,
                         incremental=False, saturation="greedy")
    np.testing.assert_array_equal(plain.exact, [True, True, True, True, False, False])
    np.testing.assert_array_equal(plain.mode[4:], ["sampled", "sampled"])
    np.testing.assert_array_equal(plain.num_configurations[:4], [1, 3, 9, 27])
    assert (plain.num_configurations[4:] <= 28).all()  # 7 draws per member, merged
    tiny = bf.batchbald(probs_N_K_C, 3, num_samples=1, random_state=0, incremental=False)
    assert tiny.mode[1] == "sampled" and tiny.num_configurations[1] <= 4  # S = 1
    default = bf.batchbald(probs_N_K_C, 8, num_samples=30, random_state=0, tol=0,
                           saturation="greedy")
    assert (default.num_configurations <= 30).all()


@pytest.mark.parametrize("num_samples", [1, 7, 40, 300])
def test_fit_budget_keeps_members_balanced(backend, num_samples):
    probs_N_K_C = random_probs(np.random.default_rng(3), 6, 4, 3, concentration=0.3)
    rng = np.random.default_rng(0)
    draws = _joint._fresh_draws(probs_N_K_C, max(1, num_samples // 4), 0, rng, kernels())
    state = _joint.fit_budget(draws, probs_N_K_C, num_samples, rng, kernels())
    assert state.num_configurations <= max(num_samples, 4)
    per_member = np.bincount(state.draws.member_M, minlength=4)
    assert (per_member == per_member[0]).all() and per_member[0] >= 1
    assert state.counts_M.sum() == len(state.draws)


@pytest.mark.parametrize("row_sum", [1.0, 1 - 5e-4, 1 + 5e-4])
def test_merged_scaled_rows_keep_the_estimate(backend, row_sum):
    # The estimator as written, one unscaled row per draw, against the merged, row-scaled
    # state; rows of p may be off 1 within the accepted tolerance.
    probs_N_K_C = random_probs(np.random.default_rng(4), 6, 4, 2, concentration=0.3) * row_sum
    state = _joint.sample_joint(probs_N_K_C[:5], 400, np.random.default_rng(0), kernels())
    assert state.num_configurations < 400 and state.counts_M.sum() == 400
    J_M_K = np.exp(state.draws.log_joint_M_K)
    P_M_C = J_M_K @ probs_N_K_C[5] / 4
    g_M = -(P_M_C * np.log(P_M_C)).sum(axis=1) / J_M_K.mean(axis=1)
    np.testing.assert_allclose(joint_entropy_estimate(state, probs_N_K_C, 5), g_M.mean(),
                               rtol=1e-12)


def test_incremental_draws_extend_the_previous_ones(backend):
    probs_N_K_C = random_probs(np.random.default_rng(5), 8, 4, 3)
    rng = np.random.default_rng(0)
    state = _joint.sample_joint(probs_N_K_C[:3], 40, rng, kernels())
    grown = _joint.next_joint(state, probs_N_K_C[:4], Settings(40, kernels(), incremental=True),
                              rng)
    # Draws are known by (member, rank); those that stayed kept their first three labels.
    before = {(k, r): tuple(row) for k, r, row in zip(
        state.draws.member_M, state.draws.rank_M, state.draws.labels_M_A)}
    kept = [(tuple(row[:3]), before[k, r]) for k, r, row in zip(
        grown.draws.member_M, grown.draws.rank_M, grown.draws.labels_M_A) if (k, r) in before]
    assert kept and all(new == old for new, old in kept)
    # Each new label is possible under the member that drew it.
    new_M = grown.draws.labels_M_A[:, 3]
    assert (probs_N_K_C[3, grown.draws.member_M, new_M] > 0).all()


def test_incremental_sampling_is_as_accurate_as_resampling(backend):
    # Same estimator, other random numbers: errors over seeds agree within chance.
    rng = np.random.default_rng(6)
    probs_N_K_C = random_probs(rng, 8, 5, 3, concentration=0.7)
    exact = oracle.joint_entropy(probs_N_K_C, list(range(8)))
    errors = {True: [], False: []}
    for seed in range(40):
        for incremental in (True, False):
            rng = np.random.default_rng(seed)
            state = _joint.sample_joint(probs_N_K_C[:4], 200, rng, kernels())
            for n in range(5, 8):
                state = _joint.next_joint(state, probs_N_K_C[:n], Settings(
                    200, kernels(), incremental=incremental), rng)
            estimate = joint_entropy_estimate(state, probs_N_K_C, 7)
            errors[incremental].append(estimate - exact)
    rms = {k: np.sqrt(np.mean(np.square(v))) for k, v in errors.items()}
    assert rms[True] < 1.5 * rms[False], rms


def test_pruned_joint_is_certified(backend):
    # A confident model: most of the 3^6 configurations carry almost no mass.
    rng = np.random.default_rng(7)
    probs_N_K_C = random_probs(rng, 7, 4, 3, concentration=0.05)
    state = _joint.empty_joint(4)
    for a in range(6):
        state = _joint.extend_pruned(state, probs_N_K_C[a], a + 1, tol=1e-3)
    assert state.mode == "pruned" and state.num_configurations < 3 ** 6
    assert 0 < state.error_bound
    computed = joint_entropy_estimate(state, probs_N_K_C, 6)
    exact = oracle.joint_entropy(probs_N_K_C, list(range(7)))
    assert exact - state.error_bound - 1e-12 <= computed <= exact + 1e-12


@pytest.mark.parametrize("make_state", [
    lambda: 7, lambda: np.random.RandomState(7), lambda: np.random.default_rng(7)])
def test_same_random_state_same_result(backend, make_state):
    probs_N_K_C = random_probs(np.random.default_rng(3), 60, 5, 4)
    first = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=make_state(),
                         return_utilities=True, saturation="greedy")
    second = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=make_state(),
                          return_utilities=True, saturation="greedy")
    np.testing.assert_array_equal(first.std_errors, second.std_errors)
    assert not first.exact[-1]
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.utilities, second.utilities)
    other = bf.batchbald(probs_N_K_C, 6, num_samples=40, random_state=8,
                         return_utilities=True, saturation="greedy")
    assert not np.array_equal(first.utilities[-1], other.utilities[-1])


def test_pruned_steps_through_the_api(backend):
    rng = np.random.default_rng(8)
    probs_N_K_C = random_probs(rng, 9, 4, 3, concentration=0.05)
    result = bf.batchbald(probs_N_K_C, 6, num_samples=30, tol=1e-3, return_utilities=True)
    assert "pruned" in result.mode
    batch = []
    for t, pick in enumerate(result.indices):
        bound = result.error_bounds[t]
        assert bound <= 1e-3 if result.mode[t] == "pruned" else bound == 0
        for x in np.flatnonzero(~np.isnan(result.utilities[t])):
            exact = oracle.mutual_information(probs_N_K_C, batch + [int(x)])
            assert exact - bound - 1e-10 <= result.utilities[t, x] <= exact + 1e-10
        batch.append(int(pick))


def test_standard_error_matches_the_spread_over_seeds(backend):
    probs_N_K_C = random_probs(np.random.default_rng(9), 7, 5, 3, concentration=0.7)
    estimates, std_errors = [], []
    for seed in range(60):
        state = _joint.sample_joint(probs_N_K_C[:6], 200, np.random.default_rng(seed),
                                    kernels())
        (g_M,), counts_M = _joint.estimator_terms(state, probs_N_K_C[6:7], kernels())
        M = counts_M.sum()
        estimate = counts_M @ g_M / M
        np.testing.assert_allclose(estimate, joint_entropy_estimate(state, probs_N_K_C, 6),
                                   rtol=1e-12)
        estimates.append(estimate)
        std_errors.append(np.sqrt(counts_M @ (g_M - estimate) ** 2 / (M - 1) / M))
    ratio = np.mean(std_errors) / np.std(estimates)
    assert 0.7 < ratio < 2.0, ratio  # conservative: ≥ the stratified estimator's spread


def test_result_reports_sampling_noise(backend):
    probs_N_K_C = random_probs(np.random.default_rng(10), 40, 5, 3)
    result = bf.batchbald(probs_N_K_C, 6, num_samples=50, tol=0, random_state=0,
                          saturation="greedy")
    sampled = result.mode == "sampled"
    assert sampled[4:].all() and not sampled[:4].any()
    assert (result.std_errors[sampled] > 0).all() and np.isnan(result.std_errors[~sampled]).all()
    assert np.isnan(result.error_bounds[sampled]).all()
    assert not result.ambiguous[~sampled].any()


def coarse_joint_entropies(state, probs_N_K_C, xs, row_sum_range, **kwargs):
    """Every level's bound on the state's joint entropy with each candidate, coarsest first."""
    levels = _coarse.CoarseLevels(state, kernels(), row_sum_range, **kwargs)
    out = []
    for level in range(len(levels)):
        joint_G_K, correction = levels[level]
        weighted = np.empty(len(xs))
        _backend.get_kernels().score_candidates(joint_G_K, np.ones(len(joint_G_K)),
                                                probs_N_K_C, xs, weighted, 1)
        out.append(weighted + correction + probs_N_K_C[xs].sum(axis=2) @ state.offset_K)
    return out


def states_of_every_mode(probs_N_K_C, batch):
    exact = _joint.empty_joint(probs_N_K_C.shape[1])
    pruned = exact
    for a, x in enumerate(batch):
        exact = _joint.extend_exact(exact, probs_N_K_C[x])
        pruned = _joint.extend_pruned(pruned, probs_N_K_C[x], a + 1, tol=1e-2)
    sampled = _joint.sample_joint(probs_N_K_C[batch], 300, np.random.default_rng(0), kernels())
    return {"exact": exact, "pruned": pruned, "sampled": sampled}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("row_sum", [1.0, "off"])
def test_coarse_joint_bounds_every_candidate(backend, seed, row_sum):
    # Merged rows may only raise the score, for every candidate and every kind of state,
    # also for rows of p off 1 within the accepted tolerance.
    rng = np.random.default_rng(seed)
    probs_N_K_C = random_probs(rng, 40, 6, 3, zeros=seed % 2 == 1,
                               concentration=rng.choice([0.1, 1.0]))
    if row_sum == "off":
        probs_N_K_C = probs_N_K_C * rng.uniform(1 - 9e-4, 1 + 9e-4, size=(40, 6, 1))
    row_sums = probs_N_K_C.sum(axis=2)
    batch, xs = list(range(5)), np.arange(5, 40)
    for mode, state in states_of_every_mode(probs_N_K_C, batch).items():
        assert state.mode == mode
        full = np.array([joint_entropy_estimate(state, probs_N_K_C, x) for x in xs])
        for num_groups, ways in [(2, 3), (7, 2), (30, 8)]:
            bounds = coarse_joint_entropies(state, probs_N_K_C, xs,
                                            (row_sums.min(), row_sums.max()),
                                            num_groups=num_groups, ways=ways, fraction=1.0)
            assert len(bounds) >= 1 + (num_groups < 30)
            for coarse in bounds:
                assert (coarse >= full - 1e-12).all(), (mode, num_groups,
                                                        (coarse - full).min())
        # One group per row: nothing merged, the bound is the score.
        if row_sum == 1.0:
            exact_bound, = coarse_joint_entropies(state, probs_N_K_C, xs, (1.0, 1.0),
                                                  num_groups=state.num_configurations,
                                                  fraction=1.0)
            np.testing.assert_allclose(exact_bound, full, atol=1e-12)


def test_coarse_levels_tighten_as_they_split(backend):
    # Each level splits the groups of the last, so its bound can only be tighter; the first
    # grouping may start from given centres (the last step's) and still bounds.
    probs_N_K_C = random_probs(np.random.default_rng(11), 60, 8, 4, concentration=0.3)
    state = _joint.sample_joint(probs_N_K_C[:6], 2000, np.random.default_rng(0), kernels())
    xs = np.arange(6, 60)
    full = np.array([joint_entropy_estimate(state, probs_N_K_C, x) for x in xs])
    levels = _coarse.CoarseLevels(state, kernels(), num_groups=2, ways=8, max_groups=128,
                                  fraction=1.0)
    assert levels.rows == [2, 16, 128]
    bounds = coarse_joint_entropies(state, probs_N_K_C, xs, (1.0, 1.0), num_groups=2,
                                    ways=8, max_groups=128, fraction=1.0)
    looseness = [np.mean(bound - full) for bound in bounds]
    assert looseness[0] > looseness[1] > looseness[2] > 0, looseness
    warm = coarse_joint_entropies(state, probs_N_K_C, xs, (1.0, 1.0), num_groups=2, ways=8,
                                  max_groups=128, fraction=1.0, centres=levels.centres)
    for bound in warm:
        assert (bound >= full - 1e-12).all()
    # The defaults: ~3K rows (K = 8: 32), then one split to the most rows within 1/8 of the
    # joint's rows (70), at most 1024.
    levels = _coarse.CoarseLevels(state, kernels())
    assert levels.rows == [32, 64]
    many = _joint.sample_joint(random_probs(np.random.default_rng(2), 12, 100, 10)[:8], 20000,
                               np.random.default_rng(0), kernels())
    assert _coarse.CoarseLevels(many, kernels()).rows == [128, 1024]
    assert levels[len(levels) - 1][0].shape[1] == 8
    assert len(_coarse.CoarseLevels(_joint.empty_joint(8), kernels())) == 0  # too few rows to merge


def test_coarse_levels_only_where_their_grouping_pays(backend):
    # The rule of docs/sampled_steps.md: a level of G rows whose I Lloyd iterations cost
    # I·M·(G + 1)/C kernel rows is grouped only if n candidates could save that many,
    # n·(M − G); the first level from drawn centres takes 8 iterations, a split 2.
    C = 10
    many = _joint.sample_joint(random_probs(np.random.default_rng(2), 12, 100, C)[:8], 20000,
                               np.random.default_rng(0), kernels())
    M = many.num_configurations
    assert _coarse.CoarseLevels(many, kernels()).rows == [128, 1024]
    first = math.ceil(8 * M * 129 / C / (M - 128))  # fewest candidates the first level pays
    split = math.ceil(2 * M * 9 / C / (M - 1024))  # and the split (8 ways)
    assert split < first
    assert _coarse.CoarseLevels(many, kernels(), work=(first - 1, C)).rows == []
    levels = _coarse.CoarseLevels(many, kernels(), work=(first, C))
    assert levels.rows == [128, 1024] and len(levels[1][0]) <= 1024
    assert _coarse.CoarseLevels(many, kernels(), work=(first, 1)).rows == []  # C = 1: dearer


def test_coarsest_level_groups_the_first_levels_rows(backend):
    probs_N_K_C = random_probs(np.random.default_rng(12), 60, 8, 4, concentration=0.3)
    state = _joint.sample_joint(probs_N_K_C[:6], 4000, np.random.default_rng(0), kernels())
    xs = np.arange(6, 60)
    full = np.array([joint_entropy_estimate(state, probs_N_K_C, x) for x in xs])
    levels = _coarse.CoarseLevels(state, kernels(), coarsest=True, num_groups=64, fraction=1.0)
    assert levels.coarsest and levels.rows[:2] == [_coarse.COARSEST_GROUPS, 64]
    bounds = coarse_joint_entropies(state, probs_N_K_C, xs, (1.0, 1.0), coarsest=True,
                                    num_groups=64, fraction=1.0)
    looseness = [np.mean(bound - full) for bound in bounds]
    assert min(looseness) > 0 and looseness == sorted(looseness, reverse=True), looseness
    # Too few groups to group again: no coarsest level.
    assert not _coarse.CoarseLevels(state, kernels(), coarsest=True, num_groups=20,
                                    fraction=1.0).coarsest


def test_split_groups_refine_their_parents(backend):
    rng = np.random.default_rng(3)
    joint_M_K = rng.dirichlet(np.full(6, 0.3), size=500) * rng.uniform(0.1, 1, (500, 1))
    joint_M_K[:5] = 0.0  # rows of zero probability go somewhere, and weigh nothing
    sums_M, weights_M = joint_M_K.sum(axis=1), rng.uniform(0.5, 2, 500)
    parent_M = rng.integers(0, 7, 500)
    group_M, G, _ = _coarse._split_groups(joint_M_K, sums_M, weights_M, weights_M * sums_M,
                                       parent_M, 7, 4, iterations=3, kernels=kernels())
    assert sorted(set(group_M)) == list(range(G)) and 7 < G <= 28
    # every finer group lies within one parent
    assert all(len(set(parent_M[group_M == g])) == 1 for g in range(G))




def test_draws_join_blocks_in_order():
    # A fit's rounds of fresh draws stay blocks until the fit keeps some: joined, they
    # are the concatenation of the blocks, less the draws left out.
    rng = np.random.default_rng(6)
    blocks = [_joint.Draws(rng.integers(0, 5, (n, 3)), rng.integers(0, 4, n),
                           np.arange(n) + 10 * b, rng.normal(size=(n, 4)))
              for b, n in enumerate([7, 1, 12])]
    keep_M = rng.random(20) < 0.5
    fields = ("labels_M_A", "member_M", "rank_M", "log_joint_M_K")
    for keep in (None, keep_M):
        joined = _joint.Draws.join(blocks, keep)
        for field in fields:
            whole = np.concatenate([getattr(block, field) for block in blocks])
            np.testing.assert_array_equal(getattr(joined, field),
                                          whole if keep is None else whole[keep])
    assert _joint.Draws.join(blocks[:1]) is blocks[0]


def test_unique_rows_of_long_batches_survive_hash_collisions(backend, monkeypatch):
    # Past C**A >= 2**63 rows are merged by a 64-bit hash checked against the rows; a
    # collision must fall back to merging the rows themselves.
    rng = np.random.default_rng(4)
    labels_M_A = rng.integers(0, 3, size=(500, 45))
    labels_M_A[250:] = labels_M_A[:250]  # every row twice
    expected = np.unique(labels_M_A, axis=0, return_counts=True)[1]

    def check(by_key):
        first_U, ids_M, counts_U, merged_by_key = _joint._unique_rows(labels_M_A, 3,
                                                                      kernels())
        np.testing.assert_array_equal(labels_M_A[first_U[ids_M]], labels_M_A)
        assert sorted(counts_U) == sorted(expected) and len(first_U) == 250
        assert merged_by_key == by_key

    check(True)

    class Colliding:  # every multiplier 0: one hash for all rows
        def integers(self, low, high, size, dtype):
            return np.zeros(size, dtype=dtype)

    monkeypatch.setattr(_joint.np.random, "default_rng", lambda seed: Colliding())
    check(False)
    # Merged by rows, not keys: the rows kept by a fit are merged anew.
    assert _joint._unique_subset(_joint._unique_rows(labels_M_A, 3, kernels()),
                                 np.arange(500) % 2 == 0) is None


@pytest.mark.parametrize("C, A", [(4, 3), (3, 45)])
def test_unique_rows_of_a_subset_are_those_merged_anew(backend, C, A):
    # A fit keeps the draws of low rank: their merge follows from the merge of all, and
    # must be the one merging them anew gives (ids in key order, first rows, counts).
    rng = np.random.default_rng(C + A)
    labels_M_A = rng.integers(0, C, size=(3000, A))
    labels_M_A[1000:2000] = labels_M_A[rng.integers(0, 1000, 1000)]  # repeats
    keep_M = rng.random(3000) < 0.4
    subset = _joint._unique_subset(_joint._unique_rows(labels_M_A, C, kernels()), keep_M)
    anew = _joint._unique_rows(labels_M_A[keep_M], C, kernels())
    for got, want in zip(subset, anew):
        np.testing.assert_array_equal(got, want)
    # and against np.unique of the rows kept, in their own order
    kept = labels_M_A[keep_M]
    first_U, ids_M, counts_U, _ = subset
    np.testing.assert_array_equal(kept[first_U[ids_M]], kept)
    _, first_u, counts_u = np.unique(kept, axis=0, return_index=True, return_counts=True)
    assert sorted(first_U) == sorted(first_u) and sorted(counts_U) == sorted(counts_u)
