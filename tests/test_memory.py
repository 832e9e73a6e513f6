"""The memory budget: estimates against traced allocations, refusals, the switch, settings."""

import tracemalloc

import numpy as np
import pytest

import batchbald_fast as bf
from batchbald_fast import _backend, _memory, _sizes, _threads, _validation, _workloads
from batchbald_fast._settings import Settings
from batchbald_fast.cli import main
from conftest import random_probs

GiB = 2**30


def traced_peak(call):
    """Peak bytes NumPy and Python allocated during ``call()`` (and its result)."""
    tracemalloc.start()
    try:
        result = call()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def estimate(probs_N_K_C, batch_size, num_samples, **settings):
    run = _memory.make_run(probs_N_K_C, len(probs_N_K_C), batch_size,
                           Settings(num_samples, _backend.kernels_for(), **settings))
    return run.peak(num_samples, _sizes.MAX_DRAW_BYTES)[0]


@pytest.mark.parametrize("N, K, C, b, num_samples, settings, slack", [
    # Exact steps: the joint, its extension and the scoring's scratch, as estimated
    # (scoring every candidate: bounds would leave the scratch of a few, below the worst
    # case the estimate covers).
    (200, 10, 2, 16, 2**15, {"tol": 1e-4, "lazy": False}, 1.5),
    (40, 20, 2, 17, 2**16, {"return_utilities": True}, 1.5),
    # Steps that sample anew, then steps that extend and refit their draws (where the
    # estimate assumes the draws merge and grow to the cap, which random draws do not).
    # (The estimate takes every draw as distinct; these merge, and fresh draws fill arrays
    # allocated once, so the traced peak sits a little further below it.)
    (60, 10, 2, 18, 5000, {"incremental": False}, 2.5),
    (60, 10, 2, 18, 5000, {"incremental": True}, 3),
    # Draws merge (most of a point's mass is on one class), so they grow to 16 times
    # their number: the worst case.
    (2000, 20, 10, 6, 20000, {"incremental": True, "tol": 1e-4}, 1.5),
    (2000, 20, 10, 6, 20000, {"incremental": True, "dtype": np.float32}, 1.5),
])
def test_estimate_bounds_the_traced_peak(backend, N, K, C, b, num_samples, settings, slack):
    probs_N_K_C = _workloads.make_probs(N, K, C, seed=1)
    # saturation="greedy": a restart after saturation goes back to small exact joints, so
    # only runs that keep extending reach the peak the estimate bounds.
    peak, result = traced_peak(lambda: bf.batchbald(
        probs_N_K_C, b, num_samples=num_samples, random_state=0, memory_budget="inf",
        saturation="greedy", **settings))
    estimated = estimate(probs_N_K_C, b, num_samples, **settings)
    assert peak <= estimated <= slack * peak, (peak, estimated, result.mode)


@pytest.mark.parametrize("free_cores", [None, 0])
@pytest.mark.parametrize("M, n, dtype", [(1, 7, np.float64), (5000, 300, np.float64),
                                         (100_000, 40, np.float64), (20_000, 100, np.float32),
                                         (5000, 13, np.float64)])
def test_kernel_scratch_estimate(backend, M, n, dtype, free_cores, monkeypatch):
    """The estimate for 2 threads bounds the call, also when the call gets one (no free
    core: a thread's panels of tiles grow)."""
    if free_cores is not None:
        monkeypatch.setattr(_threads, "free_cores", lambda: free_cores)
    rng = np.random.default_rng(0)
    K, C = 12, 5
    joint_M_K = rng.random((M, K)).astype(dtype)
    weights_M = np.ones(M)
    probs_N_K_C = random_probs(rng, n, K, C).astype(dtype)
    out = np.empty(n)
    candidates = np.arange(n)
    kernels = _backend.get_kernels()

    def score():
        return kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out, 2)

    score()  # the first call's one-off objects (the BLAS thread controller) are no tile
    peak, _ = traced_peak(score)
    # Beyond the arrays: the call's Python objects (memoryviews, float32's BLAS limit).
    assert peak <= kernels.scratch_bytes(M, K, C, n, np.dtype(dtype).itemsize, 2) + 16384


def test_huge_num_samples_raises_before_allocating(backend, monkeypatch):
    # The call: C = 2, 30 picks, 10^9 configurations: the exact joint alone would
    # reach 2^29 rows. The default budget is the available memory (8 GiB here).
    monkeypatch.delenv(_memory.ENV_VAR, raising=False)
    monkeypatch.setattr(_memory, "available_memory", lambda: 8 * GiB)
    probs_N_K_C = _workloads.make_probs(200, 10, 2)
    peak_before = tracemalloc.is_tracing()
    with pytest.raises(ValueError) as caught:
        traced_peak(lambda: bf.batchbald(probs_N_K_C, 30, num_samples=10**9))
    assert not peak_before
    error = caught.value
    assert isinstance(error, bf.MemoryBudgetError)
    message = str(error)
    # 2^28 rows held while 2^29 are built, 11 numbers each (joint and weight) in float64.
    assert error.needed >= 8 * 11 * (2**28 + 2**29)
    assert f"{error.needed / GiB:.1f} GiB" in message
    assert "memory budget of 8.0 GiB (the available memory)" in message
    assert "536870912 configurations" in message
    assert f"Lower num_samples=1000000000 to {error.max_num_samples}" in message
    for setting in ("memory_budget=", "BATCHBALD_FAST_MEMORY_BUDGET", "--memory-budget"):
        assert setting in message
    assert 2**20 <= error.max_num_samples < 10**9


def test_the_num_samples_the_error_names_fits(backend):
    probs_N_K_C = _workloads.make_probs(200, 10, 2)
    with pytest.raises(bf.MemoryBudgetError) as caught:
        bf.batchbald(probs_N_K_C, 20, num_samples=10**9, memory_budget="24MiB")
    fits = caught.value.max_num_samples
    peak, result = traced_peak(lambda: bf.batchbald(
        probs_N_K_C, 20, num_samples=fits, random_state=0, memory_budget="24MiB"))
    assert len(result.indices) == 20 and peak <= 24 * 2**20
    assert "sampled" in result.mode  # the budget bound: fewer configurations, no more


def test_over_budget_sampled_steps_give_up_extra_draws(backend):
    # Confident members: draws merge, so incremental sampling would add draws up to
    # _sizes.MAX_DRAW_BYTES. A budget below that peak but above the run without them
    # caps the extra draws (the cheaper mode), and the run stays within the budget.
    probs_N_K_C = _workloads.make_probs(300, 10, 10, scale=8.0, noise=0.5)
    run = _memory.make_run(probs_N_K_C, 300, 6, Settings(20000, _backend.kernels_for(),
                                                         incremental=True, tol=1e-4))
    without, _ = run.peak(20000, 0)
    with_all, _ = run.peak(20000, _sizes.MAX_DRAW_BYTES)
    assert without < with_all
    budget = (without + with_all) // 2
    cap = _memory.plan(run, 20000, budget, "test")
    assert 0 < cap < _sizes.MAX_DRAW_BYTES and run.peak(20000, cap)[0] <= budget
    peak, capped = traced_peak(lambda: bf.batchbald(
        probs_N_K_C, 6, num_samples=20000, random_state=0, memory_budget=budget))
    assert peak <= budget
    full = bf.batchbald(probs_N_K_C, 6, num_samples=20000, random_state=0,
                        memory_budget="inf")
    # Exact and pruned steps do not draw: the cap changes nothing there.
    first_sampled = list(full.mode).index("sampled") if "sampled" in full.mode else 6
    np.testing.assert_array_equal(capped.indices[:first_sampled + 1],
                                  full.indices[:first_sampled + 1])


def test_budget_from_argument_environment_or_available_memory(backend, monkeypatch):
    probs_N_K_C = _workloads.make_probs(30, 4, 3)

    def run(**kwargs):
        return bf.batchbald(probs_N_K_C, 6, num_samples=3**5, **kwargs).indices

    monkeypatch.setattr(_memory, "available_memory", lambda: 512 * 2**10)
    monkeypatch.delenv(_memory.ENV_VAR, raising=False)
    with pytest.raises(bf.MemoryBudgetError, match=r"512\.0 KiB \(the available memory\)"):
        run()
    monkeypatch.setenv(_memory.ENV_VAR, "2 GiB")
    assert len(run()) == 6
    monkeypatch.setenv(_memory.ENV_VAR, "100KiB")
    with pytest.raises(bf.MemoryBudgetError, match=r"BATCHBALD_FAST_MEMORY_BUDGET=100KiB"):
        run()
    # The argument wins over the environment; numbers are bytes.
    assert len(run(memory_budget=2 * GiB)) == 6
    assert len(run(memory_budget="inf")) == 6
    with pytest.raises(bf.MemoryBudgetError, match=r"memory_budget=1000"):
        run(memory_budget=1000)
    monkeypatch.setenv(_memory.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="BATCHBALD_FAST_MEMORY_BUDGET must be a number"):
        run()


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * 2**30), ("4 G", 4 * 2**30), ("512MB", 512 * 10**6), ("1.5kib", 1536),
    ("2e9", 2e9), (" 3 TB ", 3e12), ("inf", np.inf), (1024, 1024.0)])
def test_budget_units(text, expected):
    assert _validation.check_memory_budget(text) == expected


@pytest.mark.parametrize("value, error", [
    ("4 XB", ValueError), ("-1GiB", ValueError), (0, ValueError), ("nan", ValueError),
    (True, TypeError), ([1], TypeError)])
def test_bad_budgets(value, error):
    with pytest.raises(error, match="memory_budget"):
        _validation.check_memory_budget(value)


def test_available_memory_is_read():
    available = _memory.available_memory()
    assert available is None or 0 < available


def test_anchor_peaks_from_their_shapes():
    w3 = _workloads.WORKLOADS["W3"]  # N=50000, K=20, C=10, b=5, M=1000: joints to 1000
    assert _workloads._largest_joint(w3) == 1000
    # scikit-activeml: 3 arrays of N x M x C float64, and 3 of N x K x C.
    assert _workloads.ANCHOR_PEAK_BYTES["scikit-activeml"](w3) == 8 * (
        3 * 50000 * 1000 * 10 + 3 * 50000 * 20 * 10)
    # batchbald_redux: the same in chunks of 1024 candidates.
    assert _workloads.ANCHOR_PEAK_BYTES["batchbald_redux"](w3) == 8 * (
        3 * 1024 * 1000 * 10 + 3 * 50000 * 20 * 10)
    w5 = _workloads.WORKLOADS["W5"]  # C=2, b=4, M=10: exact to 2^3 = 8 rows
    assert _workloads._largest_joint(w5) == 8
    w2 = _workloads.WORKLOADS["W2"]  # C=10, b=10, M=10000: sampled, 500 per member
    assert _workloads._largest_joint(w2) == 10000
    reason = _workloads.skip_reason("scikit-activeml", w3, 4 * GiB)
    assert reason.startswith("predicted peak 11.4 GiB over the 4.0 GiB")
    assert _workloads.skip_reason("scikit-activeml", w5, 4 * GiB) is None
    assert _workloads.skip_reason("numpy", w3, 0) is None


def test_select_over_budget_is_one_line(tmp_path, capsys):
    path = tmp_path / "w5.npy"
    np.save(path, _workloads.WORKLOADS["W5"].probs())
    assert main(["select", str(path), "--batch-size", "4", "--memory-budget", "1KiB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory budget of 1.0 KiB" in err


def test_bench_skips_what_the_budget_cannot_hold(capsys):
    pytest.importorskip("skactiveml")
    assert main(["bench", "--workloads", "W5", "--runners", "numpy,scikit-activeml",
                 "--memory-budget", "1MiB", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-5:-3] == ["skipped", "skipped"]
    assert lines[2].startswith("numpy skipped on W5: the run needs an estimated")
    assert lines[3].startswith("scikit-activeml skipped on W5: predicted peak")


def test_a_dask_pools_budget_is_its_clients_which_does_not_grow_with_N(backend):
    # On Dask the per-point arrays and the kernels' scratch are the workers': the client's
    # estimate is the joints and contender rounds only, the same at any N; the in-memory
    # call on the same shape holds its N x K conditional entropies at least.
    da = pytest.importorskip("dask.array")

    def peak(probs_N_K_C, batch_size, num_samples):
        settings = Settings(num_samples, _backend.kernels_for())
        run = _memory.make_run(probs_N_K_C, len(probs_N_K_C), batch_size, settings)
        return run.peak(num_samples, _sizes.MAX_DRAW_BYTES)[0]

    on_dask = [peak(da.zeros((N, 20, 10), chunks=(125000, -1, -1), dtype=np.float32), 10,
                    10000) for N in (10**6, 10**7)]
    assert on_dask[0] == on_dask[1] < 1 * GiB
    in_memory = peak(np.broadcast_to(np.float32(0.1), (10**7, 20, 10)), 10, 10000)
    assert in_memory > on_dask[1] + 10**7 * 20 * 8
    # A budget the in-memory call's estimate is over, and the Dask call's is not.
    values = random_probs(np.random.default_rng(0), 200000, 4, 2)
    probs = da.from_array(values, chunks=(50000, -1, -1))
    budget = peak(probs, 2, 4)
    assert budget < peak(values, 2, 4)
    result = bf.batchbald(probs, 2, num_samples=4, random_state=0, memory_budget=budget)
    np.testing.assert_array_equal(result.indices, bf.batchbald(values, 2, num_samples=4,
                                                               random_state=0).indices)
    with pytest.raises(_memory.MemoryBudgetError):
        bf.batchbald(values, 2, num_samples=4, random_state=0, memory_budget=budget)
