"""ensemble_probas: one posterior sample per fitted member, classes aligned."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import (BaggingClassifier, ExtraTreesClassifier,
                              GradientBoostingClassifier, RandomForestClassifier,
                              VotingClassifier)
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.tree import DecisionTreeClassifier

from batchbald_fast import batchbald, ensemble_probas

X, Y = make_classification(n_samples=200, n_classes=3, n_informative=4, random_state=0)
LABELS = np.array(["ant", "bee", "cat"])[Y]


@pytest.mark.parametrize("ensemble, K", [
    (BaggingClassifier(LogisticRegression(), n_estimators=7, max_features=0.6,
                       random_state=0), 7),
    # Bootstraps of 5 points miss classes: those columns must come back as zeros.
    (BaggingClassifier(DecisionTreeClassifier(), max_samples=5, random_state=1), 10),
    (RandomForestClassifier(n_estimators=5, random_state=0), 5),
    (ExtraTreesClassifier(n_estimators=4, random_state=0), 4),
    (VotingClassifier([("lr", LogisticRegression()), ("nb", GaussianNB())], voting="soft"),
     2),
])
def test_members_average_to_the_ensembles_predict_proba(ensemble, K):
    ensemble.fit(X, LABELS)
    probs_N_K_C = ensemble_probas(ensemble, X[:30])
    assert probs_N_K_C.shape == (30, K, 3)
    np.testing.assert_allclose(probs_N_K_C.sum(axis=2), 1, atol=1e-12)
    np.testing.assert_allclose(probs_N_K_C.mean(axis=1), ensemble.predict_proba(X[:30]),
                               atol=1e-12)


def test_list_aligns_classes_and_zero_fills_unseen_ones():
    no_cat = LABELS != "cat"
    members = [LogisticRegression().fit(X[no_cat], LABELS[no_cat]), GaussianNB().fit(X, LABELS)]
    probs_N_K_C = ensemble_probas(members, X[:10])
    assert probs_N_K_C.shape == (10, 2, 3)
    np.testing.assert_array_equal(probs_N_K_C[:, 0, 2], 0)
    np.testing.assert_allclose(probs_N_K_C[:, 0, :2], members[0].predict_proba(X[:10]))
    np.testing.assert_allclose(probs_N_K_C[:, 1], members[1].predict_proba(X[:10]))


def test_feeds_batchbald(backend):
    forest = RandomForestClassifier(n_estimators=8, random_state=0).fit(X[:40], Y[:40])
    result = batchbald(ensemble_probas(forest, X[40:]), 4)
    assert len(set(result.indices.tolist())) == 4


def test_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="voting='soft'"):
        ensemble_probas(VotingClassifier([("lr", LogisticRegression())]).fit(X, Y), X)
    with pytest.raises(TypeError, match="GradientBoostingClassifier"):
        ensemble_probas(GradientBoostingClassifier(n_estimators=2).fit(X, Y), X)
    with pytest.raises(NotFittedError):
        ensemble_probas(RandomForestClassifier(), X)
    with pytest.raises(NotFittedError):
        ensemble_probas([LogisticRegression()], X)
    with pytest.raises(ValueError, match="empty"):
        ensemble_probas([], X)
    forest = RandomForestClassifier(n_estimators=2).fit(X, Y)
    with pytest.raises(ValueError, match="features"):
        ensemble_probas(forest, X[:, :3])
