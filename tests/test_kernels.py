"""The compiled kernels against a brute-force computation and the NumPy kernels."""

import decimal
import inspect

import numpy as np
import pytest

from batchbald_fast import _backend, _kernels_numpy, _threads

kernels = pytest.importorskip("batchbald_fast._kernels")

RTOL = 1e-12


@pytest.fixture(autouse=True)
def threads_whatever_the_work(monkeypatch):
    """These cases are small: run them on the threads asked all the same (test_threads.py
    checks the sizing)."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "free_cores", lambda: 64)


def brute_score(joint_M_K, weights_M, probs_N_K_C, candidates):
    """``Σ_m w_m Σ_c −P log P`` by plain loops over m and c."""
    out = np.zeros(len(candidates))
    for i, x in enumerate(candidates):
        for m in range(joint_M_K.shape[0]):
            row = 0.0
            for c in range(probs_N_K_C.shape[2]):
                P = float(np.dot(joint_M_K[m], probs_N_K_C[x, :, c]))
                if P > 0:
                    row -= P * np.log(P)
            out[i] += weights_M[m] * row
    return out


def brute_entropy(probs_R_C):
    out = np.zeros(probs_R_C.shape[0])
    for r, row in enumerate(probs_R_C):
        for p in row:
            if p > 0:
                out[r] -= p * np.log(p)
    return out


def make_case(rng, N, M, K, C, zeros=True):
    """Normalised probabilities and a joint with exact zeros and ones in both."""
    probs_N_K_C = rng.random((N, K, C)) ** 3
    if zeros:
        probs_N_K_C[rng.random((N, K, C)) < 0.2] = 0.0
        probs_N_K_C[0] = 0.0
        probs_N_K_C[0, :, -1] = 1.0  # a certain point: all its mass on one class
    probs_N_K_C[probs_N_K_C.sum(axis=2) == 0, 0] = 1.0
    probs_N_K_C /= probs_N_K_C.sum(axis=2, keepdims=True)
    joint_M_K = rng.random((M, K)) / K
    if zeros:
        joint_M_K[rng.random((M, K)) < 0.2] = 0.0
        if M >= 3:
            joint_M_K[-1] = 0.0  # a configuration with P = 0 everywhere
            joint_M_K[1] = 1.0 / K
    weights_M = rng.random(M) + 0.5
    return joint_M_K, weights_M, probs_N_K_C


def assert_close(actual, desired):
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=1e-300)


SHAPES = [  # N, M, K, C
    (7, 1, 1, 1), (9, 1, 5, 3), (11, 6, 1, 4), (13, 5, 3, 1), (20, 17, 4, 2),
    (30, 33, 5, 10), (25, 40, 20, 7), (6, 9, 3, 100),
]


@pytest.mark.parametrize("N, M, K, C", SHAPES)
def test_score_candidates_matches_brute_force_and_numpy(N, M, K, C):
    rng = np.random.default_rng(N * 1000 + M * 10 + C)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, N, M, K, C)
    candidates = rng.permutation(N)[: max(1, N - 2)].astype(np.intp)
    expected = brute_score(joint_M_K, weights_M, probs_N_K_C, candidates)
    reference = _kernels_numpy.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                                candidates, np.empty(len(candidates)))
    assert_close(reference, expected)
    for num_threads in (1, 2):
        for tile_bytes in (1, 8, 100, 1000, 5000, 2**15, 2**20):
            out = np.full(len(candidates), np.nan)
            returned = kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                                candidates, out, num_threads, tile_bytes)
            assert returned is out
            assert np.all(np.isfinite(out))
            assert_close(out, expected)
            assert_close(out, reference)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N, G, S, K, C", [(7, 1, 1, 1, 1), (9, 3, 1, 5, 3), (11, 4, 3, 2, 3),
                                           (20, 7, 10, 6, 10), (5, 33, 2, 3, 2),
                                           (6, 2, 9, 3, 100)])
def test_score_candidates_grouped(N, G, S, K, C, dtype):
    """Each group of S rows scored alone, by brute force; groups straddle register blocks
    (float64) and the float32 path's blocks of joint rows (tile_bytes 1: one row each)."""
    rng = np.random.default_rng(N * 100 + G)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, N, G * S, K, C)
    candidates = rng.permutation(N)[: max(1, N - 2)].astype(np.intp)
    expected = np.stack([brute_score(joint_M_K[g * S:(g + 1) * S], weights_M[g * S:(g + 1) * S],
                                     probs_N_K_C, candidates) for g in range(G)], axis=1)
    rtol = RTOL if dtype == np.float64 else 1e-5
    for module in (_kernels_numpy, kernels):
        for num_threads in (1, 2):
            for tile_bytes in (1, 1000, 2**15):
                out = np.full((len(candidates), G), np.nan)
                module.score_candidates_grouped(joint_M_K.astype(dtype), weights_M,
                                                probs_N_K_C.astype(dtype), candidates, out,
                                                num_threads, tile_bytes)
                np.testing.assert_allclose(out, expected, rtol=rtol, atol=1e-300)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        kernels.score_candidates_grouped(joint_M_K, weights_M, probs_N_K_C, candidates,
                                         np.empty((len(candidates), G * S + 1)))


def test_score_candidates_default_threads_and_repeats():
    rng = np.random.default_rng(1)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, 40, 50, 6, 5)
    candidates = np.array([5, 3, 5, 39, 0, 0, 17], dtype=np.intp)  # repeats, any order
    out = kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates,
                                   np.empty(len(candidates)))
    assert_close(out, brute_score(joint_M_K, weights_M, probs_N_K_C, candidates))
    assert out[0] == out[2] and out[4] == out[5]


def test_score_candidates_independent_of_tiling_and_threads():
    """Same sum order over m whatever the tiles: agreement far below the tolerance."""
    rng = np.random.default_rng(2)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, 300, 257, 20, 10, zeros=False)
    candidates = rng.permutation(300).astype(np.intp)
    runs = [kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates,
                                     np.empty(300), t, b)
            for t in (1, 2) for b in (1, 3000, 2**15, 2**22)]
    for out in runs[1:]:
        np.testing.assert_allclose(out, runs[0], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("G", [1, 9])
def test_score_candidates_in_blocks_of_joint_rows(dtype, G):
    """A joint past the kernel's block of rows (1800 × 20: 141 KiB in float32) with many
    tiles a thread: the tiles go in panels that each block of rows passes in turn. The
    brute-force values, and bit for bit those of each candidate scored alone (one tile:
    the joint unblocked); groups of 200 rows straddle the blocks."""
    rng = np.random.default_rng(7)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, 40, 1800, 20, 3)
    joint_M_K, probs_N_K_C = joint_M_K.astype(dtype), probs_N_K_C.astype(dtype)
    candidates = rng.integers(0, 40, 30).astype(np.intp)
    S = 1800 // G
    expected = np.stack([brute_score(joint_M_K[g * S:(g + 1) * S].astype(np.float64),
                                     weights_M[g * S:(g + 1) * S],
                                     probs_N_K_C.astype(np.float64), candidates)
                         for g in range(G)], axis=1)
    rtol = RTOL if dtype == np.float64 else 1e-5
    for module in (_kernels_numpy, kernels):
        for tile_bytes in (1000, 2**15):  # 2 or 68 candidates a tile
            out = np.full((len(candidates), G), np.nan)
            module.score_candidates_grouped(joint_M_K, weights_M, probs_N_K_C, candidates,
                                            out, 2, tile_bytes)
            np.testing.assert_allclose(out, expected, rtol=rtol, atol=1e-300)
            alone = np.full((len(candidates), G), np.nan)
            for i, x in enumerate(candidates):
                module.score_candidates_grouped(joint_M_K, weights_M, probs_N_K_C,
                                                candidates[i:i + 1], alone[i:i + 1], 2,
                                                tile_bytes)
            np.testing.assert_array_equal(out, alone)


def test_score_candidates_empty_and_bad_index():
    rng = np.random.default_rng(3)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, 5, 3, 2, 2)
    out = np.empty(0)
    kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C, np.empty(0, np.intp), out)
    with pytest.raises(IndexError):
        kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                 np.array([5], dtype=np.intp), np.empty(1))


@pytest.mark.parametrize("K", [8, 129])
def test_score_candidates_float32(K):
    """Both float32 kernels: the fused tile (K ≤ 128) and sgemm, then the log."""
    rng = np.random.default_rng(4)
    joint_M_K, weights_M, probs_N_K_C = make_case(rng, 50, 64, K, 6)
    candidates = np.arange(50, dtype=np.intp)
    expected = brute_score(joint_M_K, weights_M, probs_N_K_C, candidates)
    for num_threads in (1, 2):
        for tile_bytes in (1, 500, None):
            out = kernels.score_candidates(joint_M_K.astype(np.float32), weights_M,
                                           probs_N_K_C.astype(np.float32), candidates,
                                           np.empty(50), num_threads, tile_bytes)
            assert np.all(np.isfinite(out))
            np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("R, C", [(1, 1), (7, 1), (50, 2), (1000, 10), (33, 100)])
def test_entropy_rows(R, C):
    rng = np.random.default_rng(R + C)
    probs_R_C = rng.random((R, C)) ** 3
    probs_R_C[rng.random((R, C)) < 0.2] = 0.0
    probs_R_C[0] = 0.0
    probs_R_C[0, 0] = 1.0
    expected = brute_entropy(probs_R_C)
    reference = _kernels_numpy.entropy_rows(probs_R_C, np.empty(R))
    assert_close(reference, expected)
    for num_threads in (1, 2):
        for tile_bytes in (1, 100, 2**20):
            out = kernels.entropy_rows(probs_R_C, np.empty(R), num_threads, tile_bytes)
            assert_close(out, expected)
    assert kernels.entropy_rows(probs_R_C[:1], np.empty(1))[0] == 0.0  # exactly


@pytest.mark.parametrize("M, K, P, W", [(0, 3, 1, 2), (1, 1, 1, 1), (300, 7, 5, 4),
                                        (2000, 20, 40, 8), (500, 20, 6, 16),
                                        (300, 5, 3, 37)])
def test_nearest_subgroups(M, K, P, W):
    rng = np.random.default_rng(M + K)
    joint_M_K = rng.random((M, K))
    parent_M = rng.integers(0, P, M)
    log_centre_P_K_W = np.log(rng.random((P, K, W)))
    log_centre_P_K_W[0, :, -1] = -708.0  # an unused sub-centre is never the best
    expected = np.array([W * parent_M[m] + max(range(W), key=lambda w: (
        sum(joint_M_K[m, k] * log_centre_P_K_W[parent_M[m], k, w] for k in range(K)), -w))
        for m in range(M)], dtype=np.intp)
    for module, tile_bytes, kwargs in [
            (_kernels_numpy, 1000, {}), (_kernels_numpy, None, {}),
            (kernels, None, {"num_threads": 1}), (kernels, None, {"num_threads": 2})]:
        out = np.empty(M, dtype=np.intp)
        with pytest.MonkeyPatch.context() as patch:
            if tile_bytes is not None:
                patch.setattr(_kernels_numpy, "SUBGROUP_TILE_BYTES", tile_bytes)
            module.nearest_subgroups(joint_M_K, parent_M, log_centre_P_K_W, out, **kwargs)
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.nearest_subgroups(joint_M_K, np.append(parent_M, 0), log_centre_P_K_W,
                                  np.empty(M, dtype=np.intp))


@pytest.mark.parametrize("M, K, U", [(5, 1, 0), (1, 1, 1), (40, 3, 25), (3000, 20, 2500)])
def test_exp_rows(M, K, U):
    import math
    rng = np.random.default_rng(M + K + U)
    log_joint_M_K = -rng.exponential(20.0, size=(M, K))
    log_joint_M_K[::5, 0] = -np.inf if K > 1 else 0.0  # a label impossible under a member
    rows_U = rng.integers(0, M, U)
    expected_U_K = np.zeros((U, K))
    for u, m in enumerate(rows_U):
        top = max(log_joint_M_K[m])
        expected_U_K[u] = [math.exp(v - top) / K for v in log_joint_M_K[m]]
    outs = []
    for module, num_threads in [(_kernels_numpy, None), (kernels, 1), (kernels, 2),
                                (kernels, 3)]:
        out_U_K, max_U = np.full((U, K), np.nan), np.full(U, np.nan)
        module.exp_rows(log_joint_M_K, rows_U, out_U_K, max_U, num_threads=num_threads)
        np.testing.assert_allclose(out_U_K, expected_U_K, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(max_U, log_joint_M_K[rows_U].max(axis=1, initial=-np.inf))
        outs.append(out_U_K)
    # Every one runs NumPy's exp, on any threads: the merged draws, and so every sampled
    # score, agree to the bit.
    for out_U_K in outs[1:]:
        np.testing.assert_array_equal(out_U_K, outs[0])
    with pytest.raises(IndexError):
        kernels.exp_rows(log_joint_M_K, np.array([M]), np.empty((1, K)), np.empty(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, K, C, n", [(1, 1, 1, 0), (3, 2, 2, 1), (50, 5, 3, 9),
                                        (5000, 20, 10, 2000)])
def test_gather_rows(dtype, N, K, C, n):
    """Rows in any order, repeats included, widened exactly to float64 (each value its
    float64 self: a brute-force copy), on both backends; an index out of range refused."""
    rng = np.random.default_rng(N + n)
    probs_N_K_C = rng.random((N, K, C)).astype(dtype)
    xs = rng.integers(0, N, n).astype(np.intp)
    expected = np.array([[[float(v) for v in row] for row in probs_N_K_C[x]] for x in xs]
                        ).reshape(n, K, C)
    for module in (_kernels_numpy, kernels):
        out = np.full((n, K, C), np.nan)
        assert module.gather_rows(probs_N_K_C, xs, out) is out
        np.testing.assert_array_equal(out, expected)
        for bad in (-1, N):
            with pytest.raises(IndexError, match="out of range"):
                module.gather_rows(probs_N_K_C, np.array([0, bad], dtype=np.intp),
                                   np.empty((2, K, C)))
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.gather_rows(probs_N_K_C, xs, np.empty((n + 1, K, C)))


@pytest.mark.parametrize("M, P, ways", [(0, 1, 2), (1, 1, 1), (50, 3, 4), (2000, 40, 16),
                                         (300, 2, 200)])
def test_subgroup_seeds(M, P, ways):
    rng = np.random.default_rng(M + P)
    parent_M = rng.integers(0, P, M)
    key_M = np.round(rng.normal(size=M), 1)  # many ties, broken by the lower row
    key_M[::7] = -np.inf  # rows of zero mass draw -inf keys
    mass_M = np.where(np.isinf(key_M), 0.0, rng.random(M))
    mass_M[1::11] = 0.0  # and a row of zero mass is never a seed, even with a key
    expected = np.full(M, -1, dtype=np.intp)
    for g in range(P):
        rows = sorted(np.flatnonzero(parent_M == g), key=lambda m: (-key_M[m], m))[:ways]
        for r, m in enumerate(rows):
            if mass_M[m] > 0:
                expected[m] = g * ways + r
    for module in (_kernels_numpy, kernels):
        out = module.subgroup_seeds(parent_M, key_M, mass_M, P, ways,
                                    np.empty(M, dtype=np.intp))
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(IndexError):
        kernels.subgroup_seeds(np.array([P]), np.zeros(1), np.ones(1), P, ways,
                               np.empty(1, dtype=np.intp))


@pytest.mark.parametrize("M, K, G", [(0, 3, 2), (1, 1, 1), (7, 3, 5), (300, 7, 33),
                                     (2000, 20, 64), (1001, 20, 128)])
def test_nearest_centres(M, K, G):
    rng = np.random.default_rng(M + K + G)
    joint_M_K = rng.random((M, K))
    joint_M_K[: M // 10] = 0.0  # rows of zero mass: every sum 0, the first centre
    log_centre_K_G = np.log(rng.random((K, G)))
    if G > 2:
        log_centre_K_G[:, 2] = log_centre_K_G[:, 1]  # a tie: the lower centre
    expected = np.array([max(range(G), key=lambda g: (
        sum(joint_M_K[m, k] * log_centre_K_G[k, g] for k in range(K)), -g))
        for m in range(M)], dtype=np.intp)
    for module, kwargs in [(_kernels_numpy, {}), (kernels, {"num_threads": 1}),
                           (kernels, {"num_threads": 2})]:
        out = np.full(M, -1, dtype=np.intp)
        module.nearest_centres(joint_M_K, log_centre_K_G, out, **kwargs)
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.nearest_centres(joint_M_K, log_centre_K_G[:-1], np.empty(M, dtype=np.intp))


@pytest.mark.parametrize("keys", [
    [], [5], [3, 3, 3], [2, -1, 2, 7, -1, 0],
    list(np.random.default_rng(0).integers(0, 50, 3000)),
    list(np.random.default_rng(1).integers(-2**63, 2**63 - 1, 2000, dtype=np.int64)),
    [2**63 - 1, -2**63, 0, -2**63, 2**63 - 1]])
def test_unique_keys(keys):
    keys_M = np.array(keys, dtype=np.int64)
    M = len(keys_M)
    distinct = sorted(set(keys))  # by plain loops: sorted keys, first places, counts
    first = [keys.index(k) for k in distinct]
    counts = [keys.count(k) for k in distinct]
    ids = [distinct.index(k) for k in keys]
    for module in (_kernels_numpy, kernels):
        first_M, ids_M, counts_M = (np.full(M, -1, dtype=np.intp) for _ in range(3))
        U = module.unique_keys(keys_M, first_M, ids_M, counts_M)
        assert U == len(distinct)
        assert list(first_M[:U]) == first and list(counts_M[:U]) == counts
        assert list(ids_M) == ids
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.unique_keys(keys_M, np.empty(M + 1, dtype=np.intp),
                            np.empty(M, dtype=np.intp), np.empty(M, dtype=np.intp))


def brute_label(probs_C, u):
    """The first class whose running sum exceeds u times the row's total, else the last
    class of positive probability."""
    total = sum(probs_C)
    running = 0.0
    for c, p in enumerate(probs_C):
        running += p
        if running > u * total:
            return c
    return max(c for c, p in enumerate(probs_C) if p > 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("M, K, C", [(0, 2, 3), (1, 1, 1), (500, 7, 5), (3000, 20, 10)])
def test_draw_labels(M, K, C, dtype):
    rng = np.random.default_rng(M + K + C)
    probs_K_C = rng.dirichlet(np.ones(C), size=K)
    probs_K_C[probs_K_C < 0.1] = 0.0  # zero classes, first, inside and last
    probs_K_C[np.arange(K), np.argmax(probs_K_C, axis=1)] += 0.1  # every row has one > 0
    probs_K_C = probs_K_C.astype(dtype)
    with np.errstate(divide="ignore"):
        log_probs_C_K = np.ascontiguousarray(np.log(probs_K_C).T, dtype=np.float64)
    member_M = rng.integers(0, K, M)
    u_M = rng.random(M)
    u_M[: M // 10] = np.nextafter(1.0, 0.0)  # the top of the range: never a zero class
    start_M_K = rng.normal(size=(M, K))
    expected_M = np.array([brute_label(probs_K_C[k].astype(np.float64), u)
                           for k, u in zip(member_M, u_M)], dtype=np.intp)
    for module, kwargs in [(_kernels_numpy, {}), (kernels, {"num_threads": 1}),
                           (kernels, {"num_threads": 2})]:
        labels_M_2 = np.full((M, 2), -1, dtype=np.intp)  # a strided column
        log_joint_M_K = start_M_K.copy()
        module.draw_labels(probs_K_C, log_probs_C_K, member_M, u_M, labels_M_2[:, 1],
                           log_joint_M_K, **kwargs)
        if dtype == np.float64:
            np.testing.assert_array_equal(labels_M_2[:, 1], expected_M)
        else:  # the sums in float32 may round a boundary draw to the next class
            assert np.sum(labels_M_2[:, 1] != expected_M) <= M // 100
        assert np.all(labels_M_2[:, 0] == -1)
        labels_M = labels_M_2[:, 1]
        assert np.all(probs_K_C[member_M, labels_M] > 0)
        np.testing.assert_array_equal(log_joint_M_K, start_M_K + log_probs_C_K[labels_M])
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.draw_labels(probs_K_C, log_probs_C_K, member_M, u_M[:-1] if M else u_M[:0],
                            np.empty(M, np.intp), np.empty((M + 1, K)))
    with pytest.raises(IndexError):
        kernels.draw_labels(probs_K_C, log_probs_C_K, np.array([K], dtype=np.intp),
                            np.zeros(1), np.empty(1, np.intp), np.empty((1, K)))


def test_draw_labels_follow_the_distribution():
    """Many draws of one member's row: class frequencies within 5 standard errors."""
    probs_K_C = np.array([[0.0, 0.2, 0.0, 0.5, 0.3], [1.0, 0.0, 0.0, 0.0, 0.0]])
    M = 200_000
    member_M = np.zeros(M, dtype=np.intp)
    labels_M = np.empty(M, dtype=np.intp)
    with np.errstate(divide="ignore"):
        log_probs_C_K = np.ascontiguousarray(np.log(probs_K_C).T)
    kernels.draw_labels(probs_K_C, log_probs_C_K, member_M,
                        np.random.default_rng(0).random(M), labels_M, np.zeros((M, 2)))
    frequencies_C = np.bincount(labels_M, minlength=5) / M
    error_C = np.sqrt(probs_K_C[0] * (1 - probs_K_C[0]) / M)
    assert np.all(np.abs(frequencies_C - probs_K_C[0]) <= 5 * error_C + 1e-12)


@pytest.mark.parametrize("M, K, G", [(0, 3, 2), (1, 1, 1), (1000, 20, 37)])
def test_group_sums(M, K, G):
    rng = np.random.default_rng(M + G)
    joint_M_K, weights_M = rng.random((M, K)), rng.random(M)
    group_M = rng.integers(0, G, M)
    expected_G_K = np.zeros((G, K))
    for m in range(M):
        expected_G_K[group_M[m]] += weights_M[m] * joint_M_K[m]
    for module in (_kernels_numpy, kernels):
        out_G_K = np.full((G, K), np.nan)
        module.group_sums(joint_M_K, weights_M, group_M, out_G_K)
        np.testing.assert_allclose(out_G_K, expected_G_K, rtol=1e-13, atol=1e-300)
    with pytest.raises(IndexError):
        kernels.group_sums(np.ones((1, K)), np.ones(1), np.array([G]), np.empty((G, K)))


def test_log_matches_libm_over_the_range():
    """The vectorised log, through entropy_rows, against NumPy's across all magnitudes."""
    x = np.geomspace(np.finfo(np.float64).tiny, 1e300, 100_001).reshape(-1, 1)
    out = kernels.entropy_rows(x, np.empty(len(x)))
    np.testing.assert_allclose(out, -x[:, 0] * np.log(x[:, 0]), rtol=1e-15, atol=0)



def correctly_rounded_xlogx(x):
    """``-x·log x`` rounded once to float64, from 40 significant digits (decimal's ln is
    correctly rounded at its precision): a reference whose accuracy no libm decides."""
    context = decimal.Context(prec=40)
    out = []
    for value in x:
        d = decimal.Decimal(float(value))
        out.append(0.0 if d == 0 else -float(context.multiply(d, context.ln(d))))
    return np.array(out)


def test_log_within_ulps_near_one_and_below():
    """Random mantissas in (0, 1], around 1 (where log x is small and the reduction must be
    exact) and just above 1: x·log x within 2 ulp of the correctly rounded value (log
    ≤ ~1 ulp, then the rounding of the product)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([
        rng.random(8_000) + 2.0**-53,
        1.0 + rng.uniform(-2.0**-4, 2.0**-4, 8_000),
        1.0 + np.arange(-300, 301) * 2.0**-52,
        np.ldexp(rng.random(4_000) + 1.0, rng.integers(-1022, 1, 4_000)),
    ]).reshape(-1, 1)
    x = x[x[:, 0] != 1.0]
    out = kernels.entropy_rows(x, np.empty(len(x)))
    reference = correctly_rounded_xlogx(x[:, 0])
    ulps = np.abs(out - reference) / np.spacing(np.abs(reference))
    assert ulps.max() <= 2, f"{ulps.max():.2f} ulp at x = {x[np.argmax(ulps), 0]!r}"
    # below the smallest normal: x·log(DBL_MIN), and 0·log 0 = 0 exactly
    tiny = np.array([0.0, -0.0, 5e-324, np.finfo(np.float64).tiny / 3]).reshape(-1, 1)
    out = kernels.entropy_rows(tiny, np.empty(4))
    log_tiny = float(decimal.Context(prec=40).ln(decimal.Decimal(np.finfo(np.float64).tiny)))
    np.testing.assert_array_equal(out, -tiny[:, 0] * log_tiny)


def test_float32_kernel_xlogx_within_ulps():
    """The float32 scoring kernel's x·log x, entry by entry (K = 1, C = 1, joint 1: P is
    the probability itself, exactly): within 2 float32 ulp of x·log x across magnitudes
    and around 1 (the log ≤ ~1.2 ulp, then the rounding of the product)."""
    rng = np.random.default_rng(6)
    x = np.concatenate([
        rng.random(20_000),
        1.0 - rng.uniform(0, 2.0**-4, 20_000),
        np.ldexp(rng.random(20_000) + 1.0, rng.integers(-126, 0, 20_000)),
    ]).astype(np.float32)
    x = x[(x > 0) & (x < 1)]
    out = kernels.score_candidates(np.ones((1, 1), np.float32), np.ones(1),
                                   x.reshape(-1, 1, 1), np.arange(len(x), dtype=np.intp),
                                   np.empty(len(x)), 1)
    x64 = x.astype(np.float64)
    reference = -x64 * np.log(x64)
    ulps = np.abs(out - reference) / np.spacing(reference.astype(np.float32))
    assert ulps.max() <= 2, f"{ulps.max():.2f} ulp at x = {x[np.argmax(ulps)]!r}"


def test_module_attributes():
    assert isinstance(kernels.OPENMP_ENABLED, bool)
    assert kernels.max_threads() >= 1


@pytest.mark.skipif(not kernels.OPENMP_ENABLED, reason="built without OpenMP")
def test_threadpoolctl_limits_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert kernels.max_threads() == 1
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        assert kernels.max_threads() == 2


def test_both_backends_have_every_kernel_with_the_same_signature():
    # The engine calls kernels through _backend.Kernels, which binds num_threads: every
    # kernel of either module must take the same parameters, num_threads among them.
    for name in _backend.KERNEL_NAMES:
        compiled = inspect.signature(getattr(kernels, name)).parameters
        fallback = inspect.signature(getattr(_kernels_numpy, name)).parameters
        assert list(compiled) == list(fallback), name
        assert "num_threads" in compiled, name


def test_kernels_hand_every_call_the_thread_count_they_were_given():
    calls = []

    class Recording:
        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, kwargs["num_threads"]))

    bound = _backend.Kernels(Recording(), 3)
    for name in _backend.KERNEL_NAMES:
        getattr(bound, name)()
    assert calls == [(name, 3) for name in _backend.KERNEL_NAMES]
