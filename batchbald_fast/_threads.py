"""How many threads a kernel call starts, and the BLAS limits the package sets.

A thread pays only when it gets enough work: starting one (or waking it) costs tens of µs
on a quiet machine, and on a busy one a parallel region waits for its last thread to get a
core — a scheduler time slice or more, milliseconds — even when that thread finds no work
left. So a call gets one thread per ``MIN_WORK_PER_THREAD`` units of work, at least one, at
most the limit it was given (:func:`threads_for_work`).

The cores a call can count on are fewer when other threads are running: right after the
caller's own BLAS work, OpenBLAS keeps its idle threads busy-waiting for 2^28 clock ticks
(~0.1 s) after every multithreaded call (``OPENBLAS_THREAD_TIMEOUT``), libgomp for
``GOMP_SPINCOUNT`` pauses (~ms); threadpoolctl can limit those pools but not stop a thread
already spinning. Other processes take cores too. So threads start only on the cores
that the threads running now leave free (Linux's count of runnable threads, in
``/proc/loadavg``: one read, ~10 µs; :func:`threads_for`), and a long call decides again
every ``DECISION_WORK`` units per thread (:func:`chunks`, ~60 ms): once the spinning ends,
its next chunk takes the freed core.

One unit is one multiply-add of the kernels' products; a logarithm (with its product and
sum) costs ``LOG_COST`` units. Measured single-threaded on the compiled float64 kernel
(2-core AMD EPYC): ~0.06 ns per multiply-add and ~2.5 ns per logarithm, so ``score_candidates`` on n
candidates against M configurations of K members and C classes costs
``n·M·C·(K + LOG_COST)`` units and ``entropy_rows`` on R rows of C classes ``R·C·LOG_COST``.
The bookkeeping kernels of sampled steps are counted in the same units (``EXP_COST``,
``ASSIGN_COST``, ``DRAW_COST``). ``MIN_WORK_PER_THREAD`` is ~0.5 ms of one thread's work: below it, starting and ending a
thread (tens of µs on a quiet machine) takes a fair share of what it could save. The calls of scikit-activeml's gallery loop
(n ≈ 400, M ≤ 10, K = 10, C = 2: 4·10⁵ units) and of the W1 workload (≤ 10⁶) run on one
thread.
"""

import os

from threadpoolctl import ThreadpoolController

LOG_COST = 40
# The sampled steps' bookkeeping kernels, in the same units (measured as LOG_COST was; the
# figures are in docs/architecture.md, "Threads for the bookkeeping kernels").
EXP_COST = 100
ASSIGN_COST = 4
DRAW_COST = 20
MIN_WORK_PER_THREAD = 2**23
# ~60 ms of one thread's work. Each chunk ends with its threads released and a tail where
# one thread waits for the other, so chunks must be long beside that tail; OpenBLAS's
# ~0.1 s of spinning then still costs at most a chunk or two on one thread
# (docs/architecture.md has the measurements).
DECISION_WORK = 2**30
_LOADAVG = "/proc/loadavg"

_controller = None


def score_work(n, M, K, C):
    """Units of work of scoring n candidates against M configurations (K members, C classes)."""
    return n * M * C * (K + LOG_COST)


def entropy_work(R, C):
    """Units of work of the entropies of R rows of C classes."""
    return R * C * LOG_COST


def exp_work(U, K):
    """Units of work of exponentiating U rows of K log-joint entries (``exp_rows``)."""
    return U * K * EXP_COST


def assign_work(M, G, K):
    """Units of work of assigning M rows of K entries among G centres (``nearest_centres``;
    ``nearest_subgroups`` with G the sub-centres of a row's group)."""
    return M * G * K * ASSIGN_COST


def draw_work(M, K, C):
    """Units of work of M draws' labels among C classes, each added to K log-joints
    (``draw_labels``)."""
    return M * (K + C) * DRAW_COST


def threads_for_work(work, limit):
    """Threads a call of ``work`` units can use: one per ``MIN_WORK_PER_THREAD``, in [1, limit]."""
    return max(1, min(int(limit), work // MIN_WORK_PER_THREAD))


def threads_for(work, limit):
    """Threads a call of ``work`` units starts now: :func:`threads_for_work`, and no more
    than the cores the threads running now leave free."""
    threads = threads_for_work(work, limit)
    if threads > 1:
        threads = max(1, min(threads, free_cores()))
    return threads


def chunks(n, item_work, limit):
    """Cut n items of ``item_work`` units each into runs of ``DECISION_WORK`` units per
    thread allowed, and decide each run's threads (:func:`threads_for`) as it starts.

    Yields
    ------
    start, stop, threads : int
    """
    size = max(1, DECISION_WORK * limit // max(1, item_work))
    for start in range(0, n, size):
        stop = min(n, start + size)
        yield start, stop, threads_for((stop - start) * item_work, limit)


def cpu_count():
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_cores():
    """Cores of the machine that the threads running now leave free (the machine's cores,
    as ``/proc/loadavg`` counts the machine's threads)."""
    return max(0, (os.cpu_count() or 1) - running_elsewhere())


def running_elsewhere():
    """Threads on the machine, other than the calling one, running or ready to run now
    (0 where ``/proc/loadavg`` does not exist)."""
    try:
        with open(_LOADAVG, "rb") as f:
            # "0.52 0.31 0.20 3/250 12345": runnable now / all threads, last pid.
            runnable = int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, runnable - 1)  # the calling thread is running


def _get_controller():
    global _controller
    if _controller is None:  # finding the libraries costs ~ms: do it once
        _controller = ThreadpoolController()
    return _controller


def blas_limit(num_threads):
    """A context in which BLAS runs on at most ``num_threads`` threads (None: as it is)."""
    return _get_controller().limit(limits=num_threads, user_api="blas")


def blas_threads():
    """The threads BLAS uses now: the largest pool of the BLAS libraries threadpoolctl
    finds, or the usable cores when it finds none (BLAS then threads as it sees fit)."""
    controllers = _get_controller().select(user_api="blas").lib_controllers
    return max([c.num_threads for c in controllers], default=cpu_count())
