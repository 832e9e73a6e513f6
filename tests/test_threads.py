"""Threads sized to the work, limits honoured, no thread of ours left running."""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import batchbald_fast as bf
from batchbald_fast import _kernels_numpy, _threads
from batchbald_fast._backend import _kernels_compiled

from conftest import random_probs

needs_openmp = pytest.mark.skipif(
    _kernels_compiled is None or not _kernels_compiled.OPENMP_ENABLED,
    reason="compiled extension with OpenMP not built")

MIN = _threads.MIN_WORK_PER_THREAD


@pytest.fixture
def every_call_threaded(monkeypatch):
    """Any call large enough for every thread, on a machine with every core free."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "free_cores", lambda: 64)


def test_work_of_a_call_by_hand():
    # n·M·C multiply-add rows of K, plus one log per (candidate, configuration, class).
    assert _threads.score_work(400, 10, 10, 2) == 400 * 10 * 2 * (10 + _threads.LOG_COST)
    assert _threads.entropy_work(4000, 2) == 4000 * 2 * _threads.LOG_COST


@pytest.mark.parametrize("work, limit, expected", [
    (0, 8, 1), (1, 8, 1), (MIN - 1, 8, 1), (2 * MIN - 1, 8, 1),  # too small for a second
    (2 * MIN, 8, 2), (3 * MIN + 5, 8, 3), (100 * MIN, 8, 8),      # one per MIN, up to limit
    (100 * MIN, 1, 1), (100 * MIN, 2, 2), (2 * MIN, 1, 1),
])
def test_threads_for_work(work, limit, expected):
    assert _threads.threads_for_work(work, limit) == expected


@pytest.mark.parametrize("free, expected", [
    (8, 4),  # a quiet machine: as many as the work and the limit allow
    (2, 2),
    (1, 1),  # a BLAS thread still spinning on one of two cores: its core is left to it
    (0, 1),  # never fewer than one
])
def test_threads_for_leaves_cores_to_running_threads(monkeypatch, free, expected):
    monkeypatch.setattr(_threads, "free_cores", lambda: free)
    assert _threads.threads_for(100 * MIN, 4) == expected


def test_threads_for_looks_at_free_cores_only_when_it_matters(monkeypatch):
    def fail():
        raise AssertionError("free_cores called")
    monkeypatch.setattr(_threads, "free_cores", fail)
    assert _threads.threads_for(MIN, 8) == 1  # small: one thread anyway
    assert _threads.threads_for(100 * MIN, 1) == 1  # the limit says one


@pytest.mark.parametrize("loadavg, expected", [
    ("0.52 0.31 0.20 3/250 12345\n", 2),  # 3 runnable, the calling thread among them
    ("0.00 0.00 0.00 1/90 7\n", 0),
    ("garbage\n", 0),
    (None, 0),  # no /proc/loadavg: nothing known to be running
])
def test_running_elsewhere_reads_proc_loadavg(monkeypatch, tmp_path, loadavg, expected):
    path = tmp_path / "loadavg"
    if loadavg is not None:
        path.write_text(loadavg)
    monkeypatch.setattr(_threads, "_LOADAVG", str(path))
    assert _threads.running_elsewhere() == expected


@pytest.mark.parametrize("running, expected", [(0, 4), (1, 3), (9, 0)])
def test_free_cores(monkeypatch, running, expected):
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(_threads, "running_elsewhere", lambda: running)
    assert _threads.free_cores() == expected


@pytest.mark.parametrize("limit, runs", [
    (1, [(0, 4), (4, 8), (8, 10)]),  # DECISION_WORK units a run
    (2, [(0, 8), (8, 10)]),          # DECISION_WORK units per thread allowed
])
def test_chunks_cut_long_calls(monkeypatch, limit, runs):
    monkeypatch.setattr(_threads, "threads_for", lambda work, limit: 1)
    item_work = _threads.DECISION_WORK // 4
    assert [(a, b) for a, b, _ in _threads.chunks(10, item_work, limit)] == runs
    assert list(_threads.chunks(3, 0, limit)) == [(0, 3, 1)]


def test_chunks_decide_as_each_starts(monkeypatch):
    """A BLAS thread spins while the first chunk starts, then stops: the second gets both
    cores."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    free = iter([1, 2])
    monkeypatch.setattr(_threads, "free_cores", lambda: next(free))
    runs = _threads.chunks(4, _threads.DECISION_WORK, 2)
    assert next(runs) == (0, 2, 1)
    assert next(runs) == (2, 4, 2)


@pytest.mark.parametrize("n, M, K, C", [
    (400, 8, 10, 2), (400, 10, 10, 2),  # the seed loop: 400 points, 10 members, b = 4
    (2000, 1, 20, 2), (64, 128, 20, 2),  # W1's first and largest calls
])
def test_small_calls_stay_on_one_thread(n, M, K, C):
    assert _threads.threads_for_work(_threads.score_work(n, M, K, C), 64) == 1


def test_large_calls_use_every_thread_allowed():
    # W2's full scoring of 10000 candidates against 128 bound rows (K = 20, C = 10).
    assert _threads.threads_for_work(_threads.score_work(10_000, 128, 20, 10), 4) == 4


@pytest.fixture
def threads_asked(monkeypatch):
    """Every ``threads_for(work, limit)`` the kernels ask, with the real answer."""
    calls = []
    real = _threads.threads_for

    def spy(work, limit):
        calls.append((work, limit))
        return real(work, limit)
    monkeypatch.setattr(_threads, "threads_for", spy)
    return calls


def _case(N=30, M=7, K=5, C=3):
    rng = np.random.default_rng(0)
    probs_N_K_C = random_probs(rng, N, K, C)
    joint_M_K = rng.random((M, K)) / K
    return joint_M_K, np.ones(M), probs_N_K_C, np.arange(N, dtype=np.intp), np.empty(N)


@needs_openmp
@pytest.mark.parametrize("num_threads", [1, 3, None])
def test_compiled_kernels_size_threads_by_work_within_the_limit(threads_asked, num_threads):
    joint_M_K, weights_M, probs_N_K_C, candidates, out = _case()
    _kernels_compiled.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out,
                                       num_threads)
    _kernels_compiled.entropy_rows(probs_N_K_C.reshape(-1, 3), np.empty(150), num_threads)
    limit = _kernels_compiled.max_threads() if num_threads is None else num_threads
    assert threads_asked == [(_threads.score_work(30, 7, 5, 3), limit),
                             (_threads.entropy_work(150, 3), limit)]


@needs_openmp
def test_compiled_kernels_honour_openmp_limits(threads_asked):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    joint_M_K, weights_M, probs_N_K_C, candidates, out = _case()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        _kernels_compiled.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates,
                                           out)
    assert threads_asked[-1][1] == 1


@needs_openmp
def test_omp_num_threads_is_the_default_limit():
    code = "import batchbald_fast as bf; print(bf.backend_info()['num_threads'])"
    env = dict(os.environ, OMP_NUM_THREADS="1", BATCHBALD_FAST_BACKEND="cython")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(bf.__file__)))
    assert out.stdout.strip() == "1"


@pytest.fixture
def blas_limits_asked(monkeypatch):
    """Every BLAS limit the NumPy kernels set."""
    calls = []

    def spy(num_threads):
        calls.append(num_threads)
        return contextlib.nullcontext()
    monkeypatch.setattr(_threads, "blas_limit", spy)
    return calls


@pytest.mark.parametrize("num_threads", [2, 3])
def test_numpy_kernels_size_blas_threads_by_work(blas_limits_asked, monkeypatch, num_threads):
    joint_M_K, weights_M, probs_N_K_C, candidates, out = _case()
    _kernels_numpy.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out,
                                    num_threads)
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)  # now every call is large
    monkeypatch.setattr(_threads, "free_cores", lambda: 0)  # BLAS's own: not in the way
    _kernels_numpy.score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out,
                                    num_threads)
    assert blas_limits_asked == [1, num_threads]


def test_numpy_kernels_default_to_the_blas_pool(blas_limits_asked, monkeypatch,
                                                every_call_threaded):
    monkeypatch.setattr(_threads, "blas_threads", lambda: 5)
    _kernels_numpy.score_candidates(*_case())
    assert blas_limits_asked == [5]


_NO_THREAD_BEHIND = """
import os, sys, time
import numpy as np
import threadpoolctl
from batchbald_fast import _threads
from batchbald_fast._backend import _kernels_compiled as kernels
_threads.MIN_WORK_PER_THREAD = 1  # every call large enough for every thread
_threads.free_cores = lambda: 64
rng = np.random.default_rng(0)
probs_N_K_C = rng.dirichlet(np.ones(3), size=(200, 5))
joint_M_K = rng.random((7, 5)) / 5
live = lambda: set(os.listdir("/proc/self/task"))
before = live()
with threadpoolctl.threadpool_limits(3, user_api="openmp"):
    kernels.score_candidates(joint_M_K, np.ones(7), probs_N_K_C,
                             np.arange(200, dtype=np.intp), np.empty(200), 3)
    kernels.entropy_rows(probs_N_K_C.reshape(-1, 3), np.empty(1000), 3)
    # Released threads end on their own: give them a moment to leave /proc.
    deadline = time.monotonic() + 5
    while live() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    left = live() - before
    limit = kernels.max_threads()
print(len(left), limit)
"""


@needs_openmp
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_threaded_calls_leave_no_thread_behind():
    if not _kernels_compiled.RELEASES_THREADS:
        pytest.skip("built without omp_pause_resource_all")
    pytest.importorskip("threadpoolctl")
    # A fresh interpreter: in this one, threads of other libraries (a Dask cluster's, say)
    # may start at any moment and would be counted as ours.
    root = os.path.dirname(os.path.dirname(os.path.abspath(bf.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", _NO_THREAD_BEHIND], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    # No thread left running, and releasing them keeps the limit the caller set.
    assert out == ["0", "3"]


def test_threaded_and_single_thread_runs_agree(backend, monkeypatch):
    rng = np.random.default_rng(1)
    probs_N_K_C = random_probs(rng, 60, 6, 3)
    single = bf.batchbald(probs_N_K_C, 5, num_samples=50, random_state=0, num_threads=1)
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "free_cores", lambda: 64)
    threaded = bf.batchbald(probs_N_K_C, 5, num_samples=50, random_state=0, num_threads=2)
    np.testing.assert_array_equal(threaded.indices, single.indices)
    np.testing.assert_allclose(threaded.scores, single.scores, rtol=1e-12)


@needs_openmp
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunked_calls_give_the_same_scores(monkeypatch, dtype):
    """Long calls cut into runs of a few candidates (rows), alternately on 1 and 3 threads."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "DECISION_WORK", _threads.score_work(5, 7, 5, 3))
    free = iter([3, 1] * 1000)
    monkeypatch.setattr(_threads, "free_cores", lambda: next(free))
    joint_M_K, weights_M, probs_N_K_C, candidates, out = _case(N=40)
    expected = _kernels_numpy.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                               candidates, np.empty(40))
    _kernels_compiled.score_candidates(joint_M_K.astype(dtype), weights_M,
                                       probs_N_K_C.astype(dtype), candidates, out, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-12 if dtype == np.float64 else 1e-5)
    probs_R_C = probs_N_K_C.reshape(-1, 3)
    entropy_R = _kernels_compiled.entropy_rows(probs_R_C, np.empty(len(probs_R_C)), 3, 16)
    np.testing.assert_allclose(entropy_R, _kernels_numpy.entropy_rows(
        probs_R_C, np.empty(len(probs_R_C))), rtol=1e-12)


def test_numpy_backend_honours_blas_limits(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setenv("BATCHBALD_FAST_BACKEND", "numpy")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert bf.backend_info()["num_threads"] == 1
