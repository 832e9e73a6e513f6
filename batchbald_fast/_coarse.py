"""Coarse joints: groups of a joint's rows merged into one, whose scores bound the joint's.

Entropy is concave, so merging rows can only raise a score (:class:`CoarseLevels` derives
the bound); the rows are grouped by Bregman k-means on their posteriors over the members so
that the bound is tight. The kernels come from the caller (``nearest_centres``,
``nearest_subgroups``, ``subgroup_seeds``, ``group_sums``).
"""

import math

import numpy as np

from . import _joint

# Rows of the coarse joints that bound a step's scores: the first has about 3K groups (a
# power of 2, at most COARSE_GROUPS), each next one splits every row of the last up to
# COARSE_ROWS and this fraction of the joint's rows, so that bounding a candidate costs
# far less than scoring it; a level of COARSEST_GROUPS rows may go in front
# (CoarseLevels). Every candidate is bounded by the first level, so its rows are most of a
# step's work when few are scored: hence about 3K groups, not more (docs/workloads.md).
COARSE_GROUPS = 128
COARSE_GROUPS_PER_MEMBER = 3
COARSEST_GROUPS = 16
COARSE_ROWS = 1024
COARSE_FRACTION = 1 / 8
# Lloyd iterations of the first grouping, from drawn centres or the last step's, and of
# each split: the bound is valid after any number, only its tightness improves. From the
# last step's centres one iteration a step goes on with Lloyd's algorithm across steps
# (the rows move little from one step to the next; the measurements behind these counts
# are in docs/sampled_steps.md).
COARSE_ITERATIONS = 8
WARM_ITERATIONS = 1
SPLIT_ITERATIONS = 2
_TINY = np.finfo(np.float64).tiny


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
    ones rule out the near ones it is too loose for. A finer level is grouped when first
    asked for: steps that never need it never pay for it.

    Parameters
    ----------
    state : JointState
    kernels : Kernels
    row_sum_range : (float, float)
        Least and largest ``Σ_c p[x, k, c]`` over candidates and members.
    centres : ndarray of shape (G, K) or None
        First centres of the first grouping (the last step's ``centres``: the rows of the
        next step's joint are this step's extended by one label, so their posteriors move
        little); None draws them from the rows.
    coarsest : bool
        Put a level of ``COARSEST_GROUPS`` rows in front, made by grouping the first
        level's rows again: it rules out candidates far from the best for an eighth of the
        rows, which pays where many are far.
    num_groups, ways, max_groups : int
        None: ``COARSE_GROUPS_PER_MEMBER · K`` rounded up to a power of 2, at most
        ``COARSE_GROUPS``; and as many ways as reach ``max_groups`` in one split.
    fraction : float
    iterations : int
        Lloyd iterations of the first grouping from drawn centres (WARM_ITERATIONS from
        given ones; splits take SPLIT_ITERATIONS).
    work : (int, int) or None
        The step's candidates and classes: a level is grouped only while its grouping
        costs fewer kernel rows than it can save (:func:`grouping_rows`); None: every
        level.

    Attributes
    ----------
    rows : list of int
        Rows of each level's joint, at most (empty when the state has too few rows).
    centres : ndarray of shape (G, K) or None
        The first grouping's centres.
    coarsest : bool
        Whether ``rows[0]`` is the coarsest level asked for.
    """

    def __init__(self, state, kernels, row_sum_range=(1.0, 1.0), centres=None, coarsest=False,
                 num_groups=None, ways=None, max_groups=COARSE_ROWS,
                 fraction=COARSE_FRACTION, iterations=COARSE_ITERATIONS, work=None):
        self._state, self._kernels, self._row_sum_range = state, kernels, row_sum_range
        if num_groups is None:
            num_groups = min(COARSE_GROUPS, 2 ** math.ceil(math.log2(
                COARSE_GROUPS_PER_MEMBER * state.joint_M_K.shape[1])))
        if ways is None:  # the next level at max_groups
            ways = max(2, max_groups // num_groups)
        self._sums_M = _joint.row_sums(state)
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
        if work is not None:
            self.rows = _levels_that_pay(self.rows, len(self._sums_M), *work, iterations)
            if not self.rows:
                return
        G = self.rows[0]
        group_M, self.centres, sums = _group_rows(state.joint_M_K, self._sums_M,
                                                  state.weights_M, self._mass_M, G,
                                                  iterations, kernels, centres)
        # Each grouping: (group_M, G, its groups' sums and masses or None)
        self._groups = [(group_M, G, sums)]
        if coarsest and G >= 2 * COARSEST_GROUPS:
            # The groups' own rows grouped again: a G-row problem.
            joint_G_K = sums[0]
            sums_G = joint_G_K.sum(axis=1)
            if np.count_nonzero(sums_G) >= COARSEST_GROUPS:
                top_G, _, _ = _group_rows(joint_G_K, sums_G, np.ones(G), sums_G,
                                          COARSEST_GROUPS, COARSE_ITERATIONS, kernels)
                self.rows.insert(0, COARSEST_GROUPS)
                self._groups.insert(0, (top_G[group_M], COARSEST_GROUPS, None))
                self.coarsest = True

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, level):
        """``(joint_G_K, correction)`` of a level: score ``joint_G_K`` with unit weights;
        that score plus ``correction`` (with the state's ``offset_K`` term) bounds the
        state's score."""
        state = self._state
        while len(self._groups) <= level:
            parent_M, P, _ = self._groups[-1]
            ways = self.rows[len(self._groups)] // self.rows[len(self._groups) - 1]
            self._groups.append(_split_groups(state.joint_M_K, self._sums_M, state.weights_M,
                                              self._mass_M, parent_M, P, ways,
                                              SPLIT_ITERATIONS, self._kernels))
        while len(self._levels) <= level:
            group_M, G, sums = self._groups[len(self._levels)]
            self._levels.append(_merge_groups(state, group_M, G, self._sums_M, self._mass_M,
                                              self._row_sum_range, self._kernels, sums))
        return self._levels[level]


def grouping_rows(M, G, C, iterations):
    """What grouping M rows among G centres costs, in kernel rows (candidate × configuration:
    K·C multiply-adds and C logs each): each Lloyd iteration multiplies the rows by the
    log centres (K·G multiply-adds a row) and sums them by group (K), logs not counted."""
    return iterations * M * (G + 1) / C


def _levels_that_pay(rows, M, num_candidates, C, iterations):
    """The levels of ``rows`` (coarsest first) whose grouping costs at most the rows they
    can save: a level of G rows saves at most ``M − G`` rows per candidate, when it rules
    every candidate out (docs/sampled_steps.md, "When coarse joints pay")."""
    kept = []
    for level, G in enumerate(rows):
        centres, its = (G, iterations) if level == 0 else (G // rows[level - 1],
                                                          SPLIT_ITERATIONS)
        if num_candidates * (M - G) < grouping_rows(M, centres, C, its):
            break
        kept.append(G)
    return kept


def _merge_groups(state, group_M, G, sums_M, mass_M, row_sum_range, kernels, sums=None):
    """The coarse joint of one grouping and its correction (:class:`CoarseLevels`);
    ``sums``: the groups' weighted row sums and masses when known (the grouping's last
    update: rows of zero sum add nothing under either weights)."""
    weights_M = state.weights_M
    if sums is None:
        sums = (_group_sums(state.joint_M_K, weights_M, group_M, G, kernels),
                np.bincount(group_M, weights=mass_M, minlength=G))
    joint_G_K, group_mass_G = sums
    live = sums_M > 0  # rows of zero probability add nothing either way
    group_mass_M = group_mass_G[group_M[live]]
    lo, hi = row_sum_range
    log_ratio_M = np.log(group_mass_M) - np.log(sums_M[live]) + math.log(hi / lo)
    # S_m lies within [lo, hi] times its value for unit row sums: take the end that is larger.
    scale_M = np.where(log_ratio_M >= 0, hi, lo)
    correction = float((weights_M[live] * sums_M[live] * scale_M) @ log_ratio_M)
    return joint_G_K, correction


def _group_rows(joint_M_K, sums_M, weights_M, mass_M, G, iterations, kernels, centres=None):
    """Rows grouped by their posterior over members, minimising ``Σ mass_m KL(π_m ‖ π_g)``.

    KL is a Bregman divergence, so the best ``π_g`` of a group is its mass-weighted mean and
    the assignment step is a product with ``log π_g`` (Lloyd's algorithm in that geometry).
    The posteriors ``π_m = J_m / S_m`` are never formed, so that grouping takes O(M) memory
    beside the joint: the positive scale 1/S_m moves no row's argmax, and a group's
    ``Σ mass_m π_m`` is ``Σ w_m J_m``. The assignment is the kernels' ``nearest_centres``.
    The first centres, unless given, are rows drawn by mass from a fixed seed: the grouping
    only decides how tight the bound is, never a result, so it must not consume the
    caller's draws.

    Returns
    -------
    group_M : ndarray of shape (M,), intp
    centre_G_K : ndarray of shape (G, K)
        The centres after the last update.
    sums : (ndarray of shape (G, K), ndarray of shape (G,))
        The groups' weighted row sums and masses under ``group_M`` (the last update's:
        the coarse joint of these groups, :func:`_merge_groups`).
    """
    M = len(joint_M_K)
    if centres is None:
        first = np.random.default_rng(0).choice(M, G, replace=False, p=mass_M / mass_M.sum())
        centre_G_K = joint_M_K[first] / sums_M[first, None]
    else:
        centre_G_K = np.array(centres, dtype=np.float64)
    live_weights_M = np.where(sums_M > 0, weights_M, 0.0)
    group_M = np.empty(M, dtype=np.intp)
    for _ in range(iterations):
        log_centre_K_G = np.ascontiguousarray(np.log(np.maximum(centre_G_K, _TINY)).T)
        kernels.nearest_centres(joint_M_K, log_centre_K_G, group_M)
        sums = _update_centres(centre_G_K, group_M, joint_M_K, live_weights_M, mass_M,
                               kernels)
    return group_M, centre_G_K, sums


def _update_centres(centre_G_K, group_M, joint_M_K, live_weights_M, mass_M, kernels):
    """Lloyd's update in KL geometry, in place: each group's mass-weighted mean posterior
    (empty groups keep their centre). Returns the groups' weighted row sums and masses."""
    G = len(centre_G_K)
    group_mass_G = np.bincount(group_M, weights=mass_M, minlength=G)
    filled = group_mass_G > 0
    sums_G_K = _group_sums(joint_M_K, live_weights_M, group_M, G, kernels)
    centre_G_K[filled] = sums_G_K[filled] / group_mass_G[filled, None]
    return sums_G_K, group_mass_G


def _split_groups(joint_M_K, sums_M, weights_M, mass_M, parent_M, P, ways, iterations,
                  kernels):
    """Every group of ``parent_M`` split into at most ``ways`` by the same Lloyd algorithm
    within the group (:func:`_group_rows`), each row choosing among its own group's
    sub-centres only: O(M·ways·K) per iteration however many groups.

    Returns
    -------
    group_M : ndarray of shape (M,), intp
        The finer groups, numbered 0..G-1.
    G : int
        How many are not empty.
    sums : (ndarray of shape (G, K), ndarray of shape (G,))
        The finer groups' weighted row sums and masses (as :func:`_group_rows`).
    """
    M, K = joint_M_K.shape
    # Each group's first sub-centres: ``ways`` of its rows drawn by mass without
    # replacement (the largest log(u) / mass), from a fixed seed as in _group_rows.
    with np.errstate(divide="ignore"):
        key_M = np.log(np.random.default_rng(0).random(M)) / mass_M
    slot_M = kernels.subgroup_seeds(parent_M, key_M, mass_M, P, ways,
                                    np.empty(M, dtype=np.intp))
    seeds = np.flatnonzero(slot_M >= 0)
    centre_S_K = np.full((P * ways, K), _TINY)
    centre_S_K[slot_M[seeds]] = joint_M_K[seeds] / sums_M[seeds, None]
    live_weights_M = np.where(sums_M > 0, weights_M, 0.0)
    group_M = np.empty(M, dtype=np.intp)
    for _ in range(iterations):
        log_centre_P_K_W = np.ascontiguousarray(
            np.log(np.maximum(centre_S_K, _TINY)).reshape(P, ways, K).transpose(0, 2, 1))
        kernels.nearest_subgroups(joint_M_K, parent_M, log_centre_P_K_W, group_M)
        sums_S_K, mass_S = _update_centres(centre_S_K, group_M, joint_M_K, live_weights_M,
                                           mass_M, kernels)
    # The groups used, numbered in order (np.unique's inverse, without a sort).
    used_S = np.bincount(group_M, minlength=P * ways) > 0
    number_S = np.cumsum(used_S) - 1
    return number_S[group_M], int(used_S.sum()), (sums_S_K[used_S], mass_S[used_S])


def _group_sums(joint_M_K, weights_M, group_M, G, kernels):
    """``joint_G_K[g] = Σ_{m in g} weights_M[m] · joint_M_K[m]`` (the kernels' ``group_sums``)."""
    return kernels.group_sums(joint_M_K, weights_M, group_M, np.empty((G, joint_M_K.shape[1])))
