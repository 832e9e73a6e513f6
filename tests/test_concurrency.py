"""Calls from several threads at once, after fork, interrupted by SIGINT; results pickled.

Every wait has a timeout: a deadlock fails the test instead of hanging the suite.
"""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import batchbald_fast as bf
from batchbald_fast import _threads
from batchbald_fast._backend import _kernels_compiled

from conftest import assert_same_result, random_probs

pytestmark = pytest.mark.filterwarnings("ignore::batchbald_fast.SaturationWarning")
TIMEOUT = 300  # seconds: a safety net against deadlocks, far above any run here
POSIX = pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "fork"),
                           reason="needs fork and POSIX signals")


@pytest.fixture
def every_call_threaded(monkeypatch):
    """Every kernel call on as many OpenMP threads as it may have, so that calls from
    several Python threads run parallel regions at the same time."""
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "free_cores", lambda: 64)


def run_in_threads(fn, args_list):
    """``fn(*args)`` for each args in its own daemon thread, all started together; the
    results in order. A thread still running after TIMEOUT fails the test."""
    results, errors = [None] * len(args_list), []
    start = threading.Barrier(len(args_list))

    def work(i, args):
        try:
            start.wait(TIMEOUT)
            results[i] = fn(*args)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, args), daemon=True)
               for i, args in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a call did not return: deadlock?"
    if errors:
        raise errors[0]
    return results


def pools(count):
    """Pools with exact, pruned and sampled steps, and float32 ones."""
    rng = np.random.default_rng(3)
    return [random_probs(rng, 150, 6, 4, zeros=bool(i % 2)).astype(
        np.float32 if i % 3 == 2 else np.float64) for i in range(count)]


CALL = dict(num_samples=40, random_state=5, num_threads=2)


def test_threads_calling_at_once_get_the_results_of_calls_in_turn(backend,
                                                                  every_call_threaded):
    probs = pools(3)
    alone = [bf.batchbald(p, 8, **CALL) for p in probs]
    # Each pool from several threads at once, twice over.
    args_list = [(p, 8) for p in probs] * 2
    together = run_in_threads(lambda p, b: bf.batchbald(p, b, **CALL), args_list)
    for (p, _), result in zip(args_list, together):
        assert_same_result(result, alone[next(i for i, q in enumerate(probs) if q is p)])
    if backend == "cython":
        assert _kernels_compiled.regions_running() == 0


@pytest.mark.skipif(_kernels_compiled is None or not _kernels_compiled.OPENMP_ENABLED,
                    reason="compiled extension with OpenMP not built")
def test_releasing_threads_waits_for_other_threads_regions(every_call_threaded, monkeypatch):
    """A release while another thread's region runs would end that region's threads (libomp
    pauses the whole process): it is left to the last region of ours."""
    probs_N_K_C = random_probs(np.random.default_rng(4), 400, 8, 4)
    joint_M_K = np.random.default_rng(5).dirichlet(np.ones(8), size=300)
    weights_M = np.ones(300)
    candidates = np.arange(400, dtype=np.intp)
    expected = _kernels_compiled.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                                  candidates, np.empty(400), 1)
    seen = []

    def score(_):
        out = np.empty(400)
        for _ in range(20):
            _kernels_compiled.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                               candidates, out, 2)
            seen.append(_kernels_compiled.regions_running())
        return out

    for out in run_in_threads(score, [(i,) for i in range(4)]):
        np.testing.assert_array_equal(out, expected)
    assert _kernels_compiled.regions_running() == 0
    assert all(0 <= count <= 4 for count in seen)


def test_skactiveml_adapter_from_several_threads(backend):
    skpool = pytest.importorskip("skactiveml.pool")
    from batchbald_fast import skactiveml as fast

    probas = [np.ascontiguousarray(p.transpose(1, 0, 2)) for p in pools(3)]

    def query(p, seed):
        return fast.batch_bald(p, 5, 20, random_state=np.random.RandomState(seed))

    alone = [query(p, i) for i, p in enumerate(probas)]
    together = run_in_threads(query, [(p, i) for i, p in enumerate(probas)] * 2)
    for i, utilities in enumerate(together):
        np.testing.assert_array_equal(utilities, alone[i % 3])
    # And the same as scikit-activeml's own, for the first pool.
    theirs = skpool.batch_bald(probas[0].copy(), 5, 20, random_state=np.random.RandomState(0))
    np.testing.assert_allclose(alone[0], theirs, rtol=0, atol=1e-12)


def test_dask_pool_on_workers_with_several_threads(backend):
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    probs = pools(2)
    expected = [bf.batchbald(p, 6, **CALL) for p in probs]
    # Three threads in the worker: its tasks run our kernels side by side, each on two
    # threads of its own.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(1, timeout=TIMEOUT)
        lazy = [da.from_array(p, chunks=(25, -1, -1)) for p in probs]
        together = run_in_threads(lambda p: bf.batchbald(p, 6, **CALL), [(p,) for p in lazy])
    for result, reference in zip(together, expected):
        np.testing.assert_array_equal(result.indices, reference.indices)
        np.testing.assert_allclose(result.scores, reference.scores, rtol=0, atol=1e-12)


def run_script(code, **kwargs):
    """Run ``code`` in a fresh interpreter (the test's backend in its environment)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=os.path.dirname(__file__), **kwargs)


THREADED = """
    import os, signal, sys, time
    import numpy as np
    import batchbald_fast as bf
    from batchbald_fast import _threads
    from batchbald_fast._backend import _kernels_compiled
    _threads.MIN_WORK_PER_THREAD = 1
    _threads.free_cores = lambda: 64
"""


@POSIX
def test_a_call_after_fork_works(backend):
    # The parent's call starts (and releases) OpenMP threads; the child calls again: a
    # runtime whose threads were left running in the parent would hang the child.
    done = run_script(THREADED + """
    from conftest import assert_same_result, random_probs
    probs = random_probs(np.random.default_rng(0), 200, 6, 4)
    parent = bf.batchbald(probs, 6, num_samples=40, random_state=1, num_threads=2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = bf.batchbald(probs, 6, num_samples=40, random_state=1, num_threads=2)
        os.write(write, b"same" if np.array_equal(child.indices, parent.indices)
                 and np.array_equal(child.scores, parent.scores) else b"different")
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 120
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            sys.exit("the child's call did not return")
        time.sleep(0.05)
    print(os.read(read, 100).decode())
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same"


@POSIX
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_sigint_in_a_long_call_raises_keyboard_interrupt_promptly(backend):
    # A call of minutes, interrupted after its first pick: from the signal to the child's
    # KeyboardInterrupt, as the parent sees it; then the child counts its threads.
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(THREADED) + textwrap.dedent("""
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=(2000, 20))
    bf.batchbald(probs[:50], 2, num_threads=2)  # imports and first-call setup done
    before = len(os.listdir("/proc/self/task"))
    def started(done, total):
        if done == 1:
            print("started", flush=True)
    try:
        bf.batchbald(probs, 2000, num_threads=2, progress=started)
        print("finished")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        time.sleep(0.5)  # an OpenMP thread left spinning would still be there
        regions = _kernels_compiled.regions_running() if _kernels_compiled else 0
        print(len(os.listdir("/proc/self/task")) - before, regions, flush=True)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SIGINT's default disposition, whatever the shell that started the suite left.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        word = proc.stdout.readline().strip()
        latency = time.monotonic() - sent
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert word == "interrupted", err
    assert latency < 1.0  # the bound: the kernels return every ~60 ms of work
    extra_threads, regions = out.split()
    assert int(extra_threads) <= 0 and int(regions) == 0


@pytest.mark.parametrize("return_utilities", [False, True])
def test_batch_result_pickles(backend, return_utilities):
    probs_N_K_C = random_probs(np.random.default_rng(6), 40, 5, 3)
    result = bf.batchbald(probs_N_K_C, 6, num_samples=20, random_state=0,
                          return_utilities=return_utilities)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(result, protocol=protocol))
        assert type(copy) is bf.BatchResult
        assert_same_result(copy, result)
