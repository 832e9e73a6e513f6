"""Stochastic batch acquisition: draw the batch without replacement, ∝ a tempered score."""

import numbers

import numpy as np

from . import _validation

MODES = ("power", "softmax", "softrank")
# Scores this far below 0 are rounding (BALD and EPIG are ≥ 0 in exact arithmetic): power
# mode takes them as 0. The package's tie tolerance.
NEGATIVE_TOLERANCE = 1e-10
# Value buckets of the rank bounds in softrank mode: their counts (512 KiB) stay in L2.
RANK_BUCKETS = 2**16


def stochastic_batch(scores_N, batch_size, *, mode="power", beta=1.0, random_state=None,
                     candidates=None):
    """Draw a batch without replacement, each draw ∝ the tempered score of the points left.

    Stochastic batch acquisition (Kirsch, Farquhar, Atighehchian, Jesson,
    Branchaud-Charron and Gal, TMLR 2023): instead of the top ``batch_size`` scores, whose
    points tend to be redundant, draw the batch point by point, each draw with probability
    proportional to a weight of the score among the points not yet drawn:

    - ``"power"``: ``w = score ** beta``, for non-negative scores such as BALD or EPIG
      (the authors' recommendation, ``beta=1``);
    - ``"softmax"``: ``w = exp(beta · score)``, for scores of any sign;
    - ``"softrank"``: ``w = rank ** −beta``, rank 1 the highest score: only the order of
      the scores matters.

    The draws are made at once by the Gumbel-top-k trick (the batch is the points of the
    ``batch_size`` largest ``log w + Gumbel noise``, in decreasing order), which gives the
    sequential draws' distribution exactly. ``beta = 0`` draws uniformly at random;
    large ``beta`` tends to top-k.

    Parameters
    ----------
    scores_N : array-like of shape (N,)
        A score per pool point, higher is better (:func:`bald`, :func:`epig`, entropy).
        Only the candidates' scores are read; they must be finite.
    batch_size : int
        Points to draw. More than the candidates draws them all; 0 gives an empty array.
    mode : {"power", "softmax", "softrank"}, default="power"
    beta : float, default=1.0
        The inverse temperature, ≥ 0 (baal's ``temperature`` is ``1 / beta``).
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the draws. The same value gives the same batch.
    candidates : array-like of int, default=None
        Pool indices that may be drawn; all points when None.

    Returns
    -------
    indices : ndarray of shape (min(batch_size, n_candidates),), intp
        Pool indices in draw order.

    Raises
    ------
    ValueError
        If a candidate's score is nan or infinite, if ``mode="power"`` meets a score below
        ``-1e-10``, or if ``beta`` is negative or not finite.

    Notes
    -----
    Edge cases, as decided for this package:

    - Power mode: a score of 0 has weight 0 (for any ``beta``, ``beta = 0`` included), and
      so has a score in ``[-1e-10, 0)``: the rounding of a BALD or EPIG score of 0. Lower
      scores are an error: use softmax or softrank for scores of any sign.
    - Weight-0 points are drawn only once every point of positive weight is: a batch
      larger than the positive scores takes them all (in the order of their draws) and
      then the rest uniformly at random, so it always has
      ``min(batch_size, n_candidates)`` points.
    - Equal scores have equal weights; in softrank they share the average of their ranks
      (scipy's ``rankdata``), as in baal.
    - Softmax and power weights are handled as logarithms: no overflow or underflow to
      zero whatever ``beta`` and the scores' scale.

    With :func:`bald` or :func:`epig` scores (both ≥ 0, in nats)::

        scores_N = batchbald_fast.epig(probs_N_K_C, target_probs_T_K_C)
        batch = batchbald_fast.stochastic_batch(scores_N, 100, mode="power", beta=1.0,
                                                random_state=0)

    Examples
    --------
    >>> import numpy as np
    >>> from batchbald_fast import bald, stochastic_batch
    >>> rng = np.random.default_rng(0)
    >>> scores_N = bald(rng.dirichlet(np.ones(3), size=(100, 8)))
    >>> stochastic_batch(scores_N, 5, random_state=0).shape
    (5,)
    """
    scores_N = np.asarray(scores_N)
    if scores_N.ndim != 1:
        raise ValueError(f"scores_N must be 1-D, got shape {scores_N.shape}")
    if scores_N.dtype == np.bool_ or not (np.issubdtype(scores_N.dtype, np.floating)
                                          or np.issubdtype(scores_N.dtype, np.integer)):
        raise TypeError(f"scores_N must hold real numbers, got dtype {scores_N.dtype}")
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    mode = _validation.check_choice(mode, "mode", MODES)
    beta = check_beta(beta)
    candidates = _validation.check_candidates(candidates, len(scores_N))
    rng = _validation.check_random_state(random_state)
    scores_n = scores_N[candidates].astype(np.float64)
    _check_finite(scores_n, candidates)
    b = min(batch_size, len(candidates))
    # Gumbel-top-k: the order of log w + Gumbel noise is that of sequential draws ∝ w.
    # −log E of an exponential E is Gumbel-distributed, and cheaper to draw than gumbel().
    noise_n = -np.log(rng.standard_exponential(size=len(candidates)))
    if mode == "softrank":  # every weight is positive
        return candidates[_softrank_top(scores_n, noise_n, beta, b)]
    log_w_n = log_weights(scores_n, mode, beta, candidates)
    positive_n = log_w_n > -np.inf
    keys_n = np.where(positive_n, log_w_n + noise_n, -np.inf)
    num_positive = int(positive_n.sum())
    first = _top(keys_n, min(b, num_positive))
    # Past the positive weights: the rest uniformly at random, by their noise alone.
    rest = np.flatnonzero(~positive_n)
    rest = rest[_top(noise_n[rest], b - len(first))]
    return candidates[np.concatenate([first, rest])]


def _top(keys_n, b):
    """Indices of the b largest keys, largest first (the lowest index among equal keys)."""
    if b == 0:
        return np.empty(0, dtype=np.intp)
    part = np.argpartition(-keys_n, b - 1)[:b] if b < len(keys_n) else np.arange(len(keys_n))
    return part[np.lexsort((part, -keys_n[part]))]


def _softrank_top(scores_n, noise_n, beta, b):
    """The b largest keys ``noise − beta · log(average rank)``, largest first, without
    ranking every point: a lower bound on each rank (from the counts of points in
    higher value buckets) bounds every key from above; the exact keys of the b best bounds
    give a threshold that all but a few bounds fall below, and only those few are ranked
    exactly (binary searches in the sorted scores)."""
    n = len(scores_n)
    ascending_n = np.sort(scores_n)

    def keys(idx):
        left = np.searchsorted(ascending_n, scores_n[idx], "left")
        right = np.searchsorted(ascending_n, scores_n[idx], "right")
        return noise_n[idx] - beta * np.log(n - right + (right - left + 1) / 2)

    if b == 0:
        return np.empty(0, dtype=np.intp)
    low, high = ascending_n[0], ascending_n[-1]
    with np.errstate(divide="ignore", over="ignore"):
        scale = RANK_BUCKETS / (high - low)
    if b > n // 4 or not 0 < scale < np.inf:  # equal scores, or a range no float divides
        return _top(noise_n - beta * np.log(average_ranks(scores_n)), b)
    # Monotone bucketing: a point in a higher bucket has a strictly higher score.
    bucket_n = np.minimum(((scores_n - low) * scale).astype(np.intp), RANK_BUCKETS - 1)
    above_B = n - np.cumsum(np.bincount(bucket_n, minlength=RANK_BUCKETS))
    bound_n = noise_n - beta * np.log(1.0 + above_B[bucket_n])
    threshold = keys(np.argpartition(-bound_n, b - 1)[:b]).min()
    kept = np.flatnonzero(bound_n >= threshold)
    if len(kept) > n // 4:  # scores too crowded for the buckets: rank them all
        return _top(noise_n - beta * np.log(average_ranks(scores_n)), b)
    return kept[_top(keys(kept), b)]


def check_beta(beta):
    """A finite inverse temperature ≥ 0."""
    if isinstance(beta, (bool, np.bool_)) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a real number, got {beta!r}")
    if not 0 <= beta < np.inf:
        raise ValueError(f"beta must be finite and ≥ 0, got {beta}")
    return float(beta)


def log_weights(scores_n, mode, beta, indices=None):
    """``log w`` of each score for a checked mode and beta (−inf: weight 0).

    Parameters
    ----------
    scores_n : ndarray of shape (n,), float64
    mode : str
    beta : float
    indices : ndarray of shape (n,), optional
        The scores' pool indices, for error messages.

    Raises
    ------
    ValueError
        For a score that is not finite, or below ``-NEGATIVE_TOLERANCE`` in power mode.
    """
    _check_finite(scores_n, indices)
    if mode == "softmax":
        return beta * scores_n
    if mode == "softrank":
        return -beta * np.log(average_ranks(scores_n))
    negative = scores_n < -NEGATIVE_TOLERANCE
    if negative.any():
        i = int(np.argmax(negative))
        where = i if indices is None else int(indices[i])
        raise ValueError(f"scores_N[{where}] = {scores_n[i]} is negative: power mode "
                         f"needs scores ≥ 0 (such as BALD or EPIG); use mode='softmax' or "
                         f"'softrank' for scores of any sign")
    positive = scores_n > 0
    log_w = np.full(len(scores_n), -np.inf)
    log_w[positive] = beta * np.log(scores_n[positive])
    return log_w


def _check_finite(scores_n, indices=None):
    bad = ~np.isfinite(scores_n)
    if bad.any():
        i = int(np.argmax(bad))
        where = i if indices is None else int(indices[i])
        raise ValueError(f"scores_N[{where}] is {scores_n[i]}: scores must be finite")


def average_ranks(scores_n):
    """Rank of each score, 1 the highest; equal scores share the mean of their ranks (as
    scipy's ``rankdata(-scores, method="average")``, in a quarter of its time)."""
    n = len(scores_n)
    order = np.argsort(-scores_n)
    sorted_n = scores_n[order]
    starts = np.flatnonzero(np.r_[True, sorted_n[1:] != sorted_n[:-1]])
    ends = np.r_[starts[1:], n]
    mean_rank_g = (starts + ends + 1) / 2  # ranks starts+1 .. ends
    ranks_n = np.empty(n)
    ranks_n[order] = np.repeat(mean_rank_g, ends - starts)
    return ranks_n


def first_draw_probabilities(scores_n, mode, beta):
    """Each point's probability of being drawn first: ``w / Σ w`` (uniform when every
    weight is 0, as the draws then are)."""
    log_w = log_weights(np.asarray(scores_n, dtype=np.float64), mode, check_beta(beta))
    if not (log_w > -np.inf).any():
        return np.full(len(log_w), 1.0 / len(log_w))
    w = np.exp(log_w - log_w.max())
    return w / w.sum()
