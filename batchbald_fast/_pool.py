"""The pool the greedy driver picks from: what it may ask of one, and the in-memory answer.

The driver needs three things of a pool, whatever holds it (an array here; chunks on Dask
workers elsewhere): per-point conditional entropies once, the range of the rows' sums
once, and per step the joint entropy of a joint state with some candidates, plus the K×C
rows of the few points it picks or examines. Every other piece of the algorithm lives in the
driver, so every kind of pool gives the same picks.
"""

import numpy as np


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


class ArrayPool:
    """A pool held as one (N, K, C) array in this process.

    Parameters
    ----------
    kernels : module
        ``score_candidates`` and ``entropy_rows`` of one backend.
    probs_N_K_C : ndarray of shape (N, K, C), float64, C-contiguous
    dtype : numpy.float64 or numpy.float32
        Precision of the products and logs in the kernels (sums are float64 either way).
    num_threads : int
        Threads of the kernel calls.

    Attributes
    ----------
    shape : tuple of int
        (N, K, C).
    dtype : numpy.float64 or numpy.float32
        The kernels' compute precision: joint states are passed in it.
    cond_entropy_N : ndarray of shape (N,)
        Conditional entropy of every point.
    row_sum_range : (float, float)
        Least and largest ``Σ_c p[n, k, c]``.
    """

    def __init__(self, kernels, probs_N_K_C, *, dtype=np.float64, num_threads=1):
        self.shape = probs_N_K_C.shape
        self.dtype = np.dtype(dtype).type
        self._kernels = kernels
        self._probs_N_K_C = probs_N_K_C
        self._probs_compute_N_K_C = probs_N_K_C.astype(dtype, copy=False)
        self._num_threads = num_threads
        self.cond_entropy_N = conditional_entropy(kernels, probs_N_K_C)
        self._row_sums_N_K = probs_N_K_C.sum(axis=2)
        self.row_sum_range = (self._row_sums_N_K.min(), self._row_sums_N_K.max())

    def rows(self, xs):
        """``probs_N_K_C[xs]``, float64, shape (len(xs), K, C)."""
        return self._probs_N_K_C[xs]

    def joint_entropy(self, joint_M_K, weights_M, offset_K, xs):
        """The two parts of a joint state's entropy with each candidate.

        Parameters
        ----------
        joint_M_K : ndarray of shape (M, K), in the compute dtype, C-contiguous
        weights_M : ndarray of shape (M,), float64
        offset_K : ndarray of shape (K,), float64
        xs : ndarray of shape (n,), intp
            Pool indices.

        Returns
        -------
        weighted_n : ndarray of shape (n,)
            ``Σ_m weights_M[m] Σ_c −P log P`` with ``P = joint_M_K @ p[x]``.
        offset_n : ndarray of shape (n,)
            ``Σ_k offset_K[k] Σ_c p[x, k, c]``: the row scales of a sampled state.
        """
        weighted_n = np.empty(len(xs))
        self._kernels.score_candidates(joint_M_K, weights_M, self._probs_compute_N_K_C, xs,
                                       weighted_n, self._num_threads)
        return weighted_n, self._row_sums_N_K[xs] @ offset_K
