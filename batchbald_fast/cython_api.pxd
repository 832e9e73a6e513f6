# batchbald_fast's public Cython API: the compiled BatchBALD scoring kernel, for other
# Cython code.
#
#     from batchbald_fast.cython_api cimport ScorePlan, score_candidates_plan, score_candidates
#
# Build with Cython 3 and include_dirs = [the directory that holds the batchbald_fast
# package, numpy.get_include()]; at run time the extension module batchbald_fast._kernels
# must be importable (an install with the compiled backend: batchbald_fast.backend_info()
# says "compiled_available"). The names cimported from here are stable; everything else
# in _kernels.pxd and _kernels.pyx is private.
#
# What it computes
# ----------------
# For each candidate i, the weighted joint entropy of a joint state with that pool point:
#
#     out[i] = Σ_m weights_M[m] Σ_c −P[m, c] log P[m, c]    (0 · log 0 = 0)
#     P[m, c] = Σ_k joint_M_K[m, k] · probs_N_K_C[candidates[i], k, c]
#
# with the mixture's 1/K folded into joint_M_K by the caller. The empty batch is M = 1,
# joint_M_K = 1/K everywhere, weights 1: out is the entropy of each point's mean prediction.
# The exact joint of a batch A multiplies out its points' rows: J[(m, c), k] = J[m, k] ·
# p[a, k, c]. BatchBALD's utility of x is then out[x] − Σ_{a∈A} E_a − E_x, E_n being
# the members' mean entropy of point n (batchbald_fast.conditional_entropy).
#
# Contract (nothing is checked: the caller guarantees it, as for any nogil C routine)
# ----------------------------------------------------------------------------------
# - floating is float or double, the same for joint_M_K, probs_N_K_C and work. float32
#   runs the product and the log in float32; every sum is float64.
# - Shapes: joint_M_K (M, K), weights_M (M,), probs_N_K_C (N, K, C), candidates (n,),
#   out (n,), with M, K, C, n ≥ 1; every array C-contiguous (the memoryview types say so).
# - 0 ≤ candidates[i] < N: an index out of range reads outside probs_N_K_C. Candidates
#   may repeat and come in any order.
# - plan = score_candidates_plan(M, K, C, n, num_threads, sizeof(floating), 0) with the
#   call's M, K and C and an n at least the call's: one plan serves calls with fewer
#   candidates.
# - work has at least plan.num_threads rows of plan.work_size entries, acc at least
#   plan.num_threads rows of plan.acc_size float64 entries; both are scratch, overwritten.
#   Allocate them once, however you like (NumPy, cython.view.array, malloc and a
#   memoryview cast), and reuse them for every call whose plan is no larger.
# - out is written, nothing else is (joint_M_K, weights_M, probs_N_K_C, candidates are
#   read only).
#
# Threads and the GIL
# -------------------
# - Both functions are noexcept nogil and touch no Python object: call them with or
#   without the GIL (release it around long calls: with nogil: ...), from any thread.
# - score_candidates runs an OpenMP parallel region of plan.num_threads threads (1 when
#   batchbald_fast was built without OpenMP); score_candidates_plan(num_threads < 1) plans
#   omp_get_max_threads(). Thread t uses row t of work and acc, so calls running at the
#   same time (e.g. from your own prange) need their own work, acc and out; called from
#   inside a parallel region the inner region gets one thread unless nested parallelism
#   is on. Your extension and batchbald_fast should use the same OpenMP runtime.
# - The result does not depend on num_threads or the schedule: each candidate is scored
#   by one thread, summing the configurations in order.
# - float32 only: each thread calls BLAS sgemm (scipy's BLAS). Keep BLAS single-threaded
#   while several of these threads run (threadpoolctl.threadpool_limits(1, "blas"), or
#   OPENBLAS_NUM_THREADS=1), else each call starts its own BLAS threads on top. float64
#   uses no BLAS.

# The declarations
# ----------------
# Re-exported from _kernels.pxd, which must carry them (Cython declares a module's cdef
# functions in the .pxd of that module's name); cimport them from here, and only these:
#
#   ctypedef struct ScorePlan:          (read its fields, never set them)
#       Py_ssize_t rows, cols           joint rows per block, candidates per tile
#       int num_threads                 OpenMP threads of the call; rows of work and acc
#       Py_ssize_t work_size, acc_size  entries per thread of work and acc
#       Py_ssize_t panel                tiles a thread scores together
#
#   ScorePlan score_candidates_plan(Py_ssize_t M, Py_ssize_t K, Py_ssize_t C, Py_ssize_t n,
#                                   int num_threads, Py_ssize_t itemsize,
#                                   Py_ssize_t tile_bytes) noexcept nogil
#       itemsize = sizeof(floating) of the call (8: double, 4: float); num_threads < 1
#       means omp_get_max_threads(); tile_bytes < 1 means the tuned default (pass 0).
#       plan.num_threads never exceeds num_threads or the number of tiles. Plain
#       arithmetic: no allocation, no Python.
#
#   void score_candidates(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
#                         const floating[:, :, ::1] probs_N_K_C,
#                         const intp_t[::1] candidates, double[::1] out, ScorePlan plan,
#                         floating[:, ::1] work, double[:, ::1] acc) noexcept nogil

from batchbald_fast._kernels cimport ScorePlan, score_candidates_plan
from batchbald_fast._kernels cimport score_candidates_nogil as score_candidates
