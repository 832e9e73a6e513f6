# What _kernels.pyx exports to other Cython modules. Code outside batchbald_fast cimports
# batchbald_fast/cython_api.pxd, which re-exports ScorePlan, score_candidates_plan and
# score_candidates_nogil (as score_candidates) and documents their contract: changing
# them here changes the public API.
from cython cimport floating
from numpy cimport intp_t

ctypedef struct ScorePlan:
    Py_ssize_t rows          # joint rows per block
    Py_ssize_t cols          # candidates per tile
    int num_threads          # OpenMP threads; rows of the work buffers
    Py_ssize_t work_size     # entries per thread of work (the kernel's dtype)
    Py_ssize_t acc_size      # entries per thread of acc (float64)
    Py_ssize_t panel         # tiles a thread scores together, each block passing them all

cdef ScorePlan score_candidates_plan(Py_ssize_t M, Py_ssize_t K, Py_ssize_t C,
                                     Py_ssize_t n, int num_threads, Py_ssize_t itemsize,
                                     Py_ssize_t tile_bytes) noexcept nogil

cdef void score_candidates_nogil(
    const floating[:, ::1] joint_M_K,
    const double[::1] weights_M,
    const floating[:, :, ::1] probs_N_K_C,
    const intp_t[::1] candidates,
    double[::1] out,
    ScorePlan plan,
    floating[:, ::1] work,
    double[:, ::1] acc,
) noexcept nogil
