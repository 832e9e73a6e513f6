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

from . import _sizes



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

    @staticmethod
    def join(blocks, keep_M=None):
        """The draws of ``blocks`` in order, as one (only those ``keep_M`` keeps): each
        kept draw copied once, however many blocks."""
        if len(blocks) == 1:
            return blocks[0] if keep_M is None else blocks[0].take(keep_M)
        keeps = [slice(None)] * len(blocks) if keep_M is None else np.split(
            keep_M, np.cumsum([len(block) for block in blocks])[:-1])
        return Draws(*(np.concatenate([getattr(block, field)[keep]
                                       for block, keep in zip(blocks, keeps)])
                       for field in ("labels_M_A", "member_M", "rank_M", "log_joint_M_K")))


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
    row_sums_M : ndarray of shape (M,) or None
        ``joint_M_K.sum(axis=1)`` when the state's making computed it (read it through
        :func:`row_sums`).
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
    row_sums_M: np.ndarray = None

    @property
    def exact(self):
        """True when the rows enumerate every configuration."""
        return self.mode == "exact"

    @property
    def num_configurations(self):
        return self.joint_M_K.shape[0]


def row_sums(state):
    """``Σ_k joint_M_K[m, k]`` of a state's rows (computed once by the states that know it)."""
    if state.row_sums_M is not None:
        return state.row_sums_M
    return state.joint_M_K.sum(axis=1)


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
    # Configurations dropped earlier grow (or shrink) with the new point's row sums.
    carried = state.dropped_mass * float(probs_K_C.sum(axis=1).max())
    # Atoms of H(y_A, y_x) outside the kept rows: at most every atom of the full extension.
    num_atoms = C ** (num_points + 1)
    if max_rows is not None and len(state.joint_M_K) * C > max_rows:
        # Past max_rows, the bound of the rows that must go, the lightest, already exceeds
        # tol: known from their masses (a product and a partition) without the extension
        # or a sort. The masses' rounding differs from the sums below by ~1e-15
        # relatively, hence the margin; near it the full computation decides.
        mass_MC = (state.joint_M_K @ probs_K_C).reshape(-1)
        must_go = len(mass_MC) - max_rows
        lightest = carried + float(np.partition(mass_MC, must_go - 1)[:must_go].sum())
        if mass_error_bound(lightest, num_atoms) > tol * (1 + 1e-9):
            return None
    joint_M_K = _expand(state.joint_M_K, probs_K_C)
    mass_M = joint_M_K.sum(axis=1)
    order = np.argsort(mass_M, kind="stable")
    dropped_mass_j = carried + np.cumsum(mass_M[order])
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
                      dropped_mass=dropped_mass, row_sums_M=mass_M[keep])


def start_draws(K, S, first_rank=0):
    """No labels yet: S empty draws per member, ranked from ``first_rank``."""
    return Draws(np.empty((S * K, 0), dtype=np.intp), np.repeat(np.arange(K), S),
                 np.tile(np.arange(first_rank, first_rank + S), K), np.zeros((S * K, K)))


def extend_draws(draws, probs_K_C, rng, kernels):
    """Each draw gets a label for one more point, from the member that made the draw.

    A draw from p(y_A | ω_k) extended by one from p(y_x | ω_k) is a draw from
    p(y_A, y_x | ω_k). One ``rng.random(M)`` call per point.
    """
    M, A = draws.labels_M_A.shape
    labels_M_A = np.empty((M, A + 1), dtype=np.intp)
    labels_M_A[:, :A] = draws.labels_M_A
    log_joint_M_K = draws.log_joint_M_K.copy()
    _draw(probs_K_C, draws.member_M, rng, labels_M_A[:, A], log_joint_M_K, kernels)
    return Draws(labels_M_A, draws.member_M, draws.rank_M, log_joint_M_K)


def _draw(probs_K_C, member_M, rng, labels_M, log_joint_M_K, kernels):
    """A label from ``probs_K_C[member_M[m]]`` for every draw m (one ``rng.random`` call),
    into ``labels_M``, and its log-probabilities added to ``log_joint_M_K``
    (the kernels' ``draw_labels``)."""
    probs_K_C = np.ascontiguousarray(probs_K_C)
    with np.errstate(divide="ignore"):
        log_probs_C_K = np.ascontiguousarray(np.log(probs_K_C).T, dtype=np.float64)
    kernels.draw_labels(probs_K_C, log_probs_C_K, member_M, rng.random(len(member_M)),
                        labels_M, log_joint_M_K)


def append_labels(draws, probs_K_C, labels_M):
    """The draws with one more point's labels given (drawn by the caller)."""
    with np.errstate(divide="ignore"):
        log_probs_K_C = np.log(probs_K_C)
    return Draws(np.column_stack([draws.labels_M_A, labels_M]), draws.member_M,
                 draws.rank_M, draws.log_joint_M_K + log_probs_K_C[:, labels_M].T)


def _unique_rows(labels_M_A, C, kernels):
    """First index, id (0..U-1, per row) and count of each distinct row of labels, and
    whether the ids follow the rows' keys (not after a hash collision: then the rows').

    ``labels_M_A``: an array, or a list of arrays whose rows follow each other (merged as
    their concatenation, which only a hash collision forms)."""
    blocks = labels_M_A if isinstance(labels_M_A, list) else [labels_M_A]
    A = blocks[0].shape[1]
    if C ** A < 2 ** 63:  # one int64 key per row sorts far faster than rows
        multipliers = C ** np.arange(A, dtype=np.int64)
    else:
        # Sorting rows costs O(A) per comparison and grows with the batch: sort a 64-bit
        # hash of each row instead, and check it against the rows (a collision, about
        # M²/2^64 likely, falls back to sorting the rows).
        multipliers = 2 * np.random.default_rng(0).integers(1, 2**63, size=A,
                                                            dtype=np.int64) + 1
    keys = np.concatenate([block @ multipliers for block in blocks])  # hashes wrap
    M = len(keys)
    first_M, ids_M, counts_M = (np.empty(M, dtype=np.intp) for _ in range(3))
    U = kernels.unique_keys(keys, first_M, ids_M, counts_M)
    first_U, counts_U, by_key = first_M[:U], counts_M[:U], True
    if C ** A >= 2 ** 63:
        labels_M_A = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if not np.array_equal(labels_M_A, labels_M_A[first_U[ids_M]]):
            _, first_U, ids_M, counts_U = np.unique(labels_M_A, axis=0, return_index=True,
                                                    return_inverse=True, return_counts=True)
            by_key = False
    return first_U, ids_M.reshape(-1), counts_U, by_key


def _unique_subset(unique, keep_M):
    """``_unique_rows`` of the rows ``keep_M`` keeps, from ``unique``, that of all rows:
    the distinct rows kept stay in order, so nothing is sorted again. None when the ids
    followed the rows, not their keys (the rows kept would be merged by key)."""
    _, ids_M, counts_U, by_key = unique
    if not by_key:
        return None
    ids_n = ids_M[keep_M]
    counts_U = np.bincount(ids_n, minlength=len(counts_U))
    used_U = counts_U > 0
    first_U = np.full(len(counts_U), len(ids_n), dtype=np.intp)
    np.minimum.at(first_U, ids_n, np.arange(len(ids_n)))
    return first_U[used_U], (np.cumsum(used_U) - 1)[ids_n], counts_U[used_U], True


def from_draws(draws, C, kernels, unique=None):
    """The sampled state of some draws of C-class labels: duplicates merged, rows scaled
    (``unique``: the draws' ``_unique_rows`` when known)."""
    M, K = draws.log_joint_M_K.shape
    first_U, _, counts_U, _ = unique or _unique_rows(draws.labels_M_A, C, kernels)
    # The member that made a draw gives it positive probability: the max is finite.
    joint_U_K, log_scale_U = np.empty((len(first_U), K)), np.empty(len(first_U))
    kernels.exp_rows(draws.log_joint_M_K, first_U, joint_U_K, log_scale_U)
    sums_U = joint_U_K.sum(axis=1)
    weights_U = counts_U / (M * sums_U)
    offset_K = -(weights_U * log_scale_U) @ joint_U_K
    return JointState(joint_U_K, weights_U, offset_K, "sampled",
                      draws=draws, counts_M=counts_U.astype(np.float64),
                      log_scale_M=log_scale_U, row_sums_M=sums_U)


def _fresh_draws(probs_A_K_C, S, first_rank, rng, kernels):
    """S new draws per member of every point's label: ``extend_draws`` point by point,
    into arrays allocated once (the same random numbers, the same sums)."""
    A, K, _ = probs_A_K_C.shape
    draws = start_draws(K, S, first_rank)
    labels_M_A = np.empty((len(draws), A), dtype=np.intp)
    for a in range(A):
        _draw(probs_A_K_C[a], draws.member_M, rng, labels_M_A[:, a], draws.log_joint_M_K,
              kernels)
    return Draws(labels_M_A, draws.member_M, draws.rank_M, draws.log_joint_M_K)


def fit_budget(draws, probs_A_K_C, num_samples, rng, kernels,
               max_draw_bytes=_sizes.MAX_DRAW_BYTES):
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
    kernels : Kernels
    max_draw_bytes : int
        Memory the draws may take (``_sizes.max_draws_per_member``).
    """
    A, K, C = probs_A_K_C.shape
    S = int(draws.rank_M.max()) + 1
    max_S = max(S, _sizes.max_draws_per_member(num_samples, K, A, max_draw_bytes))
    # The rounds' fresh draws stay blocks, joined once at the end: each merge needs only
    # the keys and ranks of all.
    blocks, rank_M = [draws], draws.rank_M
    while True:
        unique = _unique_rows([block.labels_M_A for block in blocks], C, kernels)
        fit_S = _draws_per_member_that_fit(rank_M, unique, num_samples)
        if fit_S < S:
            keep_M = rank_M < fit_S
            draws, unique = Draws.join(blocks, keep_M), _unique_subset(unique, keep_M)
            break
        if S >= max_S:
            draws = Draws.join(blocks)
            break
        more = min(S, max_S - S)  # doubling: a handful of rounds whatever the growth
        blocks.append(_fresh_draws(probs_A_K_C, more, S, rng, kernels))
        rank_M = np.concatenate([rank_M, blocks[-1].rank_M])
        S += more
    return from_draws(draws, C, kernels, unique)


def _draws_per_member_that_fit(rank_M, unique, num_samples):
    """The largest S' ≥ 1 whose draws of rank < S' hold at most ``num_samples`` distinct
    configurations (the number of draws per member when all fit), for draws of ranks
    ``rank_M``; ``unique``: the draws' ``_unique_rows``."""
    _, ids_M, counts_U, _ = unique
    if len(counts_U) <= num_samples:
        return int(rank_M.max()) + 1
    # A configuration is among the draws of rank < S' iff its lowest rank is < S'.
    first_rank_U = np.full(len(counts_U), np.iinfo(np.intp).max)
    np.minimum.at(first_rank_U, ids_M, rank_M)
    return max(1, int(np.partition(first_rank_U, num_samples)[num_samples]))


def sample_joint(probs_A_K_C, num_samples, rng, kernels):
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
    kernels : Kernels
    """
    S = _sizes.draws_per_member(num_samples, probs_A_K_C.shape[1])
    return from_draws(_fresh_draws(probs_A_K_C, S, 0, rng, kernels), probs_A_K_C.shape[2],
                      kernels)


def next_joint(state, probs_A_K_C, settings, rng):
    """The joint for the next greedy step, once the batch has grown by one point.

    ``probs_A_K_C`` holds the batch's rows in pick order, the new point last. Exact while
    ``C ** A <= settings.num_samples``; then, with ``settings.tol > 0``, pruned while the
    configurations kept within the certified error ``tol`` fit the budget; then sampled.
    ``settings.incremental``: the previous step's draws get a label for the new point and
    the draws are fitted to the budget of distinct rows (:func:`fit_budget`, within
    ``settings.max_draw_bytes``); otherwise every label is drawn anew
    (:func:`sample_joint`).
    """
    A, K, C = probs_A_K_C.shape
    num_samples, kernels = settings.num_samples, settings.kernels
    probs_K_C = probs_A_K_C[-1]
    if state.mode == "exact" and C ** A <= num_samples:
        return extend_exact(state, probs_K_C)
    if state.mode != "sampled" and settings.tol > 0:
        pruned = extend_pruned(state, probs_K_C, A, settings.tol, max_rows=num_samples)
        if pruned is not None and pruned.error_bound <= settings.tol:
            return pruned
        del pruned  # not held while the draws are made
    if not settings.incremental:
        # The next step draws anew: its draws need not outlive the merge.
        return dataclasses.replace(sample_joint(probs_A_K_C, num_samples, rng, kernels),
                                   draws=None)
    if state.draws is not None:
        draws = extend_draws(state.draws, probs_K_C, rng, kernels)
    else:
        draws = _fresh_draws(probs_A_K_C, _sizes.draws_per_member(num_samples, K), 0, rng,
                             kernels)
    return fit_budget(draws, probs_A_K_C, num_samples, rng, kernels, settings.max_draw_bytes)


def estimator_terms(state, probs_n_K_C, kernels):
    """Per-row terms ``g_m`` of a sampled state's estimate of H(y_A, y_x), for n points x.

    The estimate is ``counts_M @ g_M / counts_M.sum()``; used for standard errors and the
    contenders' fresh rounds. The entropies of the M·n rows of P run in the kernels.

    Parameters
    ----------
    state : JointState
        Sampled.
    probs_n_K_C : ndarray of shape (n, K, C)
    kernels : Kernels

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
    chunk = _sizes.chunk_rows(_sizes.TERMS_CHUNK_BYTES, _sizes.FLOAT * n * C)  # P's rows
    entropy_mn = np.empty(min(chunk, M) * n)
    for m0 in range(0, M, chunk):
        P_mn_C = (state.joint_M_K[m0:m0 + chunk] @ probs_K_nC).reshape(-1, C)
        kernels.entropy_rows(P_mn_C, entropy_mn[:len(P_mn_C)])
        g_M_n[m0:m0 + chunk] += entropy_mn[:len(P_mn_C)].reshape(-1, n)
    g_M_n /= row_sums(state)[:, None]
    return g_M_n.T, state.counts_M


def fresh_state(probs_A_K_C, draws_per_member, rng, kernels):
    """A sampled state of new draws, independent of every earlier one (ranks from 0)."""
    return from_draws(_fresh_draws(probs_A_K_C, draws_per_member, 0, rng, kernels),
                      probs_A_K_C.shape[2], kernels)


def draws_joint(probs_A_K_C, num_draws, rng, kernels):
    """A sampled joint of new draws of the batch's labels, one row per draw (unmerged), as
    many from each member: row m is ``J[m] / (K · e^{s_m})``, weight ``1 / (D · q̃_m)``.

    Unmerged, so that a second joint built on the same draws (:func:`with_targets`) pairs
    with it row by row.
    """
    K = probs_A_K_C.shape[1]
    draws = _fresh_draws(probs_A_K_C, _sizes.draws_per_member(num_draws, K), 0, rng, kernels)
    log_scale_D = draws.log_joint_M_K.max(axis=1)
    joint_D_K = np.exp(draws.log_joint_M_K - log_scale_D[:, None]) / K
    weights_D = 1.0 / (len(draws) * joint_D_K.sum(axis=1))
    return JointState(joint_D_K, weights_D, -(weights_D * log_scale_D) @ joint_D_K,
                      "sampled", counts_M=np.ones(len(draws)), log_scale_M=log_scale_D)


def with_targets(base, target_probs_T_K_C, rng):
    """The joint of ``base``'s configurations each extended by a target's label.

    Exact ``base``: every target for every row, row ``(m, t, c')`` being
    ``joint_M_K[m] · p(x*_t, ·, c')`` weighted ``weights_M[m] / T``: scored with x, the mean
    over targets of ``H(y_A, y_x, y*_t)``. Sampled ``base`` (:func:`draws_joint`): one target
    per draw, every target as often as the draws allow (in random order), and each of its
    labels: the estimate of the same mean whose targets' labels are summed, not drawn
    (docs/algorithm.md, joint EPIG).

    Returns
    -------
    state : JointState
        ``counts_M`` holds the base row each row extends (for :func:`paired_terms`).
    """
    T, K, C = target_probs_T_K_C.shape
    B = base.num_configurations
    if base.mode == "exact":
        base_R = np.repeat(np.arange(B), T * C)
        probs_R_K = np.tile(target_probs_T_K_C.transpose(0, 2, 1).reshape(T * C, K), (B, 1))
        weights_R = base.weights_M[base_R] / T
        mode = "exact"
    else:
        t_B = rng.permutation(B) % T
        base_R = np.repeat(np.arange(B), C)
        probs_R_K = target_probs_T_K_C[t_B].transpose(0, 2, 1).reshape(B * C, K)
        weights_R = base.weights_M[base_R]
        mode = "sampled"
    joint_R_K = base.joint_M_K[base_R] * probs_R_K
    log_scale_R = np.zeros(len(base_R)) if base.log_scale_M is None \
        else base.log_scale_M[base_R]
    return JointState(joint_R_K, weights_R, -(weights_R * log_scale_R) @ joint_R_K, mode,
                      counts_M=base_R.astype(np.float64), log_scale_M=log_scale_R)


def paired_terms(base, extended, probs_n_K_C, kernels):
    """Per-draw terms of ``H(y_A, y_x) − (1/T) Σ_t H(y_A, y_x, y*_t)`` estimated on a
    sampled ``base`` and its :func:`with_targets` extension, for n points x.

    Both joints are made of the same draws, so each draw's term is the difference of its
    two: its surprisal ``−log q`` cancels. The estimate is their mean (the scores against
    the two joints' difference); their spread gives its standard error.

    Returns
    -------
    g_n_D : ndarray of shape (n, D)
    counts_D : ndarray of shape (D,), ones
    """
    D = base.num_configurations
    n, _, C = probs_n_K_C.shape
    g_n_D = np.zeros((n, D))
    for state, sign in ((base, 1.0), (extended, -1.0)):
        R = state.num_configurations
        base_R = state.counts_M.astype(np.intp) if state is extended else np.arange(D)
        # P of a chunk of points at a time: the contender rounds ask for hundreds.
        chunk = _sizes.chunk_rows(_sizes.TERMS_CHUNK_BYTES, _sizes.FLOAT * R * C)
        for i0 in range(0, n, chunk):
            P_i_R_C = np.einsum("rk,nkc->nrc", state.joint_M_K, probs_n_K_C[i0:i0 + chunk])
            i = len(P_i_R_C)
            f_iR = np.empty(i * R)
            kernels.entropy_rows(np.ascontiguousarray(P_i_R_C.reshape(i * R, C)), f_iR)
            f_i_R = (f_iR.reshape(i, R) - state.log_scale_M * P_i_R_C.sum(axis=2)) \
                * state.weights_M
            for g_D, f_R in zip(g_n_D[i0:i0 + chunk], f_i_R):
                g_D += sign * np.bincount(base_R, weights=f_R, minlength=D)
    return g_n_D * D, np.ones(D)
