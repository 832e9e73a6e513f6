"""The public functions: validate, pick the backend, run the driver."""

from . import _backend, _greedy, _validation


def batchbald(probs_N_K_C, batch_size, *, num_samples=10_000, log_probs=False,
              candidates=None, random_state=None, return_utilities=False, num_threads=None):
    """Select a batch of pool points by greedy BatchBALD.

    Each step adds the point x maximising the mutual information
    ``a(A ∪ {x}) = I(y_A, y_x; ω)`` between the batch's labels and the model parameters,
    estimated from K posterior samples (Kirsch, van Amersfoort and Gal, NeurIPS 2019).
    The joint entropy of the batch is exact while ``C ** len(A) <= num_samples`` and
    estimated by importance sampling from ``max(1, num_samples // K)`` configurations per
    posterior sample otherwise.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
        ``p(y_n = c | x_n, ω_k)`` for N pool points under K posterior samples (ensemble
        members, MC-dropout passes) over C classes. float32 or float64, any strides;
        read-only arrays are accepted and the array is never written to.
    batch_size : int
        Points to pick. More than the candidates picks them all; 0 gives an empty result.
    num_samples : int, default=10_000
        Budget M of joint configurations per step.
    log_probs : bool, default=False
        Whether ``probs_N_K_C`` holds natural logarithms of probabilities.
    candidates : array-like of int, default=None
        Pool indices that may be picked; all points when None.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator
        Source of the configurations drawn in sampled steps. The same value gives the
        same result.
    return_utilities : bool, default=False
        Whether to return every candidate's utility at every step.
    num_threads : int, default=None
        Threads for the kernels. None honours ``OMP_NUM_THREADS`` and ``threadpoolctl``
        limits, else uses the usable cores.

    Returns
    -------
    result : BatchResult
        ``indices`` in pick order, ``scores`` (the batch's mutual information after each
        pick), ``utilities`` (when asked), ``num_configurations`` and ``exact`` per step.

    Notes
    -----
    Utilities within 1e-10 nats of the best are ties; ties go to the lowest pool index. ``0 · log 0`` is taken as 0; probabilities are used
    as given, never clipped.

    Examples
    --------
    >>> import numpy as np
    >>> from batchbald_fast import batchbald
    >>> rng = np.random.default_rng(0)
    >>> probs_N_K_C = rng.dirichlet(np.ones(3), size=(100, 8))
    >>> result = batchbald(probs_N_K_C, 4)
    >>> result.indices.shape
    (4,)
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=0)
    num_samples = _validation.check_count(num_samples, "num_samples", minimum=1)
    candidates = _validation.check_candidates(candidates, probs_N_K_C.shape[0])
    rng = _validation.check_random_state(random_state)
    num_threads = _validation.check_num_threads(num_threads)
    return _greedy.select(_backend.get_kernels(), probs_N_K_C, batch_size, candidates,
                          num_samples=num_samples, rng=rng,
                          return_utilities=bool(return_utilities),
                          num_threads=_backend.effective_num_threads(num_threads))


def bald(probs_N_K_C, *, log_probs=False):
    """BALD score of each point: ``I(y_n; ω) = H(y_n) − E_n``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
        Probabilities (or log-probabilities with ``log_probs=True``).
    log_probs : bool, default=False

    Returns
    -------
    scores_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    kernels = _backend.get_kernels()
    return _greedy.entropy(kernels, probs_N_K_C) - _greedy.conditional_entropy(kernels,
                                                                                probs_N_K_C)


def entropy(probs_N_K_C, *, log_probs=False):
    """Entropy of each point's predictive mixture, ``H(y_n) = −Σ_c p̄ log p̄``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
    log_probs : bool, default=False

    Returns
    -------
    entropy_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    return _greedy.entropy(_backend.get_kernels(), probs_N_K_C)


def conditional_entropy(probs_N_K_C, *, log_probs=False):
    """Expected entropy of each point under the posterior samples, ``E_n``.

    Parameters
    ----------
    probs_N_K_C : array-like of shape (n_points, n_members, n_classes)
    log_probs : bool, default=False

    Returns
    -------
    conditional_entropy_N : ndarray of shape (n_points,), float64
    """
    probs_N_K_C = _validation.check_probs(probs_N_K_C, log_probs=log_probs)
    return _greedy.conditional_entropy(_backend.get_kernels(), probs_N_K_C)
