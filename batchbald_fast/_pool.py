"""The pool the greedy driver picks from: what it may ask of one, and the in-memory answer.

The driver needs these of a pool, whatever holds it (an array here; chunks on Dask
workers in ``batchbald_fast.dask``): per-point conditional entropies once, the range of the
rows' sums once, and per step the joint entropy of a joint state with some candidates, plus
the K×C rows of the few points it picks or examines. The driver's own per-point state
(which candidates remain, their last-gain bounds, a step's search over them) lives where
the pool says (``pool.points``): in arrays beside it here (:class:`PointState`), in the
chunks' own workers on Dask. Every other piece of the algorithm
lives in the driver, so every kind of pool gives the same picks. The functions below work
on any block of pool points, so that a Dask task runs exactly what the in-memory pool runs.

Precision: the pool stays in its own dtype (float32 or float64); the kernels' products and
logs run in the compute dtype, on rows gathered and cast a block at a time when the two
differ; conditional entropies, row sums and every sum over configurations and classes are
float64. A float32 pool computed in float64 thus gives the results of the float64 array
holding the same values (the cast is exact).
"""

import numpy as np

from . import _search, _validation

# Rows gathered (and cast) at a time when the kernels cannot read the pool in place: a
# float64 block stays 8 MiB whatever the pool.
BLOCK_VALUES = 2**20
# An in-memory pool keeps its row sums (N·K float64) up to this size.
ROW_SUMS_MAX_BYTES = 64 * 2**20


def _block_points(K, C, values=BLOCK_VALUES):
    return max(1, values // (K * C))


def conditional_entropy(kernels, probs_N_K_C):
    """``E_n = (1/K) Σ_k Σ_c −p log p`` per point, in float64."""
    return point_stats(kernels, probs_N_K_C)[0]


def point_stats(kernels, probs_N_K_C, keep_row_sums=False):
    """Conditional entropies and the range of row sums, one pass over the points.

    Parameters
    ----------
    kernels : Kernels
    probs_N_K_C : ndarray of shape (N, K, C), float32 or float64, any strides
    keep_row_sums : bool, default=False
        Also return every row sum.

    Returns
    -------
    cond_entropy_N : ndarray of shape (N,), float64
    row_sum_range : (float, float)
        Least and largest ``Σ_c p[n, k, c]``.
    row_sums_N_K : ndarray of shape (N, K), float64
        Only with ``keep_row_sums``.
    """
    N, K, C = probs_N_K_C.shape
    cond_entropy_N = np.empty(N)
    row_sums_N_K = np.empty((N, K)) if keep_row_sums else None
    low, high = np.inf, -np.inf
    block = _block_points(K, C)
    for n0 in range(0, N, block):
        probs_n_K_C = np.ascontiguousarray(probs_N_K_C[n0:n0 + block], dtype=np.float64)
        n = len(probs_n_K_C)
        entropy_nK = np.empty(n * K)
        kernels.entropy_rows(probs_n_K_C.reshape(n * K, C), entropy_nK)
        cond_entropy_N[n0:n0 + n] = entropy_nK.reshape(n, K).mean(axis=1)
        sums_n_K = _validation.class_sums(probs_n_K_C)
        low, high = min(low, sums_n_K.min()), max(high, sums_n_K.max())
        if keep_row_sums:
            row_sums_N_K[n0:n0 + n] = sums_n_K
    if keep_row_sums:
        return cond_entropy_N, (float(low), float(high)), row_sums_N_K
    return cond_entropy_N, (float(low), float(high))


def entropy(kernels, probs_N_K_C, dtype=None):
    """``H(y_n) = Σ_c −p̄ log p̄`` of the mixture ``p̄ = (1/K) Σ_k p`` per point (the mixture
    in ``dtype``; None: the pool's)."""
    out = np.empty(probs_N_K_C.shape[0])
    # A strided pool's mixture is strided too: the kernels take rows.
    kernels.entropy_rows(np.ascontiguousarray(probs_N_K_C.mean(axis=1, dtype=dtype)), out)
    return out


def rows(probs_N_K_C, xs, dtype=np.float64):
    """``probs_N_K_C[xs]`` as a new C-contiguous array of ``dtype`` (float64: exact for
    float32 pools)."""
    # Not np.array: gathered rows keep a strided pool's axis order.
    return np.ascontiguousarray(probs_N_K_C[np.asarray(xs, dtype=np.intp)], dtype=dtype)


def joint_entropy(kernels, probs_N_K_C, joint_M_K, weights_M, offset_K, xs,
                  row_sums_N_K=None, block_values=BLOCK_VALUES):
    """The two parts of a joint state's entropy with each candidate (see ``ArrayPool``).

    The kernels read the pool in place when it is C-contiguous in the compute dtype (that
    of ``joint_M_K``); otherwise they score blocks of gathered rows cast to it, of about
    ``block_values`` values each. The offset term reads ``row_sums_N_K`` when given, else
    the gathered rows: one sum of products over (k, c), as summing over classes first
    cost more than the kernel on float32 pools (docs/sampled_steps.md, "The offset term
    on gathered rows").
    """
    n = len(xs)
    weighted_n = np.empty(n)
    offset_n = np.zeros(n)  # exact and pruned states have no row scales
    has_offset = bool(offset_K.any())
    in_place = probs_N_K_C.dtype == joint_M_K.dtype and probs_N_K_C.flags.c_contiguous
    if in_place:
        kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C, xs, weighted_n)
        if not has_offset:
            return weighted_n, offset_n
        if row_sums_N_K is not None:
            return weighted_n, np.einsum("nk,k->n", row_sums_N_K[xs], offset_K)
    K, C = probs_N_K_C.shape[1:]
    offset_KC = np.repeat(offset_K, C)
    block = _block_points(K, C, block_values)
    # The kernel's one pass, prefetching, where it can read the pool: ~1.7x NumPy's gather
    # and cast of rows scattered over a large pool (docs/sampled_steps.md).
    gather = kernels.gather_rows if probs_N_K_C.flags.c_contiguous else None
    # One buffer for every block: on a Dask worker each allocation of 128 KiB or more is a
    # fresh mapping, zero-filled page by page (distributed's nannies set
    # MALLOC_TRIM_THRESHOLD_, which stops glibc's mmap threshold from growing).
    buffer_n_K_C = None if gather is None else np.empty((min(n, block), K, C))
    for i0 in range(0, n, block):
        xs_b = xs[i0:i0 + block]
        probs_n_K_C = rows(probs_N_K_C, xs_b) if gather is None else \
            gather(probs_N_K_C, xs_b, buffer_n_K_C[:len(xs_b)])
        if not in_place:
            kernels.score_candidates(joint_M_K, weights_M,
                                     probs_n_K_C.astype(joint_M_K.dtype, copy=False),
                                     np.arange(len(probs_n_K_C)),
                                     weighted_n[i0:i0 + block])
        if has_offset:
            # einsum, not BLAS, here and above: a row's sum must not depend on its place
            # in the call (BLAS's tail rows sum in another order), or duplicate points
            # scored in different calls differ in the last bit, and Dask's smaller
            # blocks would not give the in-memory call's bits.
            offset_n[i0:i0 + block] = np.einsum("ij,j->i", probs_n_K_C.reshape(-1, K * C),
                                                offset_KC)
    return weighted_n, offset_n


class ArrayPool:
    """A pool held as one (N, K, C) array in this process (or memory-mapped into it).

    Parameters
    ----------
    kernels : Kernels
        ``score_candidates`` and ``entropy_rows`` of one backend, with the call's threads.
    probs_N_K_C : ndarray of shape (N, K, C), float32 or float64, validated
        Never copied whole: any strides, a memmap is read where it lies.
    dtype : numpy.float64 or numpy.float32
        Precision of the products and logs in the kernels (sums are float64 either way).

    Attributes
    ----------
    shape : tuple of int
        (N, K, C).
    dtype : numpy.float64 or numpy.float32
        The kernels' compute precision: joint states are passed in it.
    cond_entropy_N : ndarray of shape (N,)
        Conditional entropy of every point.
    row_sum_range : (float, float)
        Least and largest ``Σ_c p[n, k, c]``.
    """

    def __init__(self, kernels, probs_N_K_C, *, dtype=np.float64):
        self.shape = probs_N_K_C.shape
        self.dtype = np.dtype(dtype).type
        self._kernels = kernels
        self._probs_N_K_C = probs_N_K_C
        N, K, _ = probs_N_K_C.shape
        # Where the kernels read the pool in place, a sampled step would gather its
        # candidates' rows only to sum them: keep the sums when they are small beside the
        # pool. Elsewhere the rows are gathered for the kernels anyway.
        keep = (probs_N_K_C.dtype == self.dtype and probs_N_K_C.flags.c_contiguous
                and N * K * 8 <= ROW_SUMS_MAX_BYTES)
        self.cond_entropy_N, self.row_sum_range, *sums = point_stats(
            kernels, probs_N_K_C, keep_row_sums=keep)
        self._row_sums_N_K = sums[0] if keep else None

    def rows(self, xs):
        """``probs_N_K_C[xs]``, float64, shape (len(xs), K, C)."""
        return rows(self._probs_N_K_C, xs)

    def joint_entropy(self, joint_M_K, weights_M, offset_K, xs):
        """The two parts of a joint state's entropy with each candidate.

        Parameters
        ----------
        joint_M_K : ndarray of shape (M, K), in the compute dtype, C-contiguous
        weights_M : ndarray of shape (M,), float64
        offset_K : ndarray of shape (K,), float64
        xs : ndarray of shape (n,), intp
            Pool indices.

        Returns
        -------
        weighted_n : ndarray of shape (n,)
            ``Σ_m weights_M[m] Σ_c −P log P`` with ``P = joint_M_K @ p[x]``.
        offset_n : ndarray of shape (n,)
            ``Σ_k offset_K[k] Σ_c p[x, k, c]``: the row scales of a sampled state.
        """
        return joint_entropy(self._kernels, self._probs_N_K_C, joint_M_K, weights_M,
                             offset_K, xs, self._row_sums_N_K)

    def points(self, candidates, first_gain_N, utility_steps):
        """The driver's per-point state over this pool (:class:`PointState`)."""
        return PointState(self.shape[0], candidates, first_gain_N, utility_steps)


class PointState:
    """The driver's per-point state, in arrays in this process: which candidates remain,
    each one's last-gain bound, every step's utilities when asked for; and the search over
    them. A pool that holds its points elsewhere gives the same methods (``DaskPool``).

    Parameters
    ----------
    N : int
    candidates : ndarray of intp, ascending, or None (every point)
    first_gain_N : ndarray of shape (N,) or None
        Bounds of the gains before any is computed (None: unknown, inf).
    utility_steps : int or None
        Steps whose every utility is kept (None: none kept).

    Attributes
    ----------
    count : int
        Candidates remaining.
    upper_gain_N : ndarray of shape (N,)
        Upper bound on each candidate's gain: its last computed one, else
        ``first_gain_N``.
    """

    def __init__(self, N, candidates, first_gain_N, utility_steps):
        self._available_N = np.zeros(N, dtype=bool)
        self._available_N[slice(None) if candidates is None else candidates] = True
        self.count = N if candidates is None else len(candidates)
        self._first_gain_N = np.inf if first_gain_N is None else first_gain_N
        self.upper_gain_N = np.empty(N)
        self._utilities = (None if utility_steps is None
                           else np.full((utility_steps, N), np.nan))

    def remaining(self):
        """The candidates left, ascending."""
        return np.flatnonzero(self._available_N)

    def take(self, x):
        """Candidate x was picked: it is no longer one."""
        self._available_N[x] = False
        self.count -= 1

    def reset_gains(self):
        """Every gain unknown again (a new greedy run)."""
        self.upper_gain_N[:] = self._first_gain_N

    def upper_bounds(self, base, remaining):
        """``base + upper_gain_N[remaining]``: bounds of the remaining utilities."""
        return base + self.upper_gain_N[remaining]

    def search(self, utility, bounds, remaining, upper_n, tile, tie_tolerance):
        """A step's search over the remaining candidates (``_search.Search``)."""
        return _search.Search(utility, bounds, remaining, upper_n, tile, tie_tolerance)

    def scored(self, outcome, error_bound, score):
        """Each scored candidate's gain bounds its later ones: its utility with twice its
        rounding and the step's certified error, less the batch's score."""
        self.upper_gain_N[outcome.evaluated] = outcome.utility_n + 2 * outcome.slack_n \
            + error_bound - score

    def tighten(self, xs, gain_n):
        """Lower the gain bounds of points ``xs`` to ``gain_n`` where that is lower."""
        self.upper_gain_N[xs] = np.minimum(self.upper_gain_N[xs], gain_n)

    def keep_utilities(self, t, outcome):
        """Step t's utilities, when kept."""
        if self._utilities is not None:
            self._utilities[t, outcome.evaluated] = outcome.utility_n

    def utilities(self):
        """Every kept step's utility of every point (nan: not a candidate then), or None."""
        return self._utilities
