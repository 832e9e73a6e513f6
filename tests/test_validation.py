"""Bad input is refused before any heavy work, with a message naming the problem."""

import numpy as np
import pytest

import batchbald_fast as bf
from conftest import random_probs


@pytest.fixture
def probs_N_K_C():
    return random_probs(np.random.default_rng(0), 6, 3, 4)


def bad(probs, index, value):
    probs = probs.copy()
    probs[index] = value
    return probs


@pytest.mark.parametrize("make, error, match", [
    (lambda p: p[0], ValueError, r"3 dimensions.*\(3, 4\)"),
    (lambda p: p[None], ValueError, "3 dimensions"),
    (lambda p: p[:0], ValueError, "must have no empty axis"),
    (lambda p: p[:, :0], ValueError, "must have no empty axis"),
    (lambda p: p[:, :, :0], ValueError, "must have no empty axis"),
    (lambda p: bad(p, (2, 1, 3), np.nan), ValueError, r"nan, first at index \(2, 1, 3\)"),
    (lambda p: bad(p, (4, 0, 1), np.inf), ValueError, r"inf, first at index \(4, 0, 1\)"),
    (lambda p: bad(p, (1, 2, 0), -np.inf), ValueError, r"inf, first at index \(1, 2, 0\)"),
    (lambda p: bad(p, (3, 2, 2), -0.1), ValueError, r"negative probability.*\(3, 2, 2\)"),
    (lambda p: bad(p, (5, 1, 0), p[5, 1, 0] + 0.01), ValueError,
     r"probs_N_K_C\[5, 1\] has sum over classes 1.01"),
    (lambda p: p.astype(complex), TypeError, "real numbers"),
    (lambda p: p > 0.5, TypeError, "real numbers"),
    (lambda p: p.astype(object), TypeError, "real numbers"),
    (lambda p: [["a"]], TypeError, "real numbers"),
])
def test_bad_probs(backend, probs_N_K_C, make, error, match):
    for fn in (lambda x: bf.batchbald(x, 2), bf.bald, bf.entropy, bf.conditional_entropy):
        with pytest.raises(error, match=match):
            fn(make(probs_N_K_C))


@pytest.mark.parametrize("make, match", [
    (lambda lp: bad(lp, (2, 1, 3), np.nan), r"nan, first at index \(2, 1, 3\)"),
    (lambda lp: bad(lp, (0, 2, 1), np.inf), r"above 0 \(inf\) at index \(0, 2, 1\)"),
    (lambda lp: bad(lp, (3, 0, 0), 0.5), r"above 0 \(0.5\) at index \(3, 0, 0\)"),
    (lambda lp: lp + 0.01, r"\[0, 0\] has logsumexp over classes 0.01"),
])
def test_bad_log_probs(backend, probs_N_K_C, make, match):
    with pytest.raises(ValueError, match=match):
        bf.batchbald(make(np.log(probs_N_K_C)), 2, log_probs=True)


def test_rows_within_tolerance_are_accepted(backend, probs_N_K_C):
    probs = probs_N_K_C * (1 + 5e-4)
    assert len(bf.batchbald(probs, 2).indices) == 2
    log_probs = np.log(probs_N_K_C)
    log_probs[:, :, 0] = -np.inf  # log 0 is a valid log-probability...
    log_probs -= np.log(np.exp(log_probs).sum(axis=2, keepdims=True))  # ...once renormalised
    assert len(bf.batchbald(log_probs, 2, log_probs=True).indices) == 2


@pytest.mark.parametrize("C", [1, 3, 10, 37])
def test_class_sums_are_the_exact_sums_rounded_and_do_not_depend_on_the_block(backend, C):
    """The row sums behind validation and the pool's statistics: each within an ulp or two
    of the exact sum (math.fsum), in float64 for float32 input, and the same bits for a
    row whatever block it is summed in."""
    import math

    from batchbald_fast._validation import class_sums
    values = np.random.default_rng(C).random((50, 7, C)).astype(np.float32)
    sums = class_sums(values)
    assert sums.dtype == np.float64 and sums.shape == (50, 7)
    exact = np.array([[math.fsum(map(float, row)) for row in point] for point in values])
    np.testing.assert_allclose(sums, exact, rtol=4 * np.finfo(np.float64).eps, atol=0)
    for n0, n1 in [(0, 1), (3, 10), (7, 50), (49, 50)]:
        np.testing.assert_array_equal(class_sums(values[n0:n1].copy()), sums[n0:n1])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": -1}, ValueError, "batch_size must be ≥ 0, got -1"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an integer"),
    ({"batch_size": True}, TypeError, "batch_size must be an integer"),
    ({"batch_size": "3"}, TypeError, "batch_size must be an integer"),
    ({"num_samples": 0}, ValueError, "num_samples must be ≥ 1, got 0"),
    ({"num_samples": 1.5}, TypeError, "num_samples must be an integer"),
    ({"candidates": [0, 6]}, ValueError, r"candidates\[1\] = 6 is out of range"),
    ({"candidates": [-1]}, ValueError, r"candidates\[0\] = -1 is out of range"),
    ({"candidates": [3, 1, 3]}, ValueError, r"candidates\[2\] = 3 repeats candidates\[0\]"),
    ({"candidates": [0.0, 1.0]}, TypeError, "integer indices"),
    ({"candidates": [[0, 1]]}, ValueError, "1-D"),
    # ValueError, as scikit-learn's check_random_state raises.
    ({"random_state": "seed"}, ValueError, "random_state must be None, an int"),
    ({"random_state": np.nan}, ValueError, "random_state must be None, an int"),
    ({"random_state": 1.5}, ValueError, "random_state must be None, an int"),
    ({"random_state": -1}, ValueError, "random_state must be None, an int"),
    ({"random_state": 2**32}, ValueError, "random_state must be None, an int"),
    ({"num_threads": 0}, ValueError, "num_threads must be ≥ 1"),
    ({"dtype": np.float16}, TypeError, "dtype must be numpy.float64 or numpy.float32"),
    ({"dtype": "int"}, TypeError, "dtype must be numpy.float64 or numpy.float32"),
    ({"tol": -1e-3}, ValueError, "tol must be finite and ≥ 0"),
    ({"tol": "small"}, TypeError, "tol must be a real number"),
])
def test_bad_arguments(backend, probs_N_K_C, kwargs, error, match):
    kwargs = {"batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        bf.batchbald(probs_N_K_C, **kwargs)


def test_numpy_integers_accepted(backend, probs_N_K_C):
    result = bf.batchbald(probs_N_K_C, np.int32(2), num_samples=np.int64(10),
                          candidates=np.array([1, 2, 3], dtype=np.uint8))
    assert len(result.indices) == 2


def test_unknown_backend_is_refused(monkeypatch, probs_N_K_C):
    monkeypatch.setenv("BATCHBALD_FAST_BACKEND", "fortran")
    with pytest.raises(ValueError, match="BATCHBALD_FAST_BACKEND must be one of"):
        bf.batchbald(probs_N_K_C, 2)


def test_backend_info(backend):
    info = bf.backend_info()
    assert info["backend"] == backend
    assert info["num_threads"] >= 1
    assert isinstance(info["openmp"], bool)


def test_bool_probabilities_refused_with_a_hint(backend, probs_N_K_C):
    onehot = probs_N_K_C == probs_N_K_C.max(axis=2, keepdims=True)
    with pytest.raises(TypeError, match=r"dtype bool; for one-hot predictions pass "
                                        r"probs_N_K_C.astype\(float\)"):
        bf.batchbald(onehot, 2)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int64])
def test_integer_one_hot_probabilities_accepted(backend, dtype):
    # Hard predictions of a committee: each member says one class with certainty.
    labels_N_K = np.random.default_rng(1).integers(3, size=(12, 5))
    onehot_N_K_C = np.eye(3)[labels_N_K]
    expected = bf.batchbald(onehot_N_K_C, 4)
    result = bf.batchbald(onehot_N_K_C.astype(dtype), 4)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.scores, expected.scores)


def test_float16_probabilities_upcast(backend):
    probs16 = random_probs(np.random.default_rng(2), 20, 4, 3).astype(np.float16)
    # float16 rounding leaves rows within the sum tolerance (relative error ≤ 2^-11).
    result = bf.batchbald(probs16, 3)
    expected = bf.batchbald(probs16.astype(np.float64), 3)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.scores, expected.scores)
    np.testing.assert_array_equal(bf.bald(probs16), bf.bald(probs16.astype(np.float64)))
