"""epig: per-point EPIG and its standard error against the brute-force definition."""

import numpy as np
import pytest

import oracle
from batchbald_fast import MemoryBudgetError, _backend, _epig, epig
from conftest import random_probs

ATOL = 1e-10


@pytest.mark.parametrize("N, T, K, C", [(7, 5, 4, 3), (5, 9, 1, 4), (4, 3, 6, 1), (6, 2, 3, 2),
                                        (3, 4, 5, 7)])
def test_matches_the_definition(backend, N, T, K, C):
    rng = np.random.default_rng(N * 100 + T)
    probs = random_probs(rng, N, K, C, zeros=True)
    targets = random_probs(rng, T, K, C, zeros=True)
    expected, errors = oracle.epig(probs, targets)

    scores, std_errors = epig(probs, targets, return_std_error=True)

    np.testing.assert_allclose(scores, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(std_errors, errors, rtol=0, atol=ATOL)
    np.testing.assert_allclose(epig(probs, targets), expected, rtol=0, atol=ATOL)
    assert scores.dtype == np.float64 and scores.shape == (N,)


def test_blocks_of_points_and_targets(backend, monkeypatch):
    # Blocks of 2 points and 3 targets: every sum crosses blocks, the last ones partial.
    monkeypatch.setattr(_epig, "OUT_BLOCK_BYTES", 8 * 3 * 2)
    monkeypatch.setattr(_epig.Plan, "_target_block", staticmethod(lambda *args: 3))
    rng = np.random.default_rng(1)
    probs = random_probs(rng, 5, 4, 3, zeros=True)
    targets = random_probs(rng, 8, 4, 3, zeros=True)
    plan = _epig.Plan(_backend.kernels_for(1), probs.shape, 8, True)
    assert (plan.points, plan.targets) == (2, 3)
    expected, errors = oracle.epig(probs, targets)

    scores, std_errors = epig(probs, targets, return_std_error=True)

    np.testing.assert_allclose(scores, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(std_errors, errors, rtol=0, atol=ATOL)


@pytest.mark.parametrize("in_place", [True, False])
def test_scores_alone_in_blocks_of_points(backend, monkeypatch, in_place):
    # Without standard errors every target's rows go to one kernel call a block of points:
    # blocks of 2 points (gathered from a strided pool) or all at once (in place).
    monkeypatch.setattr(_epig._pool, "BLOCK_VALUES", 2 * 4 * 3)
    rng = np.random.default_rng(9)
    probs = random_probs(rng, 5, 4, 3, zeros=True)
    targets = random_probs(rng, 8, 4, 3, zeros=True)
    pool = probs if in_place else np.asfortranarray(probs)
    plan = _epig.Plan(_backend.kernels_for(1), probs.shape, 8, in_place, spread=False)
    assert (plan.points, plan.targets) == ((5, 8) if in_place else (2, 8))
    expected, _ = oracle.epig(probs, targets)

    np.testing.assert_allclose(epig(pool, targets), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(epig(pool, targets, dtype=np.float32), expected, rtol=0,
                               atol=1e-5)


def test_known_values(backend):
    # One posterior sample: y and y* independent, EPIG 0. Two members that disagree
    # completely on both points, certain each: y determines y*, EPIG = ln 2.
    rng = np.random.default_rng(2)
    one_member = random_probs(rng, 4, 1, 3)
    np.testing.assert_allclose(epig(one_member, one_member[:2]), 0, atol=1e-15)
    split = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(epig(split, split), [np.log(2)], rtol=1e-15)
    # A point every member is certain of, alike, tells nothing.
    certain = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    np.testing.assert_array_equal(epig(certain, split), [0.0])


def test_pool_layouts_and_log_probs(backend, tmp_path):
    rng = np.random.default_rng(3)
    probs = random_probs(rng, 6, 4, 3).astype(np.float32)
    targets = random_probs(rng, 5, 4, 3)
    expected = epig(probs.astype(np.float64), targets)
    # float32 is read as its exact float64 values; any strides; a read-only memmap.
    np.testing.assert_array_equal(epig(probs, targets), expected)
    strided = np.asfortranarray(probs.astype(np.float64))
    np.testing.assert_allclose(epig(strided, targets), expected, rtol=0, atol=1e-14)
    path = tmp_path / "pool.npy"
    np.save(path, probs.astype(np.float64))
    mapped = np.load(path, mmap_mode="r")
    np.testing.assert_allclose(epig(mapped, targets), expected, rtol=0, atol=1e-14)
    positive = np.clip(probs.astype(np.float64), 1e-12, None)
    positive /= positive.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(epig(np.log(positive), np.log(targets), log_probs=True),
                               epig(positive, targets), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pool_dtype", [np.float32, np.float64])
def test_float32_compute(backend, monkeypatch, pool_dtype):
    # float32 products and logs: the definition within float32's error, whether the pool
    # is read in place (float32) or converted block by block (float64, strided); blocks
    # of 3 points and 2 targets, so that sums cross blocks.
    monkeypatch.setattr(_epig, "OUT_BLOCK_BYTES", 8 * 2 * 3)
    monkeypatch.setattr(_epig.Plan, "_target_block", staticmethod(lambda *args: 2))
    rng = np.random.default_rng(8)
    probs = random_probs(rng, 8, 6, 4, zeros=True)
    targets = random_probs(rng, 5, 6, 4, zeros=True)
    expected, errors = oracle.epig(probs, targets)
    pool = probs.astype(pool_dtype)
    if pool_dtype == np.float64:
        pool = np.asfortranarray(pool)
    before = pool.copy()

    scores, std_errors = epig(pool, targets, dtype=np.float32, return_std_error=True)

    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(std_errors, errors, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pool, before)


def test_inputs_not_written(backend):
    rng = np.random.default_rng(4)
    probs, targets = random_probs(rng, 5, 3, 4), random_probs(rng, 4, 3, 4)
    probs.flags.writeable = targets.flags.writeable = False
    before = probs.copy(), targets.copy()
    epig(probs, targets, return_std_error=True)
    np.testing.assert_array_equal(probs, before[0])
    np.testing.assert_array_equal(targets, before[1])


def test_threads_do_not_change_scores(backend):
    rng = np.random.default_rng(5)
    probs, targets = random_probs(rng, 40, 5, 3), random_probs(rng, 7, 5, 3)
    np.testing.assert_allclose(epig(probs, targets, num_threads=1),
                               epig(probs, targets, num_threads=2), rtol=0, atol=1e-14)


@pytest.mark.parametrize("targets_shape, match", [
    ((4, 5, 4), r"same K.*K=5, C=4 for the targets and K=3, C=4 for the pool"),
    ((4, 3, 2), r"same K.*K=3, C=2 for the targets and K=3, C=4 for the pool"),
])
def test_models_must_match(targets_shape, match):
    rng = np.random.default_rng(6)
    T, K, C = targets_shape
    with pytest.raises(ValueError, match=match):
        epig(random_probs(rng, 5, 3, 4), random_probs(rng, T, K, C))


def test_bad_input():
    rng = np.random.default_rng(7)
    probs, targets = random_probs(rng, 5, 3, 4), random_probs(rng, 4, 3, 4)
    bad = targets.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"target_probs_T_K_C holds nan.*\(2, 1, 0\)"):
        epig(probs, bad)
    with pytest.raises(ValueError, match="3 dimensions"):
        epig(probs, targets[0])
    with pytest.raises(ValueError, match="at least 2 targets"):
        epig(probs, targets[:1], return_std_error=True)
    assert epig(probs, targets[:1]).shape == (5,)
    with pytest.raises(TypeError, match="num_threads"):
        epig(probs, targets, num_threads=1.5)
    with pytest.raises(TypeError, match="dtype must be numpy.float64 or numpy.float32"):
        epig(probs, targets, dtype=np.float16)
    with pytest.raises(MemoryBudgetError, match="epig needs an estimated"):
        epig(probs, targets, memory_budget=1000)
