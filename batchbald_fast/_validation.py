"""Every input check and conversion, in one place.

Checks run before any heavy work and name the first offending index. Nothing here
writes to the caller's arrays.
"""

import importlib.util
import numbers

import numpy as np
from sklearn.utils import check_random_state as _sklearn_check_random_state

SUM_TOLERANCE = 1e-3
# Values checked at a time: the temporaries of a block (a float64 copy, masks) stay ~10 MiB
# whatever the pool, so a memory-mapped pool is read, never copied whole.
VALIDATION_BLOCK_VALUES = 2**20


def check_probs(probs_N_K_C, *, log_probs=False, name="probs_N_K_C", strict=True):
    """Validate probabilities (or log-probabilities) of shape (N, K, C), as float64.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
        ``p(y_n = c | x_n, ω_k)``; any strides, read-only accepted. Any real floating type
        (float16 is upcast exactly) or integer type (0/1: members' hard predictions, one-hot)
        is converted to float64. bool is refused (NumPy does not count it as a number):
        a mask passed by mistake must not pass as one-hot predictions.
    log_probs : bool, default=False
        Whether the values are natural logarithms of probabilities.
    name : str
        The argument's name in error messages.
    strict : bool, default=True
        Whether the values must be probabilities: ≥ 0, each row summing to 1 within
        ``SUM_TOLERANCE``. False skips the sign and row-sum checks, for callers that turn
        any finite values into inputs by their own convention (scikit-activeml clips every
        value to ``[eps, 1]`` and never renormalises); BatchBALD's guarantees, and the
        engine's certified bounds, are for probabilities.

    Returns
    -------
    probs_N_K_C : ndarray of shape (n_points, n_members, n_classes), float64, C-contiguous
        The probabilities; the input itself when it already is such an array (never written).

    Raises
    ------
    TypeError
        If the dtype is not a real floating or integer type (bool included).
    ValueError
        If the shape, values or row sums are wrong.
    """
    # np.asarray first: a Dask or zarr array is read here, and checked like any other.
    return np.ascontiguousarray(check_pool(np.asarray(probs_N_K_C), log_probs=log_probs,
                                           name=name, strict=strict), dtype=np.float64)


def check_pool(probs_N_K_C, *, log_probs=False, name="probs_N_K_C", strict=True):
    """Validate a pool's probabilities block by block, keeping their precision.

    A Dask or zarr array is only checked for its dtype and shape here: its values are
    checked chunk by chunk where they live (``batchbald_fast.dask``).

    Parameters
    ----------
    probs_N_K_C : array-like, dask.array.Array or zarr.Array of shape (N, K, C)
    log_probs : bool, default=False
    name : str
    strict : bool, default=True
        As in :func:`check_probs`.

    Returns
    -------
    probs_N_K_C : ndarray of shape (N, K, C), float32 or float64, or the lazy array as given
        An ndarray that is float32 or float64 comes back as it is, or as a view of it (any
        strides; a memmap is read, never copied); log-probabilities and other dtypes are
        converted, block by block, to float32 for float32 input, else float64.
    """
    if is_lazy(probs_N_K_C):
        check_probs_header(probs_N_K_C.dtype, probs_N_K_C.shape, name)
        return probs_N_K_C
    arr = np.asarray(probs_N_K_C)
    check_probs_header(arr.dtype, arr.shape, name)
    raise_first_problem([probs_problems(arr, 0, log_probs=log_probs, name=name,
                                        strict=strict)])
    return as_probabilities(arr, log_probs=log_probs)


def is_lazy(probs):
    """Whether ``probs`` is a Dask or zarr array (checked without importing either)."""
    return type(probs).__module__.partition(".")[0] in ("dask", "zarr")


def check_probs_header(dtype, shape, name="probs_N_K_C"):
    """The checks that need no values: a real dtype and a shape (N, K, C), none of them 0."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype bool; for one-hot "
                        f"predictions pass {name}.astype(float)")
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")
    if len(shape) != 3:
        raise ValueError(f"{name} must have 3 dimensions (N, K, C), got shape {tuple(shape)}")
    if not all(isinstance(n, numbers.Integral) for n in shape):  # dask: nan when unknown
        raise ValueError(f"{name} must have a known shape, got {tuple(shape)} (for a dask "
                         "array, call compute_chunk_sizes() first)")
    if 0 in shape:
        raise ValueError(f"{name} must have no empty axis, got shape {tuple(shape)}")


def pool_dtype(dtype):
    """The precision a pool of this dtype is kept in: float32 stays, the rest is float64."""
    return np.float32 if np.dtype(dtype) == np.float32 else np.float64


def as_probabilities(probs_n_K_C, *, log_probs=False):
    """Validated points as probabilities in the pool's precision: the array itself when
    they already are, else converted a block at a time (exp in float64, then rounded)."""
    arr = np.asarray(probs_n_K_C)
    dtype = pool_dtype(arr.dtype)
    if not log_probs and arr.dtype == dtype:
        return arr
    probs = np.empty(arr.shape, dtype=dtype)
    block = _block_points(arr.shape)
    for n0 in range(0, arr.shape[0], block):
        part = arr[n0:n0 + block]
        probs[n0:n0 + block] = np.exp(part, dtype=np.float64) if log_probs else part
    return probs


def _block_points(shape):
    return max(1, VALIDATION_BLOCK_VALUES // (shape[1] * shape[2]))


def probs_problems(probs_n_K_C, start, *, log_probs=False, name="probs_N_K_C", strict=True):
    """The first problem of each kind among some pool points, with pool indices.

    Kinds rank as the checks of a whole array run (nan, then inf or log-probabilities
    above 0, then negatives, then row sums), so :func:`raise_first_problem` over the chunks
    of a pool, in order, raises what checking the whole array at once raises. The points
    are checked a block at a time: the temporaries stay small whatever their number.

    Parameters
    ----------
    probs_n_K_C : ndarray of shape (n, K, C)
        Points ``start .. start + n - 1`` of the pool.
    start : int
        Pool index of the first point.
    log_probs, name, strict
        As in :func:`check_probs`.

    Returns
    -------
    problems : dict
        ``{rank: message}``, empty when the points are valid.
    """
    block = _block_points(probs_n_K_C.shape)
    problems = {}
    for n0 in range(0, probs_n_K_C.shape[0], block):
        for rank, message in _block_problems(probs_n_K_C[n0:n0 + block], int(start) + n0,
                                             log_probs, name, strict).items():
            problems.setdefault(rank, message)
    return problems


def class_sums(probs_n_K_C):
    """``Σ_c p[n, k, c]`` in float64, shape (n, K). By ``np.einsum``: NumPy's ``sum`` over
    a last axis of a few classes costs ~4x more (docs/sampled_steps.md, "The offset term
    on gathered rows"), and a row's sum does not depend on the block it is in."""
    return np.einsum("nkc->nk", np.asarray(probs_n_K_C).astype(np.float64, copy=False))


def _block_problems(block_n_K_C, start, log_probs, name, strict):
    arr = np.asarray(block_n_K_C)

    def first(mask):  # the block's first offending index, and the pool's
        local = tuple(int(i) for i in np.argwhere(mask)[0])
        return local, (local[0] + start,) + local[1:]

    # Two reductions clear a valid block without the masks (nan propagates through them).
    low, high = (arr.min(), arr.max()) if arr.size else (0, 0)
    clean = not (np.isnan(low) or np.isnan(high)) and (
        high <= 0 if log_probs else (-np.inf < low and high < np.inf
                                     and (low >= 0 or not strict)))
    problems = {} if clean else _value_problems(arr, first, log_probs, name, strict)
    if not strict:
        return problems
    if log_probs:
        sums_n_K = class_sums(np.exp(arr, dtype=np.float64))
        with np.errstate(divide="ignore"):
            off_n_K = np.abs(np.log(sums_n_K))
        what, target = "logsumexp over classes", 0
    else:
        sums_n_K = class_sums(arr)
        off_n_K = np.abs(sums_n_K - 1)
        what, target = "sum over classes", 1
    bad = ~(off_n_K <= SUM_TOLERANCE)
    if bad.any():
        (i, k), (n, _) = first(bad)
        value = target + (off_n_K[i, k] if sums_n_K[i, k] > 1 else -off_n_K[i, k])
        problems[3] = (f"{name}[{n}, {k}] has {what} {value:.6g}, expected {target} "
                       f"within {SUM_TOLERANCE:g}")
    return problems


def _value_problems(arr, first, log_probs, name, strict):
    """The problems of a block's values (nan, inf, out of range), by rank; ``first(mask)``
    gives a mask's first offending index in the block and in the pool."""
    problems = {}
    nan = np.isnan(arr)
    if nan.any():
        problems[0] = f"{name} holds nan, first at index {first(nan)[1]}"
    if log_probs:
        bad = arr > 0
        if bad.any():
            local, idx = first(bad)
            problems[1] = (f"{name} holds a log-probability above 0 ({float(arr[local])}) "
                           f"at index {idx}")
    else:
        bad = np.isinf(arr)
        if bad.any():
            problems[1] = f"{name} holds inf, first at index {first(bad)[1]}"
        bad = arr < 0
        if strict and bad.any():
            local, idx = first(bad)
            problems[2] = (f"{name} holds a negative probability ({float(arr[local])}) "
                           f"at index {idx}")
    return problems


def raise_first_problem(problems_by_block):
    """Raise the ValueError of the first kind of problem any block has, at its first block."""
    found = {}
    for problems in problems_by_block:
        for rank, message in problems.items():
            found.setdefault(rank, message)
    if found:
        raise ValueError(found[min(found)])


def check_same_models(pool_shape, target_shape):
    """Pool and targets predicted by the same K posterior samples over the same C classes."""
    (_, K, C), (_, K_t, C_t) = pool_shape, target_shape
    if (K, C) != (K_t, C_t):
        raise ValueError(
            f"target_probs_T_K_C must hold the same K posterior samples over the same C "
            f"classes as probs_N_K_C: got K={K_t}, C={C_t} for the targets and K={K}, "
            f"C={C} for the pool")


def check_count(value, name, *, minimum):
    """An integer ≥ ``minimum`` (NumPy integers accepted, bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {value}")
    return int(value)


def check_candidates(candidates, N):
    """Pool indices that may be picked, sorted ascending; all N when None.

    Raises
    ------
    TypeError
        If the indices are not integers.
    ValueError
        If an index is out of range or repeated, or the array is not 1-D.
    """
    if candidates is None:
        return np.arange(N, dtype=np.intp)
    arr = np.asarray(candidates)
    if arr.ndim != 1:
        raise ValueError(f"candidates must be a 1-D array of indices, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.intp)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"candidates must be integer indices, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr >= N)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"candidates[{i}] = {arr[i]} is out of range for a pool of {N} points")
    order = np.argsort(arr, kind="stable")
    sorted_ = arr[order]
    repeated = sorted_[1:] == sorted_[:-1]
    if repeated.any():
        j = int(np.argmax(repeated))
        first, second = sorted(order[j:j + 2])
        raise ValueError(f"candidates[{second}] = {arr[second]} repeats candidates[{first}]")
    return sorted_.astype(np.intp)


def check_random_state(random_state):
    """A ``numpy.random.Generator`` or ``RandomState`` from None, an int or either of them.

    Raises
    ------
    ValueError
        For anything else (``np.nan``, a string, a float, a seed outside [0, 2**32)), as
        scikit-learn's ``check_random_state`` does.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    try:
        return _sklearn_check_random_state(random_state)
    except ValueError as exc:
        raise ValueError(f"random_state must be None, an int in [0, 2**32), a RandomState or "
                         f"a Generator, got {random_state!r}") from exc


def check_num_threads(num_threads):
    """None or a positive integer."""
    if num_threads is None:
        return None
    return check_count(num_threads, "num_threads", minimum=1)


def check_tol(tol):
    """A finite tolerance ≥ 0."""
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number, got {tol!r}")
    if not 0 <= tol < np.inf:
        raise ValueError(f"tol must be finite and ≥ 0, got {tol}")
    return float(tol)


def check_choice(value, name, choices):
    """One of ``choices`` (strings)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_compute_dtype(dtype):
    """numpy.float64 or numpy.float32."""
    try:
        dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be numpy.float64 or numpy.float32, got {dtype!r}") from exc
    if dtype not in (np.float64, np.float32):
        raise TypeError(f"dtype must be numpy.float64 or numpy.float32, got {dtype}")
    return dtype.type


def check_progress(progress):
    """False or None (silent), True (a tqdm bar: needs tqdm) or ``progress(done, total)``."""
    if progress is None or isinstance(progress, (bool, np.bool_)):
        if progress and importlib.util.find_spec("tqdm") is None:
            raise ImportError('progress=True shows a tqdm bar, and tqdm is not installed: '
                              'pip install "batchbald_fast[progress]", or pass a callable')
        return bool(progress)
    if callable(progress):
        return progress
    raise TypeError(f"progress must be a bool or a callable progress(done, total), "
                    f"got {progress!r}")


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20,
               "mib": 2**20, "mb": 10**6, "g": 2**30, "gib": 2**30, "gb": 10**9,
               "t": 2**40, "tib": 2**40, "tb": 10**12}


def check_memory_budget(budget, name="memory_budget"):
    """Bytes > 0 (inf: no budget) from a number or a string such as ``"4GiB"``, ``"512M"``
    (binary: K, M, G, T, KiB, ...; decimal: KB, MB, GB, TB) or ``"inf"``."""
    if isinstance(budget, str):
        text = budget.strip().lower()
        number = text.rstrip("kmgtib ")
        unit = text[len(number):].strip()
        try:
            value = float(number) * _BYTE_UNITS[unit]
        except (ValueError, KeyError):
            raise ValueError(f"{name} must be a number of bytes, optionally with a unit "
                             f"(e.g. 4GiB, 512MB, inf), got {budget!r}") from None
    elif isinstance(budget, (bool, np.bool_)) or not isinstance(budget, numbers.Real):
        raise TypeError(f"{name} must be a number of bytes or a string such as '4GiB', "
                        f"got {budget!r}")
    else:
        value = float(budget)
    if not value > 0:
        raise ValueError(f"{name} must be > 0 bytes, got {budget!r}")
    return value
