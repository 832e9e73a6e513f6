"""The joint state of the batch so far: its label configurations and their weights.

Every state is the triple the kernels score against::

    H(y_A, y_x) ≈ Σ_m weights_M[m] Σ_c −P[m, c] log P[m, c] + offset
    P[m, c]     = Σ_k joint_M_K[m, k] · p[x, k, c]

Exact states hold every configuration of y_A with ``joint_M_K = J / K`` (the mixture's 1/K
folded in) and unit weights. Sampled states hold M = S·K configurations drawn S per member
and weight each by ``1 / (M q_m)`` (importance sampling from the mixture); each row is scaled
by its largest entry so that products of many small probabilities cannot underflow, and the
scales come back through ``offset``.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JointState:
    """Configurations of the batch's labels, as the kernels consume them.

    Attributes
    ----------
    joint_M_K : ndarray of shape (M, K)
        ``J[m, k] / K`` up to a per-row scale (see the module docstring).
    weights_M : ndarray of shape (M,)
        Weight of each configuration in the entropy sum.
    offset : float
        Added to every weighted sum to give the joint entropy.
    exact : bool
        True when the rows enumerate every configuration.
    """

    joint_M_K: np.ndarray
    weights_M: np.ndarray
    offset: float
    exact: bool

    @property
    def num_configurations(self):
        return self.joint_M_K.shape[0]


def empty_joint(K):
    """The joint of the empty batch: one configuration of probability 1 under every member."""
    return JointState(np.full((1, K), 1.0 / K), np.ones(1), 0.0, True)


def extend_exact(state, probs_K_C):
    """Exact joint of the batch with one more point: configuration (m, c) for every c.

    ``J_new[(m, c), k] = J[m, k] · p[a, k, c]``, so M grows by a factor of C.
    """
    M, K = state.joint_M_K.shape
    C = probs_K_C.shape[1]
    joint_M_C_K = state.joint_M_K[:, None, :] * probs_K_C.T[None, :, :]
    return JointState(joint_M_C_K.reshape(M * C, K), np.ones(M * C), 0.0, True)


def sample_joint(probs_A_K_C, num_samples, rng):
    """Sampled joint of the batch: ``max(1, num_samples // K)`` configurations per member.

    Configurations for member k draw each label independently from ``p[a, k, :]``, so the
    rows together are draws from the mixture, stratified by member.

    Parameters
    ----------
    probs_A_K_C : ndarray of shape (A, K, C)
        Probabilities of the batch's points.
    num_samples : int
        Configuration budget M.
    rng : numpy.random.Generator or numpy.random.RandomState
        Source of every draw (``rng.random`` only).
    """
    A, K, C = probs_A_K_C.shape
    S = max(1, num_samples // K)
    M = S * K
    # Inverse-CDF draws; u is scaled by each row's total so rows off 1 by rounding draw
    # exactly their own distribution, and a zero-probability class is never drawn.
    cdf_A_K_C = np.cumsum(probs_A_K_C, axis=2)
    u_K_S_A = rng.random((K, S, A)) * cdf_A_K_C[:, :, -1].T[:, None, :]
    labels_M_A = np.empty((M, A), dtype=np.intp)
    last_nonzero_A_K = C - 1 - np.argmax(probs_A_K_C[:, :, ::-1] > 0, axis=2)
    for a in range(A):
        below_K_S_C = cdf_A_K_C[a][:, None, :] <= u_K_S_A[:, :, a, None]
        labels = np.minimum(below_K_S_C.sum(axis=2), last_nonzero_A_K[a][:, None])
        labels_M_A[:, a] = labels.reshape(M)

    with np.errstate(divide="ignore"):
        log_probs_A_K_C = np.log(probs_A_K_C)
    log_joint_M_K = np.zeros((M, K))
    for a in range(A):
        log_joint_M_K += log_probs_A_K_C[a][:, labels_M_A[:, a]].T
    # The member that drew a configuration gives it positive probability: the max is finite.
    log_scale_M = log_joint_M_K.max(axis=1)
    joint_M_K = np.exp(log_joint_M_K - log_scale_M[:, None])
    joint_M_K /= K
    weights_M = 1.0 / (M * joint_M_K.sum(axis=1))
    return JointState(joint_M_K, weights_M, -float(log_scale_M.mean()), False)


def next_joint(state, probs_N_K_C, batch, num_samples, rng):
    """The joint for the next greedy step, once ``batch`` (pick order) has grown by one.

    Exact while ``C ** len(batch) <= num_samples`` (extending the previous exact joint),
    sampled from scratch otherwise.
    """
    C = probs_N_K_C.shape[2]
    if C ** len(batch) <= num_samples:
        return extend_exact(state, probs_N_K_C[batch[-1]])
    return sample_joint(probs_N_K_C[batch], num_samples, rng)
