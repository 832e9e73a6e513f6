"""The seed example: scikit-activeml's BatchBALD gallery page, computed by batchbald_fast.

A bagged GaussianProcessClassifier on 2-D blobs, 5 active-learning cycles of 4 queries; each
cycle draws the utilities of the 4 batch slots as contours, with the labelled points and the
decision boundary. With scikit-activeml installed the example runs exactly as on the gallery
page with only the BatchBALD import changed, and once more with scikit-activeml's own
BatchBALD to check the picks and time both; without it, a plain scikit-learn ensemble of
Gaussian processes stands in for scikit-activeml's wrappers.
"""

import importlib.util
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

CENTERS = [[0, 1], [-3, 0.5], [-1, -1], [2, 1], [1, -0.5]]
GIF_NAME = "batchbald_demo.gif"
PNG_NAME = "batchbald_demo.png"


@dataclass
class Cycle:
    """One active-learning cycle: what was picked and how long picking took."""

    query_indices: np.ndarray
    utilities_B_N: np.ndarray
    seconds: float
    labelled_N: np.ndarray
    predict_proba: object  # grid points -> probabilities, for the decision boundary
    probas_K_N_C: np.ndarray = None  # what the strategy scored, to time BatchBALD alone


def installed(module):
    """Whether an optional dependency can be imported."""
    return importlib.util.find_spec(module) is not None


def make_data():
    """The gallery's blobs: 200 points, 5 centres, labels ``y % 2``."""
    from sklearn.datasets import make_blobs

    random_state = np.random.RandomState(0)
    X, y_true = make_blobs(n_samples=200, n_features=2, centers=CENTERS, cluster_std=0.7,
                           random_state=random_state)
    return X, y_true % 2, random_state


def skactiveml_cycles(strategy_class, n_cycles, batch_size):
    """The gallery page's loop with ``strategy_class`` as its BatchBALD; yields Cycles."""
    from sklearn.ensemble import BaggingClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool._query_by_committee import _check_ensemble
    from skactiveml.utils import MISSING_LABEL, is_labeled

    X, y_true, random_state = make_data()
    y = np.full(y_true.shape, MISSING_LABEL)
    # One RandomState shared by everything, as on the gallery page.
    clf = SklearnClassifier(
        BaggingClassifier(SklearnClassifier(GaussianProcessClassifier(),
                                            random_state=random_state),
                          random_state=random_state),
        classes=np.unique(y_true), random_state=random_state)
    qs = strategy_class(random_state=random_state)
    for _ in range(n_cycles):
        labelled_N = is_labeled(y)
        with warnings.catch_warnings():  # members fitted on one class fall back to priors
            warnings.simplefilter("ignore", UserWarning)
            clf.fit(X, y)
            start = time.perf_counter()
            query_indices, utilities = qs.query(X=X, y=y, ensemble=clf,
                                                batch_size=batch_size, return_utilities=True)
            seconds = time.perf_counter() - start
            # The committee's probabilities of the pool, as the query computed them.
            _, members, *_ = _check_ensemble(
                ensemble=clf, estimator_types=[SkactivemlClassifier], X=X, y=y,
                sample_weight=None, fit_ensemble=False)
            probas_K_N_C = qs._aggregate_predict_probas(X[~labelled_N], clf, members)
        yield Cycle(query_indices, utilities, seconds, labelled_N, _quiet(clf.predict_proba),
                    probas_K_N_C)
        y[query_indices] = y_true[query_indices]


def sklearn_cycles(n_cycles, batch_size):
    """The same loop with plain scikit-learn: bootstrapped Gaussian processes as members."""
    from sklearn.dummy import DummyClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier

    from ._api import batchbald
    from .sklearn import ensemble_probas

    X, y_true, random_state = make_data()
    labelled_N = np.zeros(len(X), dtype=bool)
    for _ in range(n_cycles):
        start = time.perf_counter()
        labelled = np.flatnonzero(labelled_N)
        members = []
        for _ in range(10 if len(labelled) else 0):
            boot = random_state.choice(labelled, len(labelled))
            # A bootstrap of one class cannot fit a GP: that member predicts its prior.
            if len(np.unique(y_true[boot])) > 1:
                member = GaussianProcessClassifier(random_state=random_state)
            else:
                member = DummyClassifier(strategy="prior")
            members.append(member.fit(X[boot], y_true[boot]))

        def predict_proba(X_grid, members=members):
            # Nothing labelled yet: every class equally likely.
            probs_N_K_C = np.full((len(X_grid), max(1, len(members)), 2), 0.5)
            if members:
                seen = np.unique(np.concatenate([m.classes_ for m in members]))
                probs_N_K_C[:] = 0
                probs_N_K_C[:, :, seen] = ensemble_probas(members, X_grid)
            return probs_N_K_C

        pool_N = np.flatnonzero(~labelled_N)
        result = batchbald(predict_proba(X[pool_N]), batch_size, num_samples=10,
                           random_state=random_state, return_utilities=True)
        seconds = time.perf_counter() - start
        utilities = np.full((batch_size, len(X)), np.nan)
        utilities[:, pool_N] = result.utilities
        query_indices = pool_N[result.indices]
        yield Cycle(query_indices, utilities, seconds, labelled_N.copy(),
                    lambda X_grid, f=predict_proba: f(X_grid).mean(axis=1))
        labelled_N[query_indices] = True


def _quiet(predict_proba):
    def quiet(X):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return predict_proba(X)
    return quiet


def _best_seconds(fn, repeat=5):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def draw_cycle(fig, X, y_true, cycle, number):
    """The 2×2 grid of one cycle: utility contours, points, labelled points, boundary."""
    from scipy.interpolate import griddata

    fig.clear()
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    lo, hi = X.min(axis=0), X.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 60), np.linspace(lo[1], hi[1], 60))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    proba_class1 = np.asarray(cycle.predict_proba(grid))[:, -1].reshape(gx.shape)
    for i, ax in enumerate(axes.flat):
        known = ~np.isnan(cycle.utilities_B_N[i])
        # Nearest pool point's utility, as scikit-activeml's plot_contour_for_samples.
        values = griddata(X[known], cycle.utilities_B_N[i, known], grid, method="nearest")
        ax.contourf(gx, gy, values.reshape(gx.shape), levels=12, cmap="Greens", alpha=0.8)
        ax.scatter(*X.T, c=y_true, cmap="coolwarm", marker=".", s=30, zorder=2)
        ax.scatter(*X[cycle.labelled_N].T, c="grey", alpha=0.8, marker=".", s=300, zorder=1)
        ax.contour(gx, gy, proba_class1, [0.5], colors="black", linewidths=1.5)
        ax.scatter(*X[cycle.query_indices[i]], marker="*", s=250, c="gold",
                   edgecolors="black", zorder=3)
        ax.set_title(f"Batch {number}, utilities[{i}]", fontsize=10)
    fig.suptitle("BatchBALD with batchbald_fast: ★ pick, ● labelled, — decision boundary",
                 fontsize=10)


def run(out_dir="batchbald_fast_demo", n_cycles=5, batch_size=4, log=print):
    """Run the seed example, write the GIF and PNG, report picks and timings.

    Parameters
    ----------
    out_dir : str or path, default="batchbald_fast_demo"
        Directory for ``batchbald_demo.gif`` and ``batchbald_demo.png`` (created).
    n_cycles : int, default=5
    batch_size : int, default=4
        Queries per cycle (the figure shows the first 4 slots' utilities).
    log : callable, default=print
        Receives each line of the report.

    Returns
    -------
    report : dict
        ``png``, ``gif`` (None without Pillow), ``picks`` (list per cycle),
        ``seconds`` (per cycle) and, with scikit-activeml, ``skactiveml_picks``,
        ``skactiveml_seconds``, ``same_picks`` and ``max_utility_difference``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('the demo needs matplotlib: pip install "batchbald_fast[demo]"') \
            from exc
    if batch_size < 4:
        raise ValueError(f"the demo draws 4 batch slots: batch_size must be ≥ 4, "
                         f"got {batch_size}")
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, PNG_NAME)
    gif = os.path.join(out_dir, GIF_NAME) if installed("PIL") else None
    have_skactiveml = installed("skactiveml")

    if have_skactiveml:
        from .skactiveml import BatchBALD

        ours = skactiveml_cycles(BatchBALD, n_cycles, batch_size)
        log("scikit-activeml's gallery example, BatchBALD from batchbald_fast.skactiveml")
    else:
        ours = sklearn_cycles(n_cycles, batch_size)
        log("scikit-activeml not installed: a plain scikit-learn ensemble, no comparison")

    # All computing first, drawing last: matplotlib running in between slows down
    # whatever runs next, and the timings would show it.
    cycles = []
    for number, cycle in enumerate(ours, start=1):
        cycles.append(cycle)
        log(f"cycle {number}: picks {cycle.query_indices.tolist()}, "
            f"acquisition {cycle.seconds * 1e3:.1f} ms")
    report = {"png": png, "gif": gif, "picks": [c.query_indices.tolist() for c in cycles],
              "seconds": [c.seconds for c in cycles]}
    if have_skactiveml:
        from skactiveml.pool import BatchBALD as ReferenceBatchBALD
        from skactiveml.pool import batch_bald as reference_batch_bald

        from .skactiveml import batch_bald

        reference = list(skactiveml_cycles(ReferenceBatchBALD, n_cycles, batch_size))
        same = all(np.array_equal(a.query_indices, b.query_indices)
                   for a, b in zip(cycles, reference))
        difference = max(float(np.nanmax(np.abs(a.utilities_B_N - b.utilities_B_N)))
                         for a, b in zip(cycles, reference))
        # The queries include the ensemble's predictions, the same work on both sides:
        # BatchBALD alone is timed on the probabilities each query scored, best of 5.
        ours_bb = sum(_best_seconds(lambda: batch_bald(c.probas_K_N_C, batch_size))
                      for c in cycles)
        theirs_bb = sum(_best_seconds(
            lambda: reference_batch_bald(c.probas_K_N_C.copy(), batch_size))
            for c in cycles)
        ours_q, theirs_q = sum(report["seconds"]), sum(c.seconds for c in reference)
        report.update(skactiveml_picks=[c.query_indices.tolist() for c in reference],
                      skactiveml_seconds=[c.seconds for c in reference], same_picks=same,
                      max_utility_difference=difference, batchbald_seconds=ours_bb,
                      skactiveml_batchbald_seconds=theirs_bb)
        log(f"scikit-activeml 1.0.1 picks: {report['skactiveml_picks']}")
        log(f"same picks as scikit-activeml: {'yes' if same else 'NO'}; "
            f"utilities differ by at most {difference:.1e}")
        log(f"BatchBALD, all cycles: {ours_bb * 1e3:.2f} ms, scikit-activeml "
            f"{theirs_bb * 1e3:.2f} ms: {theirs_bb / ours_bb:.1f}x faster")
        log(f"whole queries with the ensemble's predictions: {ours_q * 1e3:.0f} ms, "
            f"scikit-activeml {theirs_q * 1e3:.0f} ms")
    X, y_true, _ = make_data()
    fig = Figure(figsize=(8, 7), layout="constrained")
    writer = None
    if gif is not None:
        from matplotlib.animation import PillowWriter

        writer = PillowWriter(fps=1)
        writer.setup(fig, gif, dpi=80)
    for number, cycle in enumerate(cycles, start=1):
        draw_cycle(fig, X, y_true, cycle, number)
        if writer is not None:
            writer.grab_frame()
    if writer is not None:
        writer.finish()
    fig.savefig(png, dpi=100)

    log(f"wrote {png}")
    if gif is not None:
        log(f"wrote {gif}")
    else:
        log("no GIF: Pillow is not installed")
    return report
