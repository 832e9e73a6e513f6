"""Chooses the kernels (compiled or NumPy) and the thread count."""

import functools
import os

from . import _kernels_numpy
from ._threads import blas_threads, cpu_count

try:
    from . import _kernels as _kernels_compiled
except ImportError:  # the extension was not built: the NumPy kernels do the work
    _kernels_compiled = None

ENV_VAR = "BATCHBALD_FAST_BACKEND"
_CHOICES = ("auto", "cython", "numpy")
# Every kernel of a backend module, each with the same signature in both, ending in
# ``num_threads``.
KERNEL_NAMES = ("score_candidates", "score_candidates_grouped", "entropy_rows",
                "nearest_centres", "nearest_subgroups", "subgroup_seeds", "draw_labels",
                "exp_rows", "gather_rows", "group_sums", "unique_keys", "scratch_bytes")


class Kernels:
    """One backend's kernels bound to the thread count of a call: chosen once (at the
    public function) and handed down, so that every kernel call of the call gets the same
    limit.

    Parameters
    ----------
    module : module
        ``_kernels`` or ``_kernels_numpy``.
    num_threads : int
        Most threads of each kernel call.

    Attributes
    ----------
    score_candidates, score_candidates_grouped, entropy_rows, nearest_centres, \
    nearest_subgroups, subgroup_seeds, draw_labels, exp_rows, gather_rows, group_sums, \
    unique_keys, scratch_bytes
        The module's kernels with ``num_threads`` given.
    """

    def __init__(self, module, num_threads):
        self.module, self.num_threads = module, num_threads
        for name in KERNEL_NAMES:
            setattr(self, name, functools.partial(getattr(module, name),
                                                  num_threads=num_threads))


def kernels_for(num_threads=None, choice=None):
    """The :class:`Kernels` of the chosen backend (:func:`get_kernels`) with a call's
    ``num_threads`` (:func:`effective_num_threads`)."""
    return Kernels(get_kernels(choice), effective_num_threads(num_threads, choice))


def get_kernels(choice=None):
    """The kernel module named by ``BATCHBALD_FAST_BACKEND`` (read at every call).

    ``auto`` (default): compiled when built, else NumPy; ``cython``: compiled or an
    ImportError; ``numpy``: the NumPy fallback. ``choice`` overrides the variable (a Dask
    worker runs the backend its client chose).
    """
    if choice is None:
        choice = os.environ.get(ENV_VAR, "auto")
    choice = choice.strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if choice == "numpy":
        return _kernels_numpy
    if _kernels_compiled is None:
        if choice == "cython":
            raise ImportError(f"{ENV_VAR}=cython but the compiled extension "
                              "batchbald_fast._kernels is not built; reinstall with a C "
                              "compiler (pip install --force-reinstall .)")
        return _kernels_numpy
    return _kernels_compiled


def effective_num_threads(num_threads=None, choice=None):
    """Most threads a kernel call may use, as scikit-learn's ``_openmp_effective_n_threads``.

    None honours ``OMP_NUM_THREADS`` and ``threadpoolctl`` limits: through
    ``omp_get_max_threads`` for the compiled kernels, through BLAS's thread count for the
    NumPy kernels (``OPENBLAS_NUM_THREADS``, ``threadpool_limits(n, user_api="blas")``). An
    explicit count is capped at the usable cores. Without OpenMP the compiled kernels run
    on one thread. Each call starts fewer when its work is small (``_threads``).
    """
    kernels = get_kernels(choice)
    if kernels is _kernels_compiled:
        if not _kernels_compiled.OPENMP_ENABLED:
            return 1
        limit = _kernels_compiled.max_threads()
    else:
        limit = blas_threads()
    if num_threads is None:
        return limit
    return max(1, min(num_threads, cpu_count()))


def backend_info():
    """Which backend runs and with how many threads.

    Returns
    -------
    info : dict
        ``backend`` ("cython" or "numpy"), ``compiled_available`` (bool), ``openmp``
        (whether the compiled kernels were built with OpenMP), ``simd`` (the instruction
        sets the compiled log loops were built for and pick from at run time, or None),
        ``num_threads`` (threads a call with ``num_threads=None`` uses).
    """
    kernels = get_kernels()
    compiled = kernels is _kernels_compiled
    return {
        "backend": "cython" if compiled else "numpy",
        "compiled_available": _kernels_compiled is not None,
        "openmp": bool(_kernels_compiled is not None and _kernels_compiled.OPENMP_ENABLED),
        "simd": None if _kernels_compiled is None else _kernels_compiled.LOG_DISPATCH,
        "num_threads": effective_num_threads(None),
    }
