"""batchbald_fast.skactiveml against scikit-activeml 1.0.1: same picks, same utilities."""

import importlib
import sys

import numpy as np
import pytest

skactiveml = pytest.importorskip("skactiveml")

from skactiveml import pool as skpool  # noqa: E402
from skactiveml.classifier import ParzenWindowClassifier, SklearnClassifier  # noqa: E402
from skactiveml.utils import MISSING_LABEL  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402

from batchbald_fast import batchbald, demo  # noqa: E402
from batchbald_fast import skactiveml as fast  # noqa: E402
from batchbald_fast._workloads import make_probs  # noqa: E402


def assert_same_utilities(ours, theirs):
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_seed_example_only_the_import_changed(backend):
    # The gallery page's loop, once with each BatchBALD class.
    ours = list(demo.skactiveml_cycles(fast.BatchBALD, 5, 4))
    theirs = list(demo.skactiveml_cycles(skpool.BatchBALD, 5, 4))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.query_indices, b.query_indices)
        assert_same_utilities(a.utilities_B_N, b.utilities_B_N)


@pytest.mark.parametrize("N, K, C, batch_size, n_MC_samples", [
    (300, 5, 3, 6, 20),     # exact for two steps, then sampled
    (200, 8, 4, 5, 64),
    (150, 10, 10, 4, 100),  # many classes, sampled from step 2
    (200, 10, 2, 4, None),  # n_MC_samples = K, as the gallery page
])
def test_batch_bald_matches_in_exact_and_sampled_steps(backend, N, K, C, batch_size,
                                                       n_MC_samples):
    probas = make_probs(N, K, C, seed=1).transpose(1, 0, 2).copy()
    before = probas.copy()
    rs_ours, rs_theirs = np.random.RandomState(7), np.random.RandomState(7)
    ours = fast.batch_bald(probas, batch_size, n_MC_samples, random_state=rs_ours)
    theirs = skpool.batch_bald(probas.copy(), batch_size, n_MC_samples,
                               random_state=rs_theirs)
    assert_same_utilities(ours, theirs)
    np.testing.assert_array_equal(probas, before)  # scikit-activeml clips in place
    assert rs_ours.random() == rs_theirs.random()  # the same numbers were drawn


def test_ties_broken_by_the_same_random_numbers(backend):
    rng = np.random.default_rng(3)
    probas = rng.dirichlet(np.ones(3), size=(6, 40))
    probas[:, 20:] = probas[:, :1]  # points 20..39 duplicate point 0
    probas[:, 5:10] = 1 / 3  # certain of nothing: equal utilities
    ours = fast.batch_bald(probas, 5, random_state=0)
    theirs = skpool.batch_bald(probas.copy(), 5, random_state=0)
    assert_same_utilities(ours, theirs)
    uniform = np.full((4, 30, 2), 0.5)  # before any label: every utility equal
    assert_same_utilities(fast.batch_bald(uniform, 4),
                          skpool.batch_bald(uniform.copy(), 4))


def test_fewer_mc_samples_than_members_still_works(backend):
    probas = make_probs(50, 10, 3).transpose(1, 0, 2)
    utilities = fast.batch_bald(probas, 4, n_MC_samples=5, random_state=0)
    assert np.isfinite(utilities[3][~np.isnan(utilities[3])]).all()


def _pool():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 2))
    y_true = (X[:, 0] + X[:, 1] > 0).astype(int)
    y = np.full(80, MISSING_LABEL)
    y[:8] = y_true[:8]
    return X, y


@pytest.mark.parametrize("name", ["BatchBALD", "GreedyBALD"])
@pytest.mark.parametrize("ensemble, query_args", [
    ("forest", {}),
    ("forest", {"candidates": np.arange(10, 60)}),
    ("forest", {"candidates": "samples"}),
    ("parzen_list", {"fit_ensemble": True}),
    ("sampled", {}),
])
def test_query_same_as_skactiveml(backend, name, ensemble, query_args):
    X, y = _pool()
    strategy_args = {"random_state": 1}
    if ensemble == "forest":
        ensemble = SklearnClassifier(RandomForestClassifier(n_estimators=6, random_state=0),
                                     classes=[0, 1], random_state=0)
    elif ensemble == "parzen_list":
        ensemble = [ParzenWindowClassifier(classes=[0, 1], metric_dict={"gamma": g})
                    for g in (0.3, 1.0, 3.0, 10.0)]
    else:  # members sampled by the classifier itself
        ensemble = ParzenWindowClassifier(classes=[0, 1], class_prior=1.0)
        strategy_args.update(sample_predictions_method_name="sample_proba",
                             sample_predictions_dict={"n_samples": 12, "random_state": 0})
    if isinstance(query_args.get("candidates"), str):
        query_args = {"candidates": X[40:70] + 0.01}
    results = []
    for module in (fast, skpool):
        strategy = getattr(module, name)(**strategy_args)
        results.append(strategy.query(X, y, ensemble, batch_size=3, return_utilities=True,
                                      **query_args))
    (ours_idx, ours_util), (theirs_idx, theirs_util) = results
    np.testing.assert_array_equal(ours_idx, theirs_idx)
    assert_same_utilities(ours_util, theirs_util)


def test_drop_in_classes():
    for name in ("BatchBALD", "GreedyBALD"):
        ours, theirs = getattr(fast, name), getattr(skpool, name)
        assert issubclass(ours, theirs)
        assert ours().get_params() == theirs().get_params()
    assert fast.BatchBALD(n_MC_samples=50, eps=1e-5).get_params()["n_MC_samples"] == 50


@pytest.mark.parametrize("make", [
    lambda rng: rng.random((10, 100, 5)),           # rows summing to ~2.5
    lambda rng: 3 * rng.random((6, 80, 3)) - 0.5,   # negative and > 1: clipped to [eps, 1]
    lambda rng: rng.random((8, 60, 2)) / 10,        # rows summing to ~0.1
])
@pytest.mark.parametrize("batch_size, n_MC_samples", [
    (1, None),   # BALD
    (3, 125),    # exact steps only (5 ** 2 <= 125)
    (6, 30),     # exact, then sampled steps
])
def test_unnormalised_rows_scored_as_skactiveml_scores_them(backend, make, batch_size,
                                                           n_MC_samples):
    # scikit-activeml accepts any finite values, clips them to [eps, 1] and never
    # renormalises: the rows' sums enter its joint entropies and its importance weights.
    probas = make(np.random.default_rng(5))
    rs_ours, rs_theirs = np.random.RandomState(3), np.random.RandomState(3)
    ours = fast.batch_bald(probas, batch_size, n_MC_samples, random_state=rs_ours)
    theirs = skpool.batch_bald(probas.copy(), batch_size, n_MC_samples,
                               random_state=rs_theirs)
    assert_same_utilities(ours, theirs)
    assert rs_ours.random() == rs_theirs.random()


def test_unnormalised_bald_is_the_clipped_formula(backend):
    # Step 0 by hand: mean over members of the clipped rows, its Σ −p log p, less the
    # members' mean Σ −p log p (no renormalisation anywhere).
    probas = np.random.default_rng(2).random((4, 30, 3)) * 1.5
    p = np.clip(probas, 1e-7, 1)
    mean_N_C = p.mean(axis=0)
    expected = -(mean_N_C * np.log(mean_N_C)).sum(axis=1) + (p * np.log(p)).sum(axis=2).mean(0)
    np.testing.assert_allclose(fast.batch_bald(probas, 1)[0], expected, rtol=0, atol=1e-12)


def test_native_api_still_requires_probabilities(backend):
    probas = np.random.default_rng(0).random((10, 100, 5))
    fast.batch_bald(probas, 2)  # the adapter follows scikit-activeml...
    with pytest.raises(ValueError, match="sum over classes"):  # ...the native API does not
        batchbald(probas.transpose(1, 0, 2), 2)
    with pytest.raises(ValueError, match="negative probability"):
        batchbald(probas.transpose(1, 0, 2) - 0.5, 2)


def _probas():
    return make_probs(20, 4, 2).transpose(1, 0, 2).copy()


def _with(probas, index, value):
    probas = probas.copy()
    probas[index] = value
    return probas


# The exception each bad argument raises in scikit-activeml 1.0.1 (asserted for both).
@pytest.mark.parametrize("kwargs, error", [
    ({"probas": None}, AttributeError),
    ({"probas": "probas"}, AttributeError),
    ({"probas": 0.5}, AttributeError),
    ({"probas": _probas()[0]}, ValueError),
    ({"probas": _probas()[..., None]}, ValueError),
    ({"probas": _with(_probas(), (1, 2, 0), np.nan)}, ValueError),
    ({"probas": _with(_probas(), (0, 0, 1), np.inf)}, ValueError),
    ({"probas": _probas() + 0j}, ValueError),
    ({"probas": np.full((2, 3, 2), "a")}, ValueError),
    ({"probas": _probas()[:0]}, ValueError),
    ({"probas": _probas()[:, :0]}, ValueError),
    ({"probas": _probas() > 0.5}, TypeError),
    ({"batch_size": 0}, ValueError),
    ({"batch_size": 1.2}, TypeError),
    ({"batch_size": np.int64(2)}, TypeError),
    ({"batch_size": None}, TypeError),
    ({"batch_size": True}, TypeError),
    ({"n_MC_samples": 0}, ValueError),
    ({"n_MC_samples": 1.2}, TypeError),
    ({"n_MC_samples": np.int64(4)}, TypeError),
    ({"eps": 0}, ValueError),
    ({"eps": -0.1}, ValueError),
    ({"eps": 0.5}, ValueError),
    ({"eps": "0"}, TypeError),
    ({"eps": np.float32(1e-3)}, TypeError),
    ({"random_state": np.nan}, ValueError),
    ({"random_state": "state"}, ValueError),
    ({"random_state": 1.5}, ValueError),
    ({"random_state": -1}, ValueError),
    ({"probas": None, "batch_size": 0}, AttributeError),  # probas is checked first
    ({"batch_size": 0, "eps": -1}, ValueError),
])
def test_same_exception_types_as_skactiveml(kwargs, error):
    args = {"probas": _probas(), "batch_size": 2, "random_state": 0, **kwargs}
    for batch_bald in (fast.batch_bald, skpool.batch_bald):
        with pytest.raises(error):
            batch_bald(**args)


@pytest.mark.parametrize("init, error", [
    ({"n_MC_samples": 0}, ValueError),
    ({"n_MC_samples": 1.2, "eps": -1}, TypeError),  # n_MC_samples is checked first
    ({"eps": "0"}, TypeError),
    ({"eps": 1.0}, ValueError),
    ({"random_state": "state"}, ValueError),
    ({"random_state": np.nan}, ValueError),
])
def test_query_same_exception_types_as_skactiveml(init, error):
    X, y = _pool()
    ensemble = [ParzenWindowClassifier(classes=[0, 1], metric_dict={"gamma": g})
                for g in (0.3, 3.0)]
    for module in (fast, skpool):
        with pytest.raises(error):
            module.BatchBALD(**init).query(X, y, ensemble, batch_size=2)


def test_what_skactiveml_fails_on_is_accepted(backend):
    # Documented differences: scikit-activeml reads probas.ndim and clips in place, so it
    # fails on lists, integer and read-only arrays; a Generator is a random state here.
    probas = _probas()
    expected = skpool.batch_bald(probas.copy(), 3, random_state=0)
    read_only = probas.copy()
    read_only.flags.writeable = False
    for value in (probas.tolist(), read_only):
        assert_same_utilities(fast.batch_bald(value, 3, random_state=0), expected)
    # (Against our own float path: one-hot members tie many points mathematically, and
    # scikit-activeml's picks among those are decided by its rounding.)
    onehot = (probas > 0.5).astype(np.int64)
    assert_same_utilities(fast.batch_bald(onehot, 3, random_state=0),
                          fast.batch_bald(onehot.astype(float), 3, random_state=0))
    assert fast.batch_bald(probas, 3, random_state=np.random.default_rng(0)).shape == (3, 20)
    with pytest.raises(ValueError, match="no empty axis"):  # scikit-activeml: zeros
        fast.batch_bald(probas[:, :, :0], 2)


def test_float32_computed_in_float64(backend):
    # scikit-activeml computes parts of a float32 input in float32; here all is float64.
    probas = np.random.default_rng(1).random((8, 200, 4)).astype(np.float32)
    ours = fast.batch_bald(probas, 5, 40, random_state=0)
    theirs = skpool.batch_bald(probas.copy(), 5, 40, random_state=0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours, fast.batch_bald(probas.astype(np.float64), 5, 40,
                                                     random_state=0), rtol=0, atol=1e-12)


def test_import_without_skactiveml_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "skactiveml.pool", None)
    monkeypatch.delitem(sys.modules, "batchbald_fast.skactiveml")
    with pytest.raises(ImportError, match=r'pip install "batchbald_fast\[skactiveml\]"'):
        importlib.import_module("batchbald_fast.skactiveml")
