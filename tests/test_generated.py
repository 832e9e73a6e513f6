"""Generated cases (hypothesis) against the brute-force oracle and the invariants.

Profiles (tests/conftest.py): "ci", the default, and "thorough" with
``BATCHBALD_FAST_HYPOTHESIS=thorough``.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, note
from hypothesis import strategies as st

import batchbald_fast as bf
from batchbald_fast import _greedy, _pool, _search, redux

import oracle
from conftest import assert_same_result

# Rounding of a computed utility (float64, sums of a few hundred terms); the package's
# tie tolerance is 1e-10, so picks are checked against the oracle to within both.
ROUNDING = 1e-11
TIE = _search.TIE_TOLERANCE


@st.composite
def pools(draw, max_N=7, max_K=5, max_C=4, min_C=1):
    """Probabilities (N, K, C) with exact zeros, one-hot members, duplicate points and
    members, and near-certain points mixed in."""
    N = draw(st.integers(1, max_N))
    K = draw(st.integers(1, max_K))
    C = draw(st.integers(min_C, max_C))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    concentration = draw(st.sampled_from([0.05, 0.3, 1.0, 10.0]))
    probs_N_K_C = rng.dirichlet(np.full(C, concentration), size=(N, K))
    kind = draw(st.sampled_from(["plain", "zeros", "onehot", "duplicates", "agree"]))
    if kind == "zeros" and C > 1:
        probs_N_K_C = np.where(rng.random((N, K, C)) < 0.3, 0.0, probs_N_K_C)
        probs_N_K_C[..., 0] += 1e-3  # every row keeps some mass
        probs_N_K_C /= probs_N_K_C.sum(axis=2, keepdims=True)
    elif kind == "onehot":
        onehot = rng.random((N, K)) < 0.5
        probs_N_K_C[onehot] = np.eye(C)[rng.integers(C, size=onehot.sum())]
    elif kind == "duplicates":
        probs_N_K_C = probs_N_K_C[rng.integers(N, size=N)][:, rng.integers(K, size=K)]
    elif kind == "agree":  # some points on which every member agrees: BALD 0
        agree = rng.random(N) < 0.5
        probs_N_K_C[agree] = probs_N_K_C[agree, :1]
    note(f"pool N={N} K={K} C={C} seed={seed} concentration={concentration} kind={kind}")
    return probs_N_K_C


@st.composite
def layouts(draw, probs_N_K_C):
    """The same values as float64 or float32, log or not, in one of several memory layouts.

    Returns (array passed, float64 probabilities of exactly its values, log_probs)."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    log_probs = draw(st.booleans())
    values = probs_N_K_C.astype(dtype)
    if log_probs:
        with np.errstate(divide="ignore"):
            values = np.log(values)
    layout = draw(st.sampled_from(["C", "F", "strided", "transposed", "readonly"]))
    N, K, C = values.shape
    if layout == "F":
        values = np.asfortranarray(values)
    elif layout == "strided":
        big = np.zeros((2 * N, K, 3 * C), dtype=dtype)
        big[::2, :, ::3] = values
        values = big[::2, :, ::3]
    elif layout == "transposed":
        values = np.ascontiguousarray(values.transpose(2, 0, 1)).transpose(1, 2, 0)
    elif layout == "readonly":
        values = values.copy()
        values.flags.writeable = False
    exact_N_K_C = values.astype(np.float64)
    if log_probs:  # as documented: exp in float64, then in the pool's precision
        exact_N_K_C = np.exp(exact_N_K_C).astype(dtype).astype(np.float64)
    note(f"layout dtype={np.dtype(dtype).name} log_probs={log_probs} layout={layout}")
    return values, exact_N_K_C, log_probs


def candidate_sets(N):
    """None, or a subset of the pool in any order (possibly empty)."""
    return st.one_of(st.none(), st.lists(st.integers(0, N - 1), unique=True, max_size=N))


def batch_sizes(n):
    """0, 1, n, more than n, or anything up to n."""
    return st.one_of(st.sampled_from([0, 1, n, n + 3]), st.integers(0, max(n, 0)))


def check_exact_picks(result, exact_N_K_C, candidates, return_utilities, scores=True):
    """Each pick is the oracle's greedy choice given the picks before it (the tie rule: the
    lowest index within the tie tolerance of the best), with the oracle's batch score."""
    N = exact_N_K_C.shape[0]
    pool = list(range(N)) if candidates is None else sorted(candidates)
    steps = len(result.indices)
    batch = []
    for t in range(steps):
        util = {x: oracle.mutual_information(exact_N_K_C, batch + [x]) for x in pool}
        best = max(util.values())
        pick = int(result.indices[t])
        assert pick in util
        assert util[pick] >= best - TIE - ROUNDING
        assert all(util[x] < best - TIE + ROUNDING for x in pool if x < pick)
        if scores:
            assert result.scores[t] == pytest.approx(util[pick], abs=1e-9)
        if return_utilities:
            expected_N = np.full(N, np.nan)
            expected_N[list(util)] = list(util.values())
            np.testing.assert_allclose(result.utilities[t], expected_N, rtol=0, atol=1e-9)
        batch.append(pick)
        pool.remove(pick)


@given(data=st.data())
def test_exact_steps_equal_the_oracle(backend, data):
    probs_N_K_C = data.draw(pools())
    values, exact_N_K_C, log_probs = data.draw(layouts(probs_N_K_C))
    N, K, C = probs_N_K_C.shape
    candidates = data.draw(candidate_sets(N))
    n = N if candidates is None else len(candidates)
    batch_size = data.draw(batch_sizes(n))
    # Every step exact (C^t configurations fit), and the oracle's work small.
    assume(C ** min(batch_size, n) <= 256)
    lazy = data.draw(st.sampled_from([None, True, False]))
    return_utilities = data.draw(st.booleans())
    before = np.array(values, copy=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        result = bf.batchbald(values, batch_size, num_samples=256, log_probs=log_probs,
                              candidates=candidates, lazy=lazy,
                              return_utilities=return_utilities, random_state=0)
    np.testing.assert_array_equal(values, before)
    assert len(result.indices) == min(batch_size, n)
    assert (result.mode == "exact").all() and result.exact.all()
    assert (result.error_bounds == 0).all() and np.isnan(result.std_errors).all()
    assert not result.ambiguous.any() and (result.segments == 0).all()
    check_exact_picks(result, exact_N_K_C, candidates, return_utilities)


@given(data=st.data())
def test_single_point_scores_equal_the_oracle(backend, data):
    probs_N_K_C = data.draw(pools(max_N=12, max_K=8, max_C=6))
    values, exact_N_K_C, log_probs = data.draw(layouts(probs_N_K_C))
    entropy_N = [oracle.joint_entropy(exact_N_K_C, [n]) for n in range(len(exact_N_K_C))]
    cond_N = [oracle.conditional_entropy(exact_N_K_C, n) for n in range(len(exact_N_K_C))]
    np.testing.assert_allclose(bf.entropy(values, log_probs=log_probs), entropy_N,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(bf.conditional_entropy(values, log_probs=log_probs), cond_N,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(bf.bald(values, log_probs=log_probs),
                               np.subtract(entropy_N, cond_N), rtol=0, atol=1e-12)


def run_sampled(values, batch_size, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        return bf.batchbald(values, batch_size, **kwargs)


@given(data=st.data())
def test_sampled_steps_keep_their_invariants(backend, data):
    probs_N_K_C = data.draw(pools(max_N=30, max_K=8, max_C=5))
    values, exact_N_K_C, log_probs = data.draw(layouts(probs_N_K_C))
    N, K, C = probs_N_K_C.shape
    candidates = data.draw(candidate_sets(N))
    n = N if candidates is None else len(candidates)
    batch_size = data.draw(batch_sizes(n))
    kwargs = dict(
        num_samples=data.draw(st.sampled_from([1, 2, 7, 20, 60])), log_probs=log_probs,
        candidates=candidates, random_state=data.draw(st.integers(0, 2**32 - 1)),
        lazy=data.draw(st.sampled_from([None, True, False])),
        tol=data.draw(st.sampled_from([0.0, 1e-4, 1e-2])),
        incremental=data.draw(st.booleans()),
        dtype=data.draw(st.sampled_from([np.float64, np.float32])),
        saturation=data.draw(st.sampled_from(["restart", "greedy"])),
        extra_rounds=data.draw(st.sampled_from([0, 2, 16])))
    result = run_sampled(values, batch_size, **kwargs)
    steps = min(batch_size, n)
    assert len(result.indices) == steps
    # Distinct picks among the candidates.
    allowed = set(range(N)) if candidates is None else set(candidates)
    assert len(set(result.indices.tolist())) == steps
    assert set(result.indices.tolist()) <= allowed
    # Flags consistent with the modes.
    sampled = result.mode == "sampled"
    assert set(result.mode) <= {"exact", "pruned", "sampled"}
    np.testing.assert_array_equal(result.exact, result.mode == "exact")
    np.testing.assert_array_equal(np.isnan(result.error_bounds), sampled)
    assert (result.error_bounds[~sampled] >= 0).all()
    assert (result.error_bounds[result.exact] == 0).all()
    assert np.isnan(result.std_errors[~sampled]).all()
    assert (result.std_errors[sampled] >= 0).all()
    assert not result.ambiguous[~sampled].any()
    assert (result.resolutions >= 0).all() and (result.resolutions[~sampled] == 0).all()
    assert (result.num_configurations >= 1).all()
    assert (result.num_evaluations >= 1).all()
    assert (result.decision_rows >= result.num_configurations).all()
    assert np.isfinite(result.scores).all()
    # Segments start at 0 and only a saturated sampled step, with restarts, starts one.
    if steps:
        assert result.segments[0] == 0
        new = np.diff(result.segments)
        assert set(new.tolist()) <= {0, 1}
        starts = np.flatnonzero(new) + 1
        assert (result.saturated[starts - 1] & sampled[starts - 1]).all()
        if kwargs["saturation"] == "greedy":
            assert (result.segments == 0).all()
        for t in starts:  # a new run starts from an empty batch: one configuration
            assert result.num_configurations[t] == 1 and result.mode[t] == "exact"
    # Scores: a mutual information, at most ln K, up to the estimator's noise.
    # float32 products: ~1e-6 nats; float32 input: rows summing to 1 only within ~1e-7,
    # so the values' own mutual information may pass ln K (or 0) by that much.
    rounding = 1e-6 if kwargs["dtype"] is np.float32 else 1e-9
    slack = 1e-6 if values.dtype == np.float32 else rounding
    # A standard error from few draws is itself noisy (2 draws: one degree of freedom):
    # Student's t for the fewest draws a step can have, one-sided 1e-9.
    draws = K * max(1, kwargs["num_samples"] // K)
    z = scipy.stats.t.ppf(1 - 1e-9, draws - 1) if draws > 1 else np.inf
    with np.errstate(invalid="ignore"):  # inf · 0
        noise_N = np.where(sampled, np.nan_to_num(z * result.std_errors, nan=np.inf) + 1e-3,
                           slack)
    assert (result.scores <= math.log(K) + noise_N).all()
    assert (result.scores[~sampled] >= -result.error_bounds[~sampled] - slack).all()
    # Exact and pruned steps against the oracle: the score of each pick's segment.
    for t in np.flatnonzero(~sampled):
        segment = result.indices[(result.segments == result.segments[t])
                                 & (np.arange(steps) <= t)].tolist()
        if C ** len(segment) * K * len(segment) <= 20_000:
            true = oracle.mutual_information(exact_N_K_C, segment)
            tolerance = rounding
            assert true - result.error_bounds[t] - tolerance <= result.scores[t] <= \
                true + tolerance
    # The same seed gives the same result.
    assert_same_result(result, run_sampled(values, batch_size, **kwargs))


@st.composite
def bad_calls(draw):
    """A call with one bad argument, the exception type it must raise and the words its
    message must name."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    N, K, C = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(2, 4))
    probs_N_K_C = rng.dirichlet(np.ones(C), size=(N, K))
    kwargs = {}
    batch_size = draw(st.integers(0, N + 1))
    n, k, c = (draw(st.integers(0, s - 1)) for s in (N, K, C))
    problem = draw(st.sampled_from([
        "nan", "inf", "negative", "sum", "log_above_0", "log_nan", "bool", "complex",
        "string", "object", "ndim", "empty", "batch_size_negative", "batch_size_float",
        "batch_size_bool", "num_samples", "candidates_range", "candidates_repeat",
        "candidates_float", "candidates_2d", "random_state", "dtype", "tol", "tol_type",
        "saturation", "saturation_type", "extra_rounds", "num_threads", "memory_budget",
        "progress"]))
    expect, words = ValueError, "probs_N_K_C"
    if problem == "nan":
        probs_N_K_C[n, k, c] = np.nan
    elif problem == "inf":
        probs_N_K_C[n, k, c] = np.inf
    elif problem == "negative":
        probs_N_K_C[n, k, c] = -0.5
    elif problem == "sum":
        probs_N_K_C[n, k] *= draw(st.sampled_from([0.5, 1.01, 3.0, 0.0]))
    elif problem == "log_above_0":
        probs_N_K_C = np.log(probs_N_K_C)
        probs_N_K_C[n, k, c] = 0.5
        kwargs["log_probs"] = True
    elif problem == "log_nan":
        probs_N_K_C = np.log(probs_N_K_C)
        probs_N_K_C[n, k, c] = np.nan
        kwargs["log_probs"] = True
    elif problem == "bool":
        probs_N_K_C, expect = probs_N_K_C > 0.5, TypeError
    elif problem == "complex":
        probs_N_K_C, expect = probs_N_K_C.astype(complex), TypeError
    elif problem == "string":
        probs_N_K_C, expect = probs_N_K_C.astype(str), TypeError
    elif problem == "object":
        probs_N_K_C, expect = probs_N_K_C.astype(object), TypeError
    elif problem == "ndim":
        probs_N_K_C = draw(st.sampled_from([probs_N_K_C[0], probs_N_K_C[None],
                                            probs_N_K_C.ravel()]))
    elif problem == "empty":
        probs_N_K_C = draw(st.sampled_from([probs_N_K_C[:0], probs_N_K_C[:, :0],
                                            probs_N_K_C[:, :, :0]]))
    elif problem.startswith("batch_size"):
        words = "batch_size"
        batch_size, expect = {"batch_size_negative": (-1, ValueError),
                              "batch_size_float": (2.0, TypeError),
                              "batch_size_bool": (True, TypeError)}[problem]
    elif problem == "num_samples":
        words = "num_samples"
        kwargs["num_samples"], expect = draw(st.sampled_from(
            [(0, ValueError), (-5, ValueError), (1.5, TypeError), (None, TypeError)]))
    elif problem == "candidates_range":
        words = "candidates"
        kwargs["candidates"] = [0, draw(st.sampled_from([N, N + 5, -1]))]
    elif problem == "candidates_repeat":
        words = "candidates"
        kwargs["candidates"] = [n, n]
    elif problem == "candidates_float":
        words, expect = "candidates", TypeError
        kwargs["candidates"] = np.array([0.0, 1.0])
    elif problem == "candidates_2d":
        words = "candidates"
        kwargs["candidates"] = np.zeros((1, 1), dtype=int)
    elif problem == "random_state":
        words = "random_state"
        kwargs["random_state"] = draw(st.sampled_from([-1, 2**32, 1.5, "seed", np.nan]))
    elif problem == "dtype":
        words, expect = "dtype", TypeError
        kwargs["dtype"] = draw(st.sampled_from([np.float16, np.int64, "complex", object]))
    elif problem == "tol":
        words = "tol"
        kwargs["tol"] = draw(st.sampled_from([-1e-3, np.inf, np.nan]))
    elif problem == "tol_type":
        words, expect = "tol", TypeError
        kwargs["tol"] = draw(st.sampled_from(["0.1", None, True]))
    elif problem == "saturation":
        words = "saturation"
        kwargs["saturation"] = "stop"
    elif problem == "saturation_type":
        words, expect = "saturation", TypeError
        kwargs["saturation"] = None
    elif problem == "extra_rounds":
        words = "extra_rounds"
        kwargs["extra_rounds"], expect = draw(st.sampled_from([(-1, ValueError),
                                                               (2.0, TypeError)]))
    elif problem == "num_threads":
        words = "num_threads"
        kwargs["num_threads"], expect = draw(st.sampled_from([(0, ValueError),
                                                              (1.0, TypeError)]))
    elif problem == "memory_budget":
        words = "memory_budget"
        kwargs["memory_budget"], expect = draw(st.sampled_from(
            [(0, ValueError), (-1, ValueError), ("lots", ValueError), ([], TypeError)]))
    elif problem == "progress":
        words, expect = "progress", TypeError
        kwargs["progress"] = "yes"
    note(f"problem={problem}")
    return probs_N_K_C, batch_size, kwargs, expect, words


@given(call=bad_calls())
def test_bad_input_raises_before_any_work(backend, call, monkeypatch):
    probs_N_K_C, batch_size, kwargs, expect, words = call

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")
    monkeypatch.setattr(_pool, "ArrayPool", no_work)
    monkeypatch.setattr(_greedy, "select", no_work)
    with pytest.raises(expect, match=words):
        bf.batchbald(probs_N_K_C, batch_size, **kwargs)


@given(data=st.data())
def test_redux_adapter_equals_the_oracle(backend, data):
    probs_N_K_C = data.draw(pools())
    N, K, C = probs_N_K_C.shape
    batch_size = data.draw(batch_sizes(N))
    assume(C ** min(batch_size, N) <= 256)
    with np.errstate(divide="ignore"):
        log_probs_N_K_C = np.log(probs_N_K_C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        batch = redux.get_batchbald_batch(log_probs_N_K_C, batch_size, 256)
    exact_N_K_C = np.exp(log_probs_N_K_C)
    result = bf.BatchResult(**{name: None for name in bf.BatchResult.__dataclass_fields__}
                            | {"indices": np.array(batch.indices, dtype=np.int64),
                               "scores": np.array(batch.scores)})
    check_exact_picks(result, exact_N_K_C, None, False)
    bald = redux.get_bald_batch(log_probs_N_K_C, batch_size)
    scores_N = bf.bald(log_probs_N_K_C, log_probs=True)
    assert bald.indices == _search.top_k(scores_N, batch_size).tolist()


@given(data=st.data())
def test_skactiveml_adapter_equals_scikit_activeml(backend, data):
    skpool = pytest.importorskip("skactiveml.pool")
    from batchbald_fast import skactiveml as fast

    probs_N_K_C = data.draw(pools(max_N=25, max_K=6, max_C=4, min_C=2))  # as it needs
    N, K, C = probs_N_K_C.shape
    probas_K_N_C = np.ascontiguousarray(probs_N_K_C.transpose(1, 0, 2))
    batch_size = data.draw(st.integers(1, N))
    n_MC_samples = data.draw(st.sampled_from([None, 1, 5, 50]))
    # Fewer than K: scikit-activeml's sampled steps give nan (ours draw one per member).
    assume(n_MC_samples is None or n_MC_samples >= K)
    seed = data.draw(st.integers(0, 2**31))
    before = probas_K_N_C.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fast.batch_bald(probas_K_N_C, batch_size, n_MC_samples,
                               random_state=np.random.RandomState(seed))
        theirs = skpool.batch_bald(probas_K_N_C.copy(), batch_size, n_MC_samples,
                                   random_state=np.random.RandomState(seed))
    np.testing.assert_array_equal(probas_K_N_C, before)
    for t in range(batch_size):
        np.testing.assert_array_equal(np.isnan(ours[t]), np.isnan(theirs[t]))
        np.testing.assert_allclose(ours[t], theirs[t], rtol=0, atol=1e-10)
        if t + 1 < batch_size:
            ours_pick = np.flatnonzero(np.isnan(ours[t + 1]) & ~np.isnan(ours[t]))
            theirs_pick = np.flatnonzero(np.isnan(theirs[t + 1]) & ~np.isnan(theirs[t]))
            if ours_pick[0] != theirs_pick[0]:
                # Utilities a few ulps apart (K = 1: all of them 0 but for rounding):
                # the two sums' rounding orders them; the batches part from here.
                note(f"step {t}: picks {ours_pick[0]} and {theirs_pick[0]}")
                assert abs(ours[t, ours_pick[0]] - ours[t, theirs_pick[0]]) <= 1e-12
                break


@given(data=st.data())
def test_baal_adapter_equals_the_oracle_and_baals_bald(backend, data):
    pytest.importorskip("torch")
    heuristics = pytest.importorskip("baal.active.heuristics")
    from batchbald_fast import baal as fast

    probs_N_K_C = data.draw(pools(max_K=5, min_C=2))
    N, K, C = probs_N_K_C.shape
    batch_size = data.draw(st.integers(1, N))
    assume(C ** batch_size <= 256)
    predictions_N_C_K = np.ascontiguousarray(probs_N_K_C.transpose(0, 2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        # num_draw · K configurations: every step exact.
        ranks = fast.BatchBALD(batch_size, num_draw=256)(predictions_N_C_K)
    assert sorted(ranks.tolist()) == list(range(N))
    result = bf.BatchResult(**{name: None for name in bf.BatchResult.__dataclass_fields__}
                            | {"indices": np.asarray(ranks[:batch_size]),
                               "scores": np.full(batch_size, np.nan)})
    check_exact_picks(result, probs_N_K_C, None, False, scores=False)
    np.testing.assert_allclose(fast.BALD().compute_score(predictions_N_C_K),
                               heuristics.BALD().compute_score(predictions_N_C_K),
                               rtol=0, atol=1e-6)
