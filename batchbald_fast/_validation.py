"""Every input check and conversion, in one place.

Checks run before any heavy work and name the first offending index. Nothing here
writes to the caller's arrays.
"""

import importlib.util
import numbers

import numpy as np
from sklearn.utils import check_random_state as _sklearn_check_random_state

SUM_TOLERANCE = 1e-3


def _first_index(mask):
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_probs(probs_N_K_C, *, log_probs=False, name="probs_N_K_C", strict=True):
    """Validate probabilities (or log-probabilities) of shape (N, K, C).

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
    arr = np.asarray(probs_N_K_C)
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} must hold real numbers, got dtype bool; for one-hot "
                        f"predictions pass {name}.astype(float)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must have 3 dimensions (N, K, C), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must have no empty axis, got shape {arr.shape}")

    nan = np.isnan(arr)
    if nan.any():
        raise ValueError(f"{name} holds nan, first at index {_first_index(nan)}")
    if log_probs:
        bad = arr > 0
        if bad.any():
            idx = _first_index(bad)
            raise ValueError(f"{name} holds a log-probability above 0 ({float(arr[idx])}) "
                             f"at index {idx}")
        probs = np.exp(arr, dtype=np.float64)
    else:
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} holds inf, first at index {_first_index(bad)}")
        bad = arr < 0
        if strict and bad.any():
            idx = _first_index(bad)
            raise ValueError(f"{name} holds a negative probability ({float(arr[idx])}) "
                             f"at index {idx}")
        probs = np.ascontiguousarray(arr, dtype=np.float64)
    if not strict:
        return probs

    sums_N_K = probs.sum(axis=2)
    if log_probs:
        with np.errstate(divide="ignore"):
            off_N_K = np.abs(np.log(sums_N_K))
        what = "logsumexp over classes"
        target = 0
    else:
        off_N_K = np.abs(sums_N_K - 1)
        what = "sum over classes"
        target = 1
    bad = ~(off_N_K <= SUM_TOLERANCE)
    if bad.any():
        n, k = _first_index(bad)
        value = target + (off_N_K[n, k] if sums_N_K[n, k] > 1 else -off_N_K[n, k])
        raise ValueError(f"{name}[{n}, {k}] has {what} {value:.6g}, expected {target} "
                         f"within {SUM_TOLERANCE:g}")
    return probs


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
