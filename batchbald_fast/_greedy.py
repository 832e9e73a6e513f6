"""The greedy BatchBALD driver: the step loop, conditional entropies, tie-breaking.

It knows nothing about which backend runs: the kernels come in as a module.
"""

from dataclasses import dataclass

import numpy as np

from . import _joint

# Utilities this close to the best count as tied: mathematically equal utilities (duplicate
# points, points certain under every member) differ by rounding, and rounding must not
# decide between them.
TIE_TOLERANCE = 1e-10


@dataclass(frozen=True)
class BatchResult:
    """The batch BatchBALD picked, in pick order.

    Attributes
    ----------
    indices : ndarray of shape (b,), int64
        Pool indices in the order they were picked.
    scores : ndarray of shape (b,), float64
        The batch's mutual information ``a(A) = I(y_A; ω)`` after each pick, in nats.
    utilities : ndarray of shape (b, N), float64 or None
        ``utilities[t, x] = a(A_t ∪ {x})`` for every candidate x at step t; nan at points
        already picked and at non-candidates. None unless ``return_utilities=True``.
    num_configurations : ndarray of shape (b,), int64
        Configurations M of the batch's joint used at each step (1 at step 0).
    exact : ndarray of shape (b,), bool
        Whether each step enumerated every configuration (else it sampled them).
    """

    indices: np.ndarray
    scores: np.ndarray
    utilities: np.ndarray | None
    num_configurations: np.ndarray
    exact: np.ndarray


def conditional_entropy(kernels, probs_N_K_C):
    """``E_n = (1/K) Σ_k Σ_c −p log p`` per point."""
    N, K, C = probs_N_K_C.shape
    out = np.empty(N * K)
    kernels.entropy_rows(probs_N_K_C.reshape(N * K, C), out)
    return out.reshape(N, K).mean(axis=1)


def entropy(kernels, probs_N_K_C):
    """``H(y_n) = Σ_c −p̄ log p̄`` of the mixture ``p̄ = (1/K) Σ_k p`` per point."""
    out = np.empty(probs_N_K_C.shape[0])
    kernels.entropy_rows(probs_N_K_C.mean(axis=1), out)
    return out


def select(kernels, probs_N_K_C, batch_size, candidates, *, num_samples, rng,
           return_utilities, num_threads, next_joint=_joint.next_joint):
    """Greedy BatchBALD over validated inputs.

    Parameters
    ----------
    kernels : module
        ``score_candidates`` and ``entropy_rows`` of one backend.
    probs_N_K_C : ndarray of shape (N, K, C), float64, C-contiguous
    batch_size : int
    candidates : ndarray of shape (n,), intp, sorted ascending, no repeats
    num_samples : int
        Configuration budget of the joint.
    rng : numpy.random.Generator or RandomState
    return_utilities : bool
    num_threads : int
    next_joint : callable
        ``next_joint(state, probs_N_K_C, batch, num_samples, rng)``: the joint state once
        ``batch`` has grown by one pick.

    Returns
    -------
    result : BatchResult
    """
    N, K, C = probs_N_K_C.shape
    steps = min(batch_size, len(candidates))
    cond_entropy_N = conditional_entropy(kernels, probs_N_K_C)
    available = np.zeros(N, dtype=bool)
    available[candidates] = True

    indices = np.empty(steps, dtype=np.int64)
    scores = np.empty(steps)
    num_configurations = np.empty(steps, dtype=np.int64)
    exact = np.empty(steps, dtype=bool)
    utilities = np.full((steps, N), np.nan) if return_utilities else None

    state = _joint.empty_joint(K)
    batch_cond_entropy = 0.0
    for t in range(steps):
        if t > 0:
            state = next_joint(state, probs_N_K_C, indices[:t], num_samples, rng)
        pool = np.flatnonzero(available)
        joint_entropy = np.empty(len(pool))
        kernels.score_candidates(state.joint_M_K, state.weights_M, probs_N_K_C, pool,
                                 joint_entropy, num_threads)
        utility_n = joint_entropy + state.offset - batch_cond_entropy - cond_entropy_N[pool]
        # pool is ascending, so the first near-maximum is the lowest tied index.
        best = int(np.argmax(utility_n >= utility_n.max() - TIE_TOLERANCE))
        pick = int(pool[best])
        indices[t] = pick
        scores[t] = utility_n[best]
        num_configurations[t] = state.num_configurations
        exact[t] = state.exact
        if return_utilities:
            utilities[t, pool] = utility_n
        available[pick] = False
        batch_cond_entropy += cond_entropy_N[pick]
    return BatchResult(indices, scores, utilities, num_configurations, exact)
