"""The joint state of the batch so far: its label configurations and their weights.

Every state is what the kernels score against::

    H(y_A, y_x) ≈ Σ_m weights_M[m] Σ_c −P[m, c] log P[m, c] + Σ_k offset_K[k] Σ_c p[x, k, c]
    P[m, c]     = Σ_k joint_M_K[m, k] · p[x, k, c]

- exact: every configuration of y_A, ``joint_M_K = J / K`` (the mixture's 1/K folded in),
  unit weights;
- pruned: the exact joint less configurations of negligible mass. Each term −P log P is
  ≥ 0, so the sum is a lower bound; the dropped atoms (at most ``n`` of them, total mass
  ``r``) add at most ``r log(n / r)`` (the entropy of mass r spread evenly), so the value is
  certified within ``error_bound`` of the exact one;
- sampled: M draws of y_A, S = M / K per member, each the importance-weighted term
  ``g_m = Σ_c −P log P / q_m`` of the estimator ``(1/M) Σ_m g_m``. Identical draws are merged
  into one row with their count in the weight; every row is scaled by its largest entry so
  that products of many small probabilities cannot underflow, and the scales come back
  through ``offset_K``. With row m scaled by e^{s_m}, ``g_m = Σ_c −P̃ log P̃ / q̃_m −
  s_m Σ_c P̃ / q̃_m``; the last sum is 1 only for rows of p[x] that sum to 1, so the scales
  enter per member, weighted by x's row sums (which the input may leave off 1 by 1e-3).
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import _backend

# Memory the unmerged draws of a sampled joint may take (they are ~M·(K + A) numbers).
MAX_DRAW_BYTES = 256 * 2**20
# Draws per member may grow to this many times the budget's share while they merge into
# fewer distinct rows than the budget; beyond that the counts barely sharpen the estimate.
MAX_GROWTH = 16
# Rows of the coarse joints that bound a step's scores: the first has about 3K groups (a
# power of 2, at most COARSE_GROUPS), each next one splits every row of the last up to
# COARSE_ROWS and this fraction of the joint's rows, so that bounding a candidate costs
# far less than scoring it (W2, M = 10000: 16-23 of 10000 candidates left to score); a
# level of COARSEST_GROUPS rows may go in front (CoarseLevels). Every candidate is bounded
# by the first level, so its rows are most of a step's work when few are scored: with K =
# 20, 64 of them then 1024 score 30% fewer rows than 128 then 1024 on W7s (23% on W2); with
# K = 100, 64 score 2.4x more on W7 and 256 14% more than 128.
COARSE_GROUPS = 128
COARSE_GROUPS_PER_MEMBER = 3
COARSEST_GROUPS = 16
COARSE_ROWS = 1024
COARSE_FRACTION = 1 / 8
# Lloyd iterations of the first grouping, from drawn centres or the last step's, and of
# each split: the bound is valid after any number, only its tightness improves.
COARSE_ITERATIONS = 8
WARM_ITERATIONS = 3
SPLIT_ITERATIONS = 4
# The rows × groups products of the grouping run in chunks of at most this many bytes:
# in cache, and reused by the allocator (a whole 10000 × 128 product is a fresh mapping
# each time, and its page faults cost more than the product: W7s 6.4 s → 5.0 s).
COARSE_CHUNK_BYTES = 2 * 2**20
# Per-row terms of sampled estimates are computed from P in chunks of rows of this size.
TERMS_CHUNK_BYTES = 2 * 2**20
_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class Draws:
    """Sampled configurations before merging: what incremental sampling extends.

    Attributes
    ----------
    labels_M_A : ndarray of shape (M, A), intp
        The labels of each draw.
    member_M : ndarray of shape (M,), intp
        The posterior sample each draw came from.
    rank_M : ndarray of shape (M,), intp
        The draw's place among its member's draws: keeping ``rank < S`` keeps S draws of
        every member, as the stratified estimator needs.
    log_joint_M_K : ndarray of shape (M, K)
        ``log J[m, k] = Σ_a log p[a, k, labels[m, a]]``.
    """

    labels_M_A: np.ndarray
    member_M: np.ndarray
    rank_M: np.ndarray
    log_joint_M_K: np.ndarray

    def __len__(self):
        return len(self.member_M)

    def take(self, rows):
        return Draws(self.labels_M_A[rows], self.member_M[rows], self.rank_M[rows],
                     self.log_joint_M_K[rows])

    def concat(self, other):
        return Draws(*(np.concatenate([a, b]) for a, b in zip(
            (self.labels_M_A, self.member_M, self.rank_M, self.log_joint_M_K),
            (other.labels_M_A, other.member_M, other.rank_M, other.log_joint_M_K))))


@dataclass(frozen=True)
class JointState:
    """Configurations of the batch's labels, as the kernels consume them.

    Attributes
    ----------
    joint_M_K : ndarray of shape (M, K)
        ``J[m, k] / K``, up to a per-row scale in sampled states.
    weights_M : ndarray of shape (M,)
        Weight of each configuration in the entropy sum.
    offset_K : ndarray of shape (K,)
        ``Σ_k offset_K[k] Σ_c p[x, k, c]`` is added to the weighted sum to give the joint
        entropy with x (zeros unless rows are scaled).
    mode : {"exact", "pruned", "sampled"}
    error_bound : float, default=0.0
        Pruned states: the certified bound on how far any H(y_A, y_x) computed from the
        state lies below the exact value.
    dropped_mass : float, default=0.0
        Pruned states: the mass of the configurations left out.
    draws : Draws or None
        Sampled states: the unmerged draws.
    counts_M : ndarray of shape (M,) or None
        Sampled states: how many draws each merged row stands for.
    log_scale_M : ndarray of shape (M,) or None
        Sampled states: each row's scale (``log max_k J[m, k]``).
    """

    joint_M_K: np.ndarray
    weights_M: np.ndarray
    offset_K: np.ndarray
    mode: str
    error_bound: float = 0.0
    dropped_mass: float = 0.0
    draws: Draws = None
    counts_M: np.ndarray = None
    log_scale_M: np.ndarray = None

    @property
    def exact(self):
        """True when the rows enumerate every configuration."""
        return self.mode == "exact"

    @property
    def num_configurations(self):
        return self.joint_M_K.shape[0]


def empty_joint(K):
    """The joint of the empty batch: one configuration of probability 1 under every member."""
    return JointState(np.full((1, K), 1.0 / K), np.ones(1), np.zeros(K), "exact")


def _expand(joint_M_K, probs_K_C):
    """``J_new[(m, c), k] = J[m, k] · p[a, k, c]``: every configuration extended by a's label."""
    M, K = joint_M_K.shape
    joint_M_C_K = np.multiply(joint_M_K[:, None, :], probs_K_C.T[None, :, :], order="C")
    return joint_M_C_K.reshape(M * probs_K_C.shape[1], K)


def extend_exact(state, probs_K_C):
    """Exact joint of the batch with one more point: M grows by a factor of C."""
    joint_M_K = _expand(state.joint_M_K, probs_K_C)
    return JointState(joint_M_K, np.ones(len(joint_M_K)), np.zeros(joint_M_K.shape[1]),
                      "exact")


def mass_error_bound(mass, num_atoms):
    """Largest entropy-sum ``Σ −p log p`` of ``num_atoms`` atoms of total ``mass``."""
    if mass <= 0:
        return 0.0
    return mass * (math.log(num_atoms) - math.log(mass))


def extend_pruned(state, probs_K_C, num_points, tol, max_rows=None):
    """The exact joint with one more point, less the lightest configurations it can spare.

    Drops configurations, lightest first, while the certified error of every
    H(y_A, y_x) stays ≤ ``tol``. The mass dropped at earlier steps counts too, so the
    returned ``error_bound`` can exceed ``tol`` when that mass alone does.

    Parameters
    ----------
    state : JointState
        Exact or pruned joint of the batch before the new point.
    probs_K_C : ndarray of shape (K, C)
        The new point's probabilities.
    num_points : int
        |A| including the new point.
    tol : float
        Certified error allowed, in nats.
    max_rows : int or None
        Give up, before copying the kept rows, when more than this many would be kept.

    Returns
    -------
    state : JointState or None
        Pruned (or exact, when nothing could be spared); None past ``max_rows``.
    """
    C = probs_K_C.shape[1]
    joint_M_K = _expand(state.joint_M_K, probs_K_C)
    mass_M = joint_M_K.sum(axis=1)
    # Configurations dropped earlier grow (or shrink) with the new point's row sums.
    carried = state.dropped_mass * float(probs_K_C.sum(axis=1).max())
    order = np.argsort(mass_M, kind="stable")
    dropped_mass_j = carried + np.cumsum(mass_M[order])
    # Atoms of H(y_A, y_x) outside the kept rows: at most every atom of the full extension.
    num_atoms = C ** (num_points + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bounds = np.where(dropped_mass_j > 0, dropped_mass_j * (
            math.log(num_atoms) - np.log(dropped_mass_j)), 0.0)
    num_dropped = int(np.searchsorted(bounds > tol, True))  # the bound grows with r
    if max_rows is not None and len(joint_M_K) - num_dropped > max_rows:
        return None
    offset_K = np.zeros(joint_M_K.shape[1])
    if num_dropped == 0 and carried == 0:
        return JointState(joint_M_K, np.ones(len(joint_M_K)), offset_K, "exact")
    keep = np.sort(order[num_dropped:])
    dropped_mass = float(dropped_mass_j[num_dropped - 1]) if num_dropped else carried
    return JointState(joint_M_K[keep], np.ones(len(keep)), offset_K, "pruned",
                      error_bound=mass_error_bound(dropped_mass, num_atoms),
                      dropped_mass=dropped_mass)


def start_draws(K, S, first_rank=0):
    """No labels yet: S empty draws per member, ranked from ``first_rank``."""
    return Draws(np.empty((S * K, 0), dtype=np.intp), np.repeat(np.arange(K), S),
                 np.tile(np.arange(first_rank, first_rank + S), K), np.zeros((S * K, K)))


def extend_draws(draws, probs_K_C, rng):
    """Each draw gets a label for one more point, from the member that made the draw.

    A draw from p(y_A | ω_k) extended by one from p(y_x | ω_k) is a draw from
    p(y_A, y_x | ω_k). One ``rng.random(M)`` call per point.
    """
    M, A = draws.labels_M_A.shape
    labels_M_A = np.empty((M, A + 1), dtype=np.intp)
    labels_M_A[:, :A] = draws.labels_M_A
    log_joint_M_K = draws.log_joint_M_K.copy()
    _draw(probs_K_C, draws.member_M, rng, labels_M_A[:, A], log_joint_M_K)
    return Draws(labels_M_A, draws.member_M, draws.rank_M, log_joint_M_K)


def _draw(probs_K_C, member_M, rng, labels_M, log_joint_M_K):
    """A label from ``probs_K_C[member_M[m]]`` for every draw m (one ``rng.random`` call),
    into ``labels_M``, and its log-probabilities added to ``log_joint_M_K``
    (the kernels' ``draw_labels``)."""
    probs_K_C = np.ascontiguousarray(probs_K_C)
    with np.errstate(divide="ignore"):
        log_probs_C_K = np.ascontiguousarray(np.log(probs_K_C).T, dtype=np.float64)
    _backend.get_kernels().draw_labels(probs_K_C, log_probs_C_K, member_M,
                                       rng.random(len(member_M)), labels_M, log_joint_M_K)


def append_labels(draws, probs_K_C, labels_M):
    """The draws with one more point's labels given (drawn by the caller)."""
    with np.errstate(divide="ignore"):
        log_probs_K_C = np.log(probs_K_C)
    return Draws(np.column_stack([draws.labels_M_A, labels_M]), draws.member_M,
                 draws.rank_M, draws.log_joint_M_K + log_probs_K_C[:, labels_M].T)


def _unique_rows(labels_M_A, C):
    """First index, id (0..U-1, per row) and count of each distinct row of labels."""
    A = labels_M_A.shape[1]
    if C ** A < 2 ** 63:  # one int64 key per row sorts far faster than rows
        keys = labels_M_A @ (C ** np.arange(A, dtype=np.int64))
    else:
        # Sorting rows costs O(A) per comparison and grows with the batch: sort a 64-bit
        # hash of each row instead, and check it against the rows (a collision, about
        # M²/2^64 likely, falls back to sorting the rows).
        multipliers = np.random.default_rng(0).integers(1, 2**63, size=A, dtype=np.int64)
        keys = labels_M_A @ (2 * multipliers + 1)  # wraps modulo 2^64
    _, first_U, ids_M, counts_U = np.unique(keys, return_index=True, return_inverse=True,
                                            return_counts=True)
    ids_M = ids_M.reshape(-1)
    if C ** A >= 2 ** 63 and not np.array_equal(labels_M_A, labels_M_A[first_U[ids_M]]):
        _, first_U, ids_M, counts_U = np.unique(labels_M_A, axis=0, return_index=True,
                                                return_inverse=True, return_counts=True)
    return first_U, ids_M.reshape(-1), counts_U


def from_draws(draws, C):
    """The sampled state of some draws of C-class labels: duplicates merged, rows scaled."""
    M, K = draws.log_joint_M_K.shape
    first_U, _, counts_U = _unique_rows(draws.labels_M_A, C)
    log_joint_U_K = draws.log_joint_M_K[first_U]
    # The member that made a draw gives it positive probability: the max is finite.
    log_scale_U = log_joint_U_K.max(axis=1)
    joint_U_K = np.exp(log_joint_U_K - log_scale_U[:, None])
    joint_U_K /= K
    weights_U = counts_U / (M * joint_U_K.sum(axis=1))
    offset_K = -(weights_U * log_scale_U) @ joint_U_K
    return JointState(joint_U_K, weights_U, offset_K, "sampled",
                      draws=draws, counts_M=counts_U.astype(np.float64),
                      log_scale_M=log_scale_U)


def _fresh_draws(probs_A_K_C, S, first_rank, rng):
    """S new draws per member of every point's label: ``extend_draws`` point by point,
    into arrays allocated once (the same random numbers, the same sums)."""
    A, K, _ = probs_A_K_C.shape
    draws = start_draws(K, S, first_rank)
    labels_M_A = np.empty((len(draws), A), dtype=np.intp)
    for a in range(A):
        _draw(probs_A_K_C[a], draws.member_M, rng, labels_M_A[:, a], draws.log_joint_M_K)
    return Draws(labels_M_A, draws.member_M, draws.rank_M, draws.log_joint_M_K)


def fit_budget(draws, probs_A_K_C, num_samples, rng, max_draw_bytes=MAX_DRAW_BYTES,
               max_growth=MAX_GROWTH):
    """The sampled state with as many draws per member as merge into ``num_samples`` rows.

    Scoring costs one row per distinct configuration, so the budget bounds distinct rows,
    not draws: when draws repeat (confident models), fresh draws are added, as many per
    member as still fit; when they outgrow it, each member keeps its first draws.

    Parameters
    ----------
    draws : Draws
        Draws of every point of the batch.
    probs_A_K_C : ndarray of shape (A, K, C)
        Probabilities of the batch's points, for fresh draws.
    num_samples : int
        Budget of distinct rows (each member keeps at least one draw).
    rng : numpy.random.Generator or numpy.random.RandomState
    max_draw_bytes : int
        Memory the draws may take.
    max_growth : int
        At most this many times ``num_samples // K`` draws per member.
    """
    K, C = probs_A_K_C.shape[1:]
    S = int(draws.rank_M.max()) + 1
    max_S = max(S, min(max_growth * max(1, num_samples // K),
                       max_draw_bytes // (K * 8 * (K + probs_A_K_C.shape[0] + 2))))
    while True:
        fit_S = _draws_per_member_that_fit(draws, C, num_samples)
        if fit_S < S:
            draws = draws.take(draws.rank_M < fit_S)
            break
        if S >= max_S:
            break
        more = min(S, max_S - S)  # doubling: a handful of rounds whatever the growth
        draws = draws.concat(_fresh_draws(probs_A_K_C, more, S, rng))
        S += more
    return from_draws(draws, C)


def _draws_per_member_that_fit(draws, C, num_samples):
    """The largest S' ≥ 1 whose draws of rank < S' hold at most ``num_samples`` distinct
    configurations (the number of draws per member when all fit)."""
    _, ids_M, counts_U = _unique_rows(draws.labels_M_A, C)
    if len(counts_U) <= num_samples:
        return int(draws.rank_M.max()) + 1
    # A configuration is among the draws of rank < S' iff its lowest rank is < S'.
    first_rank_U = np.full(len(counts_U), np.iinfo(np.intp).max)
    np.minimum.at(first_rank_U, ids_M, draws.rank_M)
    return max(1, int(np.partition(first_rank_U, num_samples)[num_samples]))


def sample_joint(probs_A_K_C, num_samples, rng):
    """Sampled joint of the batch, as batchbald_redux and scikit-activeml draw it: every
    label anew, ``max(1, num_samples // K)`` draws per member (then merged).

    Parameters
    ----------
    probs_A_K_C : ndarray of shape (A, K, C)
        Probabilities of the batch's points.
    num_samples : int
        Configuration budget M.
    rng : numpy.random.Generator or numpy.random.RandomState
        Source of every draw (``rng.random`` only).
    """
    S = max(1, num_samples // probs_A_K_C.shape[1])
    return from_draws(_fresh_draws(probs_A_K_C, S, 0, rng), probs_A_K_C.shape[2])


def next_joint(state, probs_A_K_C, num_samples, rng, *, tol=0.0, incremental=False,
               max_draw_bytes=MAX_DRAW_BYTES):
    """The joint for the next greedy step, once the batch has grown by one point.

    ``probs_A_K_C`` holds the batch's rows in pick order, the new point last. Exact while
    ``C ** A <= num_samples``; then, with ``tol > 0``, pruned while the configurations
    kept within the certified error ``tol`` fit ``num_samples``; then sampled.
    ``incremental``: the previous step's draws get a label for the new point and the draws
    are fitted to the budget of distinct rows (:func:`fit_budget`); otherwise every label
    is drawn anew (:func:`sample_joint`). ``max_draw_bytes`` caps the draws that fitting
    adds.
    """
    A, K, C = probs_A_K_C.shape
    probs_K_C = probs_A_K_C[-1]
    if state.mode == "exact" and C ** A <= num_samples:
        return extend_exact(state, probs_K_C)
    if state.mode != "sampled" and tol > 0:
        pruned = extend_pruned(state, probs_K_C, A, tol, max_rows=num_samples)
        if pruned is not None and pruned.error_bound <= tol:
            return pruned
        del pruned  # not held while the draws are made
    if not incremental:
        # The next step draws anew: its draws need not outlive the merge.
        return dataclasses.replace(sample_joint(probs_A_K_C, num_samples, rng), draws=None)
    if state.draws is not None:
        draws = extend_draws(state.draws, probs_K_C, rng)
    else:
        draws = _fresh_draws(probs_A_K_C, max(1, num_samples // K), 0, rng)
    return fit_budget(draws, probs_A_K_C, num_samples, rng, max_draw_bytes)


class CoarseLevels:
    """Coarse joints of a state, coarsest first, whose scores bound the state's score.

    Write the state's sum as ``Σ_m w_m f(P_m)`` with ``f(P) = Σ_c −P_c log P_c`` and
    ``P_m = J_m p_x``. With ``S_m = Σ_c P_m[c]``, ``f(P) = S·H(P / S) + S log(1/S)``, and
    the entropy H is concave, so merging a group g of rows into the one row
    ``J_g = Σ_{m∈g} w_m J_m`` can only raise the sum::

        Σ_{m∈g} w_m f(P_m) ≤ f(P_g) + Σ_{m∈g} w_m S_m log(T_g / S_m),
        T_g = Σ_{m∈g} w_m S_m

    (P_g = J_g p_x). For rows of p that sum to 1, ``S_m = Σ_k J[m, k]`` whatever x, so the
    last sum is a constant; rows off 1 (within ``row_sum_range``) move it by at most the
    ratio of the range, which the constant covers. The bound is tight where the rows of a
    group have alike posteriors over the members ``π_m = J_m / S_m``: its looseness is at
    most ``Σ_{m∈g} w_m S_m KL(π_m ‖ π_g)`` for every x, which the grouping minimises
    (Bregman k-means, :func:`_group_rows`).

    Every grouping gives a bound, so the levels nest: the first groups all rows into
    ``num_groups``; each next one splits every group of the last into ``ways``
    (:func:`_split_groups`) while it keeps at most ``max_groups`` rows and ``fraction`` of
    the state's. The first rules out the clear losers for few rows per candidate; finer
    ones rule out the near ones it is too loose for (at b = 100 and K = 100 the 128-row
    bound left 6700 of 10000 candidates to score in full, the 1024-row one 500). A finer
    level is grouped when first asked for: steps that never need it never pay for it.

    Parameters
    ----------
    state : JointState
    row_sum_range : (float, float)
        Least and largest ``Σ_c p[x, k, c]`` over candidates and members.
    centres : ndarray of shape (G, K) or None
        First centres of the first grouping (the last step's ``centres``: the rows of the
        next step's joint are this step's extended by one label, so their posteriors move
        little); None draws them from the rows.
    coarsest : bool
        Put a level of ``COARSEST_GROUPS`` rows in front, made by grouping the first
        level's rows again: it rules out candidates far from the best for an eighth of the
        rows, which pays where many are far (K = 100: half of them on W6's steps, against
        one in 16 on W7s's).
    num_groups, ways, max_groups : int
        None: ``COARSE_GROUPS_PER_MEMBER · K`` rounded up to a power of 2, at most
        ``COARSE_GROUPS``; and as many ways as reach ``max_groups`` in one split.
    fraction : float
    iterations : int
        Lloyd iterations of the first grouping from drawn centres (WARM_ITERATIONS from
        given ones; splits take SPLIT_ITERATIONS).

    Attributes
    ----------
    rows : list of int
        Rows of each level's joint, at most (empty when the state has too few rows).
    centres : ndarray of shape (G, K) or None
        The first grouping's centres.
    coarsest : bool
        Whether ``rows[0]`` is the coarsest level asked for.
    """

    def __init__(self, state, row_sum_range=(1.0, 1.0), centres=None, coarsest=False,
                 num_groups=None, ways=None, max_groups=COARSE_ROWS,
                 fraction=COARSE_FRACTION, iterations=COARSE_ITERATIONS):
        self._state, self._row_sum_range = state, row_sum_range
        if num_groups is None:
            num_groups = min(COARSE_GROUPS, 2 ** math.ceil(math.log2(
                COARSE_GROUPS_PER_MEMBER * state.joint_M_K.shape[1])))
        if ways is None:  # the next level at max_groups
            ways = max(2, max_groups // num_groups)
        self._sums_M = state.joint_M_K.sum(axis=1)
        most = min(max_groups, int(len(self._sums_M) * fraction),
                   np.count_nonzero(self._sums_M))
        self.rows, self.centres, self._levels, self.coarsest = [], None, [], False
        if min(num_groups, most) < 2:
            return
        self.rows = [min(num_groups, most)]
        while most // self.rows[-1] >= 2:
            self.rows.append(self.rows[-1] * min(ways, most // self.rows[-1]))
        self._mass_M = state.weights_M * self._sums_M
        if centres is not None and len(centres) == self.rows[0]:
            iterations = WARM_ITERATIONS
        else:
            centres = None
        G = self.rows[0]
        group_M, self.centres = _group_rows(state.joint_M_K, self._sums_M, state.weights_M,
                                            self._mass_M, G, iterations, centres)
        self._groups = [(group_M, G)]
        if coarsest and G >= 2 * COARSEST_GROUPS:
            # The groups' own rows grouped again: a G-row problem.
            joint_G_K = _group_sums(state.joint_M_K, state.weights_M, group_M, G)
            sums_G = joint_G_K.sum(axis=1)
            if np.count_nonzero(sums_G) >= COARSEST_GROUPS:
                top_G, _ = _group_rows(joint_G_K, sums_G, np.ones(G), sums_G, COARSEST_GROUPS,
                                       COARSE_ITERATIONS)
                self.rows.insert(0, COARSEST_GROUPS)
                self._groups.insert(0, (top_G[group_M], COARSEST_GROUPS))
                self.coarsest = True

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, level):
        """``(joint_G_K, correction)`` of a level: score ``joint_G_K`` with unit weights;
        that score plus ``correction`` (with the state's ``offset_K`` term) bounds the
        state's score."""
        state = self._state
        while len(self._groups) <= level:
            parent_M, P = self._groups[-1]
            ways = self.rows[len(self._groups)] // self.rows[len(self._groups) - 1]
            self._groups.append(_split_groups(state.joint_M_K, self._sums_M, state.weights_M,
                                              self._mass_M, parent_M, P, ways,
                                              SPLIT_ITERATIONS))
        while len(self._levels) <= level:
            group_M, G = self._groups[len(self._levels)]
            self._levels.append(_merge_groups(state, group_M, G, self._sums_M, self._mass_M,
                                              self._row_sum_range))
        return self._levels[level]


def _merge_groups(state, group_M, G, sums_M, mass_M, row_sum_range):
    """The coarse joint of one grouping and its correction (:class:`CoarseLevels`)."""
    weights_M = state.weights_M
    joint_G_K = _group_sums(state.joint_M_K, weights_M, group_M, G)
    live = sums_M > 0  # rows of zero probability add nothing either way
    group_mass_M = np.bincount(group_M, weights=mass_M, minlength=G)[group_M[live]]
    lo, hi = row_sum_range
    log_ratio_M = np.log(group_mass_M) - np.log(sums_M[live]) + math.log(hi / lo)
    # S_m lies within [lo, hi] times its value for unit row sums: take the end that is larger.
    scale_M = np.where(log_ratio_M >= 0, hi, lo)
    correction = float((weights_M[live] * sums_M[live] * scale_M) @ log_ratio_M)
    return joint_G_K, correction


def _group_rows(joint_M_K, sums_M, weights_M, mass_M, G, iterations, centres=None):
    """Rows grouped by their posterior over members, minimising ``Σ mass_m KL(π_m ‖ π_g)``.

    KL is a Bregman divergence, so the best ``π_g`` of a group is its mass-weighted mean and
    the assignment step is a product with ``log π_g`` (Lloyd's algorithm in that geometry).
    The posteriors ``π_m = J_m / S_m`` are never formed, so that grouping takes O(M) memory
    beside the joint: the positive scale 1/S_m moves no row's argmax, and a group's
    ``Σ mass_m π_m`` is ``Σ w_m J_m``. The products run in chunks of rows for the same reason.
    The first centres, unless given, are rows drawn by mass from a fixed seed: the grouping
    only decides how tight the bound is, never a result, so it must not consume the
    caller's draws.

    Returns
    -------
    group_M : ndarray of shape (M,), intp
    centre_G_K : ndarray of shape (G, K)
        The centres after the last update.
    """
    M = len(joint_M_K)
    if centres is None:
        first = np.random.default_rng(0).choice(M, G, replace=False, p=mass_M / mass_M.sum())
        centre_G_K = joint_M_K[first] / sums_M[first, None]
    else:
        centre_G_K = np.array(centres, dtype=np.float64)
    live_weights_M = np.where(sums_M > 0, weights_M, 0.0)
    chunk = max(1, COARSE_CHUNK_BYTES // (np.dtype(np.float64).itemsize * G))
    group_M = np.empty(M, dtype=np.intp)
    for _ in range(iterations):
        log_centre_K_G = np.log(np.maximum(centre_G_K, _TINY)).T
        for m0 in range(0, M, chunk):
            group_M[m0:m0 + chunk] = (joint_M_K[m0:m0 + chunk] @ log_centre_K_G).argmax(axis=1)
        _update_centres(centre_G_K, group_M, joint_M_K, live_weights_M, mass_M)
    return group_M, centre_G_K


def _update_centres(centre_G_K, group_M, joint_M_K, live_weights_M, mass_M):
    """Lloyd's update in KL geometry, in place: each group's mass-weighted mean posterior
    (empty groups keep their centre)."""
    G = len(centre_G_K)
    group_mass_G = np.bincount(group_M, weights=mass_M, minlength=G)
    filled = group_mass_G > 0
    sums_G_K = _group_sums(joint_M_K, live_weights_M, group_M, G)
    centre_G_K[filled] = sums_G_K[filled] / group_mass_G[filled, None]


def _split_groups(joint_M_K, sums_M, weights_M, mass_M, parent_M, P, ways, iterations):
    """Every group of ``parent_M`` split into at most ``ways`` by the same Lloyd algorithm
    within the group (:func:`_group_rows`), each row choosing among its own group's
    sub-centres only: O(M·ways·K) per iteration however many groups.

    Returns
    -------
    group_M : ndarray of shape (M,), intp
        The finer groups, numbered 0..G-1.
    G : int
        How many are not empty.
    """
    M, K = joint_M_K.shape
    # Each group's first sub-centres: ``ways`` of its rows drawn by mass without
    # replacement (the largest log(u) / mass), from a fixed seed as in _group_rows.
    with np.errstate(divide="ignore"):
        key_M = np.log(np.random.default_rng(0).random(M)) / mass_M
    order = np.lexsort((-key_M, parent_M))
    rank = np.arange(M) - np.searchsorted(parent_M[order], parent_M[order])
    seeds = order[(rank < ways) & (mass_M[order] > 0)]
    seed_rank = np.empty(M, dtype=np.intp)
    seed_rank[order] = rank
    centre_S_K = np.full((P * ways, K), _TINY)
    centre_S_K[parent_M[seeds] * ways + seed_rank[seeds]] = \
        joint_M_K[seeds] / sums_M[seeds, None]
    live_weights_M = np.where(sums_M > 0, weights_M, 0.0)
    group_M = np.empty(M, dtype=np.intp)
    nearest = _backend.get_kernels().nearest_subgroups
    for _ in range(iterations):
        log_centre_P_K_W = np.ascontiguousarray(
            np.log(np.maximum(centre_S_K, _TINY)).reshape(P, ways, K).transpose(0, 2, 1))
        nearest(joint_M_K, parent_M, log_centre_P_K_W, group_M)
        _update_centres(centre_S_K, group_M, joint_M_K, live_weights_M, mass_M)
    used_G, group_M = np.unique(group_M, return_inverse=True)
    return group_M.reshape(-1), len(used_G)


def _group_sums(joint_M_K, weights_M, group_M, G):
    """``joint_G_K[g] = Σ_{m in g} weights_M[m] · joint_M_K[m]`` (the kernels' ``group_sums``)."""
    return _backend.get_kernels().group_sums(joint_M_K, weights_M, group_M, np.empty(
        (G, joint_M_K.shape[1])))


def estimator_terms(state, probs_n_K_C):
    """Per-row terms ``g_m`` of a sampled state's estimate of H(y_A, y_x), for n points x.

    The estimate is ``counts_M @ g_M / counts_M.sum()``; used for standard errors and the
    contenders' fresh rounds. The entropies of the M·n rows of P run in the kernels.

    Parameters
    ----------
    state : JointState
        Sampled.
    probs_n_K_C : ndarray of shape (n, K, C)

    Returns
    -------
    g_n_M : ndarray of shape (n, M)
    counts_M : ndarray of shape (M,)
    """
    n, K, C = probs_n_K_C.shape
    M = state.num_configurations
    probs_K_nC = probs_n_K_C.transpose(1, 0, 2).reshape(K, n * C)
    # Σ_c P[m, c] = Σ_k J[m, k] Σ_c p[x, k, c]: the row scale's term, without P.
    g_M_n = -state.log_scale_M[:, None] * (state.joint_M_K @ probs_n_K_C.sum(axis=2).T)
    entropy = _backend.get_kernels().entropy_rows
    chunk = max(1, TERMS_CHUNK_BYTES // (8 * n * C))  # P in chunks of rows
    entropy_mn = np.empty(min(chunk, M) * n)
    for m0 in range(0, M, chunk):
        P_mn_C = (state.joint_M_K[m0:m0 + chunk] @ probs_K_nC).reshape(-1, C)
        entropy(P_mn_C, entropy_mn[:len(P_mn_C)])
        g_M_n[m0:m0 + chunk] += entropy_mn[:len(P_mn_C)].reshape(-1, n)
    g_M_n /= state.joint_M_K.sum(axis=1)[:, None]
    return g_M_n.T, state.counts_M


def fresh_state(probs_A_K_C, draws_per_member, rng):
    """A sampled state of new draws, independent of every earlier one (ranks from 0)."""
    return from_draws(_fresh_draws(probs_A_K_C, draws_per_member, 0, rng),
                      probs_A_K_C.shape[2])
