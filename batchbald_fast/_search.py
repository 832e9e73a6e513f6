"""Finding a step's best candidates: the tie rule, ``top_k``, scorers and the branch and
bound over bounds of increasing cost.

Nothing here knows what the utility is (BatchBALD, joint EPIG): a :class:`Scorer` scores
candidates against one joint state for the objective (``_objectives``), and the branch and
bound only compares the numbers it returns.
"""

import heapq
from dataclasses import dataclass

import numpy as np

# Utilities this close to the best count as tied: mathematically equal utilities (duplicate
# points, points certain under every member) differ by rounding, and rounding must not
# decide between them.
TIE_TOLERANCE = 1e-10
# Rounding in one computed utility, beyond the relative rounding of the terms it sums;
# bounds carry it so that they stay upper bounds of computed utilities.
ROUNDING_SLACK = 1e-12
# Candidates of the first kernel call that scores candidates by bound (later calls double).
# Small, because with the finer coarse levels a step often needs only that first call
# (docs/workloads.md).
LAZY_TILE = 16


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


class BranchAndBound:
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
            first = open_[np.argmax(bound_n[open_])]  # the highest bound, lowest index
            level = level_n[first]
            at_level = open_[level_n[open_] == level]
            if np.isinf(bound_n[first]):  # no order among unbounded candidates: one call
                chosen = at_level[np.isinf(bound_n[at_level])]
            else:
                chosen = _highest(at_level, bound_n[at_level], tiles[level])
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


def _highest(index_n, value_n, k):
    """The k entries of ascending ``index_n`` with the highest values (ties: lowest index
    first), ascending: a stable sort's first k, found by a partition in O(n)."""
    if k >= len(index_n):
        return index_n
    kth = np.partition(value_n, len(value_n) - k)[len(value_n) - k]
    above = value_n > kth
    # The ties at the k-th value, lowest index first, fill what the values above leave.
    tied = np.flatnonzero(value_n == kth)[:k - np.count_nonzero(above)]
    above[tied] = True
    return index_n[above]


class Scorer:
    """Utilities of candidates against one joint state (or a coarse joint bounding it).

    ``utility(x) = H + correction + offset(x) − base − base_N[x]`` with ``H`` the pool's
    weighted entropy sum of the joint with x and ``offset(x)`` its row-scale term
    (``ArrayPool.joint_entropy``), and the rounding the value may carry. Counts the
    candidate × configuration rows it scored.

    Parameters
    ----------
    pool : ArrayPool or a pool with the same methods
    joint_M_K : ndarray of shape (M, K)
    weights_M, offset_K : ndarray
    base : float
        Subtracted from every utility (the batch's conditional entropy).
    base_N : ndarray of shape (N,)
        Subtracted per candidate (its conditional entropy).
    rounding : float
        Relative rounding of the terms a utility sums.
    correction : float, default=0.0
        Added to every utility (a coarse joint's bound correction).
    """

    def __init__(self, pool, joint_M_K, weights_M, offset_K, base, base_N, rounding,
                 correction=0.0):
        self._pool = pool
        self._joint_M_K = joint_M_K.astype(pool.dtype, copy=False)
        self._weights_M, self._offset_K = weights_M, offset_K
        self._base, self._base_N = base, base_N
        self._rounding, self._correction = rounding, correction
        self.rows = 0

    def __call__(self, xs):
        """``(utility_n, slack_n)`` of the candidates ``xs``."""
        self.count(len(xs))
        joint_entropy, offset_n = self._pool.joint_entropy(self._joint_M_K, self._weights_M,
                                                           self._offset_K, xs)
        return utilities(joint_entropy, offset_n, self._base_N[xs], *self.constants)

    def scorer(self):
        """Itself (a bound's scorer is made on first use: ``_objectives._CoarseBound``)."""
        return self

    def count(self, n):
        """Count n candidates scored against the joint."""
        self.rows += n * len(self._joint_M_K)

    @property
    def joint(self):
        """``(joint_M_K, weights_M, offset_K)``: what the pool scores candidates against."""
        return self._joint_M_K, self._weights_M, self._offset_K

    @property
    def constants(self):
        """``(base, rounding, correction)``: the rest of :func:`utilities`' arguments."""
        return self._base, self._rounding, self._correction


def utilities(joint_entropy_n, offset_n, base_n, base, rounding, correction):
    """A :class:`Scorer`'s ``(utility_n, slack_n)`` from the pool's two parts of each joint
    entropy (``ArrayPool.joint_entropy``) and the candidates' ``base_N``: one definition,
    for pools whose chunks compute it where they live (``batchbald_fast.dask``)."""
    slack = ROUNDING_SLACK + rounding * (
        np.abs(joint_entropy_n) + np.abs(offset_n) + abs(correction))
    return joint_entropy_n + correction + offset_n - base - base_n, slack


def best_index(utility_n, tie_tolerance):
    """Position of the pick among ascending candidates: the first within the tolerance of
    the best, i.e. the lowest tied index."""
    return int(np.argmax(utility_n >= utility_n.max() - tie_tolerance))


@dataclass
class Outcome:
    """What a step's search found.

    Attributes
    ----------
    evaluated : ndarray of intp, ascending
        Candidates scored.
    utility_n, slack_n : ndarray
        Their utilities and rounding.
    open_bound_n : ndarray
        Bounds of the candidates left unscored.
    num_bounded : int
        Candidates the bounds refined at all.
    level_counts : ndarray of int or None
        Candidates left at each level of the branch and bound (None: every candidate
        scored).
    rows : int
        Candidate × configuration rows scored, bounds included.
    best : int
        Position of the pick in ``evaluated``.
    """

    evaluated: np.ndarray
    utility_n: np.ndarray
    slack_n: np.ndarray
    open_bound_n: np.ndarray
    num_bounded: int
    level_counts: np.ndarray
    rows: int
    best: int

    @property
    def pick(self):
        """The picked candidate's pool index."""
        return self.evaluated[self.best]

    @property
    def score(self):
        """The pick's utility."""
        return self.utility_n[self.best]

    @property
    def num_evaluations(self):
        return len(self.evaluated)

    def top(self, k):
        """Pool indices and utilities of the k best scored, best first (ties: lowest
        index first)."""
        top = np.argsort(-self.utility_n, kind="stable")[:k]
        return self.evaluated[top], self.utility_n[top]

    def count_at_least(self, floor):
        """``(scored, unscored)``: candidates whose utility, and whose bound left unscored,
        is at least ``floor``."""
        return (np.count_nonzero(self.utility_n >= floor),
                np.count_nonzero(self.open_bound_n >= floor))

    def at_least(self, floor):
        """Pool indices (ascending) and utilities of the scored candidates at least
        ``floor``."""
        at = self.utility_n >= floor
        return self.evaluated[at], self.utility_n[at]

    def choose(self, x, utility):
        """Make candidate x (scored) the pick, with this utility."""
        self.best = int(np.searchsorted(self.evaluated, x))
        self.utility_n[self.best] = utility


class Search:
    """A step's search: every candidate scored, or a branch and bound over its bounds.

    Parameters
    ----------
    utility : Scorer
    bounds : list of (Scorer-like, int)
        Bounds of increasing cost and the candidates of their first calls.
    remaining : ndarray of intp, ascending
    upper_n : ndarray or None
        Starting bounds of the remaining candidates (None: unknown).
    tile : int
        Candidates of the first ``utility`` call.
    tie_tolerance : float
    """

    def __init__(self, utility, bounds, remaining, upper_n, tile, tie_tolerance):
        self._utility, self._bounds = utility, bounds
        self._remaining, self._tie_tolerance = remaining, tie_tolerance
        self._search = None
        if bounds or upper_n is not None:
            upper_n = np.full(len(remaining), np.inf) if upper_n is None else upper_n
            self._search = BranchAndBound(bounds, utility, remaining, upper_n, tile)

    def run(self, top=1, resolution=0.0):
        """Score until the ``top`` best are known to within ``resolution`` (go on from the
        last run when called again); the :class:`Outcome`."""
        if self._search is None:
            evaluated = self._remaining
            utility_n, slack_n = self._utility(evaluated)
            open_bound_n, level_counts, num_bounded = np.empty(0), None, 0
        else:
            evaluated, utility_n, slack_n, level_counts, open_bound_n = self._search.run(
                self._tie_tolerance, top=top, resolution=resolution)
            num_bounded = int(level_counts[1:].sum()) if self._bounds else 0
        rows = self._utility.rows + sum(bound.rows for bound, _ in self._bounds)
        return Outcome(evaluated, utility_n, slack_n, open_bound_n, num_bounded, level_counts,
                       rows, best_index(utility_n, self._tie_tolerance))
