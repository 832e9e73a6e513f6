"""EPIG of pool points: the joint-entropy kernel with the targets' rows as the joint.

For a pool point x and a target x*_t, the joint predictive of their labels is
``P_t[c, c'] = (1/K) Σ_k p(y=c | x, ω_k) p(y*=c' | x*_t, ω_k)``: the kernels' product of a
joint state with x, where the state's configurations are the pairs m = (t, c') and
``joint_M_K[m, k] = p(x*_t, k, c') / K``. Since

    EPIG_t(x) = I(y; y*_t) = H(y) + H(y*_t) − H(y, y*_t),

EPIG, the mean over targets, needs only ``Σ_t H(y, y*_t)``: ``score_candidates`` with every
row of the joint, one number per point (:func:`epig_mean`). Its standard error needs every
target's term: ``score_candidates_grouped`` sums ``−P log P`` per target (groups of C
rows), in blocks of targets (:func:`epig_with_spread`). Memory: the joint (T·C·K), a block
of pool rows and (with the spread) a block of their per-target entropies, never
N × T × C × C.
"""

import numpy as np

from . import _memory, _pool

# A block of per-target joint entropies (pool points × targets, float64) and each of the
# few temporaries made from it stays this small whatever N and T.
OUT_BLOCK_BYTES = 4 * 2**20
# Per thread, the kernel keeps a row of sums per target of the block for the tile it
# scores: at this size they stay in L2 while the joint's rows stream past.
TARGET_SUMS_BYTES = 256 * 2**10
# Targets per call whatever that size says: the NumPy kernels' tiles of candidates are wide,
# and a call per target would be one small product each.
MIN_TARGETS = 64


def target_joint(target_probs_T_K_C):
    """The joint state of the targets: row (t, c') is ``p(x*_t, ·, c') / K``, shape (T·C, K)."""
    T, K, C = target_probs_T_K_C.shape
    # A new array: with C = 1 the reshape is a view of the caller's targets.
    return np.ascontiguousarray(target_probs_T_K_C.transpose(0, 2, 1).reshape(T * C, K) / K)


class Plan:
    """Block sizes of one EPIG call and the bytes it allocates at its peak.

    Parameters
    ----------
    kernels : Kernels
    shape : (N, K, C) of the pool
    T : int
        Targets.
    in_place : bool
        Whether the kernels read the pool where it lies (``reads_in_place``); else each
        block of pool points is gathered in the compute dtype.
    dtype : numpy.float64 or numpy.float32
        The compute dtype of the products and logs.
    spread : bool, default=True
        Whether the call needs every target's term (:func:`epig_with_spread`), else only
        their sum (:func:`epig_mean`): one kernel call a block of points, with every
        target.
    """

    def __init__(self, kernels, shape, T, in_place, dtype=np.float64, spread=True):
        N, K, C = shape
        itemsize = np.dtype(dtype).itemsize
        self.dtype = dtype
        self.targets = self._target_block(kernels, K, C, T, itemsize) if spread else T
        # Read in place, the kernels take every point in one call (they cut it into
        # chunks and tiles themselves); else a block is gathered and cast at a time.
        step = max(1, _pool.BLOCK_VALUES // (K * C))  # the pool entropies' blocks
        self.points = min(N, step)
        if spread:
            self.points = min(self.points, max(1, OUT_BLOCK_BYTES // (8 * self.targets)))
        elif in_place:
            self.points = N
        n, G = self.points, self.targets
        scratch = kernels.scratch_bytes(G * C, K, C, n, itemsize,
                                        groups=G if spread else 1)
        self.peak_bytes = int(
            T * C * K * (8 + itemsize)  # the targets' probabilities (float64) and joint
            + T * (C + 1) * 8  # their mean predictions and entropies
            + 2 * N * 8  # EPIG and the sums of squares (or the joint entropies)
            + (0 if in_place else n * K * C * itemsize) + min(n, step) * (C + 1) * 8  # a block
            + (4 * n * G * 8 if spread else 2 * n * 8)  # the block's joint entropies
            + scratch)

    @staticmethod
    def _target_block(kernels, K, C, T, itemsize):
        """Targets per kernel call: their per-thread sums fit ``TARGET_SUMS_BYTES``."""
        # Scored against many candidates, so that the tiles have their full width.
        per_target = max(1, kernels.scratch_bytes(2 * C, K, C, 2**20, itemsize,
                                                  num_threads=1, groups=2)
                         - kernels.scratch_bytes(2 * C, K, C, 2**20, itemsize,
                                                 num_threads=1, groups=1))
        return max(1, min(T, max(MIN_TARGETS, TARGET_SUMS_BYTES // per_target)))


def reads_in_place(probs_N_K_C, dtype):
    """Whether the kernels can read the pool where it lies: C-contiguous in ``dtype``."""
    return probs_N_K_C.dtype == dtype and probs_N_K_C.flags.c_contiguous


def check_budget(plan, memory_budget):
    """Raise a :class:`MemoryBudgetError` when the plan's peak exceeds the budget."""
    budget, source = _memory.resolve_budget(memory_budget)
    if plan.peak_bytes > budget:
        raise _memory.MemoryBudgetError(
            f"epig needs an estimated {_memory.format_bytes(plan.peak_bytes)} beside its "
            f"inputs, over the memory budget of {_memory.format_bytes(budget)} ({source})",
            plan.peak_bytes, budget, None)


def epig_with_spread(kernels, probs_N_K_C, target_probs_T_K_C, plan):
    """Per-point EPIG and the sum of squared deviations of the per-target terms.

    Parameters
    ----------
    kernels : Kernels
    probs_N_K_C : ndarray of shape (N, K, C), float32 or float64, validated
    target_probs_T_K_C : ndarray of shape (T, K, C), float64, C-contiguous, validated
    plan : Plan
        Its dtype is that of the joint products; the entropies of the pool points and
        the targets are float64 whatever it is.

    Returns
    -------
    epig_N : ndarray of shape (N,)
        ``mean_t EPIG_t(x_n)``.
    sq_dev_N : ndarray of shape (N,)
        ``Σ_t (EPIG_t(x_n) − epig_N[n])²``.
    """
    N = len(probs_N_K_C)
    T, _, C = target_probs_T_K_C.shape
    target_entropy_T, joint_M_K, ones_M = _targets(kernels, target_probs_T_K_C, plan)
    epig_N, sq_dev_N = np.empty(N), np.empty(N)
    for n0, n1, entropy_n, block_n_K_C, xs in _point_blocks(kernels, probs_N_K_C, plan):
        mean_n, sq_dev_n = np.zeros(n1 - n0), np.zeros(n1 - n0)
        for t0 in range(0, T, plan.targets):
            t1 = min(T, t0 + plan.targets)
            joint_n_G = np.empty((n1 - n0, t1 - t0))
            kernels.score_candidates_grouped(joint_M_K[t0 * C:t1 * C], ones_M[t0 * C:t1 * C],
                                             block_n_K_C, xs, joint_n_G)
            # EPIG_t = H(y) + H(y*_t) − H(y, y*_t), for the block's targets.
            terms_n_G = np.subtract(target_entropy_T[t0:t1], joint_n_G, out=joint_n_G)
            terms_n_G += entropy_n[:, None]
            _combine(mean_n, sq_dev_n, t0, terms_n_G)
        epig_N[n0:n1], sq_dev_N[n0:n1] = mean_n, sq_dev_n
    return epig_N, sq_dev_N


def epig_mean(kernels, probs_N_K_C, target_probs_T_K_C, plan):
    """Per-point EPIG, ``H(y) + mean_t H(y*_t) − (1/T) Σ_t H(y, y*_t)``, without the
    per-target terms (arguments as for :func:`epig_with_spread`, ``plan`` made with
    ``spread=False``).

    Returns
    -------
    epig_N : ndarray of shape (N,)
    """
    T = len(target_probs_T_K_C)
    target_entropy_T, joint_M_K, ones_M = _targets(kernels, target_probs_T_K_C, plan)
    epig_N = np.empty(len(probs_N_K_C))
    for n0, n1, entropy_n, block_n_K_C, xs in _point_blocks(kernels, probs_N_K_C, plan):
        joint_n = np.empty(n1 - n0)
        kernels.score_candidates(joint_M_K, ones_M, block_n_K_C, xs, joint_n)
        joint_n /= -T
        joint_n += target_entropy_T.mean()
        epig_N[n0:n1] = np.add(entropy_n, joint_n, out=joint_n)
    return epig_N


def _targets(kernels, target_probs_T_K_C, plan):
    """The targets' entropies, their joint state in the plan's dtype and its unit weights."""
    target_entropy_T = _pool.entropy(kernels, target_probs_T_K_C)
    joint_M_K = target_joint(target_probs_T_K_C).astype(plan.dtype, copy=False)
    return target_entropy_T, joint_M_K, np.ones(len(joint_M_K))


def _point_blocks(kernels, probs_N_K_C, plan):
    """The plan's blocks of pool points: (n0, n1, their entropies H(y), the array the
    kernels read them from and their indices there)."""
    N, K, C = probs_N_K_C.shape
    in_place = reads_in_place(probs_N_K_C, plan.dtype)
    # The mixtures (n × C, float64) a few MiB at a time whatever the block.
    step = max(1, _pool.BLOCK_VALUES // (K * C))
    for n0 in range(0, N, plan.points):
        n1 = min(N, n0 + plan.points)
        entropy_n = np.concatenate([
            _pool.entropy(kernels, probs_N_K_C[i0:min(n1, i0 + step)], dtype=np.float64)
            for i0 in range(n0, n1, step)])
        if in_place:
            yield n0, n1, entropy_n, probs_N_K_C, np.arange(n0, n1, dtype=np.intp)
        else:
            yield (n0, n1, entropy_n,
                   _pool.rows(probs_N_K_C, np.arange(n0, n1), dtype=plan.dtype),
                   np.arange(n1 - n0, dtype=np.intp))


def _combine(mean_n, sq_dev_n, count, terms_n_G):
    """Merge a block of terms into the running means and squared deviations of ``count``
    terms each, in place (Chan, Golub and LeVeque's pairwise update: no cancellation of
    the mean's square against the sum of squares)."""
    G = terms_n_G.shape[1]
    block_mean_n = terms_n_G.mean(axis=1)
    terms_n_G -= block_mean_n[:, None]
    np.square(terms_n_G, out=terms_n_G)
    delta_n = block_mean_n - mean_n
    total = count + G
    sq_dev_n += terms_n_G.sum(axis=1) + delta_n ** 2 * (count * G / total)
    mean_n += delta_n * (G / total)
