from cython cimport floating
from numpy cimport intp_t

# The kernel behind ``score_candidates``, for other Cython code: no GIL, no Python
# objects. The caller keeps BLAS single-threaded while it runs with several threads
# (threadpoolctl ``threadpool_limits(1, user_api="blas")``); ``work`` holds
# the entries ``_work_size(...)`` gives per
# thread.
cdef void score_candidates_nogil(
    const floating[:, ::1] joint_M_K,
    const double[::1] weights_M,
    const floating[:, :, ::1] probs_N_K_C,
    const intp_t[::1] candidates,
    double[::1] out,
    Py_ssize_t rows,
    Py_ssize_t cols,
    int num_threads,
    floating[:, ::1] work,
    double[:, ::1] acc,
) noexcept nogil
