"""scikit-activeml-compatible surface: change the import, keep the answers.

``from batchbald_fast.skactiveml import BatchBALD`` in place of
``from skactiveml.pool import BatchBALD`` gives the same query indices and utilities as
scikit-activeml 1.0.1 for the same ``random_state``, in exact and in sampled steps: any
finite values are accepted and clipped to ``[eps, 1]`` as there (on a copy; rows need not
sum to 1), sampled configurations are drawn from the same random numbers in the same order,
ties are broken by the same random numbers, and bad arguments raise the same exception types.
Utilities that differ only by rounding (a few ulps, as every utility does with one ensemble
member) may be ordered the other way: the picks then part there.
"""

import dataclasses

import numpy as np

try:
    from skactiveml.pool import BatchBALD as _SkBatchBALD
    from skactiveml.pool import GreedyBALD as _SkGreedyBALD
    from skactiveml.pool._query_by_committee import _check_ensemble
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.utils import check_scalar, check_type, rand_argmax, simple_batch
    from sklearn.utils import check_array
except ImportError as exc:  # an optional extra
    raise ImportError("batchbald_fast.skactiveml needs scikit-activeml: "
                      'pip install "batchbald_fast[skactiveml]"') from exc

from . import _backend, _greedy, _joint, _memory, _pool, _validation
from ._settings import Settings

__all__ = ["BatchBALD", "GreedyBALD", "batch_bald"]


def batch_bald(probas, batch_size, n_MC_samples=None, random_state=None, eps=1e-7):
    """BatchBALD utilities in scikit-activeml's layout and conventions.

    A drop-in for ``skactiveml.pool.batch_bald`` (1.0.1): same arguments, same checks and
    exception types, same return value, same random numbers drawn. Unlike it, the caller's
    ``probas`` is never written to.

    Parameters
    ----------
    probas : array-like of shape (n_estimators, n_samples, n_classes)
        Probabilities of every ensemble member (K), sample (N) and class (C). As in
        scikit-activeml, any finite values are accepted: they are clipped to ``[eps, 1]``
        and rows need not sum to 1 (such rows are scored as scikit-activeml scores them).
    batch_size : int
        Samples to select (at most N).
    n_MC_samples : int, default=None
        Configuration budget M of the joint; None means n_estimators. With
        ``n_MC_samples < n_estimators``, where scikit-activeml's sampled steps give nan
        utilities, one configuration per member is drawn.
    random_state : None, int, numpy.random.RandomState or numpy.random.Generator, \
            default=None
        Source of the configurations drawn in sampled steps (when ``C ** t > M``).
    eps : float in (0, 0.1], default=1e-7
        Probabilities are clipped to ``[eps, 1]`` before any logarithm, as scikit-activeml
        does (without renormalising).

    Returns
    -------
    utilities : ndarray of shape (batch_size, n_samples)
        ``utilities[t, n]`` is the batch score of adding sample n at step t; nan at the
        samples picked before step t.

    Raises
    ------
    AttributeError
        If ``probas`` is not an array or a (nested) list or tuple.
    ValueError, TypeError
        Where scikit-activeml raises them: ``probas`` not 3-D, not numeric, holding nan or
        inf, or empty; ``batch_size``, ``n_MC_samples`` or ``eps`` of the wrong type or
        range; ``random_state`` not a seed or random state.
    """
    # scikit-activeml's own checks, in its order, so that the same argument raises the same
    # exception.
    if not hasattr(probas, "ndim") and not isinstance(probas, (list, tuple)):
        # It reads probas.ndim first; nested lists are accepted here (an extension).
        raise AttributeError(f"probas must be an array of shape (n_estimators, n_samples, "
                             f"n_classes), got {type(probas).__name__}")
    if np.ndim(probas) != 3:
        raise ValueError(f"probas must have 3 dimensions (n_estimators, n_samples, "
                         f"n_classes), got {np.ndim(probas)}")
    probas = check_array(probas, ensure_2d=False, allow_nd=True, input_name="probas")
    check_scalar(batch_size, "batch_size", int, min_val=1)
    # check_scalar lets True through, which scikit-activeml then fails on with a TypeError.
    batch_size = _validation.check_count(batch_size, "batch_size", minimum=1)
    check_scalar(eps, "eps", target_type=(float, int), min_val=0, max_val=0.1,
                 min_inclusive=False)
    if n_MC_samples is None:
        n_MC_samples = len(probas)
    check_scalar(n_MC_samples, "n_MC_samples", int, min_val=1)
    rng = _validation.check_random_state(random_state)
    # Any finite values: they become inputs by clipping, below (scikit-activeml's convention).
    probs_K_N_C = _validation.check_probs(probas, name="probas", strict=False)
    K, N, _ = probs_K_N_C.shape

    # scikit-activeml breaks ties towards the highest of RandomState(0).random(N); ordering
    # the pool by that makes the engine's lowest-index rule the same rule.
    order_N = np.argsort(-np.random.RandomState(0).random(N), kind="stable")
    # Clipped rows sum to anything in [C·eps, C]. The engine scores them as scikit-activeml
    # does (exact joints: plain products; sampled ones: labels drawn from the renormalised
    # rows, weights from the unnormalised products, see _sample_joint), but its certified
    # bounds (submodularity, pruning, coarse joints) are derived for rows that sum to 1:
    # lazy=False and _next_joint (no pruning) keep them off; every utility is returned anyway.
    clipped_N_K_C = np.ascontiguousarray(
        np.clip(probs_K_N_C[:, order_N].transpose(1, 0, 2), eps, 1))
    settings = Settings(int(n_MC_samples), _backend.kernels_for(), return_utilities=True,
                        lazy=False, tie_tolerance=0.0, saturation="greedy",
                        next_joint=_next_joint)
    # Its joint is drawn anew each step, without extra draws: the budget can only refuse.
    _memory.check(clipped_N_K_C, N, batch_size, settings)
    pool = _pool.ArrayPool(_distinct_rows_kernels(settings.kernels, clipped_N_K_C),
                           clipped_N_K_C)
    result = _greedy.select(pool, batch_size, np.arange(N), settings, rng)
    utilities = np.empty_like(result.utilities)
    utilities[:, order_N] = result.utilities
    return utilities


def _distinct_rows_kernels(kernels, probs_N_K_C):
    """The backend's kernels, made to score identical pool points identically.

    scikit-activeml gives identical points bitwise-identical utilities and lets its random
    numbers break the tie; BLAS may round identical points differently depending on where
    they sit in a tile. Scoring each distinct point once keeps the tie (and saves work).
    """
    N = probs_N_K_C.shape[0]
    _, row_id_N = np.unique(probs_N_K_C.reshape(N, -1), axis=0, return_inverse=True)
    row_id_N = row_id_N.reshape(N)
    if row_id_N.max() == N - 1:  # all distinct
        return kernels
    return _DistinctRowsKernels(kernels, row_id_N)


class _DistinctRowsKernels:
    def __init__(self, kernels, row_id_N):
        self._kernels = kernels
        self._row_id_N = row_id_N
        self.entropy_rows = kernels.entropy_rows

    def score_candidates(self, joint_M_K, weights_M, probs_N_K_C, candidates, out):
        _, first_U, inverse_n = np.unique(self._row_id_N[candidates], return_index=True,
                                          return_inverse=True)
        # Score the first candidate of each distinct row, in pool order.
        order_U = np.argsort(first_U)
        scores_U = np.empty(len(first_U))
        self._kernels.score_candidates(joint_M_K, weights_M, probs_N_K_C,
                                       candidates[first_U[order_U]], scores_U)
        rank_U = np.empty_like(order_U)
        rank_U[order_U] = np.arange(len(order_U))
        out[:] = scores_U[rank_U[inverse_n]]
        return out


def _next_joint(state, probs_A_K_C, settings, rng):
    """scikit-activeml's joint: exact while ``C ** |A| <= M``, else drawn anew each step."""
    A, _, C = probs_A_K_C.shape
    if C ** A <= settings.num_samples:
        return _joint.extend_exact(state, probs_A_K_C[-1])
    return _sample_joint(probs_A_K_C, settings.num_samples, rng, settings.kernels)


def _sample_joint(probs_A_K_C, num_samples, rng, kernels):
    """``max(1, M // K)`` configurations per member, drawn as scikit-activeml draws them.

    It calls ``RandomState.choice(C, size=S, p=p / p.sum())`` for each point a of the batch
    and member k in turn, which is one ``random_sample`` of S doubles and an inverse-CDF
    lookup on the normalised cumulative sum; one draw of (K, S) doubles per point, point
    after point, gives the same numbers. Configuration ``k * S + s`` is member k's s-th
    draw. The draws are not kept in the state: the next step draws anew.
    """
    A, K, C = probs_A_K_C.shape
    S = max(1, num_samples // K)
    # scikit-activeml samples from exp(log(p)) of the clipped p: the same bits here.
    p_A_K_C = np.exp(np.log(probs_A_K_C))
    p_A_K_C /= p_A_K_C.sum(axis=2, keepdims=True)
    cdf_A_K_C = np.cumsum(p_A_K_C, axis=2)
    cdf_A_K_C /= cdf_A_K_C[:, :, -1:]
    draws = _joint.start_draws(K, S)
    for a in range(A):  # one point at a time keeps the comparison at M·C
        u_K_S = rng.random((K, S))
        # searchsorted(cdf, u, side="right") is the count of cdf entries <= u.
        labels_M = (cdf_A_K_C[a][:, None, :] <= u_K_S[:, :, None]).sum(axis=2).reshape(K * S)
        draws = _joint.append_labels(draws, probs_A_K_C[a], labels_M)
    return dataclasses.replace(_joint.from_draws(draws, C, kernels), draws=None)


class _FastQuery:
    """``query`` of scikit-activeml's ``_GeneralBALD``, scoring with ``batch_bald`` above."""

    def query(self, X, y, ensemble, fit_ensemble=True, sample_weight=None,
              candidates=None, batch_size=1, return_utilities=False):
        """Determine for which candidate samples labels are to be queried.

        Parameters and return values are those of scikit-activeml's
        ``BatchBALD.query`` / ``GreedyBALD.query``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, labelled and unlabelled.
        y : array-like of shape (n_samples,)
            Labels, ``missing_label`` for the unlabelled samples.
        ensemble : SkactivemlClassifier or list of SkactivemlClassifier
            The committee: an ensemble with ``n_estimators`` and ``estimators_`` after
            fitting, a list of members, or a classifier with the method named by
            ``sample_predictions_method_name``.
        fit_ensemble : bool, default=True
            Whether to fit ``ensemble`` on ``X``, ``y`` and ``sample_weight`` first.
        sample_weight : array-like of shape (n_samples,), default=None
        candidates : None, array-like of shape (n_candidates,) of int, or array-like of \
                shape (n_candidates, n_features), default=None
            None: the unlabelled samples of ``X``; indices into ``X``; or samples.
        batch_size : int, default=1
        return_utilities : bool, default=False

        Returns
        -------
        query_indices : ndarray of shape (batch_size,)
            Indices into ``X`` (or into ``candidates`` when samples were given).
        utilities : ndarray of shape (batch_size, n_samples) or (batch_size, n_candidates)
            Only when ``return_utilities``; nan at labelled and already picked samples.
        """
        X, y, candidates, batch_size, return_utilities = self._validate_data(
            X, y, candidates, batch_size, return_utilities, reset=True)
        check_scalar(self.greedy_selection, "greedy_selection", target_type=bool)
        X_cand, mapping = self._transform_candidates(candidates, X, y)
        check_type(fit_ensemble, "fit_ensemble", bool)
        ensemble, est_arr, _, sample_func, sample_dict = _check_ensemble(
            ensemble=ensemble, X=X, y=y, sample_weight=sample_weight,
            fit_ensemble=fit_ensemble, missing_label=self.missing_label_,
            estimator_types=[SkactivemlClassifier],
            sample_predictions_method_name=self.sample_predictions_method_name,
            sample_predictions_dict=self.sample_predictions_dict)
        if sample_func is None:
            probas = self._aggregate_predict_probas(X_cand, ensemble, est_arr)
        else:
            probas = sample_func(X_cand, **sample_dict)

        # Checked here, before eps is (in batch_bald), as scikit-activeml checks them.
        n_MC_samples = len(probas) if self.n_MC_samples is None else self.n_MC_samples
        check_scalar(n_MC_samples, "n_MC_samples", int, min_val=1)
        # GreedyBALD ranks by the first step's utilities (BALD).
        steps = 1 if self.greedy_selection else batch_size
        utilities_cand = batch_bald(probas, steps, n_MC_samples=n_MC_samples,
                                    random_state=self.random_state_, eps=self.eps)
        if mapping is None:
            utilities = utilities_cand
        else:
            utilities = np.full((steps, len(X)), np.nan)
            utilities[:, mapping] = utilities_cand

        # The same draws from random_state_, in the same order, as scikit-activeml.
        if self.greedy_selection:
            return simple_batch(utilities[0], self.random_state_, batch_size=batch_size,
                                return_utilities=return_utilities)
        query_indices = rand_argmax(utilities, axis=1, random_state=self.random_state_)
        return (query_indices, utilities) if return_utilities else query_indices


class BatchBALD(_FastQuery, _SkBatchBALD):
    """Batch Bayesian Active Learning by Disagreement, computed by batchbald_fast.

    A drop-in for ``skactiveml.pool.BatchBALD`` (and an instance of it): the same
    constructor arguments and ``query``, the same query indices and utilities for the same
    ``random_state``.

    Parameters
    ----------
    n_MC_samples : int > 0, default=None
        Configuration budget of the joint; None means the ensemble's size.
    eps : float > 0, default=1e-7
        Probabilities are clipped to ``[eps, 1]`` before any logarithm.
    sample_predictions_method_name : str, default=None
        Name of the ensemble's method that samples member predictions, if any.
    sample_predictions_dict : dict, default=None
        Keyword arguments of that method.
    missing_label : scalar or str or np.nan or None, default=np.nan
        Value of an unlabelled sample in ``y``.
    random_state : int or None or numpy.random.RandomState, default=None
    """


class GreedyBALD(_FastQuery, _SkGreedyBALD):
    """Top-k BALD, computed by batchbald_fast.

    A drop-in for ``skactiveml.pool.GreedyBALD`` (and an instance of it): the same
    constructor arguments and ``query``, the same query indices and utilities.

    Parameters
    ----------
    n_MC_samples : int > 0, default=None
    eps : float > 0, default=1e-7
    sample_predictions_method_name : str, default=None
    sample_predictions_dict : dict, default=None
    missing_label : scalar or str or np.nan or None, default=np.nan
    random_state : int or None or numpy.random.RandomState, default=None
    """
