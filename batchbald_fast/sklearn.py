"""Posterior samples from fitted scikit-learn ensembles: one member, one sample."""

import numpy as np
from sklearn.ensemble import (BaggingClassifier, ExtraTreesClassifier, RandomForestClassifier,
                              VotingClassifier)
from sklearn.utils.validation import check_is_fitted

from . import _validation

__all__ = ["ensemble_probas"]

_FORESTS = (RandomForestClassifier, ExtraTreesClassifier)


def ensemble_probas(ensemble, X):
    """Class probabilities of every member of a fitted ensemble, as ``probs_N_K_C``.

    So that ``batchbald(ensemble_probas(clf, X_pool), 10)`` needs nothing but scikit-learn.

    Parameters
    ----------
    ensemble : fitted classifier ensemble or list of fitted classifiers
        A ``BaggingClassifier``, ``RandomForestClassifier``, ``ExtraTreesClassifier``,
        a ``VotingClassifier`` with ``voting="soft"`` (its ``weights`` are not used:
        BatchBALD weighs posterior samples equally), or a list of classifiers with
        ``predict_proba``.
    X : array-like, sparse matrix or dask.array.Array of shape (n_samples, n_features)
        Pool points. A dask array (chunked along n_samples) gives a lazy pool.

    Returns
    -------
    probs_N_K_C : ndarray or dask.array.Array of shape (n_samples, n_members, n_classes)
        float64. Columns follow ``ensemble.classes_`` (for a list: the sorted union of the
        members' ``classes_``); a class a member never saw gets probability 0. For a dask
        X, a dask array with X's chunks along n_samples: each block is the members'
        ``predict_proba`` of X's block, run when the pool's chunk is read.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from batchbald_fast import batchbald, ensemble_probas
    >>> X, y = make_classification(n_samples=300, random_state=0)
    >>> forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X[:50], y[:50])
    >>> batchbald(ensemble_probas(forest, X[50:]), 5).indices.shape
    (5,)
    """
    num_members, num_classes = _check_ensemble(ensemble)
    if _validation.is_lazy(X):
        from .dask import map_points
        return map_points(_probas, ensemble, X, (num_members, num_classes))
    return _probas(ensemble, X)


def _check_ensemble(ensemble):
    """Refuse what ``_probas`` cannot read; the members and classes it will give."""
    if isinstance(ensemble, (list, tuple)):
        if not ensemble:
            raise ValueError("ensemble is an empty list")
        for member in ensemble:
            check_is_fitted(member)
        return len(ensemble), len(np.unique(np.concatenate([m.classes_ for m in ensemble])))
    if not isinstance(ensemble, (BaggingClassifier, VotingClassifier) + _FORESTS):
        raise TypeError("ensemble must be a fitted BaggingClassifier, RandomForestClassifier, "
                        "ExtraTreesClassifier, soft VotingClassifier or a list of fitted "
                        f"classifiers, got {type(ensemble).__name__}")
    check_is_fitted(ensemble)
    if isinstance(ensemble, VotingClassifier) and ensemble.voting != "soft":
        raise ValueError("a VotingClassifier needs voting='soft' to give probabilities, "
                         f"got voting={ensemble.voting!r}")
    if isinstance(ensemble, _FORESTS) and ensemble.n_outputs_ != 1:
        raise ValueError("multi-output forests are not supported")
    return len(ensemble.estimators_), len(ensemble.classes_)


def _probas(ensemble, X):
    """``ensemble_probas`` of a checked ensemble on an in-memory X."""
    if isinstance(ensemble, (list, tuple)):
        classes = np.unique(np.concatenate([member.classes_ for member in ensemble]))
        # searchsorted places each member's classes among the union's sorted classes.
        return _stack([(m, X, np.searchsorted(classes, m.classes_)) for m in ensemble],
                      len(classes))
    # These ensembles fit their members on class indices into ensemble.classes_; bagging
    # and forests predict from validated X, bagging on each member's feature subset.
    if isinstance(ensemble, VotingClassifier):
        members = [(m, X) for m in ensemble.estimators_]
    elif isinstance(ensemble, BaggingClassifier):
        X = _validate_X(ensemble, X, accept_sparse=["csr", "csc"])
        members = [(m, X[:, features]) for m, features in
                   zip(ensemble.estimators_, ensemble.estimators_features_)]
    else:
        X = _validate_X(ensemble, X, accept_sparse="csr", dtype=np.float32)
        members = [(m, X) for m in ensemble.estimators_]
    return _stack([(m, X_m, np.asarray(m.classes_).astype(np.intp)) for m, X_m in members],
                  len(ensemble.classes_))


def _stack(members, C):
    """``probs_N_K_C`` from ``(member, X for it, its class columns)`` triples."""
    probs_N_K_C = None
    for k, (member, X_member, columns) in enumerate(members):
        probs_N_C = np.asarray(member.predict_proba(X_member), dtype=np.float64)
        if probs_N_K_C is None:
            probs_N_K_C = np.zeros((probs_N_C.shape[0], len(members), C))
        probs_N_K_C[:, k, columns] = probs_N_C
    return probs_N_K_C


def _validate_X(ensemble, X, **kwargs):
    """X checked against the fitted ensemble (feature count and names), as its predict does."""
    try:
        from sklearn.utils.validation import validate_data  # scikit-learn >= 1.6
    except ImportError:
        return ensemble._validate_data(X, reset=False, force_all_finite=False, **kwargs)
    return validate_data(ensemble, X, reset=False, ensure_all_finite=False, **kwargs)
