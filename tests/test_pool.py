"""The in-memory pool: kept in its own precision, read in place, never copied whole."""

import tracemalloc

import numpy as np

import batchbald_fast as bf
import oracle
from batchbald_fast import _backend, _pool, _validation
from batchbald_fast._workloads import make_probs


def assert_same(result, expected):
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_array_equal(result.mode, expected.mode)
    np.testing.assert_allclose(result.scores, expected.scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.utilities, expected.utilities, rtol=0, atol=1e-12)


def test_memmap_pool_is_read_in_place(backend, tmp_path):
    values = make_probs(500, 6, 4, seed=9).astype(np.float32)
    np.save(tmp_path / "nkc.npy", values)
    np.save(tmp_path / "knc.npy", values.transpose(1, 0, 2))
    np.save(tmp_path / "nck.npy", values.transpose(0, 2, 1))
    nkc = np.load(tmp_path / "nkc.npy", mmap_mode="r")
    assert np.shares_memory(_validation.check_pool(nkc), nkc)  # a view, no copy
    # float32 computed in float64: the float64 array of the same values, step for step
    expected = bf.batchbald(values.astype(np.float64), 6, num_samples=100, random_state=0,
                            return_utilities=True)
    assert_same(bf.batchbald(nkc, 6, num_samples=100, random_state=0,
                             return_utilities=True), expected)
    # Strided views (scikit-activeml's and baal's layouts) are read in place too.
    for name, axes in [("knc", (1, 0, 2)), ("nck", (0, 2, 1))]:
        view = np.load(tmp_path / f"{name}.npy", mmap_mode="r").transpose(*axes)
        assert_same(bf.batchbald(view, 6, num_samples=100, random_state=0,
                                 return_utilities=True), expected)


def test_first_pass_over_a_float32_pool_makes_no_copy(backend):
    values = make_probs(50_000, 20, 10, seed=10).astype(np.float32)  # 40 MB
    tracemalloc.start()
    try:
        pool = _pool.ArrayPool(_backend.kernels_for(), _validation.check_pool(values))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < values.nbytes / 2
    for n in (0, 1, 49_998, 49_999):
        np.testing.assert_allclose(pool.cond_entropy_N[n],
                                   oracle.conditional_entropy(values.astype(np.float64), n),
                                   rtol=0, atol=1e-12)


def test_gathered_blocks_of_any_size_give_the_same_joint_entropies(backend):
    """A float32 pool scored in float64 is gathered in blocks (smaller ones in Dask's
    tasks): every block size gives the same values, bit for bit, and they are the joint
    entropies of brute-force enumeration (the row-scale term to the rounding of its
    terms)."""
    values = make_probs(300, 6, 4, seed=11).astype(np.float32)
    exact = values[0].astype(np.float64)  # the joint of batch {0}: rows y_0, over members
    joint_M_K, weights_M = np.ascontiguousarray(exact.T) / 6, np.ones(4)
    xs = np.arange(1, 300)
    kernels = _backend.kernels_for()
    offset_K = np.linspace(-0.5, 0.5, 6)  # a sampled state's row-scale term
    results = [_pool.joint_entropy(kernels, values, joint_M_K, weights_M, offset_K, xs,
                                   block_values=block_values)
               for block_values in (_pool.BLOCK_VALUES, 2**9, 24, 1)]
    for weighted_n, offset_n in results[1:]:
        np.testing.assert_array_equal(weighted_n, results[0][0])
        np.testing.assert_array_equal(offset_n, results[0][1])
    np.testing.assert_allclose(results[0][1],
                               values[xs].astype(np.float64).sum(axis=2) @ offset_K,
                               rtol=0, atol=1e-15)
    for x in (1, 150, 299):
        np.testing.assert_allclose(results[0][0][x - 1],
                                   oracle.joint_entropy(values.astype(np.float64), [0, x]),
                                   rtol=0, atol=1e-12)


def test_a_points_offset_does_not_depend_on_the_call_that_scores_it(backend):
    """A sampled state's row-scale term of a point is the same bits whichever candidates
    share its call, in a pool that keeps its row sums (float64, read in place) and in one
    that gathers rows (float32): duplicate points scored in different calls tie exactly,
    as the tie rule and the noise flags need (BLAS's product of the rows with offset_K
    sums a call's last rows in another order). And it is Σ_k offset_K[k] Σ_c p[x, k, c]
    to the rounding of its terms."""
    import math
    values = make_probs(300, 20, 10, seed=12)
    offset_K = np.random.default_rng(12).normal(size=20)
    joint_M_K, weights_M = np.full((3, 20), 1 / 60), np.ones(3)
    kernels = _backend.kernels_for()
    for probs in (values, values.astype(np.float32)):
        pool = _pool.ArrayPool(kernels, probs)
        alone = np.array([pool.joint_entropy(joint_M_K, weights_M, offset_K, np.array([x]))[1][0]
                          for x in range(300)])
        for xs in (np.arange(300), np.arange(5, 86), np.arange(299, -1, -3)):
            _, offset_n = pool.joint_entropy(joint_M_K, weights_M, offset_K, xs)
            np.testing.assert_array_equal(offset_n, alone[xs])
        exact = [math.fsum(float(o) * float(p) for o, row in zip(offset_K, probs[x])
                           for p in row) for x in (0, 150, 299)]
        np.testing.assert_allclose(alone[[0, 150, 299]], exact, rtol=0, atol=1e-13)
