"""The greedy BatchBALD driver: the step loop, conditional entropies, tie-breaking.

It knows nothing about which backend runs or where the pool lives: it asks a pool
(``_pool.ArrayPool``, or a pool on Dask) for joint entropies and rows.
"""

import contextlib
import heapq
import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.special

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
# Candidates of the first kernel call that scores candidates by bound (later calls double).
# With the finer coarse levels a step often needs only the first call, so it is small: 16
# against 64 scores 43% fewer rows on W2 (0.55 -> 0.50 s) and 25% fewer on W7s.
LAZY_TILE = 16
# Fresh draws for a sampled step's contenders (docs/sampled_steps.md): one-sided error
# probability of each test that drops a contender or declares the pick resolved, and the
# most rounds by default. On the pick-fidelity pools (C = 3 and 4, M = 1000, 64 sampled
# steps), with 16 rounds: α = 1e-3 94% right, 0.01 95%, 0.05 98% (16 steps left
# unresolved), 0.1 98% (7), in 1.1, 1.2, 0.98 and 0.91 s against 0.40 s without rounds;
# 8 rounds at 0.05 also 98% (23 unresolved), 32 98% (12). A looser test resolves steps
# sooner and drops more contenders, which pays for more of the rounds that decide.
ALPHA = 0.05
EXTRA_ROUNDS = 16
# Utilities this close are equally good picks: a step is resolved once every contender is
# confidently at most this far above the pick (the pick-fidelity benchmark's criterion).
RESOLUTION = 1e-3
# The rounds (and the candidates scored for them) score at most EXTRA_WORK times the rows
# the step scored and EXTRA_ROWS_MAX rows in all, for at most MAX_CONTENDERS contenders. A
# fresh round costs more per row than the kernel (drawing and merging its draws, the per-row
# terms: 50-120 kernel rows per draw), so the cap is low: W2 takes 0.36 s with rounds
# against 0.33 s without, while the small pools' rounds mostly stop at EXTRA_ROUNDS first.
EXTRA_WORK = 0.25
EXTRA_ROWS_MAX = 2**21
MAX_CONTENDERS = 256
# A sampled step's pick is resolved to this fraction of the paired standard error between
# the last sampled step's top two (docs/sampled_steps.md): candidates whose bound is within
# it of the best are left unscored. The full-M estimates cannot tell such candidates apart,
# and W7's late steps have hundreds of them (step 20: 472 candidates with a bound above the
# best estimate, 43 more than 0.005 above it, at a paired error of 0.0034).
RESOLVE_FRACTION = 1.0
SATURATION_POLICIES = ("restart", "greedy")


class SaturationWarning(UserWarning):
    """The batch's labels nearly identify the posterior sample: later gains are noise."""


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
        difference, after any extra draws for the contenders (then: a contender may still
        be more than 1e-3 nats better than the pick; docs/sampled_steps.md).
    saturated : ndarray of shape (b,), bool
        Steps whose batch score is within noise of ``log K`` or whose gain is within
        noise of 0 (two standard errors on sampled steps, the certified error plus the
        tie tolerance otherwise): the K posterior samples cannot tell more picks apart.
    segments : ndarray of shape (b,), int64
        Which greedy run each pick belongs to: 0, then one more after each restart
        (``saturation="restart"``). ``scores`` are the mutual information of the pick's
        segment.
    num_evaluations : ndarray of shape (b,), int64
        Candidates whose utility the step computed, on some or all of its rows (fewer
        than the pool when bounds or tests showed the others cannot be picked).
    bound_rows : ndarray of shape (b,), int64
        Rows G of the finest coarse joint that could bound candidates' utilities (0 when
        none did); coarser ones, from 16 rows up, bounded them first.
    num_bounded : ndarray of shape (b,), int64
        Candidates bounded by the coarsest.
    rows_scored : ndarray of shape (b,), int64
        Candidate × configuration rows the step scored, bounds included.
    decision_rows : ndarray of shape (b,), int64
        Configuration rows behind the pick's utility: M, plus the rows of extra draws on
        sampled steps that needed them.
    resolutions : ndarray of shape (b,), float64
        How far, in nats, the pick's utility may lie below the best utility of the step's
        own estimate: candidates whose bound was within this of the best were left
        unscored. 0 where every candidate that could be best was scored (exact and pruned
        steps, ``lazy=False``, a run's first sampled step, steps whose extra rounds scored
        the contenders left); on other sampled steps, the standard error of the
        difference between the last sampled step's top two utilities, which that estimate
        cannot resolve (docs/sampled_steps.md).
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
    saturated: np.ndarray
    segments: np.ndarray
    rows_scored: np.ndarray
    decision_rows: np.ndarray
    resolutions: np.ndarray


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
           coarse_min_work=COARSE_MIN_WORK, tie_tolerance=TIE_TOLERANCE, on_step=None,
           saturation="restart", extra_rounds=EXTRA_ROUNDS, resolve_fraction=RESOLVE_FRACTION):
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
        step, last gains on exact and pruned steps). True: last gains on sampled steps
        too, which noise may break. False: score every candidate against all M rows.
    lazy_tile : int
        Candidates of the first kernel call that scores by bound.
    coarse_min_work : int
        Steps scoring fewer candidate × configuration rows than this in full get no
        coarse joint.
    tie_tolerance : float
        Utilities this close to the best are tied; ties go to the lowest index.
    on_step : callable or None
        Called as ``on_step(done, total)`` after each pick.
    saturation : {"restart", "greedy"}
        After a sampled step whose score is within noise of ``ln K``: start a new greedy
        run from an empty batch (the picks so far stay picked), or keep extending this one.
    extra_rounds : int
        Most rounds of fresh draws (each as many as the step's) for the contenders of an
        ambiguous sampled step (:func:`_resolve_contenders`; with ``lazy=None`` only).
    resolve_fraction : float
        Sampled steps leave unscored the candidates whose bound is within this many paired
        standard errors (the last sampled step's) of the best scored; 0: every candidate
        that could be best is scored. Extra rounds then score the contenders left, those
        within ``Φ⁻¹(1 − ALPHA)`` paired errors (the step's own) below the pick, when the
        rounds can afford them.

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
        ("bound_rows", np.int64), ("num_bounded", np.int64), ("saturated", bool),
        ("segments", np.int64), ("rows_scored", np.int64), ("decision_rows", np.int64),
        ("resolutions", np.float64)]}
    utilities = np.full((steps, N), np.nan) if return_utilities else None

    # The driver's own products are small: BLAS threads left spinning after them would take
    # the cores from the kernels' threads (W2: twice the kernel time). Limiting them costs
    # ~10 ms once (threadpoolctl scans the loaded libraries): runs of small steps skip it.
    big = len(candidates) * num_samples >= coarse_min_work
    with blas_limit(1) if big else contextlib.nullcontext():
        state = _joint.empty_joint(K)
        probs_A_K_C = np.empty((0, K, C))  # the segment's rows, in pick order
        batch_score, batch_error, batch_cond_entropy = 0.0, 0.0, 0.0
        segment, restart, centres, coarsest = 0, False, None, True
        pair_error = 0.0  # the last sampled step's, in this greedy run
        for t in range(steps):
            if restart:
                # A new greedy run: earlier picks stay out of the pool, their gains are void.
                state, probs_A_K_C = _joint.empty_joint(K), np.empty((0, K, C))
                batch_score, batch_error, batch_cond_entropy = 0.0, 0.0, 0.0
                upper_gain_N[:] = np.inf
                centres, coarsest, pair_error = None, True, 0.0
                segment += 1
            elif t > 0:
                probs_A_K_C = np.concatenate([probs_A_K_C,
                                              pool.rows(out["indices"][t - 1:t])])
                state = next_joint(state, probs_A_K_C, num_samples, rng)
            remaining = np.flatnonzero(available)
            sampled = state.mode == "sampled"

            def scorer(joint_M_K, weights_M, offset_K, correction=0.0):
                """Utilities of candidates against a joint, and the rounding they may carry."""
                joint_M_K = joint_M_K.astype(dtype, copy=False)

                def score(xs):
                    joint_entropy, offset_n = pool.joint_entropy(joint_M_K, weights_M,
                                                                 offset_K, xs)
                    slack = ROUNDING_SLACK + rounding * (
                        np.abs(joint_entropy) + np.abs(offset_n) + abs(correction))
                    return (joint_entropy + correction + offset_n - batch_cond_entropy
                            - cond_entropy_N[xs]), slack
                return score

            utility = scorer(state.joint_M_K, state.weights_M, state.offset_K)
            stale = not return_utilities and (lazy if lazy is not None else not sampled)
            levels, bound_rows = [], [0]
            if not return_utilities and lazy is not False and \
                    len(remaining) * state.num_configurations >= coarse_min_work:
                levels = _joint.CoarseLevels(state, pool.row_sum_range, centres, coarsest)
                centres = levels.centres

            def bound(level, state=state, levels=levels):
                """Upper bounds of utilities from one coarse level."""
                def f(xs):
                    joint_G_K, correction = levels[level]
                    bound_rows[0] += len(xs) * len(joint_G_K)
                    return scorer(joint_G_K, np.ones(len(joint_G_K)), state.offset_K,
                                  correction)(xs)
                return f
            # A bound costs G rows where a score costs M: bound that many more per call.
            bounds = [(bound(level), lazy_tile * state.num_configurations // G)
                      for level, G in enumerate(levels.rows if levels else [])]

            std_error, ambiguous = np.nan, False
            decision_rows = state.num_configurations
            resolution = 0.0  # every candidate that could be best is scored
            if stale or bounds:
                if sampled and np.isfinite(pair_error):
                    resolution = resolve_fraction * pair_error
                upper_n = batch_score + batch_error + upper_gain_N[remaining] if stale \
                    else np.full(len(remaining), np.inf)
                search = _BranchAndBound(bounds, utility, remaining, upper_n, lazy_tile)
                # Sampled steps report the runner-up's distance too: it must be true (to
                # within the resolution).
                evaluated, utility_n, slack_n, level_counts, open_bound_n = search.run(
                    tie_tolerance, top=2 if sampled else 1, resolution=resolution)
                num_bounded = int(level_counts[1:].sum()) if bounds else 0
                if levels and levels.coarsest:
                    # It pays while the rows it saves (G per candidate it rules out) are
                    # as many as its own (16 per candidate it bounds).
                    coarsest = level_counts[1] * levels.rows[1] >= levels.rows[0] * num_bounded
            else:
                evaluated, (utility_n, slack_n) = remaining, utility(remaining)
                num_bounded, open_bound_n = 0, np.empty(0)
            rows_scored = bound_rows[0] + len(evaluated) * state.num_configurations
            # evaluated is ascending, so the first near-maximum is the lowest tied index.
            best = int(np.argmax(utility_n >= utility_n.max() - tie_tolerance))
            if sampled:
                std_error, ambiguous, pair_error = _sampling_noise(state, pool, evaluated,
                                                                   utility_n, resolution)
                # Contenders: within z paired errors of the pick, all of them scored (the
                # branch and bound goes on down to them when that is affordable).
                margin = scipy.special.ndtri(1 - ALPHA) * pair_error
                budget = min(EXTRA_WORK * rows_scored, EXTRA_ROWS_MAX)
                if ambiguous and extra_rounds > 0 and lazy is None and not return_utilities \
                        and np.isfinite(margin):
                    unscored = np.count_nonzero(open_bound_n >= utility_n[best] - margin)
                    if 0 < unscored * state.num_configurations <= budget:
                        evaluated, utility_n, slack_n, _, open_bound_n = search.run(
                            tie_tolerance, resolution=-margin)
                        rows_scored = bound_rows[0] + len(evaluated) * state.num_configurations
                        best = int(np.argmax(utility_n >= utility_n.max() - tie_tolerance))
                        resolution = 0.0
                    contenders = np.flatnonzero(utility_n >= utility_n[best] - margin)
                    if not (open_bound_n >= utility_n[best] - margin).any() and \
                            len(contenders) <= MAX_CONTENDERS and \
                            len(contenders) * state.num_configurations <= budget:
                        S = int(round(state.counts_M.sum())) // K
                        (lead, estimate, std_error, ambiguous, extra_rows,
                         decision_rows) = _resolve_contenders(
                            state, pool.rows(evaluated[contenders]), utility_n[contenders],
                            lambda: _joint.fresh_state(probs_A_K_C, S, rng),
                            budget, extra_rounds, tie_tolerance)
                        best = int(contenders[lead])
                        utility_n[best] = estimate  # the pick's score from every round
                        rows_scored += extra_rows
            upper_gain_N[evaluated] = utility_n + 2 * slack_n + state.error_bound - batch_score
            pick = int(evaluated[best])
            # Noise of the score and of the gain: what cannot tell a gain from nothing.
            noise = 2 * std_error if sampled else state.error_bound + tie_tolerance
            near_log_K = math.log(K) - utility_n[best] <= noise
            saturated = bool(near_log_K or utility_n[best] - batch_score <= noise)
            # Only a score at ln K restarts: a gain lost in the noise of a small budget
            # is the budget's limit, not the posterior samples'.
            restart = saturation == "restart" and sampled and near_log_K
            for name, value in [("indices", pick), ("scores", utility_n[best]),
                                ("num_configurations", state.num_configurations),
                                ("exact", state.mode == "exact"), ("mode", state.mode),
                                ("error_bounds", np.nan if state.mode == "sampled"
                                 else state.error_bound),
                                ("std_errors", std_error), ("ambiguous", ambiguous),
                                ("num_evaluations", len(evaluated)),
                                ("bound_rows", levels.rows[-1] if levels else 0),
                                ("num_bounded", num_bounded),
                                ("saturated", saturated), ("segments", segment),
                                ("rows_scored", rows_scored),
                                ("decision_rows", decision_rows),
                                ("resolutions", max(resolution, 0.0))]:
                out[name][t] = value
            if return_utilities:
                utilities[t, evaluated] = utility_n
            available[pick] = False
            batch_score, batch_error = utility_n[best], state.error_bound
            batch_cond_entropy += cond_entropy_N[pick]
            if on_step is not None:
                on_step(t + 1, steps)
        if out["saturated"].any():
            _warn_saturated(out, K, saturation)
        return BatchResult(utilities=utilities, **out)


# What has been warned about in this process: ("saturated", K) and ("uninformed",). A loop
# of calls warns once, not every call (the text carries scores, so Python's own
# once-per-location filter would not silence it); result.saturated flags every step.
_WARNED = set()
_WARNED_LOCK = threading.Lock()


def _first_time(key):
    """Whether ``key`` is warned about for the first time in this process."""
    with _WARNED_LOCK:
        first = key not in _WARNED
        _WARNED.add(key)
    return first


def _warn_saturated(out, K, saturation):
    first = int(np.argmax(out["saturated"]))
    if first == 0 and (K == 1 or out["scores"][0] < math.log(K) / 2):
        # Step 0 flagged far below ln K: no candidate's BALD is above noise. That is a
        # model whose samples agree everywhere (before any training, or copies of one
        # member), not a batch that exhausted them.
        if _first_time(("uninformed",)):
            warnings.warn(
                f"BatchBALD: the K={K} posterior samples predict the same for every "
                f"candidate (every information gain is 0), so every pick is a tie. "
                f"This is expected before any labels; otherwise check that the samples "
                f"differ (distinct seeds, dropout active at prediction). Warned once; "
                f"result.saturated flags such steps.", SaturationWarning, stacklevel=4)
        return
    if not _first_time(("saturated", K)):
        return
    after = {"restart": "each sampled step within noise of ln K starts a new greedy run "
                        "from an empty batch (saturation='greedy' keeps extending the batch)",
             "greedy": "later picks are decided by estimator noise (saturation='restart' "
                       "starts a new greedy run instead)"}[saturation]
    warnings.warn(
        f"BatchBALD saturated with K={K} posterior samples: from step {first} (batch "
        f"score {out['scores'][first]:.4f}, at most ln K = {math.log(K):.4f}) the K samples "
        f"tell no more candidates apart (the batch's labels nearly identify the sample, or "
        f"no candidate's gain is above noise); {int(out['saturated'].sum())} step(s) are "
        f"flagged in result.saturated, and {after}. Use more posterior samples (a larger K) "
        f"for batches this large. Warned once per K; result.saturated flags every such "
        f"step of every call.", SaturationWarning, stacklevel=4)


class _BranchAndBound:
    """Score candidates best bound first until no unscored one can be among the ``top``.

    Branch and bound over refinements of increasing cost: each candidate starts at its
    bound ``upper_n`` (inf when unknown), each function in ``bounds`` gives a tighter one,
    ``utility`` the value. The open candidate with the highest bound decides what runs
    next: its refinement, on the open candidates at its level, highest bounds first, a tile
    that doubles at each call of that level. :meth:`run` stops once every candidate not
    scored has a bound more than ``tie_tolerance`` below the ``top``-th best utility: those
    top candidates (and their tie-breaks) are the ones full evaluation gives. With
    ``resolution > 0``, once no unscored bound is more than ``resolution`` above it: each
    is then within ``resolution`` of full evaluation's. A later :meth:`run` goes on from
    there (with a lower resolution: further down).

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
    """

    def __init__(self, bounds, utility, pool, upper_n, tile):
        self._refine = [f for f, _ in bounds] + [utility]
        self._tiles = [t for _, t in bounds] + [tile]
        self._pool = pool
        self._level_n = np.zeros(len(pool), dtype=np.intp)  # len(refine): scored
        self._bound_n = np.array(upper_n, dtype=np.float64)  # the utility once scored
        self._slack_n = np.zeros(len(pool))

    def run(self, tie_tolerance, top=1, resolution=0.0):
        """Refine and score until the stopping rule holds.

        Parameters
        ----------
        tie_tolerance : float
        top : int
        resolution : float
            How far above the ``top``-th best an unscored candidate's bound may be; below
            0, candidates whose bound is within ``-resolution`` below it are scored too.

        Returns
        -------
        evaluated : ndarray, ascending
        utility_n, slack_n : ndarray
            Their utilities and rounding.
        level_counts : ndarray of int
            Candidates left at each level: 0 (not refined), 1 (by ``bounds[0]`` only),
            ..., ``len(bounds) + 1`` (scored).
        open_bound_n : ndarray of float
            The bounds of the candidates left unscored.
        """
        refine, tiles = self._refine, self._tiles
        level_n, bound_n, slack_n = self._level_n, self._bound_n, self._slack_n
        while True:
            scored = level_n == len(refine)
            threshold = -np.inf
            if scored.sum() >= top:
                threshold = np.partition(bound_n[scored], -top)[-top] - tie_tolerance + \
                    resolution
            open_ = np.flatnonzero(~scored & (bound_n >= threshold))
            if not len(open_):
                break
            open_ = open_[np.argsort(-bound_n[open_], kind="stable")]  # ties: lowest first
            level = level_n[open_[0]]
            at_level = open_[level_n[open_] == level]
            if np.isinf(bound_n[open_[0]]):  # no order among unbounded candidates: one call
                chosen = np.sort(at_level[np.isinf(bound_n[at_level])])
            else:
                chosen = np.sort(at_level[:tiles[level]])
                tiles[level] *= 2
            value_n, slack = refine[level](self._pool[chosen])
            if level == len(refine) - 1:
                bound_n[chosen], slack_n[chosen] = value_n, slack
            else:  # the bound's rounding, and the rounding of the utility it bounds
                bound_n[chosen] = np.minimum(bound_n[chosen], value_n + 2 * slack)
            level_n[chosen] = level + 1
        scored = level_n == len(refine)
        return (self._pool[scored], bound_n[scored], slack_n[scored],
                np.bincount(level_n, minlength=len(refine) + 1), bound_n[~scored])


def _resolve_contenders(state, probs_c_K_C, utility_c, fresh, budget, max_rounds,
                        tie_tolerance, alpha=ALPHA, resolution=RESOLUTION):
    """The pick among a sampled step's contenders, resolved with fresh draws where needed.

    Each round of fresh draws (from the same members, as many as the step's) is an
    independent estimator of every utility; a contender's estimate is the mean over the
    rounds, and its difference with the leader's has the variance of the paired per-row
    terms summed over the rounds. After each round a contender is dropped once the leader
    is better with confidence (one-sided, level ``alpha``); the step is resolved once every
    one left is confidently at most ``resolution`` above the leader. Rounds stop there, after
    ``max_rounds``, or before their rows would exceed ``budget``. docs/sampled_steps.md
    derives the rule and its error probability.

    Parameters
    ----------
    state : JointState
        The step's sampled state (round 0).
    probs_c_K_C : ndarray of shape (c, K, C)
        The contenders' rows, in ascending pool order.
    utility_c : ndarray of shape (c,)
        Their utilities from ``state``.
    fresh : callable
        ``fresh() -> JointState``: new draws, as many as ``state``'s, independent of every
        earlier one.
    budget : float
        Candidate × rows the rounds may score.
    max_rounds : int
    tie_tolerance, alpha, resolution : float

    Returns
    -------
    lead : int
        Position of the pick among the contenders.
    estimate, std_error : float
        Its utility from every round, and the standard error of that.
    ambiguous : bool
        Unresolved when the rounds stopped.
    extra_rows : int
        Candidate × rows of the fresh rounds.
    rows : int
        Rows behind the pick: the step's own and every fresh round's.
    """
    z = scipy.special.ndtri(1 - alpha)
    n = len(utility_c)
    draws = float(state.counts_M.sum())  # every round's, so its terms' sums add up
    mean_sum_c = np.zeros(n)
    # Σ over rounds of Σ_m counts_m (g_m − ḡ)(g_m − ḡ)ᵀ: any pair's paired sum of squares,
    # whichever contender leads (dropped contenders' entries go stale, unread).
    gram_c_c = np.zeros((n, n))

    def add_round(round_state, alive):
        g_a_M, counts_M = _joint.estimator_terms(round_state, probs_c_K_C[alive])
        mean_a = g_a_M @ counts_M / draws
        centred_a_M = g_a_M - mean_a[:, None]
        mean_sum_c[alive] += mean_a
        gram_c_c[np.ix_(alive, alive)] += (centred_a_M * counts_M) @ centred_a_M.T

    alive = np.arange(n)
    add_round(state, alive)
    offset_c = utility_c - mean_sum_c  # what a utility adds to the estimate of H(y_A, y_x)
    rounds, extra_rows, rows = 1, 0, state.num_configurations
    while True:
        mean_c = mean_sum_c / rounds + offset_c
        lead = alive[np.argmax(mean_c[alive] >= mean_c[alive].max() - tie_tolerance)]
        squares_c = np.diag(gram_c_c) - 2 * gram_c_c[lead] + gram_c_c[lead, lead]
        squares_c[lead] = gram_c_c[lead, lead]  # the leader's own error
        se_c = np.sqrt(np.maximum(squares_c, 0.0) / ((draws - 1) * draws)) / rounds
        gap_c = mean_c[lead] - mean_c
        alive = alive[(gap_c[alive] <= z * se_c[alive]) | (alive == lead)]
        others = alive[alive != lead]
        resolved = bool((gap_c[others] >= z * se_c[others] - resolution).all())
        next_rows = len(alive) * state.num_configurations  # about a fresh round's
        if resolved or rounds > max_rounds or extra_rows + next_rows > budget:
            break
        round_state = fresh()
        add_round(round_state, alive)
        extra_rows += len(alive) * round_state.num_configurations
        rows += round_state.num_configurations
        rounds += 1
    return lead, float(mean_c[lead]), float(se_c[lead]), not resolved, extra_rows, rows


def _sampling_noise(state, pool, evaluated, utility_n, resolution=0.0):
    """Standard error of the top utility, whether the runner-up is within two standard
    errors of the difference (both from the same draws, so the difference is paired), and
    that standard error. A candidate left unscored may be up to ``resolution`` above the
    runner-up scored: it counts as within noise when that could be.

    Draws are treated as independent from the mixture; with S draws per member the
    stratified estimator's variance is no larger, so the standard error is conservative.
    """
    top = np.argsort(-utility_n, kind="stable")[:2]
    terms_t_M, counts_M = _joint.estimator_terms(state, pool.rows(evaluated[top]))
    std_error_top = _paired_error(terms_t_M[0], counts_M)
    if len(top) < 2:
        return std_error_top, False, 0.0
    gap = utility_n[top[0]] - utility_n[top[1]]
    pair_error = _paired_error(terms_t_M[0] - terms_t_M[1], counts_M)
    return std_error_top, bool(gap <= 2 * pair_error + max(resolution, 0.0)), pair_error


def _paired_error(g_M, counts_M):
    """Standard error of the mean of per-row terms ``g_M`` (rows of ``counts_M`` draws;
    along the last axis). Unknown (inf) from one draw, and from draws that all fell on one
    configuration: their spread of 0 says nothing of the estimator's (K = 1,
    num_samples = 2: an estimate 1.3 nats off with a standard error of 0)."""
    M = counts_M.sum()
    if M <= 1 or len(counts_M) <= 1:
        return np.full(g_M.shape[:-1], np.inf)[()]
    mean = g_M @ counts_M / M
    return np.sqrt((g_M - mean[..., None]) ** 2 @ counts_M / (M - 1) / M)
