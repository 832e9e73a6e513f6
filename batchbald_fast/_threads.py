"""How many threads a kernel call starts, and the BLAS limits the package sets.

A thread pays only when it gets enough work: starting one (or waking it) costs tens of µs
on a quiet machine, and on a busy one — the caller's BLAS threads still spinning after its
last product, other processes — a parallel region waits up to a scheduler time slice
(milliseconds) for a thread that was preempted. So a call gets one thread per
``MIN_WORK_PER_THREAD`` units of work, at least one, at most the limit it was given.

One unit is one multiply-add of the kernels' products; a logarithm (with its product and
sum) costs ``LOG_COST`` units. Measured single-threaded on the compiled float64 kernel
(AVX2): ~0.06 ns per multiply-add and ~2.5 ns per logarithm, so ``score_candidates`` on n
candidates against M configurations of K members and C classes costs
``n·M·C·(K + LOG_COST)`` units and ``entropy_rows`` on R rows of C classes ``R·C·LOG_COST``.
``MIN_WORK_PER_THREAD`` is ~0.5 ms of one thread's work: a region that short still gains
from a second thread on a quiet machine, and every shorter one would lose more on a busy
machine (one late thread) than it could gain. The calls of scikit-activeml's seed loop
(n ≈ 400, M ≤ 10, K = 10, C = 2: 4·10⁵ units) and of the W1 workload (≤ 10⁶) run on one
thread.
"""

from threadpoolctl import ThreadpoolController

LOG_COST = 40
MIN_WORK_PER_THREAD = 2**23

_controller = None


def score_work(n, M, K, C):
    """Units of work of scoring n candidates against M configurations (K members, C classes)."""
    return n * M * C * (K + LOG_COST)


def entropy_work(R, C):
    """Units of work of the entropies of R rows of C classes."""
    return R * C * LOG_COST


def threads_for(work, limit):
    """Threads a call of ``work`` units starts: one per ``MIN_WORK_PER_THREAD``, in [1, limit]."""
    return max(1, min(int(limit), work // MIN_WORK_PER_THREAD))


def _get_controller():
    global _controller
    if _controller is None:  # finding the libraries costs ~ms: do it once
        _controller = ThreadpoolController()
    return _controller


def blas_limit(num_threads):
    """A context in which BLAS runs on at most ``num_threads`` threads (None: as it is)."""
    return _get_controller().limit(limits=num_threads, user_api="blas")


def blas_threads():
    """The threads BLAS uses now (the largest pool of the BLAS libraries loaded; 1 if none)."""
    controllers = _get_controller().select(user_api="blas").lib_controllers
    return max([c.num_threads for c in controllers], default=1)
