"""Our calls right after other BLAS/OpenMP work in the same process, as users make them.

    python -m pytest benchmarks/bench_threads.py --benchmark-enable \\
        [--benchmark-columns=median,max,min,rounds] [-k seed_loop|w1|caller]

* ``test_seed_loop_query``: scikit-activeml's active-learning loop — a bagged
  GaussianProcessClassifier (10 members) on 400 blob points, fitted on the labels so far,
  then ``query(..., fit_ensemble=False, batch_size=4)``, which predicts with every member
  and runs BatchBALD; 12 queries. Each round times one whole query, with our BatchBALD
  class and with scikit-activeml's, side by side (the same picks, so the same loop).
  Targets: our median no slower than theirs, our max within 1.5x their median.
* ``test_seed_loop_batchbald``: the same loop, timing only the BatchBALD call on the
  probabilities the members have just predicted (their BLAS threads still spinning).
  Target: our median at least 2x faster.
* ``test_w1``: workload W1 (``batchbald-fast bench``'s first) right after a 1000x1000
  matmul, and on a quiet process (0.5 s idle first, so that no BLAS thread still spins).
  Target (compiled): after the matmul within 1.5x of quiet.
* ``test_caller_step``: the caller's next step — a 1000x1000 matmul — right after one of
  our threaded calls and on a quiet process: no thread of ours may be left busy.

Compare the rows of one group within one run, on a machine nothing else is using
(``uptime``). The rows of a group run one after the other, not interleaved: repeat the run
and quote the ratios that hold.
"""

import time
import warnings

import numpy as np
import pytest

from batchbald_fast._workloads import WORKLOADS, run_batchbald_fast

N_POINTS = 400
N_MEMBERS = 10
BATCH_SIZE = 4
QUERIES = 12
CENTERS = [[0, 1], [-3, 0.5], [-1, -1], [2, 1], [1, -0.5]]
# Longer than OpenBLAS's idle threads spin after a call (2^28 clock ticks: ~0.1 s at 2.5 GHz).
QUIET_SECONDS = 0.5


class SeedLoop:
    """The seed's loop with one BatchBALD class: fit the members, query, label the picks.

    One RandomState drives the bagging, the members and the strategy, as on
    scikit-activeml's gallery page; both classes draw the same numbers from it.
    """

    def __init__(self, strategy_class):
        from sklearn.datasets import make_blobs
        from sklearn.ensemble import BaggingClassifier
        from sklearn.gaussian_process import GaussianProcessClassifier
        from skactiveml.classifier import SklearnClassifier
        from skactiveml.utils import MISSING_LABEL

        X, y_true = make_blobs(n_samples=N_POINTS, n_features=2, centers=CENTERS,
                               cluster_std=0.7, random_state=0)
        self.X, self.y_true = X, y_true % 2
        self.y = np.full(N_POINTS, MISSING_LABEL)
        random_state = np.random.RandomState(0)
        self.clf = SklearnClassifier(
            BaggingClassifier(SklearnClassifier(GaussianProcessClassifier(),
                                                random_state=random_state),
                              n_estimators=N_MEMBERS, random_state=random_state),
            classes=np.unique(self.y_true), random_state=random_state)
        self.qs = strategy_class(random_state=random_state)

    def fit(self):
        with warnings.catch_warnings():  # members fitted on one class fall back to priors
            warnings.simplefilter("ignore", UserWarning)
            self.clf.fit(self.X, self.y)

    def query(self):
        """The timed call: the members' predictions and BatchBALD."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self.qs.query(X=self.X, y=self.y, ensemble=self.clf, fit_ensemble=False,
                                 batch_size=BATCH_SIZE)

    def predict(self):
        """The members' probabilities of the unlabelled points, as ``query`` computes them."""
        from skactiveml.base import SkactivemlClassifier
        from skactiveml.pool._query_by_committee import _check_ensemble
        from skactiveml.utils import is_labeled

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            _, members, *_ = _check_ensemble(
                ensemble=self.clf, estimator_types=[SkactivemlClassifier], X=self.X,
                y=self.y, sample_weight=None, fit_ensemble=False)
            return self.qs._aggregate_predict_probas(self.X[~is_labeled(self.y)], self.clf,
                                                     members)

    def label(self, query_indices):
        self.y[query_indices] = self.y_true[query_indices]


def _strategy(implementation):
    pytest.importorskip("skactiveml")
    if implementation == "batchbald_fast":
        from batchbald_fast.skactiveml import BatchBALD
    else:
        from skactiveml.pool import BatchBALD
    return BatchBALD


def _batch_bald(implementation):
    pytest.importorskip("skactiveml")
    if implementation == "batchbald_fast":
        from batchbald_fast.skactiveml import batch_bald
    else:
        from skactiveml.pool import batch_bald
    return batch_bald


IMPLEMENTATIONS = ["batchbald_fast", "scikit-activeml"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_seed_loop_query(benchmark, implementation):
    loop = SeedLoop(_strategy(implementation))
    picks = []

    def setup():
        loop.fit()
        return (), {}

    def query():
        picks.append(loop.query())
        loop.label(picks[-1])

    benchmark.group = "seed loop: whole query (predictions + BatchBALD)"
    benchmark.pedantic(query, setup=setup, rounds=QUERIES, iterations=1)
    benchmark.extra_info["picks"] = [list(map(int, p)) for p in picks]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_seed_loop_batchbald(benchmark, implementation):
    from skactiveml.utils import unlabeled_indices

    batch_bald = _batch_bald(implementation)
    loop = SeedLoop(_strategy(implementation))
    picks = []

    def setup():
        loop.fit()
        # scikit-activeml clips its input in place: it gets a copy, made here, untimed.
        return (loop.predict().copy(), BATCH_SIZE), {
            "n_MC_samples": N_MEMBERS, "random_state": np.random.RandomState(len(picks))}

    def batchbald(probas, batch_size, **kwargs):
        utilities = batch_bald(probas, batch_size, **kwargs)
        picks.append(unlabeled_indices(loop.y)[np.nanargmax(utilities, axis=1)])
        loop.label(picks[-1])

    benchmark.group = "seed loop: BatchBALD alone, right after the predictions"
    benchmark.pedantic(batchbald, setup=setup, rounds=QUERIES, iterations=1)
    benchmark.extra_info["picks"] = [list(map(int, p)) for p in picks]


def _backend_or_skip(backend):
    from batchbald_fast._backend import _kernels_compiled

    if backend == "cython" and _kernels_compiled is None:
        pytest.skip("the compiled extension is not built")


def _matmul():
    a_N_N = np.random.default_rng(0).random((1000, 1000))
    return lambda: a_N_N @ a_N_N


@pytest.mark.parametrize("before", ["quiet", "matmul"])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_w1(benchmark, backend, before):
    _backend_or_skip(backend)
    workload = WORKLOADS["W1"]
    run = run_batchbald_fast(backend)
    args = (workload.probs(), workload.batch_size, workload.num_samples)
    matmul = _matmul()

    def setup():
        if before == "matmul":
            matmul()
        else:
            time.sleep(QUIET_SECONDS)
        return args, {}

    benchmark.group = f"W1 ({backend}) after a 1000x1000 matmul vs quiet"
    benchmark.pedantic(run, setup=setup, rounds=15, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("before", ["quiet", "ours"])
def test_caller_step(benchmark, before):
    """The caller's matmul right after one of our threaded calls (W3's first step: all
    50000 candidates scored at once)."""
    _backend_or_skip("cython")
    from batchbald_fast import _kernels

    probs_N_K_C = WORKLOADS["W3"].probs()
    N, K, _ = probs_N_K_C.shape
    candidates = np.arange(N, dtype=np.intp)
    joint_M_K = np.full((1, K), 1.0 / K)

    def setup():
        if before == "ours":
            _kernels.score_candidates(joint_M_K, np.ones(1), probs_N_K_C, candidates,
                                      np.empty(N))
        else:
            time.sleep(QUIET_SECONDS)
        return (), {}

    benchmark.group = "the caller's 1000x1000 matmul right after our call vs quiet"
    benchmark.pedantic(_matmul(), setup=setup, rounds=15, iterations=1, warmup_rounds=1)
