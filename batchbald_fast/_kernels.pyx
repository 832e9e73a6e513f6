# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels: the twin of ``_kernels_numpy`` (same names, signatures and maths).

``score_candidates`` follows scikit-learn's pairwise-distances-reduction shape: candidates
are cut into tiles, OpenMP threads take tiles, and each tile's probabilities, gathered
as K × (tile·C), are multiplied by the joint and reduced to ``Σ_m w_m Σ_c −P log P``
while P is still in registers (a fused micro-kernel in ``_xlogx.h``) or, for float32
with many members, in cache (``sgemm`` on blocks of joint rows, then the log loop).

Every candidate is scored by one tile, summing over m in ascending order, so results do
not depend on thread count, schedule or tile shape beyond the rounding of the product.
That also lets the schedule be dynamic: on a shared machine a static schedule waits for
whichever thread was preempted (measured: 2 threads no faster than 1 with one busy
core; dynamic recovers most of the second core).

Threads are sized to the work and to the cores free now (``_threads``): small calls run
on the calling thread alone, and long ones are cut into chunks of ~60 ms (candidates or
rows), each deciding again. Each chunk that started threads ends them when done
(``omp_pause_resource_all``): OpenMP's idle threads otherwise spin for milliseconds
(libgomp: ``GOMP_SPINCOUNT``, ~8 ms on an EPYC) on cores the caller's next step wants.
The release waits for the last of our regions running in other Python threads.
"""

from contextlib import nullcontext

import numpy as np

from . import _threads
from ._threads import blas_limit

from cython cimport floating
from cython.parallel cimport prange, threadid
cimport numpy as cnp
from numpy cimport intp_t
from libc.stdint cimport int64_t, uint64_t
from scipy.linalg.cython_blas cimport sgemm

cdef extern from "_xlogx.h" nogil:
    void bbf_xlogx_accumulate_f(const float *P_M_J, const double *w_M, Py_ssize_t m0,
                                Py_ssize_t M, Py_ssize_t J, Py_ssize_t S, double *acc_GJ)
    void bbf_fused_tile_d(const double *A_K_J, const double *B_R_K, const double *w_R,
                          Py_ssize_t R, Py_ssize_t K, Py_ssize_t J, Py_ssize_t G,
                          double *acc_J, Py_ssize_t r0)
    void bbf_fused_tile_f(const float *A_K_J, const float *B_R_K, const double *w_R,
                          Py_ssize_t R, Py_ssize_t K, Py_ssize_t J, Py_ssize_t G,
                          double *acc_J, Py_ssize_t r0)
    void bbf_xlogx_d(const double *x, Py_ssize_t n, double *out)
    void bbf_xlogx_f(const float *x, Py_ssize_t n, double *out)
    void bbf_nearest_rows(const double *X_M_K, const double *L_K_G, Py_ssize_t m0,
                          Py_ssize_t m1, Py_ssize_t K, Py_ssize_t G, double *acc_G,
                          intp_t *out_M)
    void bbf_subgroup_rows(const double *X_M_K, const intp_t *parent_M,
                           const double *L_P_K_W, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t K,
                           Py_ssize_t W, double *acc, intp_t *out_M)
    int BBF_NEAREST_MR
    const char *BBF_DISPATCH_NAME
    int BBF_PAD_BYTES

cdef extern from *:
    """
    #define bbf_prefetch(p) __builtin_prefetch((const void *) (p), 0, 3)
    #ifdef _OPENMP
    #include <omp.h>
    #define BBF_OPENMP 1
    #define bbf_max_threads() omp_get_max_threads()
    #ifdef BBF_HAVE_OMP_PAUSE
    #define BBF_RELEASES_THREADS 1
    #define bbf_release_threads() ((void) omp_pause_resource_all(omp_pause_soft))
    #else
    #define BBF_RELEASES_THREADS 0
    #define bbf_release_threads() ((void) 0)
    #endif
    #else
    #define BBF_OPENMP 0
    #define bbf_max_threads() 1
    #define BBF_RELEASES_THREADS 0
    #define bbf_release_threads() ((void) 0)
    #endif
    """
    bint BBF_OPENMP
    bint BBF_RELEASES_THREADS
    void bbf_prefetch(const void *p) nogil
    int bbf_max_threads() nogil
    void bbf_release_threads() nogil

OPENMP_ENABLED = bool(BBF_OPENMP)
# Whether a call that started threads ends them before it returns (OpenMP 5.0's
# omp_pause_resource_all was found at build time).
RELEASES_THREADS = bool(BBF_RELEASES_THREADS)
LOG_DISPATCH = BBF_DISPATCH_NAME.decode()

cdef enum:
    # The fused kernel: the tile's probabilities (K × cols·C) stay in L1 while every joint
    # row streams past. sgemm, then the log (float32, K > _FUSED_F32_MAX_K): P
    # (rows × cols·C) stays in L2.
    _WORKING_SET_BYTES = 32 * 1024
    _GEMM_TILE_BYTES = 256 * 1024
    # float32 K up to which the fused kernel beats sgemm + the log pass (see _fused)
    _FUSED_F32_MAX_K = 128
    # Columns of P per sgemm tile: wide enough for full-width vectors and few BLAS calls,
    # narrow enough that P keeps many rows.
    _TARGET_COLUMNS = 160
    # Tiles a thread below which a call's tiles come in whole rounds of the threads
    _ROUNDED_TILES = 16
    # The fused kernel on a joint larger than this: a thread scores a panel of up to
    # _PANEL_TILES tiles together, each block of joint rows of this size passing all of
    # them while it is in L2, instead of the whole joint streaming from L3 or memory once
    # per tile (docs/algorithm.md, "Blocks of joint rows").
    _JOINT_BLOCK_BYTES = 128 * 1024
    _PANEL_TILES = 8
    # Row blocks are whole register blocks of every tile (MR = 8, 6 or 4 rows): each
    # tile's blocks of rows, and with them every sum, are those of the unblocked joint.
    _ROW_QUANTUM = 24
    # gather_rows asks for the row this many ahead while it copies one: rows scattered
    # over a pool larger than the caches are each a DRAM miss the hardware cannot predict.
    _GATHER_AHEAD = 8

WORKING_SET_BYTES = _WORKING_SET_BYTES

# Our parallel regions running now, in every Python thread; read and written only with the
# GIL held. The release runs with the GIL held too, when the count falls to 0: no region of
# ours runs or starts meanwhile. libgomp's pause frees only the calling thread's pool, but
# the standard leaves a pause during another thread's region unspecified, and LLVM's
# libomp pauses the whole process.
cdef int _regions_running = 0


def regions_running():
    """Our parallel regions running now, in every Python thread (0 between calls)."""
    return _regions_running


cdef inline void _region_starts(int nt):
    global _regions_running
    if nt > 1:
        _regions_running += 1


cdef inline void _region_ends(int nt):
    """After a region of ``nt`` threads: end the threads if no other region of ours runs."""
    global _regions_running
    if nt > 1:
        _regions_running -= 1
        if _regions_running == 0:
            bbf_release_threads()


def max_threads():
    """``omp_get_max_threads()``: the threads a parallel region starts (1 without OpenMP)."""
    return bbf_max_threads()


def _limit(num_threads):
    """Most threads a call may start: ``num_threads`` (None: ``omp_get_max_threads()``)."""
    if not BBF_OPENMP:
        return 1
    return max(1, int(bbf_max_threads() if num_threads is None else num_threads))


cdef ScorePlan score_candidates_plan(Py_ssize_t M, Py_ssize_t K, Py_ssize_t C,
                                     Py_ssize_t n, int num_threads, Py_ssize_t itemsize,
                                     Py_ssize_t tile_bytes) noexcept nogil:
    """Tile shape, threads and per-thread buffer sizes of one ``score_candidates_nogil`` call.

    The fused kernel: the gathered probabilities (K × cols·C) fit ``tile_bytes``; sgemm
    (float32, K > _FUSED_F32_MAX_K): P (rows × cols·C) fits ``tile_bytes``.
    ``num_threads < 1``: ``omp_get_max_threads()``; ``tile_bytes < 1``: the default of the
    dtype.
    """
    cdef ScorePlan plan
    cdef Py_ssize_t rows, cols, J, i, best, tiles, rounds
    if not BBF_OPENMP:
        num_threads = 1
    elif num_threads < 1:
        num_threads = max(1, bbf_max_threads())
    cdef bint fused = _fused(itemsize, K)
    if tile_bytes < 1:
        tile_bytes = _WORKING_SET_BYTES if fused else _GEMM_TILE_BYTES
    if fused:
        rows = M
        cols = max(1, tile_bytes // (itemsize * K * C))
        # Of the widths from half the budget up, the one with the least padding (zero
        # columns to whole register blocks), the widest among equals.
        best = cols
        for i in range(cols - 1, cols // 2, -1):
            if i * C * _padded(best * C, itemsize) > best * C * _padded(i * C, itemsize):
                best = i
        cols = best
    else:
        cols = max(1, _TARGET_COLUMNS // C)
        rows = max(1, min(M, tile_bytes // (itemsize * cols * C)))
        if rows == M:  # small joints: widen the tile instead
            cols = max(cols, tile_bytes // (itemsize * M * C))
    # Enough tiles for every thread, and no thread without a tile.
    cols = max(1, min(cols, (n + num_threads - 1) // num_threads))
    # Few tiles a thread (long joints: EPIG's T·C rows): whole rounds of them, else the
    # last tile runs alone while the other threads wait (a fair share of the call).
    tiles = (n + cols - 1) // cols
    if num_threads > 1 and tiles % num_threads and tiles < _ROUNDED_TILES * num_threads:
        cols = (n + tiles + num_threads - tiles % num_threads - 1) // (
            tiles + num_threads - tiles % num_threads)
    tiles = (n + cols - 1) // cols
    plan.panel = 1
    if fused and M * K * itemsize > _JOINT_BLOCK_BYTES and tiles >= 4 * num_threads:
        # Panels of equal size, in whole rounds of the threads; of 2 tiles they did not pay.
        rounds = (tiles + num_threads * _PANEL_TILES - 1) // (num_threads * _PANEL_TILES)
        plan.panel = (tiles + num_threads * rounds - 1) // (num_threads * rounds)
        rows = max(_ROW_QUANTUM,
                   _JOINT_BLOCK_BYTES // (K * itemsize) // _ROW_QUANTUM * _ROW_QUANTUM)
    plan.rows = rows
    plan.cols = cols
    plan.num_threads = <int> max(1, min(num_threads, (tiles + plan.panel - 1) // plan.panel))
    J = _tile_columns(cols, C, fused, itemsize)
    if fused:
        plan.work_size = plan.panel * K * J
        plan.acc_size = plan.panel * J
    else:
        plan.work_size = (K + rows) * J
        plan.acc_size = J
    return plan


cdef inline bint _fused(Py_ssize_t itemsize, Py_ssize_t K) noexcept nogil:
    """Whether the fused kernel scores this dtype and K, else sgemm, then the log: past
    ~128 members a float32 tile that fits L1 is too narrow to beat BLAS
    (docs/algorithm.md)."""
    return itemsize == 8 or K <= _FUSED_F32_MAX_K


cdef inline Py_ssize_t _tile_columns(Py_ssize_t width, Py_ssize_t C, bint fused,
                                     Py_ssize_t itemsize) noexcept nogil:
    """Columns J of a tile of ``width`` candidates: width·C, for the fused kernel padded to
    whole register blocks."""
    return _padded(width * C, itemsize) if fused else width * C


cdef inline Py_ssize_t _padded(Py_ssize_t J, Py_ssize_t itemsize) noexcept nogil:
    """J rounded up to whole register blocks of the fused kernel."""
    cdef Py_ssize_t step = BBF_PAD_BYTES // itemsize
    return (J + step - 1) // step * step


cdef inline void _sgemm(float *A_K_J, float *B_R_K, float *P_R_J,
                        int R, int K, int J) noexcept nogil:
    """``P_R_J = B_R_K @ A_K_J`` for row-major arrays (column-major BLAS: P^T = A^T B^T)."""
    cdef char trans = b"N"
    cdef float one = 1.0, zero = 0.0
    sgemm(&trans, &trans, &J, &R, &K, &one, A_K_J, &J, B_R_K, &K, &zero, P_R_J, &J)


cdef void score_candidates_nogil(
    const floating[:, ::1] joint_M_K,
    const double[::1] weights_M,
    const floating[:, :, ::1] probs_N_K_C,
    const intp_t[::1] candidates,
    double[::1] out,
    ScorePlan plan,
    floating[:, ::1] work,
    double[:, ::1] acc,
) noexcept nogil:
    """Tiled product + fused entropy reduction; see ``score_candidates`` and the contract
    in ``cython_api.pxd``.

    ``plan`` comes from ``score_candidates_plan``; ``work`` and ``acc`` have
    ``plan.num_threads`` rows of at least ``plan.work_size`` and ``plan.acc_size`` entries.
    """
    if candidates.shape[0] > 0:
        _score_tiles(joint_M_K, weights_M, probs_N_K_C, candidates, &out[0],
                     max(1, joint_M_K.shape[0]), plan, work, acc)


cdef void _score_tiles(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
                       const floating[:, :, ::1] probs_N_K_C, const intp_t[::1] candidates,
                       double *out_nG, Py_ssize_t S, ScorePlan plan, floating[:, ::1] work,
                       double[:, ::1] acc) noexcept nogil:
    """The tiles of a call: ``out_nG[i * G + g]`` is candidate i's weighted joint entropy
    with group g, the G = M / S groups of S consecutive rows (one group: the joint
    entropy). A thread takes a panel of tiles at a time; each tile's sums (a row of J per
    group) and gathered probabilities sit side by side in the thread's acc and work."""
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1]
    cdef Py_ssize_t C = probs_N_K_C.shape[2], n = candidates.shape[0]
    cdef Py_ssize_t G = (M + S - 1) // S
    cdef Py_ssize_t rows = plan.rows, cols = plan.cols, panel = plan.panel
    cdef Py_ssize_t num_tiles = (n + cols - 1) // cols
    cdef Py_ssize_t num_panels = (num_tiles + panel - 1) // panel
    cdef bint fused = _fused(sizeof(floating), K)
    cdef Py_ssize_t stride = _tile_columns(cols, C, fused, sizeof(floating))
    cdef Py_ssize_t q, first, last, tile, start, width, J, i, g, c, m0, R, tid
    cdef floating *A_K_J
    cdef floating *P_R_J
    cdef double *acc_GJ
    cdef double total

    for q in prange(num_panels, schedule="dynamic", num_threads=plan.num_threads,
                    nogil=True):
        tid = threadid()
        first = q * panel
        last = min(num_tiles, first + panel)
        for tile in range(first, last):
            start = tile * cols
            width = min(cols, n - start)
            J = _gather_tile(probs_N_K_C, candidates, start, width, fused,
                             &work[tid, (tile - first) * K * stride])
            acc_GJ = &acc[tid, (tile - first) * G * stride]
            for i in range(G * J):
                acc_GJ[i] = 0.0
        m0 = 0
        while m0 < M:
            R = min(rows, M - m0)
            for tile in range(first, last):
                width = min(cols, n - tile * cols)
                J = _tile_columns(width, C, fused, sizeof(floating))
                A_K_J = &work[tid, (tile - first) * K * stride]
                acc_GJ = &acc[tid, (tile - first) * G * stride]
                if floating is double:
                    bbf_fused_tile_d(A_K_J, &joint_M_K[m0, 0], &weights_M[m0], R, K, J, S,
                                     acc_GJ, m0)
                elif fused:
                    bbf_fused_tile_f(A_K_J, &joint_M_K[m0, 0], &weights_M[m0], R, K, J, S,
                                     acc_GJ, m0)
                else:  # one tile a panel
                    P_R_J = A_K_J + K * J
                    _sgemm(<float *> A_K_J, <float *> &joint_M_K[m0, 0], <float *> P_R_J,
                           <int> R, <int> K, <int> J)
                    bbf_xlogx_accumulate_f(<float *> P_R_J, &weights_M[m0], m0, R, J, S,
                                           acc_GJ)
            m0 = m0 + R
        for tile in range(first, last):
            start = tile * cols
            width = min(cols, n - start)
            J = _tile_columns(width, C, fused, sizeof(floating))
            acc_GJ = &acc[tid, (tile - first) * G * stride]
            for i in range(width):
                for g in range(G):
                    total = 0.0
                    for c in range(C):
                        total = total + acc_GJ[g * J + i * C + c]
                    out_nG[(start + i) * G + g] = -total


cdef inline Py_ssize_t _gather_tile(const floating[:, :, ::1] probs_N_K_C,
                                    const intp_t[::1] candidates, Py_ssize_t start,
                                    Py_ssize_t width, bint fused,
                                    floating *A_K_J) noexcept nogil:
    """The probabilities of ``candidates[start:start + width]`` as K × J (J: width·C, for
    the fused kernel padded with zero columns to whole register blocks, where P = 0 adds
    exactly 0): one product covers the whole tile. Returns J."""
    cdef Py_ssize_t K = probs_N_K_C.shape[1], C = probs_N_K_C.shape[2]
    cdef Py_ssize_t J = _tile_columns(width, C, fused, sizeof(floating)), i, k, c
    cdef const floating *src
    for i in range(width):
        src = &probs_N_K_C[candidates[start + i], 0, 0]
        for k in range(K):
            for c in range(C):
                A_K_J[k * J + i * C + c] = src[k * C + c]
    for k in range(K):
        for i in range(width * C, J):
            A_K_J[k * J + i] = 0.0
    return J


def scratch_bytes(M, K, C, n, itemsize, num_threads=None, tile_bytes=None, groups=1):
    """Most bytes ``score_candidates`` (``score_candidates_grouped`` with ``groups``
    groups) allocates to score n candidates against M rows on at most ``num_threads``
    threads: each thread's gathered tiles (and P in float32) and sums. A call may get
    fewer threads, and with them longer panels: the largest of those plans."""
    if n == 0:
        return 0
    cdef ScorePlan plan
    cdef Py_ssize_t most = 0
    for threads in range(1, _limit(num_threads) + 1):
        # Past 2^62 rows (estimates of huge joints) the plan no longer depends on M.
        plan = score_candidates_plan(min(M, 2**62), K, C, n, threads, itemsize,
                                     0 if tile_bytes is None else tile_bytes)
        most = max(most, plan.num_threads * (plan.work_size * itemsize
                                             + groups * plan.acc_size * 8))
    return most


def score_candidates(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
                     const floating[:, :, ::1] probs_N_K_C, const intp_t[::1] candidates,
                     double[::1] out, num_threads=None, tile_bytes=None):
    """Weighted joint entropy of the joint state with each candidate.

    ``out[i] = Σ_m weights_M[m] Σ_c −P log P`` with
    ``P[m, c] = Σ_k joint_M_K[m, k] · probs_N_K_C[candidates[i], k, c]``
    (the 1/K of the mixture is folded into ``joint_M_K`` by the caller); 0·log 0 = 0.

    Parameters
    ----------
    joint_M_K : ndarray of shape (M, K), float64 (or float32), C-contiguous
    weights_M : ndarray of shape (M,), float64
    probs_N_K_C : ndarray of shape (N, K, C), same dtype as ``joint_M_K``, C-contiguous
        With float32 inputs the GEMM and the log run in float32 and the sums over
        configurations and classes in float64.
    candidates : ndarray of shape (n,), intp
        Indices into the first axis of ``probs_N_K_C``, any order.
    out : ndarray of shape (n,), float64
        Written in place.
    num_threads : int or None
        Most OpenMP threads; None: ``omp_get_max_threads()``. Fewer when the call is
        small (``_threads.threads_for``). The float32 path with K > 128 calls BLAS from
        every thread, limited to one BLAS thread each (threadpoolctl).
    tile_bytes : int or None
        Per-thread working set of one tile: the gathered probabilities (K × tile·C,
        default 32 KiB: L1), or for float32 with K > 128 P (rows × tile·C, default
        256 KiB).

    Returns
    -------
    out : ndarray of shape (n,)
    """
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1]
    cdef Py_ssize_t C = probs_N_K_C.shape[2], n = candidates.shape[0]
    if probs_N_K_C.shape[1] != K or weights_M.shape[0] != M or out.shape[0] != n:
        raise ValueError("score_candidates: inconsistent shapes")
    if n == 0:
        return out.base
    if M == 0:
        out[:] = 0.0
        return out.base
    _check_indices(candidates, probs_N_K_C.shape[0])

    # sgemm is called from each of our threads: one BLAS thread each.
    with blas_limit(1) if not _fused(sizeof(floating), K) else nullcontext():
        for start, stop, nt in _threads.chunks(n, _threads.score_work(1, M, K, C),
                                               _limit(num_threads)):
            _score_chunk(joint_M_K, weights_M, probs_N_K_C, candidates[start:stop],
                         out[start:stop], M, nt, 0 if tile_bytes is None else tile_bytes)
    return out.base


def _check_indices(const intp_t[::1] candidates, intp_t N):
    """An out-of-range index would read wild memory without the GIL: refuse it first."""
    cdef Py_ssize_t i
    for i in range(candidates.shape[0]):
        if candidates[i] < 0 or candidates[i] >= N:
            raise IndexError(f"candidate {candidates[i]} out of range for N={N}")


def _score_chunk(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
                 const floating[:, :, ::1] probs_N_K_C, const intp_t[::1] candidates,
                 double[::1] out_nG, Py_ssize_t S, int nt, Py_ssize_t tile_bytes):
    """``_score_tiles`` on at most ``nt`` threads, which end when it returns: one owner
    of the call's plan and buffers."""
    cdef Py_ssize_t G = joint_M_K.shape[0] // S
    cdef ScorePlan plan = score_candidates_plan(
        joint_M_K.shape[0], joint_M_K.shape[1], probs_N_K_C.shape[2], candidates.shape[0],
        nt, sizeof(floating), tile_bytes)
    cdef floating[:, ::1] work = np.empty(
        (plan.num_threads, plan.work_size),
        dtype=np.float64 if floating is double else np.float32)
    cdef double[:, ::1] acc = np.empty((plan.num_threads, G * plan.acc_size))
    _region_starts(plan.num_threads)
    with nogil:
        _score_tiles(joint_M_K, weights_M, probs_N_K_C, candidates, &out_nG[0], S, plan,
                     work, acc)
    _region_ends(plan.num_threads)


def score_candidates_grouped(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
                             const floating[:, :, ::1] probs_N_K_C,
                             const intp_t[::1] candidates, double[:, ::1] out_n_G,
                             num_threads=None, tile_bytes=None):
    """Weighted joint entropy of each candidate with each group of the joint's rows
    (``_kernels_numpy.score_candidates_grouped``): ``out_n_G[i, g]`` sums group g's S = M / G
    consecutive rows, on at most ``num_threads`` OpenMP threads (None:
    ``omp_get_max_threads()``; fewer when the call is small). float32 as in
    ``score_candidates``. ``tile_bytes``: as in ``score_candidates``; each thread also
    holds G × tile·C sums.
    """
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1]
    cdef Py_ssize_t C = probs_N_K_C.shape[2], n = candidates.shape[0], G = out_n_G.shape[1]
    if (probs_N_K_C.shape[1] != K or weights_M.shape[0] != M or out_n_G.shape[0] != n
            or G < 1 or M % G != 0):
        raise ValueError("score_candidates_grouped: inconsistent shapes")
    if n == 0:
        return out_n_G.base
    if M == 0:
        out_n_G[:, :] = 0.0
        return out_n_G.base
    _check_indices(candidates, probs_N_K_C.shape[0])
    out_nG = np.asarray(out_n_G).reshape(-1)
    with blas_limit(1) if not _fused(sizeof(floating), K) else nullcontext():
        for start, stop, nt in _threads.chunks(n, _threads.score_work(1, M, K, C),
                                               _limit(num_threads)):
            _score_chunk(joint_M_K, weights_M, probs_N_K_C, candidates[start:stop],
                         out_nG[start * G:stop * G], M // G, nt,
                         0 if tile_bytes is None else tile_bytes)
    return out_n_G.base


def entropy_rows(const floating[:, ::1] probs_R_C, double[::1] out, num_threads=None,
                 tile_bytes=WORKING_SET_BYTES):
    """``out[r] = Σ_c −p log p`` for each row of ``probs_R_C`` (0·log 0 = 0).

    Parameters
    ----------
    probs_R_C : ndarray of shape (R, C), float64 (or float32), C-contiguous
    out : ndarray of shape (R,), float64
        Written in place.
    num_threads : int or None
        Most OpenMP threads; None: ``omp_get_max_threads()``. Fewer when the call is
        small (``_threads.threads_for``).
    tile_bytes : int
        Per-thread budget for one tile of p·log p.

    Returns
    -------
    out : ndarray of shape (R,)
    """
    cdef Py_ssize_t R = probs_R_C.shape[0], C = probs_R_C.shape[1]
    if out.shape[0] != R:
        raise ValueError("entropy_rows: inconsistent shapes")
    if R == 0:
        return out.base
    if C == 0:
        out[:] = 0.0
        return out.base
    cdef Py_ssize_t rows = max(1, min(R, tile_bytes // (8 * C)))
    cdef Py_ssize_t start, stop
    cdef int nt
    cdef double[:, ::1] work
    for start, stop, threads in _threads.chunks(R, _threads.entropy_work(1, C),
                                                _limit(num_threads)):
        nt = min(threads, -(-(stop - start) // rows))
        work = np.empty((nt, rows * C))
        _region_starts(nt)
        with nogil:
            _entropy_chunk(probs_R_C[start:stop], out[start:stop], rows, nt, work)
        _region_ends(nt)
    return out.base


cdef void _entropy_chunk(const floating[:, ::1] probs_R_C, double[::1] out, Py_ssize_t rows,
                         int nt, double[:, ::1] work) noexcept nogil:
    """``entropy_rows`` on ``nt`` threads, which end when it returns."""
    cdef Py_ssize_t R = probs_R_C.shape[0], C = probs_R_C.shape[1]
    cdef Py_ssize_t num_tiles = (R + rows - 1) // rows
    cdef Py_ssize_t tile, r0, width, r, c
    cdef double *buf
    cdef double total
    for tile in prange(num_tiles, schedule="dynamic", num_threads=nt):
        buf = &work[threadid(), 0]
        r0 = tile * rows
        width = min(rows, R - r0)
        if floating is double:
            bbf_xlogx_d(&probs_R_C[r0, 0], width * C, buf)
        else:
            bbf_xlogx_f(&probs_R_C[r0, 0], width * C, buf)
        for r in range(width):
            total = 0.0
            for c in range(C):
                total = total + buf[r * C + c]
            out[r0 + r] = -total


def nearest_centres(const double[:, ::1] joint_M_K, const double[:, ::1] log_centre_K_G,
                    intp_t[::1] out, num_threads=None):
    """Each row's best centre (``_kernels_numpy.nearest_centres``), the product and its
    argmax fused in registers (``bbf_nearest_rows``), on at most ``num_threads`` OpenMP
    threads (None: ``omp_get_max_threads()``)."""
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1]
    cdef Py_ssize_t G = log_centre_K_G.shape[1]
    if log_centre_K_G.shape[0] != K or out.shape[0] != M or G < 1:
        raise ValueError("nearest_centres: inconsistent shapes")
    if M == 0:
        return out.base
    cdef Py_ssize_t start, stop, b, num_blocks, step
    cdef int nt
    cdef double[:, ::1] work
    for start, stop, threads in _threads.chunks(M, _threads.assign_work(1, G, K),
                                                _limit(num_threads)):
        nt = threads
        work = np.empty((nt, BBF_NEAREST_MR * G + 8))  # a cache line apart: no false sharing
        step = 64  # rows per block: a static schedule of many small blocks
        num_blocks = (stop - start + step - 1) // step
        _region_starts(nt)
        for b in prange(num_blocks, schedule="static", num_threads=nt, nogil=True):
            bbf_nearest_rows(&joint_M_K[0, 0], &log_centre_K_G[0, 0], start + b * step,
                             min(stop, start + (b + 1) * step), K, G, &work[threadid(), 0],
                             &out[0])
        _region_ends(nt)
    return out.base


def nearest_subgroups(const double[:, ::1] joint_M_K, const intp_t[::1] parent_M,
                      const double[:, :, ::1] log_centre_P_K_W, intp_t[::1] out,
                      num_threads=None):
    """Each row's best sub-centre of its group (``_kernels_numpy.nearest_subgroups``;
    ``bbf_subgroup_rows``), on at most ``num_threads`` OpenMP threads (None:
    ``omp_get_max_threads()``)."""
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1]
    cdef Py_ssize_t P = log_centre_P_K_W.shape[0], W = log_centre_P_K_W.shape[2]
    if parent_M.shape[0] != M or out.shape[0] != M or log_centre_P_K_W.shape[1] != K:
        raise ValueError("nearest_subgroups: inconsistent shapes")
    if M == 0:
        return out.base
    cdef Py_ssize_t m
    for m in range(M):  # an out-of-range group would read wild memory without the GIL
        if parent_M[m] < 0 or parent_M[m] >= P:
            raise IndexError(f"group {parent_M[m]} out of range for P={P}")
    cdef Py_ssize_t start, stop, b, num_blocks, step = 64
    cdef int nt
    cdef double[:, ::1] work
    for start, stop, threads in _threads.chunks(M, _threads.assign_work(1, W, K),
                                                _limit(num_threads)):
        nt = threads
        work = np.empty((nt, W + 8))  # rows a cache line apart: no false sharing
        num_blocks = (stop - start + step - 1) // step
        _region_starts(nt)
        for b in prange(num_blocks, schedule="static", num_threads=nt, nogil=True):
            bbf_subgroup_rows(&joint_M_K[0, 0], &parent_M[0], &log_centre_P_K_W[0, 0, 0],
                              start + b * step, min(stop, start + (b + 1) * step), K, W,
                              &work[threadid(), 0], &out[0])
        _region_ends(nt)
    return out.base


def subgroup_seeds(const intp_t[::1] parent_M, const double[::1] key_M,
                   const double[::1] mass_M, Py_ssize_t num_groups, Py_ssize_t ways,
                   intp_t[::1] out_slot_M, num_threads=None):
    """Each group's ``ways`` rows of largest key (``_kernels_numpy.subgroup_seeds``), in
    one pass: each group keeps its best rows so far in order, and a row enters where its
    key is larger than the next one's (ties: the earlier row first). Serial, so
    ``num_threads`` is unused."""
    cdef Py_ssize_t M = parent_M.shape[0]
    if key_M.shape[0] != M or mass_M.shape[0] != M or out_slot_M.shape[0] != M or ways < 1:
        raise ValueError("subgroup_seeds: inconsistent shapes")
    cdef Py_ssize_t m, g, j, n
    for m in range(M):
        if parent_M[m] < 0 or parent_M[m] >= num_groups:
            raise IndexError(f"group {parent_M[m]} out of range for {num_groups} groups")
    cdef double[::1] top_key = np.empty(num_groups * ways)
    cdef intp_t[::1] top_row = np.empty(num_groups * ways, dtype=np.intp)
    cdef intp_t[::1] filled = np.zeros(num_groups, dtype=np.intp)
    cdef double key
    with nogil:
        for m in range(M):
            g = parent_M[m]
            key = key_M[m]
            n = filled[g]
            if n == ways and not key > top_key[g * ways + ways - 1]:
                continue
            j = min(n, ways - 1)  # a full group drops its last
            while j > 0 and key > top_key[g * ways + j - 1]:
                top_key[g * ways + j] = top_key[g * ways + j - 1]
                top_row[g * ways + j] = top_row[g * ways + j - 1]
                j = j - 1
            top_key[g * ways + j] = key
            top_row[g * ways + j] = m
            filled[g] = min(n + 1, ways)
        out_slot_M[:] = -1
        for g in range(num_groups):
            for j in range(filled[g]):
                if mass_M[top_row[g * ways + j]] > 0:
                    out_slot_M[top_row[g * ways + j]] = g * ways + j
    return out_slot_M.base


def draw_labels(const floating[:, ::1] probs_K_C, const double[:, ::1] log_probs_C_K,
                const intp_t[::1] member_M, const double[::1] u_M, intp_t[:] labels_M,
                double[:, ::1] log_joint_M_K, num_threads=None):
    """Inverse-CDF labels of the draws and their log-probabilities added
    (``_kernels_numpy.draw_labels``), on at most ``num_threads`` OpenMP threads (None:
    ``omp_get_max_threads()``)."""
    cdef Py_ssize_t M = member_M.shape[0], K = probs_K_C.shape[0], C = probs_K_C.shape[1]
    if (u_M.shape[0] != M or labels_M.shape[0] != M or log_joint_M_K.shape[0] != M
            or log_joint_M_K.shape[1] != K or log_probs_C_K.shape[0] != C
            or log_probs_C_K.shape[1] != K):
        raise ValueError("draw_labels: inconsistent shapes")
    cdef intp_t m
    for m in range(M):  # an out-of-range member would read wild memory without the GIL
        if member_M[m] < 0 or member_M[m] >= K:
            raise IndexError(f"member {member_M[m]} out of range for K={K}")
    if M == 0 or C == 0:
        return labels_M.base
    # Each member's total and last class of positive probability, once: the twin's sums
    # in its order, the cumulative sum in the input's precision.
    cdef Py_ssize_t k, c, last
    cdef floating total
    cdef intp_t[::1] last_K = np.empty(K, dtype=np.intp)
    cdef double[::1] total_K = np.empty(K)
    for k in range(K):
        total = 0
        for c in range(C):
            total = total + probs_K_C[k, c]
        total_K[k] = total
        last = C - 1
        while last >= 0 and not probs_K_C[k, last] > 0:
            last = last - 1
        last_K[k] = last if last >= 0 else C - 1  # none positive: the twin's argmax
    cdef Py_ssize_t start, stop
    cdef int nt
    for start, stop, threads in _threads.chunks(M, _threads.draw_work(1, K, C),
                                                _limit(num_threads)):
        nt = threads
        _region_starts(nt)
        with nogil:
            _draw_chunk(probs_K_C, log_probs_C_K, total_K, last_K, member_M, u_M, labels_M,
                        log_joint_M_K, start, stop, nt)
        _region_ends(nt)
    return labels_M.base


cdef void _draw_chunk(const floating[:, ::1] probs_K_C, const double[:, ::1] log_probs_C_K,
                      const double[::1] total_K, const intp_t[::1] last_K,
                      const intp_t[::1] member_M, const double[::1] u_M, intp_t[:] labels_M,
                      double[:, ::1] log_joint_M_K, Py_ssize_t start, Py_ssize_t stop,
                      int nt) noexcept nogil:
    """``draw_labels`` on draws [start, stop), ``nt`` threads."""
    cdef Py_ssize_t K = probs_K_C.shape[0], C = probs_K_C.shape[1]
    cdef Py_ssize_t m, k, c, member, label
    cdef floating cdf
    cdef double u
    for m in prange(start, stop, schedule="static", num_threads=nt):
        member = member_M[m]
        u = u_M[m] * total_K[member]  # the total exact in double, as in the twin's product
        cdf = 0
        label = 0
        for c in range(C):
            cdf = cdf + probs_K_C[member, c]
            if cdf <= u:
                label = label + 1
        label = min(label, last_K[member])
        labels_M[m] = label
        for k in range(K):
            log_joint_M_K[m, k] += log_probs_C_K[label, k]


def exp_rows(const double[:, ::1] log_joint_M_K, const intp_t[::1] rows_U,
             double[:, ::1] out_U_K, double[::1] out_max_U, num_threads=None):
    """Rows of a log joint exponentiated below their largest entry
    (``_kernels_numpy.exp_rows``): each thread gathers and shifts its rows, then runs
    NumPy's own float64 ``exp`` loop on them and divides by K, on at most ``num_threads``
    OpenMP threads (None: ``omp_get_max_threads()``). NumPy's loop is SIMD where NumPy has
    one (AVX-512) and libm's ``exp`` elsewhere; either way it is the NumPy kernels' ``exp``,
    so both backends give the same bits."""
    cdef Py_ssize_t M = log_joint_M_K.shape[0], K = log_joint_M_K.shape[1]
    cdef Py_ssize_t U = rows_U.shape[0]
    if out_U_K.shape[0] != U or out_U_K.shape[1] != K or out_max_U.shape[0] != U:
        raise ValueError("exp_rows: inconsistent shapes")
    cdef Py_ssize_t u
    for u in range(U):  # an out-of-range row would read wild memory without the GIL
        if rows_U[u] < 0 or rows_U[u] >= M:
            raise IndexError(f"row {rows_U[u]} out of range for {M} rows")
    if U == 0 or K == 0:
        return out_U_K.base
    cdef Py_ssize_t start, stop
    cdef int nt, t
    for start, stop, threads in _threads.chunks(U, _threads.exp_work(1, K),
                                                _limit(num_threads)):
        nt = threads
        _region_starts(nt)
        for t in prange(nt, schedule="static", num_threads=nt, nogil=True):
            _exp_rows_part(log_joint_M_K, rows_U, out_U_K, out_max_U,
                           start + (stop - start) * t // nt,
                           start + (stop - start) * (t + 1) // nt)
        _region_ends(nt)
    return out_U_K.base


ctypedef void (*_unary_loop)(char **, cnp.npy_intp *, cnp.npy_intp *, void *) noexcept nogil
cdef _unary_loop _exp_loop = NULL
cdef void *_exp_loop_data = NULL


cdef _find_exp_loop():
    """NumPy's inner loop of ``exp`` on float64: the function ``np.exp`` runs on a
    contiguous float64 array, dispatched to this CPU when NumPy loaded."""
    global _exp_loop, _exp_loop_data
    cdef cnp.ufunc exp_ufunc = np.exp
    # The first float64 loop is the one NumPy's type resolution takes (a later one wraps
    # libm's exp). ``types`` from Python: NumPy 2.5's .pxd no longer declares the field.
    types = np.exp.types
    cdef int i = types.index("d->d") if "d->d" in types else exp_ufunc.ntypes
    if i >= exp_ufunc.ntypes or exp_ufunc.functions[i] == NULL:
        raise ImportError("NumPy's float64 exp loop was not found")
    _exp_loop = <_unary_loop> <void *> exp_ufunc.functions[i]
    _exp_loop_data = exp_ufunc.data[i]


_find_exp_loop()


cdef void _exp_rows_part(const double[:, ::1] log_joint_M_K, const intp_t[::1] rows_U,
                         double[:, ::1] out_U_K, double[::1] out_max_U, Py_ssize_t u0,
                         Py_ssize_t u1) noexcept nogil:
    """Rows [u0, u1) of ``exp_rows``."""
    cdef Py_ssize_t u, k, K = log_joint_M_K.shape[1]
    cdef double top
    cdef const double *row
    cdef double *dst
    if u1 <= u0:
        return
    for u in range(u0, u1):
        row = &log_joint_M_K[rows_U[u], 0]
        dst = &out_U_K[u, 0]
        top = row[0]
        for k in range(1, K):
            top = row[k] if row[k] > top else top
        for k in range(K):
            dst[k] = row[k] - top
        out_max_U[u] = top
    dst = &out_U_K[u0, 0]
    cdef char *args[2]
    args[0] = <char *> dst
    args[1] = <char *> dst
    cdef cnp.npy_intp count = (u1 - u0) * K
    cdef cnp.npy_intp steps[2]
    steps[0] = sizeof(double)
    steps[1] = sizeof(double)
    _exp_loop(args, &count, steps, _exp_loop_data)
    for k in range(count):
        dst[k] = dst[k] / K


def gather_rows(const floating[:, :, ::1] probs_N_K_C, const intp_t[::1] xs,
                double[:, :, ::1] out_n_K_C, num_threads=None):
    """``out_n_K_C[i] = probs_N_K_C[xs[i]]`` in float64 (``_kernels_numpy.gather_rows``):
    one pass, each row asked for ``_GATHER_AHEAD`` rows before it is copied. Serial (the
    pass waits on memory), so ``num_threads`` is unused."""
    cdef Py_ssize_t N = probs_N_K_C.shape[0], n = xs.shape[0]
    cdef Py_ssize_t L = probs_N_K_C.shape[1] * probs_N_K_C.shape[2]
    if (out_n_K_C.shape[0] != n or out_n_K_C.shape[1] != probs_N_K_C.shape[1]
            or out_n_K_C.shape[2] != probs_N_K_C.shape[2]):
        raise ValueError("gather_rows: inconsistent shapes")
    _check_indices(xs, N)
    cdef Py_ssize_t i, j, b, row_bytes = L * sizeof(floating)
    cdef const floating *src
    cdef const char *ahead
    cdef double *dst
    with nogil:
        for i in range(n):
            if i + _GATHER_AHEAD < n:
                ahead = <const char *> &probs_N_K_C[xs[i + _GATHER_AHEAD], 0, 0]
                for b in range(0, row_bytes, 64):
                    bbf_prefetch(ahead + b)
            src = &probs_N_K_C[xs[i], 0, 0]
            dst = &out_n_K_C[i, 0, 0]
            for j in range(L):
                dst[j] = src[j]
    return out_n_K_C.base


def group_sums(const double[:, ::1] joint_M_K, const double[::1] weights_M,
               const intp_t[::1] group_M, double[:, ::1] out_G_K, num_threads=None):
    """Weighted rows summed by group (``_kernels_numpy.group_sums``); serial, O(M·K), so
    ``num_threads`` is unused."""
    cdef Py_ssize_t M = joint_M_K.shape[0], K = joint_M_K.shape[1], G = out_G_K.shape[0]
    if weights_M.shape[0] != M or group_M.shape[0] != M or out_G_K.shape[1] != K:
        raise ValueError("group_sums: inconsistent shapes")
    cdef Py_ssize_t m, k, g
    for m in range(M):
        if group_M[m] < 0 or group_M[m] >= G:
            raise IndexError(f"group {group_M[m]} out of range for G={G}")
    cdef double w
    with nogil:
        out_G_K[:, :] = 0.0
        for m in range(M):
            g = group_M[m]
            w = weights_M[m]
            for k in range(K):
                out_G_K[g, k] += w * joint_M_K[m, k]
    return out_G_K.base


def unique_keys(const int64_t[::1] keys_M, intp_t[::1] first_M, intp_t[::1] ids_M,
                intp_t[::1] counts_M, num_threads=None):
    """The distinct keys in ascending order, their first indices and counts, and each
    key's place among them (``_kernels_numpy.unique_keys``): a stable LSD radix sort of
    the keys, 11 bits a pass and only the passes the keys' range needs. Serial, so
    ``num_threads`` is unused."""
    cdef Py_ssize_t M = keys_M.shape[0]
    if first_M.shape[0] != M or ids_M.shape[0] != M or counts_M.shape[0] != M:
        raise ValueError("unique_keys: inconsistent shapes")
    if M == 0:
        return 0
    cdef uint64_t[::1] key = np.empty(M, dtype=np.uint64)
    cdef intp_t[::1] order = np.empty(M, dtype=np.intp)
    cdef intp_t[::1] spare = np.empty(M, dtype=np.intp)
    cdef Py_ssize_t[::1] count = np.empty(2048, dtype=np.intp)
    cdef Py_ssize_t m, d, total, c, U
    cdef uint64_t lo, hi, span
    cdef int shift
    with nogil:
        # Signed order as unsigned: flip the sign bit; then sort key - least, the range.
        lo = hi = (<uint64_t> keys_M[0]) ^ (<uint64_t> 1 << 63)
        for m in range(M):
            key[m] = (<uint64_t> keys_M[m]) ^ (<uint64_t> 1 << 63)
            lo = min(lo, key[m])
            hi = max(hi, key[m])
            order[m] = m
        span = hi - lo
        shift = 0
        while shift < 64 and (span >> shift) > 0:
            count[:] = 0
            for m in range(M):
                count[((key[m] - lo) >> shift) & 2047] += 1
            total = 0
            for d in range(2048):
                c = count[d]
                count[d] = total
                total = total + c
            for m in range(M):
                d = ((key[order[m]] - lo) >> shift) & 2047
                spare[count[d]] = order[m]
                count[d] += 1
            order, spare = spare, order
            shift = shift + 11
        U = 0
        for m in range(M):
            if m == 0 or key[order[m]] != key[order[m - 1]]:
                first_M[U] = order[m]
                counts_M[U] = 0
                U = U + 1
            ids_M[order[m]] = U - 1
            counts_M[U - 1] += 1
    return U
