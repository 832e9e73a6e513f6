"""The greedy BatchBALD driver: the step loop, conditional entropies, tie-breaking.

It knows nothing about which backend runs or where the pool lives: it asks a pool
(``_pool.ArrayPool``, or a pool on Dask) for joint entropies and rows.
"""

import contextlib
import heapq
from dataclasses import dataclass

import numpy as np

from . import _joint
from ._threads import blas_limit

# Utilities this close to the best count as tied: mathematically equal utilities (duplicate
# points, points certain under every member) differ by rounding, and rounding must not
# decide between them.
TIE_TOLERANCE = 1e-10
# Rounding in one computed utility, beyond the relative rounding of the terms it sums;
# bounds carry it so that they stay upper bounds of computed utilities.
ROUNDING_SLACK = 1e-12
# Candidate × configuration rows a step must score in full before a coarse joint pays for
# grouping its rows (~1 ms): W1's steps (≤ 2.6e5) are cheaper without.
COARSE_MIN_WORK = 2**22
# Candidates of the first kernel call that scores candidates by bound (later calls double):
# enough to keep every thread busy.
LAZY_TILE = 64


@dataclass(frozen=True)
class BatchResult:
    """The batch BatchBALD picked, in pick order, and how each step was computed.

    Attributes
    ----------
    indices : ndarray of shape (b,), int64
        Pool indices in the order they were picked.
    scores : ndarray of shape (b,), float64
        The batch's mutual information ``a(A) = I(y_A; ω)`` after each pick, in nats.
        Sampled steps report the estimate as it is, never clipped: a score above
        ``log K`` is estimator noise.
    utilities : ndarray of shape (b, N), float64 or None
        ``utilities[t, x] = a(A_t ∪ {x})`` for every candidate x at step t; nan at points
        already picked and at non-candidates. None unless ``return_utilities=True``.
    num_configurations : ndarray of shape (b,), int64
        Rows M of the batch's joint at each step (1 at step 0), after merging and pruning.
    exact : ndarray of shape (b,), bool
        Whether each step enumerated every configuration.
    mode : ndarray of shape (b,), str
        "exact", "pruned" (exact less negligible configurations, within ``error_bounds``)
        or "sampled".
    error_bounds : ndarray of shape (b,), float64
        Certified bound on how far the step's utilities lie below the exact ones: 0 on
        exact steps, the pruning bound on pruned steps, nan on sampled steps.
    std_errors : ndarray of shape (b,), float64
        Standard error of the picked point's utility on sampled steps (nan otherwise).
    ambiguous : ndarray of shape (b,), bool
        Sampled steps whose top-two utilities lie within two standard errors of their
        difference: the pick there is decided by sampling noise.
    num_evaluations : ndarray of shape (b,), int64
        Candidates whose utility the step computed (fewer than the pool when bounds
        showed the others cannot be picked).
    bound_rows : ndarray of shape (b,), int64
        Rows G of the coarse joint that bounded candidates' utilities (0 when none did).
    num_bounded : ndarray of shape (b,), int64
        Candidates bounded with it. A step scored ``num_bounded·G + num_evaluations·M``
        configuration rows in all.
    """

    indices: np.ndarray
    scores: np.ndarray
    utilities: np.ndarray | None
    num_configurations: np.ndarray
    exact: np.ndarray
    mode: np.ndarray
    error_bounds: np.ndarray
    std_errors: np.ndarray
    ambiguous: np.ndarray
    num_evaluations: np.ndarray
    bound_rows: np.ndarray
    num_bounded: np.ndarray


def top_k(scores_N, k=None, tie_tolerance=TIE_TOLERANCE):
    """The k best points in the order greedy selection with the tie rule picks them.

    Each pick is the lowest index among the remaining scores within ``tie_tolerance`` of the
    best remaining one: mathematically equal scores that rounding set a few ulps apart keep
    index order (plain sorting would rank them by their rounding).

    Parameters
    ----------
    scores_N : ndarray of shape (N,), float64
        Static scores (e.g. BALD), none nan.
    k : int or None
        Picks, at most N; None ranks every point.
    tie_tolerance : float

    Returns
    -------
    indices : ndarray of shape (min(k, N),), intp
    """
    N = len(scores_N)
    k = N if k is None else min(k, N)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    order_N = np.argsort(-scores_N, kind="stable")
    sorted_N = scores_N[order_N]
    # Chains of sorted neighbours within the tolerance. Every score of a chain lies more
    # than the tolerance above every score of the next, so the picks finish a chain before
    # starting the next; only the chains the first k picks reach matter.
    chain_N = np.concatenate([[0], np.cumsum(sorted_N[:-1] - sorted_N[1:] > tie_tolerance)])
    n = int(np.searchsorted(chain_N, chain_N[k - 1], side="right"))
    order_n, sorted_n, chain_n = order_N[:n], sorted_N[:n], chain_N[:n]
    starts = np.flatnonzero(np.diff(chain_n, prepend=-1))
    ends = np.append(starts[1:], n)
    # A chain within the tolerance of its best score is one tie: index order.
    picks_n = order_n[np.lexsort((order_n, chain_n))]
    wide = sorted_n[starts] - sorted_n[ends - 1] > tie_tolerance
    for s, e in zip(starts[wide], ends[wide]):
        picks_n[s:e] = _tie_rule_order(sorted_n[s:e], order_n[s:e], tie_tolerance)
    return picks_n[:k]


def _tie_rule_order(sorted_n, index_n, tie_tolerance):
    """Greedy order of one chain wider than the tolerance (scores sorted descending).

    A heap holds the indices within the tolerance of the best remaining score; that window
    only grows as the best remaining score falls.
    """
    picked = np.zeros(len(sorted_n), dtype=bool)
    heap, picks = [], []
    best = window = 0
    while len(picks) < len(sorted_n):
        while picked[best]:
            best += 1
        while window < len(sorted_n) and sorted_n[window] >= sorted_n[best] - tie_tolerance:
            heapq.heappush(heap, (index_n[window], window))
            window += 1
        index, position = heapq.heappop(heap)
        picked[position] = True
        picks.append(index)
    return picks


def select(pool, batch_size, candidates, *, num_samples, rng, return_utilities,
           next_joint=_joint.next_joint, lazy=None, lazy_tile=LAZY_TILE,
           coarse_min_work=COARSE_MIN_WORK, tie_tolerance=TIE_TOLERANCE, on_step=None):
    """Greedy BatchBALD over validated inputs.

    Parameters
    ----------
    pool : ArrayPool or a pool with the same methods
        Answers the driver's questions about the pool points (``_pool.ArrayPool``).
    batch_size : int
    candidates : ndarray of shape (n,), intp, sorted ascending, no repeats
    num_samples : int
        Configuration budget of the joint.
    rng : numpy.random.Generator or RandomState
    return_utilities : bool
        Compute and return every utility (disables laziness).
    next_joint : callable
        ``next_joint(state, probs_A_K_C, num_samples, rng)``: the joint state once the
        batch, whose rows in pick order are ``probs_A_K_C``, has grown by one pick.
    lazy : bool or None
        None: skip candidates that certified bounds rule out (the coarse joint on every
        step, last gains on exact and pruned steps). True: also last gains on sampled
        steps, which noise may break. False: score every candidate.
    lazy_tile : int
        Candidates of the first kernel call that scores by bound.
    coarse_min_work : int
        Steps scoring fewer candidate × configuration rows than this in full get no
        coarse joint.
    tie_tolerance : float
        Utilities this close to the best are tied; ties go to the lowest index.
    on_step : callable or None
        Called as ``on_step(done, total)`` after each pick.

    Returns
    -------
    result : BatchResult
    """
    N, K, C = pool.shape
    steps = min(batch_size, len(candidates))
    cond_entropy_N = pool.cond_entropy_N
    dtype = pool.dtype
    # Rounding of one computed score, relative to the terms it sums: bounds carry it.
    rounding = 4 * (K + C) * np.finfo(dtype).eps
    available = np.zeros(N, dtype=bool)
    available[candidates] = True
    # Upper bound on each candidate's marginal gain: its last computed gain (submodularity).
    upper_gain_N = np.full(N, np.inf)

    out = {name: np.empty(steps, dtype=kind) for name, kind in [
        ("indices", np.int64), ("scores", np.float64), ("num_configurations", np.int64),
        ("exact", bool), ("mode", "<U7"), ("error_bounds", np.float64),
        ("std_errors", np.float64), ("ambiguous", bool), ("num_evaluations", np.int64),
        ("bound_rows", np.int64), ("num_bounded", np.int64)]}
    utilities = np.full((steps, N), np.nan) if return_utilities else None

    # The driver's own products are small: BLAS threads left spinning after them would take
    # the cores from the kernels' threads (W2: twice the kernel time). Limiting them costs
    # ~10 ms once (threadpoolctl scans the loaded libraries): runs of small steps skip it.
    big = len(candidates) * num_samples >= coarse_min_work
    with blas_limit(1) if big else contextlib.nullcontext():
        state = _joint.empty_joint(K)
        probs_A_K_C = np.empty((0, K, C))  # the batch's rows, in pick order
        batch_score, batch_error, batch_cond_entropy = 0.0, 0.0, 0.0
        for t in range(steps):
            if t > 0:
                probs_A_K_C = np.concatenate([probs_A_K_C,
                                              pool.rows(out["indices"][t - 1:t])])
                state = next_joint(state, probs_A_K_C, num_samples, rng)
            remaining = np.flatnonzero(available)
            sampled = state.mode == "sampled"

            def scorer(joint_M_K, weights_M, correction=0.0):
                """Utilities of candidates against a joint, and the rounding they may carry."""
                joint_M_K = joint_M_K.astype(dtype, copy=False)

                def score(xs):
                    joint_entropy, offset_n = pool.joint_entropy(joint_M_K, weights_M,
                                                                 state.offset_K, xs)
                    slack = ROUNDING_SLACK + rounding * (
                        np.abs(joint_entropy) + np.abs(offset_n) + abs(correction))
                    return (joint_entropy + correction + offset_n - batch_cond_entropy
                            - cond_entropy_N[xs]), slack
                return score

            utility = scorer(state.joint_M_K, state.weights_M)
            stale = not return_utilities and (lazy if lazy is not None else not sampled)
            joint_G_K, correction = (None, 0.0)
            if not return_utilities and lazy is not False and \
                    len(remaining) * state.num_configurations >= coarse_min_work:
                joint_G_K, correction = _joint.coarsen(state, pool.row_sum_range)
            bounds = []
            if joint_G_K is not None:
                # A bound costs G rows where a score costs M: bound that many more per call.
                bounds.append((scorer(joint_G_K, np.ones(len(joint_G_K)), correction),
                               lazy_tile * state.num_configurations // len(joint_G_K)))
            if stale or bounds:
                upper_n = batch_score + batch_error + upper_gain_N[remaining] if stale else \
                    np.full(len(remaining), np.inf)
                # Sampled steps report the runner-up's distance too, so it must be the true one.
                evaluated, utility_n, slack_n, num_bounded = _bounded_evaluate(
                    bounds, utility, remaining, upper_n, lazy_tile, tie_tolerance,
                    top=2 if sampled else 1)
            else:
                evaluated, (utility_n, slack_n), num_bounded = remaining, utility(remaining), 0
            upper_gain_N[evaluated] = utility_n + 2 * slack_n + state.error_bound - batch_score
            # evaluated is ascending, so the first near-maximum is the lowest tied index.
            best = int(np.argmax(utility_n >= utility_n.max() - tie_tolerance))
            pick = int(evaluated[best])
            std_error, ambiguous = np.nan, False
            if state.mode == "sampled":
                std_error, ambiguous = _sampling_noise(state, pool, evaluated, utility_n)
            for name, value in [("indices", pick), ("scores", utility_n[best]),
                                ("num_configurations", state.num_configurations),
                                ("exact", state.mode == "exact"), ("mode", state.mode),
                                ("error_bounds", np.nan if state.mode == "sampled"
                                 else state.error_bound),
                                ("std_errors", std_error), ("ambiguous", ambiguous),
                                ("num_evaluations", len(evaluated)),
                                ("bound_rows", 0 if joint_G_K is None else len(joint_G_K)),
                                ("num_bounded", num_bounded)]:
                out[name][t] = value
            if return_utilities:
                utilities[t, evaluated] = utility_n
            available[pick] = False
            batch_score, batch_error = utility_n[best], state.error_bound
            batch_cond_entropy += cond_entropy_N[pick]
            if on_step is not None:
                on_step(t + 1, steps)
        return BatchResult(utilities=utilities, **out)


def _bounded_evaluate(bounds, utility, pool, upper_n, tile, tie_tolerance, top=1):
    """Score candidates best bound first until no unscored one can be among the ``top``.

    Branch and bound over refinements of increasing cost: each candidate starts at its
    bound ``upper_n`` (inf when unknown), each function in ``bounds`` gives a tighter one,
    ``utility`` the value. The open candidate with the highest bound decides what runs
    next: its refinement, on the open candidates at its level, highest bounds first, a tile
    that doubles at each call of that level. Stops once every candidate not scored has a
    bound more than ``tie_tolerance`` below the ``top``-th best utility, so those top
    candidates (and their tie-breaks) are the ones full evaluation gives.

    Parameters
    ----------
    bounds : list of (callable, int)
        ``f(xs) -> (bound_n, slack_n)`` and the candidates of its first call.
    utility : callable
        ``utility(xs) -> (utility_n, slack_n)``.
    pool : ndarray of intp, ascending
    upper_n : ndarray of float
        Starting bounds, including their rounding.
    tile : int
        Candidates of the first ``utility`` call.
    tie_tolerance : float
    top : int

    Returns
    -------
    evaluated : ndarray, ascending
    utility_n, slack_n : ndarray
        Their utilities and rounding.
    num_bounded : int
        Candidates whose bound was refined by ``bounds``.
    """
    refine = [f for f, _ in bounds] + [utility]
    tiles = [t for _, t in bounds] + [tile]
    level_n = np.zeros(len(pool), dtype=np.intp)  # refinements done; len(refine): scored
    bound_n = np.array(upper_n, dtype=np.float64)  # the utility once scored
    slack_n = np.zeros(len(pool))
    while True:
        scored = level_n == len(refine)
        threshold = -np.inf
        if scored.sum() >= top:
            threshold = np.partition(bound_n[scored], -top)[-top] - tie_tolerance
        open_ = np.flatnonzero(~scored & (bound_n >= threshold))
        if not len(open_):
            break
        open_ = open_[np.argsort(-bound_n[open_], kind="stable")]  # ties: lowest index first
        level = level_n[open_[0]]
        at_level = open_[level_n[open_] == level]
        if np.isinf(bound_n[open_[0]]):  # no order among unbounded candidates: one call
            chosen = np.sort(at_level[np.isinf(bound_n[at_level])])
        else:
            chosen = np.sort(at_level[:tiles[level]])
            tiles[level] *= 2
        value_n, slack = refine[level](pool[chosen])
        if level == len(refine) - 1:
            bound_n[chosen], slack_n[chosen] = value_n, slack
        else:  # the bound's rounding, and the rounding of the utility it bounds
            bound_n[chosen] = np.minimum(bound_n[chosen], value_n + 2 * slack)
        level_n[chosen] = level + 1
    scored = np.flatnonzero(level_n == len(refine))
    num_bounded = int(np.count_nonzero(level_n > 0)) if bounds else 0
    return pool[scored], bound_n[scored], slack_n[scored], num_bounded


def _sampling_noise(state, pool, evaluated, utility_n):
    """Standard error of the top utility, and whether the runner-up is within two standard
    errors of the difference (both from the same draws, so the difference is paired).

    Draws are treated as independent from the mixture; with S draws per member the
    stratified estimator's variance is no larger, so the standard error is conservative.
    """
    top = np.argsort(-utility_n, kind="stable")[:2]
    terms = [_joint.estimator_terms(state, probs_K_C)
             for probs_K_C in pool.rows(evaluated[top])]
    counts_M = terms[0][1]
    M = counts_M.sum()

    def std_error(g_M):
        mean = counts_M @ g_M / M
        return np.sqrt(counts_M @ (g_M - mean) ** 2 / (M - 1) / M) if M > 1 else np.inf

    std_error_top = std_error(terms[0][0])
    if len(top) < 2:
        return std_error_top, False
    gap = utility_n[top[0]] - utility_n[top[1]]
    return std_error_top, bool(gap <= 2 * std_error(terms[0][0] - terms[1][0]))
